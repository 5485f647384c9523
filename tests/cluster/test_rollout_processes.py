"""Rollouts with every node a real ``certsync node serve`` process on loopback, through the
CLI: a canary the primary cannot probe returns to its set by itself while no other node
changes, and ``rollback`` restores the previous default everywhere (openssl's word).

The in-process twins (a stage refused by a receiver whose clock is behind, a confirmed
canary that stays) are in tests/node/test_rollout_inproc.py.
"""

from __future__ import annotations

import json
import tomllib

import tomli_w

from node.errors import NodeUnreachable
from sync.localcluster import LocalCluster, free_port_range
from tests.cluster.conftest import (
    COVERING,
    TRAFFIC,
    MakeCluster,
    assert_openssl_sees,
    cli_ok,
    create_default,
    not_serving,
    wait_served,
    wait_until,
)


def _move_tls_port(cluster: LocalCluster, node: str) -> None:
    """Restart ``node`` serving TLS on another port than the one cluster.toml publishes:
    for the primary, the node's TLS port is blocked (gRPC still answers)."""
    assert cluster.stop(node) == 0
    path = cluster.node_toml(node)
    config = tomllib.loads(path.read_text())
    host = config["tls_listen"].rpartition(":")[0]
    config["tls_listen"] = f"{host}:{free_port_range(1)}"
    path.write_text(tomli_w.dumps(config))
    cluster.start(node)


def test_a_canary_whose_tls_port_is_blocked_returns_by_itself(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(traffic=TRAFFIC[:1])  # p1, b1 and t1, the canary
    old = create_default(cluster, name="old")
    wait_served(cluster, old)
    before = cluster.state("t1")
    _move_tls_port(cluster, "t1")
    create_default(cluster, name="new")
    proc = cluster.cli("replicate")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "halted" in proc.stdout and "canary 't1'" in proc.stdout, proc.stdout
    # no other node changed: b1 and the primary's own endpoint still serve the old set
    assert not not_serving(cluster, old, ["p1", "b1"])
    assert_openssl_sees(cluster, old, ["p1", "b1"])
    report = json.loads(cluster.cli("status", "--json").stdout)
    assert report["rollout"]["state"] == "halted" and report["rollout"]["canary"] == "t1"
    assert "t1" in report["rollout"]["halted_reason"]
    # b1 serves what the cluster serves (the current set): in sync with the primary
    rows = {row["name"]: row for row in report["nodes"]}
    assert rows["b1"]["in_sync"] is True and rows["b1"]["default_sha256"] == old, rows["b1"]
    # t1 switched, was never confirmed, and goes back by itself

    def back() -> bool:
        try:
            state = cluster.state("t1")
        except NodeUnreachable:  # busy for a moment on a loaded machine: ask again
            return False
        return (state.revision, state.set_digest) == (before.revision, before.set_digest)

    wait_until(back, what="t1 back on its previous set by itself")
    assert not not_serving(cluster, old, ["p1", "b1"])
    # a restarted primary still serves the current set, not its proposal, and the rollout
    # stays halted (no background retry) until replicate
    assert cluster.stop("p1") == 0
    cluster.start("p1")
    assert not not_serving(cluster, old, ["p1", "b1"])
    report = json.loads(cluster.cli("status", "--json").stdout)
    assert report["rollout"]["state"] == "halted", report["rollout"]
    assert back()


def test_rollback_restores_the_previous_default_everywhere(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    old = create_default(cluster, name="old")
    wait_served(cluster, old)
    new = create_default(cluster, name="new")
    wait_served(cluster, new)
    # the negative twin: a revision that is not kept is bad input, and nothing changes
    proc = cluster.cli("rollback", "--to", "999")
    assert proc.returncode == 2 and proc.stderr.startswith("certsync: error:"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not not_serving(cluster, new, list(cluster.names))
    out = json.loads(cli_ok(cluster, "rollback", "--json"))
    assert out["default_sha256"] == old and out["all_in_sync"] is True, out
    assert out["rollout"]["state"] == "idle" and out["rollout"]["revision"] == out["revision"]
    # every receiver (and the primary's own switch when this call ran the rollout itself,
    # rather than the background round the rollback woke)
    assert {n["name"] for n in out["nodes"]} >= set(cluster.names) - {"p1"}
    wait_served(cluster, old)
    assert_openssl_sees(cluster, old)
    report = json.loads(cli_ok(cluster, "status", "--json"))
    assert report["rollout"]["state"] == "idle"
    assert {row["default_sha256"] for row in report["nodes"]} == {old}


def test_a_change_with_wait_returns_once_every_node_serves_it(make_cluster: MakeCluster) -> None:
    """``--wait``: when the command returns, every node (the primary's endpoint last) serves
    the change; the twin: a rollout that halts at its canary makes the same command exit 1,
    saying why on stderr, with stdout still the command's own answer."""
    cluster = make_cluster(traffic=TRAFFIC[:1])
    old = create_default(cluster, name="old")
    wait_served(cluster, old)
    sans = [arg for san in COVERING for arg in ("--san", san)]
    proc = cluster.cli("cert", "create-self-signed", "--name", "waited", "--key", "ec-p256",
                       "--cn", COVERING[0], *sans, "--days", "500", "--default", "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    new = proc.stdout.strip()
    assert len(new) == 64, proc.stdout
    assert not_serving(cluster, new, list(cluster.names)) == []  # no wait needed: done
    # twin: the canary's TLS port cannot be reached, so the rollout halts there
    _move_tls_port(cluster, "t1")
    proc = cluster.cli("cert", "default", old, "--confirm-ca-change", "--wait")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert "halted" in proc.stderr and "t1" in proc.stderr, proc.stderr
    assert not not_serving(cluster, new, ["p1", "b1"])  # nobody else switched
