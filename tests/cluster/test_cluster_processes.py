"""Replication and failover with every node a real ``certsync node serve`` process on loopback.

Everything goes through the CLI as an admin types it; what a node *serves* is read with
``openssl s_client`` (with SNI for every required name, and without SNI). Waits poll with
deadlines (see conftest). The 50-round stress variant is ``-m slow``.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import tomli_w

from node.errors import BadInput, NodeUnreachable
from sync.localcluster import LocalCluster, NodeProcessError, certsync_command, free_port_range
from tests.cluster.conftest import (
    CONVERGE,
    MakeCluster,
    assert_openssl_sees,
    cli_ok,
    create_default,
    fail_over_and_bring_back_the_old_primary,
    not_serving,
    served,
    status,
    wait_in_sync,
    wait_served,
)


def _replicate(cluster: LocalCluster, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*certsync_command(), "--config", str(cluster.admin_toml), "replicate", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


# --------------------------------------------------------------------------- the harness itself


def _single(tmp_path: Path) -> LocalCluster:
    return LocalCluster.create(tmp_path / "one", site="support.example.com",
                               primary=("p1", "p1.example.com"))


def test_harness_reports_a_node_that_cannot_listen_and_then_starts_it(tmp_path: Path) -> None:
    with _single(tmp_path) as cluster:
        host, port = cluster.spec("p1").grpc_address.rsplit(":", 1)
        with socket.socket() as squatter:
            squatter.bind((host, int(port)))
            squatter.listen()
            with pytest.raises(NodeProcessError, match=r"'p1' exited with status"):
                cluster.start("p1", timeout=60)
        assert not cluster.is_running("p1")
        # twin: with the port free it comes up and answers over mTLS
        cluster.start("p1")
        assert cluster.state("p1").name == "p1"
    assert not cluster.is_running("p1")  # the with block stopped it


def test_harness_stop_is_graceful_and_kill_is_not(tmp_path: Path) -> None:
    with _single(tmp_path) as cluster:
        cluster.start("p1")
        assert cluster.stop("p1") == 0
        log = cluster.log_path("p1").read_text()
        assert log.count('"node.stopped"') == 1
        cluster.start("p1")
        assert cluster.kill("p1") == -signal.SIGKILL
        assert cluster.log_path("p1").read_text().count('"node.stopped"') == 1
        with pytest.raises(NodeUnreachable):
            cluster.state("p1", timeout=2)


@pytest.mark.parametrize("count", [1, 2, 130])
def test_free_port_range_is_free_and_below_the_ephemeral_range(count: int) -> None:
    base = free_port_range(count)
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert base >= 1024 and base + count <= low
    for port in (base, base + count - 1):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_free_port_range_refuses_nonsense() -> None:
    with pytest.raises(BadInput, match="0"):
        free_port_range(0)


# --------------------------------------------------------------------------- a change spreads


def test_a_change_on_the_primary_is_served_by_every_node(cluster: LocalCluster) -> None:
    before = {n: served(cluster, n, None) for n in cluster.names}
    sha = create_default(cluster, name="wild")
    # negative twin: before the change no node served it (nothing, or something else)
    assert sha not in before.values()
    # pushed at once, without 'replicate'
    wait_served(cluster, sha)
    assert_openssl_sees(cluster, sha)
    rows = wait_in_sync(cluster)
    assert {row["digest"] for row in rows.values()} == {rows["p1"]["digest"]}
    assert {row["default_sha256"] for row in rows.values()} == {sha}
    # replicate now: exit 0, a line per node
    proc = cluster.cli("replicate")
    assert proc.returncode == 0, proc.stderr
    for name in cluster.names[1:]:
        assert name in proc.stdout + proc.stderr


def test_a_node_killed_before_a_change_catches_up_by_itself(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(sync_interval=1)
    first = create_default(cluster, name="first")
    wait_served(cluster, first)
    cluster.kill("t2")
    second = create_default(cluster, name="second")
    wait_served(cluster, second, ["p1", "b1", "t1"])
    # negative twin: while it is down it is reported unreachable and not in sync
    row = status(cluster)["t2"]
    assert row["reachable"] is False and row["in_sync"] is False
    cluster.start("t2")
    # no 'replicate': anti-entropy (every 1 s) repairs it
    wait_served(cluster, second, ["t2"])
    assert_openssl_sees(cluster, second, ["t2"])


def test_a_node_stopped_mid_push_converges_after_restart(cluster: LocalCluster) -> None:
    first = create_default(cluster, name="first")
    wait_served(cluster, first)
    pid = cluster.pid("t1")
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # frozen: connections open, no answer -- the push hangs on it
    try:
        second = create_default(cluster, name="second")
        pusher = _replicate(cluster, "--node", "t1")
        # the others are not held hostage by the frozen node
        wait_served(cluster, second, ["p1", "b1", "t2"], timeout=CONVERGE * 2)
        assert served(cluster, "t2", None) == second
    finally:
        cluster.kill("t1")  # dies mid-push, without a graceful stop
    out, err = pusher.communicate(timeout=CONVERGE * 2)
    assert pusher.returncode != 0, "replicate --node t1 passed while t1 was dead"
    assert "t1" in out + err
    cluster.start("t1")
    wait_served(cluster, second, ["t1"])
    assert_openssl_sees(cluster, second, ["t1"])


# --------------------------------------------------------------------------- failover


def test_promoted_backup_wins_and_the_old_primary_steps_down(cluster: LocalCluster) -> None:
    new = fail_over_and_bring_back_the_old_primary(cluster)
    assert_openssl_sees(cluster, new, ["p1"])


# --------------------------------------------------------------------------- coverage gate


# refused at the change now (issue 12): tests/cluster/test_point_of_change.py; 'replicate'
# without --force on a set that is not covered: tests/node/test_replication_inproc.py


# --------------------------------------------------------------------------- one revision


def test_concurrent_replicate_calls_leave_one_revision(cluster: LocalCluster) -> None:
    first = create_default(cluster, name="first")
    wait_served(cluster, first)
    cli_ok(cluster, "replicate")
    before = cluster.state("p1").revision
    second = create_default(cluster, name="second")
    pushers = [_replicate(cluster) for _ in range(4)]
    codes = [p.wait(timeout=CONVERGE * 2) for p in pushers]
    for p in pushers:
        p.communicate()
    assert codes == [0, 0, 0, 0]
    states = {n: cluster.state(n) for n in cluster.names}
    assert len({(s.epoch, s.revision, s.set_digest) for s in states.values()}) == 1, states
    assert states["p1"].revision == before + 1
    assert not not_serving(cluster, second, list(cluster.names))
    # twin: replicating an unchanged set makes no new revision
    cli_ok(cluster, "replicate")
    assert cluster.state("p1").revision == before + 1


# --------------------------------------------------------------------------- identities


def _as_node_config(cluster: LocalCluster, node: str, tmp_path: Path) -> str:
    """An admin.toml that authenticates with traffic node ``node``'s own identity."""
    path = tmp_path / f"as-{node}.toml"
    path.write_text(tomli_w.dumps({
        "cluster": str(cluster.directory / "cluster.toml"),
        "ca_cert": str(cluster.directory / "ca.pem"),
        "cert": str(cluster.directory / node / "node.pem"),
        "key": str(cluster.directory / node / "node-key.pem"),
        "name": node,
    }))
    return str(path)


@pytest.mark.parametrize(
    "command",
    [
        ["cert", "create-self-signed", "--name", "evil", "--key", "ec-p256", "--cn",
         "evil.example.com", "--san", "evil.example.com"],  # not --default: not the gate
        ["promote", "t1"],
        ["replicate", "--force"],
    ],
    ids=["create", "promote", "replicate"],
)
def test_a_traffic_node_identity_is_refused_admin_rpcs(
    cluster: LocalCluster, tmp_path: Path, command: list[str]
) -> None:
    sha = create_default(cluster, name="wide")
    wait_served(cluster, sha)
    state = cluster.state("p1")
    as_t1 = _as_node_config(cluster, "t1", tmp_path)
    refused = subprocess.run(
        [*certsync_command(), "--config", as_t1, *command],
        capture_output=True, text=True, timeout=CONVERGE, check=False,
    )
    assert refused.returncode != 0, refused.stdout
    assert refused.stderr.startswith("certsync: error:")
    assert "may not" in refused.stderr or "PERMISSION_DENIED" in refused.stderr
    after = cluster.state("p1")
    assert (after.epoch, after.revision, after.set_digest, after.role) == (
        state.epoch, state.revision, state.set_digest, state.role)
    assert not not_serving(cluster, sha, list(cluster.names))
    # twin: the node's identity may read, and the admin's may do the same change
    reads = subprocess.run(
        [*certsync_command(), "--config", as_t1, "cert", "list", "--json"],
        capture_output=True, text=True, timeout=CONVERGE, check=False,
    )
    assert reads.returncode == 0, reads.stderr
    if command[0] == "cert":
        cli_ok(cluster, *command)


# --------------------------------------------------------------------------- stress


@pytest.mark.slow
def test_stress_fifty_rounds_of_changes_kills_and_restarts(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(sync_interval=1)
    rng = random.Random(4)
    down: set[str] = set()
    sha = ""
    for round_no in range(50):
        victim = rng.choice(["b1", "t1", "t2"])
        if victim in down:
            cluster.start(victim)
            down.discard(victim)
        elif rng.random() < 0.5:
            (cluster.kill if rng.random() < 0.5 else cluster.stop)(victim)
            down.add(victim)
        sha = create_default(cluster, name=f"r{round_no}",
                             key=rng.choice(["ec-p256", "rsa-2048"]))
        wait_served(cluster, sha, [n for n in cluster.names if n not in down])
    for name in sorted(down):
        cluster.start(name)
    wait_served(cluster, sha)
    assert_openssl_sees(cluster, sha)
