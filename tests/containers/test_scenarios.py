"""Failure scenarios on real containers: each node in its own container on a private network.

The CLI on the host drives them through published ports (``DIR/admin-host.toml``);
``openssl s_client`` on the host has the last word on what each container serves (per node,
every required name with SNI, and without SNI). Waits poll with deadlines. Figures (start to
serving, converge time) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sync.localcluster import free_port_range
from tests.cluster.conftest import (
    COVERING,
    assert_openssl_sees,
    cli_ok,
    create_default,
    fail_over_and_bring_back_the_old_primary,
    probe_names,
    served,
    status,
    wait_in_sync,
    wait_served,
    wait_until,
)
from tests.containers.cluster import LAYOUT_SCRIPT, ContainerCluster, host_view
from tests.containers.conftest import ROOT, BuiltImage, Tracker

pytestmark = pytest.mark.containers

SYNC_INTERVAL = 2
COMPOSE = ROOT / "deploy" / "compose.yaml"
MakeCluster = Callable[..., ContainerCluster]


@pytest.fixture
def make(certsync_image: BuiltImage, docker_tracker: Tracker, tmp_path: Path
         ) -> MakeCluster:
    made = iter(range(100))

    def _make(**kwargs: object) -> ContainerCluster:
        return ContainerCluster.make(docker_tracker, certsync_image.tag,
                                     tmp_path / f"c{next(made)}", **kwargs)  # type: ignore[arg-type]  # keyword pass-through

    return _make


@pytest.fixture
def cluster(make: MakeCluster) -> ContainerCluster:
    """p1 (primary), b1 (backup), t1, t2 (traffic), started in parallel; anti-entropy 2 s."""
    c = make(sync_interval=SYNC_INTERVAL)
    c.start_all()
    return c


def time_to_serve(cluster: ContainerCluster, name: str, sha: str, since: float, *,
                  timeout: float = 60.0) -> float:
    """Seconds from ``since`` until node ``name`` answers a handshake (no SNI) with ``sha``."""
    wait_until(lambda: served(cluster, name, None) == sha, timeout=timeout,
               what=f"{name} serving {sha[:12]}")
    return time.monotonic() - since


def openssl_certificate(directory: Path, name: str, sans: tuple[str, ...] = COVERING
                        ) -> tuple[Path, str]:
    """A key + self-signed certificate made by the openssl CLI in one PEM; (path, sha256)."""
    key, cert = directory / f"{name}-key.pem", directory / f"{name}.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "90",
         "-subj", f"/CN={sans[0]}", "-addext",
         "subjectAltName=" + ",".join(f"DNS:{san}" for san in sans)],
        check=True, capture_output=True, timeout=60,
    )
    bundle = directory / f"{name}-bundle.pem"
    bundle.write_bytes(cert.read_bytes() + key.read_bytes())
    der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(
        serialization.Encoding.DER)
    return bundle, hashlib.sha256(der).hexdigest()


# --------------------------------------------------------------------------- 1. import


def test_1_import_on_the_primary_is_served_by_every_container(
    cluster: ContainerCluster, tmp_path: Path
) -> None:
    bundle, sha = openssl_certificate(tmp_path, "site")
    # negative twin: before the import no container serves it (their stores are empty)
    assert not [n for n in cluster.names for s in probe_names(cluster)
                if served(cluster, n, s) == sha]
    out = cli_ok(cluster, "cert", "import", str(bundle), "--name", "site", "--default")
    imported = time.monotonic()
    assert out.split()[0] == sha
    wait_served(cluster, sha, timeout=60)
    converge = time.monotonic() - imported
    print(f"\nconverge: import returned -> all 4 containers serve it: {converge:.2f}s")
    assert_openssl_sees(cluster, sha)
    rows = wait_in_sync(cluster)
    assert {row["default_sha256"] for row in rows.values()} == {sha}
    assert len({row["digest"] for row in rows.values()}) == 1


# --------------------------------------------------------------------------- 2. kill


def test_2_a_killed_backup_catches_up_by_itself(cluster: ContainerCluster) -> None:
    first = create_default(cluster, name="first")
    wait_served(cluster, first)
    assert cluster.kill("b1") != 0
    second = create_default(cluster, name="second")
    wait_served(cluster, second, ["p1", "t1", "t2"])
    # negative twin: while it is down it is unreachable and not in sync
    row = status(cluster)["b1"]
    assert row["reachable"] is False and row["in_sync"] is False

    cluster.start("b1", wait=False)
    # no 'replicate': anti-entropy repairs it (it may serve its old set for a moment)
    took = time_to_serve(cluster, "b1", second, cluster.started_at["b1"])
    print(f"\nkilled backup: docker start -> serving the new default: {took:.2f}s")
    assert_openssl_sees(cluster, second, ["b1"])
    assert wait_in_sync(cluster)["b1"]["default_sha256"] == second


# --------------------------------------------------------------------------- 3. partition


def test_3_a_partitioned_traffic_node_converges_within_one_period(
    cluster: ContainerCluster,
) -> None:
    first = create_default(cluster, name="first")
    wait_served(cluster, first)
    cluster.disconnect("t1")
    second = create_default(cluster, name="second")
    wait_served(cluster, second, ["p1", "b1", "t2"])
    # negative twin: cut off, t1 is unreachable from outside and still serves the old one
    assert status(cluster)["t1"]["in_sync"] is False
    assert cluster.served_inside("t1") == first
    assert cluster.served_inside("t2") == second  # (the probe itself tells them apart)

    cluster.connect("t1")
    reconnected = time.monotonic()
    # one anti-entropy period, plus a push (two phases and a probe) and a poll on 2 cores
    wait_served(cluster, second, ["t1"], timeout=SYNC_INTERVAL + 15)
    print(f"\npartition healed -> t1 serves the change: {time.monotonic() - reconnected:.2f}s "
          f"(anti-entropy every {SYNC_INTERVAL}s)")
    assert_openssl_sees(cluster, second, ["t1"])


# --------------------------------------------------------------------------- 4. failover


def test_4_promoted_backup_wins_and_the_old_primary_steps_down(
    cluster: ContainerCluster,
) -> None:
    new = fail_over_and_bring_back_the_old_primary(cluster)
    assert_openssl_sees(cluster, new)


# --------------------------------------------------------------------------- 5. volume


def _cert_list(cluster: ContainerCluster, node: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = json.loads(
        cli_ok(cluster, "--node", node, "cert", "list", "--json"))
    return sorted(rows, key=lambda r: str(r["sha256"]))


def test_5_a_recreated_container_keeps_its_store_and_serves_at_once(
    cluster: ContainerCluster,
) -> None:
    sha = create_default(cluster, name="kept")
    wait_served(cluster, sha)
    wait_in_sync(cluster)
    before = (_cert_list(cluster, "t2"), cluster.state("t2").set_digest)
    # no primary: whatever t2 serves after the restart comes from its own volume
    assert cluster.stop("p1") == 0
    assert cluster.stop("t2") == 0
    cluster.recreate("t2")  # a new container (e.g. an image upgrade) on the same volume
    cluster.start("t2", wait=False)
    took = time_to_serve(cluster, "t2", sha, cluster.started_at["t2"])
    print(f"\nnew container on the old volume: docker start -> serving: {took:.2f}s")
    assert (_cert_list(cluster, "t2"), cluster.state("t2").set_digest) == before
    assert_openssl_sees(cluster, sha, ["t2"])

    # negative twin: the same node on a fresh volume has nothing to serve
    assert cluster.stop("t2") == 0
    cluster.recreate("t2", fresh_volume=True)
    cluster.start("t2")
    assert cluster.state("t2").set_digest != before[1]
    assert _cert_list(cluster, "t2") == []
    assert served(cluster, "t2", None) is None
    # and with the primary back, anti-entropy fills it
    cluster.start("p1")
    wait_served(cluster, sha, ["t2"])


# --------------------------------------------------------------------------- 6. foreign CA


def test_6_a_container_with_another_clusters_ca_cannot_push_or_be_pushed_to(
    make: MakeCluster,
) -> None:
    ours = make(sync_interval=SYNC_INTERVAL)
    # the foreign cluster's primary takes t1's place on our network: same alias, same ports
    # (our t1 is node 2: ports base+4, base+5), its only peer is our t2 (base+6, base+7)
    inside_t1 = ours.inside_ports["t1"][0]
    foreign = make(
        sync_interval=SYNC_INTERVAL, network=ours.network,
        host_port_base=int(ours.spec("t1").grpc_address.rpartition(":")[2]),
        init_args=["--site", "support.example.com",
                   "--primary", "t1=t1.atlas.example.com",
                   "--traffic", "t2=t2.atlas.example.com",
                   "--base-port", str(inside_t1)],
    )
    assert foreign.spec("t2").grpc_address == ours.spec("t2").grpc_address
    ours.start_all(["p1", "b1", "t2"])
    foreign.start_all(["t1"])

    ours_sha = create_default(ours, name="ours")
    foreign_sha = create_default(foreign, name="foreign")
    # twins: each cluster works on its own side
    wait_served(ours, ours_sha, ["p1", "b1", "t2"])
    wait_served(foreign, foreign_sha, ["t1"])

    # cannot be pushed to: our primary's push to "t1" meets the foreign CA and fails
    pushed = ours.cli("replicate", "--node", "t1")
    assert pushed.returncode != 0, pushed.stdout
    assert "t1" in pushed.stdout + pushed.stderr
    # cannot push: the foreign primary's push to our t2 is refused
    pushing = foreign.cli("replicate", "--node", "t2")
    assert pushing.returncode != 0, pushing.stdout
    # and a few anti-entropy periods later nothing crossed over, in either direction
    deadline = time.monotonic() + 3 * SYNC_INTERVAL
    while time.monotonic() < deadline:  # watching for a change that must not happen
        assert_openssl_sees(ours, ours_sha, ["t2"])
        assert_openssl_sees(foreign, foreign_sha, ["t1"])
    assert status(ours)["t1"]["in_sync"] is False


# --------------------------------------------------------------------------- 7. rollout


def test_7_a_canary_cut_off_after_staging_halts_the_rollout_and_no_other_activates(
    cluster: ContainerCluster,
) -> None:
    old = create_default(cluster, name="old")
    wait_served(cluster, old)
    t2 = cluster.container("t2").get_wrapped_container()
    # t2 frozen: it cannot answer, so staging waits for it (the reach timeout) while t1,
    # the canary (the first traffic node), has staged already -- the moment to cut t1 off
    t2.pause()
    try:
        staged_before = cluster.logs("t1").count("replication.staged")
        new = create_default(cluster, name="new")
        wait_until(lambda: cluster.logs("t1").count("replication.staged") > staged_before,
                   timeout=90, what="t1 staging the new set")
        cluster.disconnect("t1")
    finally:
        t2.unpause()

    def halted() -> dict[str, object] | None:
        proc = cluster.cli("status", "--json")
        rollout = json.loads(proc.stdout)["rollout"] if proc.stdout else {}
        return rollout if rollout.get("state") == "halted" else None

    rollout = wait_until(halted, timeout=90, what="the rollout halted at the canary")
    assert rollout["canary"] == "t1" and "t1" in str(rollout["halted_reason"])
    # no other container activated: b1, t2 and the primary's own endpoint serve the old set
    assert_openssl_sees(cluster, old, ["p1", "b1", "t2"])
    assert cluster.served_inside("t1") == old  # t1 never switched (it was cut off first)
    assert new != old
    # the twin: t1 back, replicate retries the halted rollout and every container switches
    cluster.connect("t1")
    wait_until(lambda: cluster.cli("replicate").returncode == 0, timeout=90,
               what="replicate completing the rollout")
    wait_served(cluster, new)
    assert_openssl_sees(cluster, new)


# --------------------------------------------------------------------------- compose.yaml


def _compose(directory: Path, project: str, *args: str, image: str = "certsync:dev",
             env_file: bool = True) -> subprocess.CompletedProcess[str]:
    env_args = ["--env-file", str(directory / "compose.env")] if env_file else []
    return subprocess.run(
        ["docker-compose", *env_args, "-p", project, "-f", str(COMPOSE), *args],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "CERTSYNC_IMAGE": image},
    )


@pytest.fixture
def compose_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "compose-cluster"
    subprocess.run(["bash", str(LAYOUT_SCRIPT), str(directory), "--host-port-base",
                    str(free_port_range(8)), "--sync-interval", str(SYNC_INTERVAL)],
                   check=True, capture_output=True, timeout=120)
    return directory


def test_compose_file_is_valid_with_the_layout(compose_dir: Path) -> None:
    proc = _compose(compose_dir, "certsync-config", "config")
    assert proc.returncode == 0, proc.stderr
    for node in ("p1", "b1", "t1", "t2"):
        assert f"{compose_dir}/compose/{node}:/etc/certsync:ro" in proc.stdout
        assert f"file: {compose_dir}/{node}/node-key.pem" in proc.stdout
    # negative twin: without the env file compose says what to run
    bare = _compose(compose_dir, "certsync-config", "config", env_file=False)
    assert bare.returncode != 0
    assert "cluster-for-compose.sh" in bare.stderr


@pytest.fixture
def compose_project(compose_dir: Path, certsync_image: BuiltImage) -> Iterator[str]:
    project = f"certsync-test-{uuid.uuid4().hex[:8]}"
    try:
        yield project
    finally:
        _compose(compose_dir, project, "down", "-v", "--remove-orphans",
                 image=certsync_image.tag)


def test_compose_up_serves_and_the_host_cli_drives_it(
    compose_dir: Path, compose_project: str, certsync_image: BuiltImage
) -> None:
    up = _compose(compose_dir, compose_project, "up", "-d", image=certsync_image.tag)
    assert up.returncode == 0, up.stderr
    nodes = host_view(compose_dir)
    for name in nodes.names:
        nodes.wait_ready(name)
    sha = create_default(nodes, name="compose")
    wait_served(nodes, sha)
    assert_openssl_sees(nodes, sha)
