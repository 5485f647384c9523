"""Fixtures for clusters of real ``certsync node serve`` processes on loopback.

Every wait here polls with a deadline (the condition is another process's state, which
sends us no event); nothing sleeps blindly.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from node.errors import NodeUnreachable
from sync.localcluster import LocalCluster
from tests._ci import require_tool

SITE = "support.example.com"
PRIMARY = ("p1", "p1.example.com")
BACKUP = ("b1", "b1.example.com")
TRAFFIC = (("t1", "t1.atlas.example.com"), ("t2", "t2.atlas.example.com"))
#: SANs that cover the site and every node hostname above
COVERING = ("support.example.com", "*.example.com", "*.atlas.example.com")
#: how long a change may take to reach every node (pushes, two phases, probes, 2 cores)
CONVERGE = 60.0
POLL = 0.1

_T = TypeVar("_T")

MakeCluster = Callable[..., LocalCluster]


def wait_until(check: Callable[[], _T | None], *, timeout: float = CONVERGE, what: str) -> _T:
    """Poll ``check`` until it returns something truthy; AssertionError at the deadline,
    showing its last answer."""
    deadline = time.monotonic() + timeout
    last = check()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}; last answer {last!r}")
        time.sleep(POLL)  # polling another process's state, bounded by the deadline
        last = check()
    return last


def openssl_served(address: str, server_name: str | None) -> str | None:
    """sha256 of the leaf ``openssl s_client`` receives from ``address`` (None: no handshake)."""
    host, _, port = address.rpartition(":")
    args = ["openssl", "s_client", "-connect", f"{host}:{port}"]
    args += ["-servername", server_name] if server_name else ["-noservername"]
    proc = subprocess.run(args, input="", capture_output=True, text=True, timeout=30,
                          check=False)
    start = proc.stdout.find("-----BEGIN CERTIFICATE-----")
    if start < 0:
        return None
    cert = x509.load_pem_x509_certificate(proc.stdout[start:].encode())
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def assert_openssl_sees(cluster: LocalCluster, sha: str, nodes: Sequence[str] | None = None
                        ) -> None:
    """The final word on what is served: openssl s_client, per node (through its TLS
    address: a loopback port or a container's published one), per name and without SNI."""
    wrong = {
        f"{node}/{name or '(no SNI)'}": got
        for node in (nodes or list(cluster.names))
        for name in probe_names(cluster)
        if (got := openssl_served(cluster.spec(node).tls_address, name)) != sha
    }
    assert not wrong, f"openssl saw other certificates than {sha[:12]}: {wrong}"


def required_names(cluster: LocalCluster) -> tuple[str, ...]:
    return cluster.config.topology.required_names()


def probe_names(cluster: LocalCluster) -> tuple[str | None, ...]:
    """Every required name, and None for a ClientHello without SNI."""
    return (*required_names(cluster), None)


def served(cluster: LocalCluster, name: str, server_name: str | None) -> str | None:
    """What node ``name`` serves now; None when it refuses or is not listening."""
    try:
        return cluster.served_sha256(name, server_name)
    except NodeUnreachable:
        return None


def not_serving(cluster: LocalCluster, sha: str, nodes: Sequence[str]) -> list[str]:
    """``node/name`` for each (node, probe name) that does not serve ``sha`` right now."""
    return [f"{node}/{server_name or '(no SNI)'}"
            for node in nodes for server_name in probe_names(cluster)
            if served(cluster, node, server_name) != sha]


def wait_served(cluster: LocalCluster, sha: str, nodes: Sequence[str] | None = None, *,
                timeout: float = CONVERGE) -> None:
    """Wait until every node in ``nodes`` (default all) serves ``sha`` for every name."""
    chosen = list(nodes) if nodes is not None else list(cluster.names)
    missing: list[str] = []

    def done() -> bool:
        missing[:] = not_serving(cluster, sha, chosen)
        return not missing

    try:
        wait_until(done, timeout=timeout, what=f"every node serving {sha[:12]}")
    except AssertionError as err:
        raise AssertionError(f"{err}; still not serving it: {missing}") from None


def cli_ok(cluster: LocalCluster, *args: str) -> str:
    proc = cluster.cli(*args)
    assert proc.returncode == 0, f"certsync {' '.join(args)} -> {proc.returncode}: {proc.stderr}"
    return proc.stdout


_days = itertools.count(365)


def create_default(cluster: LocalCluster, *, name: str, sans: Sequence[str] = COVERING,
                   key: str = "ec-p256", node: str | None = None) -> str:
    """Create a self-signed certificate as the default on ``node`` (primary); its sha256.

    Each one lives a day longer than the one before, so for a name two of them cover alike
    the newer wins SNI selection (later ``not_after``) even when made in the same second.
    """
    where = ["--node", node] if node else []
    sans_args = [arg for san in sans for arg in ("--san", san)]
    out = cli_ok(cluster, *where, "cert", "create-self-signed", "--name", name, "--key", key,
                 "--cn", sans[0], *sans_args, "--days", str(next(_days)), "--default")
    sha = out.strip().split()[0]
    assert len(sha) == 64, out
    return sha


def status(cluster: LocalCluster) -> dict[str, dict[str, object]]:
    """``status --json`` rows by node name; its exit status must agree with them (0 when
    every node is reachable, in sync and not stale; 1 otherwise)."""
    proc = cluster.cli("status", "--json")
    report = json.loads(proc.stdout)
    ok = all(r["reachable"] and r["in_sync"] and not r["stale"] for r in report["nodes"])
    assert proc.returncode == (0 if ok else 1), (proc.returncode, proc.stderr)
    return {row["name"]: row for row in report["nodes"]}


def wait_in_sync(cluster: LocalCluster, *, timeout: float = CONVERGE
                 ) -> dict[str, dict[str, object]]:
    """Wait until ``status`` reports every node in sync; its rows by node name."""
    def rows() -> dict[str, dict[str, object]] | None:
        report = status(cluster)
        return report if all(row["in_sync"] is True for row in report.values()) else None

    return wait_until(rows, timeout=timeout, what="status: every node in_sync")


def fail_over_and_bring_back_the_old_primary(cluster: LocalCluster) -> str:
    """The failover scenario, on processes or containers alike: stop p1, promote b1, change
    the default through b1, start p1 again; p1 must step down and never overwrite a node.
    Returns the sha256 of the new default, which every node serves afterwards."""
    old = create_default(cluster, name="old")
    wait_served(cluster, old)
    epoch_before = cluster.state("p1").epoch
    assert cluster.stop("p1") == 0  # a graceful stop (SIGTERM)
    cli_ok(cluster, "promote", "b1")
    new = create_default(cluster, name="new", node="b1")
    survivors = ["b1", "t1", "t2"]
    wait_served(cluster, new, survivors)
    assert cluster.state("b1").epoch > epoch_before

    cluster.start("p1")

    def p1_converged() -> bool:
        # never overwritten: while the old primary comes back, the others keep serving new
        assert not not_serving(cluster, new, survivors), "the old primary overwrote a node"
        state = cluster.state("p1")
        return (state.epoch == cluster.state("b1").epoch and state.role != "primary"
                and not not_serving(cluster, new, ["p1"]))

    wait_until(p1_converged, what="old primary p1 stepped down and serves the new set")
    rows = wait_in_sync(cluster)
    assert rows["b1"]["role"] == "primary" and rows["p1"]["role"] != "primary"
    return new


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[MakeCluster]:
    """``make_cluster(sync_interval=..., traffic=...)``: a started cluster, stopped at the end
    of the test whatever happened."""
    require_tool("openssl", "needed to check what nodes serve; deploy/setup.sh installs it")
    made: list[LocalCluster] = []

    def make(*, sync_interval: int = 2, stale_after: int = 60,
             traffic: Sequence[tuple[str, str]] = TRAFFIC, backup: bool = True,
             env: dict[str, str] | None = None) -> LocalCluster:
        cluster = LocalCluster.create(
            tmp_path / f"c{len(made)}", site=SITE, primary=PRIMARY,
            backup=BACKUP if backup else None, traffic=traffic,
            sync_interval=sync_interval, stale_after=stale_after, env=env,
        )
        made.append(cluster)
        cluster.start_all()
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            cluster.stop_all()


@pytest.fixture
def cluster(make_cluster: MakeCluster) -> LocalCluster:
    """Primary p1, backup b1, traffic t1 and t2; anti-entropy every 2 s."""
    return make_cluster()
