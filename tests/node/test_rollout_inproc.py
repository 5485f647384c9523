"""Rollouts in one process (the three real nodes of ``test_replication_inproc``): staged
everywhere or activated nowhere, the canary first, a receiver that is not confirmed returns
to its previous set by itself, and ``rollback`` restores an earlier set everywhere.

Every check of what a node serves is a real TLS handshake; the primary's own endpoint counts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from pathlib import Path

import pytest

from node.api import certsync_pb2
from node.errors import ConfigError, NotFound
from sync.client import NodeClient
from sync.config import load_node_config
from tests import pki
from tests.node.test_replication_inproc import (
    NAMES,
    Cluster,
    _chain,
    _import,
    _served,
    _state,
    _wait_for,
    cluster,
    cluster_dir,
)

__all__ = ["cluster", "cluster_dir"]  # the fixtures, shared with the replication suite


_LATER = itertools.count(1)


def _newer() -> pki.Pki:
    """A chain whose leaf outlives every one made before it in this module, so SNI selection
    (the later not_after wins among equal names) prefers the newest everywhere."""
    return _chain(not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=90, hours=next(_LATER)))


async def _steps(c: Cluster, *, force: bool = False) -> list[certsync_pb2.ReplicateProgress]:
    async with c.client("p1") as cl:
        return [p async for p in cl.replicate((), force=force)]


def _summary(steps: list[certsync_pb2.ReplicateProgress]) -> certsync_pb2.ReplicateProgress:
    last = steps[-1]
    assert last.node == "" and last.HasField("rollout"), steps
    return last


async def _everyone_serves(c: Cluster, sha: str, nodes: tuple[str, ...] = NAMES) -> None:
    for n in nodes:
        assert await _served(c, n) == {sha}, f"{n} does not serve {sha[:12]}"


async def _rolled_out(c: Cluster) -> str:
    sha = await _import(c, _newer())
    assert _summary(await _steps(c)).rollout.state == "idle"
    await _everyone_serves(c, sha)
    return sha


async def test_a_stage_refused_by_one_receiver_leaves_every_node_on_the_old_set(
        cluster: Cluster) -> None:
    old = await _rolled_out(cluster)
    # t1's clock runs three days behind: the new certificate is not yet valid there
    cluster.nodes["t1"].clock.offset = -dt.timedelta(days=3)
    new = await _import(cluster, _newer())
    steps = await _steps(cluster)
    refused = [p for p in steps if p.state == "refused"]
    assert [p.node for p in refused] == ["t1"] and "not valid" in refused[0].message
    summary = _summary(steps)
    assert summary.rollout.state == "halted" and "'t1'" in summary.rollout.halted_reason
    assert not any(p.state == "in_sync" and p.revision == summary.revision for p in steps)
    # nobody activated it, the primary's own endpoint included
    await _everyone_serves(cluster, old)
    state = await _state(cluster, "p1")
    assert (state.rollout.state, state.rollout.revision) == ("halted", summary.revision)
    assert "'t1'" in state.rollout.halted_reason
    # the primary reports the set the cluster serves (the current one), as t1 does
    t1 = await _state(cluster, "t1")
    assert (state.revision, state.set_digest, state.default_sha256) == (
        t1.revision, t1.set_digest, old)
    assert state.revision < summary.revision
    # a background round does not retry a halted rollout (and keeps every node on old)
    assert all(p.revision != summary.revision or p.state != "in_sync"
               for p in await cluster.nodes["p1"].repl.replicator.round())
    await _everyone_serves(cluster, old)
    # the twin: t1's clock is right again, replicate retries, every node switches
    cluster.nodes["t1"].clock.offset = dt.timedelta()
    steps = await _steps(cluster)
    assert _summary(steps).rollout.state == "idle", steps
    await _everyone_serves(cluster, new)
    assert (await _state(cluster, "p1")).rollout.state == "idle"


async def test_a_canary_whose_probe_fails_returns_to_its_set_by_itself(
        cluster: Cluster) -> None:
    old = await _rolled_out(cluster)
    p1 = cluster.nodes["p1"].repl.replicator
    p1.confirm_within = 2.0  # seconds t1 waits for a Confirm before it reverts
    t1 = cluster.nodes["t1"]
    before = await _state(cluster, "t1")
    # t1 (the traffic node: the canary by default) stops answering TLS; gRPC still works
    await asyncio.to_thread(t1.app.endpoint.stop)
    await _import(cluster, _newer())
    steps = await _steps(cluster)
    summary = _summary(steps)
    assert summary.rollout.canary == "t1" and summary.rollout.state == "halted", steps
    assert "canary 't1'" in summary.rollout.halted_reason
    held = [p for p in steps if p.node == "b1"]
    assert [p.state for p in held] == ["staged", "held"], held
    # nobody else changed: b1 and the primary's own endpoint serve the old set
    await _everyone_serves(cluster, old, ("p1", "b1"))
    assert (await _state(cluster, "b1")).revision == before.revision
    # t1 had switched (its store holds the new set) and goes back by itself

    async def back() -> bool:
        state = await _state(cluster, "t1")
        return (state.revision, state.set_digest) == (before.revision, before.set_digest)

    await _wait_for(back, "t1 to return to its previous set by itself")
    audit = await t1.app.store.audit_log()
    assert any(e.action == "replication.reverted" for e in audit)


async def test_a_confirmed_activation_is_not_reverted(cluster: Cluster) -> None:
    # the twin of the canary test: with its endpoint up, t1 is confirmed and stays
    await _rolled_out(cluster)
    cluster.nodes["p1"].repl.replicator.confirm_within = 0.5
    new = await _rolled_out(cluster)
    replica = cluster.nodes["t1"].repl.replica
    assert replica.guard.pending is None  # confirmed: no revert is waiting
    await replica.load()  # nor after a restart
    assert replica.guard.pending is None
    await _everyone_serves(cluster, new)
    audit = await cluster.nodes["t1"].app.store.audit_log()
    assert not any(e.action == "replication.reverted" for e in audit)


async def test_a_canary_restarted_before_its_deadline_still_returns(cluster: Cluster) -> None:
    await _rolled_out(cluster)
    cluster.nodes["p1"].repl.replicator.confirm_within = 3.0
    t1 = cluster.nodes["t1"]
    before = await _state(cluster, "t1")
    await asyncio.to_thread(t1.app.endpoint.stop)
    await _import(cluster, _newer())
    assert _summary(await _steps(cluster)).rollout.state == "halted"
    assert (await _state(cluster, "t1")).revision != before.revision  # it had switched
    # the process dies: the waiting revert is gone from memory, not from the store
    t1.repl.replica.guard.cancel()
    assert t1.repl.replica.guard.pending is None
    await t1.repl.replica.load()  # what a restart does
    assert t1.repl.replica.guard.pending is not None

    async def back() -> bool:
        state = await _state(cluster, "t1")
        return (state.revision, state.set_digest) == (before.revision, before.set_digest)

    await _wait_for(back, "the restarted t1 to return to its previous set by itself")


async def test_rollback_restores_the_previous_default_everywhere(cluster: Cluster) -> None:
    first = await _rolled_out(cluster)
    first_revision = (await _state(cluster, "p1")).revision
    await _rolled_out(cluster)
    async with cluster.client("p1") as cl:
        # the negative twin first: a revision that is not kept changes nothing
        with pytest.raises(NotFound, match="is kept on this node"):
            await cl.rollback(999)
        answer = await cl.rollback()
    assert answer.restored_revision == first_revision and answer.default_sha256 == first
    assert answer.revision > first_revision
    assert _summary(await _steps(cluster)).rollout.state == "idle"
    await _everyone_serves(cluster, first)
    states = [await _state(cluster, n) for n in NAMES]
    assert {s.revision for s in states} == {answer.revision}
    audit = await cluster.nodes["p1"].app.store.audit_log()
    assert any(e.action == "rollout.rollback" for e in audit)


async def test_every_node_keeps_its_previous_sets(cluster: Cluster) -> None:
    for _ in range(4):
        await _rolled_out(cluster)
    for n in NAMES:
        history = await cluster.nodes[n].app.store.history()
        assert len(history) >= 4, (n, history)
        revisions = [h.revision for h in history]
        assert revisions == sorted(revisions, reverse=True)


async def test_the_canary_is_a_traffic_node_unless_the_config_names_one(
        cluster: Cluster) -> None:
    await _import(cluster, _newer())
    assert _summary(await _steps(cluster)).rollout.canary == "t1"  # the traffic node
    cluster.nodes["p1"].repl.replicator.canary_name = "b1"  # rollout_canary = "b1"
    await _import(cluster, _newer())
    steps = await _steps(cluster)
    assert _summary(steps).rollout.canary == "b1"
    # the canary's step comes before every other node activates
    activated = [p.node for p in steps if p.state == "in_sync"]
    assert activated[0] == "b1" and activated[-1] == "p1", activated


@pytest.mark.parametrize(("line", "canary"), [('rollout_canary = "b1"', "b1"), ("", None)])
def test_rollout_canary_is_read_from_node_toml(cluster_dir: Path, line: str,
                                               canary: str | None) -> None:
    path = cluster_dir / "p1" / "node-canary.toml"
    path.write_text(f"{line}\n" + (cluster_dir / "p1" / "node.toml").read_text())
    assert load_node_config(path).rollout_canary == canary


def test_a_rollout_canary_that_is_not_a_node_is_refused(cluster_dir: Path) -> None:
    path = cluster_dir / "p1" / "node-canary.toml"
    path.write_text('rollout_canary = "x9"\n' + (cluster_dir / "p1" / "node.toml").read_text())
    with pytest.raises(ConfigError, match="rollout_canary 'x9' is not a node"):
        load_node_config(path)


async def test_rounds_ask_only_what_they_must(cluster: Cluster,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """After a rollout confirmed everywhere, a round woken by a change asks nobody's state
    (that is N calls per change for nothing), the period's round asks everyone, and a node
    that failed since is asked and pushed again. A rollout's staging asks each node's state
    once, also a node it saw serving (one that died since must fail fast, see
    test_a_receiver_that_stops_answering_does_not_hold_the_rollout)."""
    asked: list[str] = []
    get_state = NodeClient.get_state

    async def counted(self: NodeClient) -> certsync_pb2.NodeState:
        asked.append(self.target.name)
        return await get_state(self)

    monkeypatch.setattr(NodeClient, "get_state", counted)
    await _rolled_out(cluster)
    sha = await _import(cluster, _newer())
    asked.clear()
    assert _summary(await _steps(cluster)).rollout.state == "idle"
    assert asked.count("t1") == 1, asked  # staging's; (b1 is also asked for the CSR pair)
    p1 = cluster.nodes["p1"].repl.replicator
    asked.clear()
    woken = await p1.round(woken=True)
    assert sorted(p.node for p in woken if p.in_sync) == ["b1", "t1"]
    assert "t1" not in asked
    # the period's round asks every node
    asked.clear()
    assert all(p.in_sync for p in await p1.round())
    assert {"b1", "t1"} <= set(asked)
    # t1 failed since (or was restored): a woken round asks it, and it still serves
    p1.forget("t1")
    asked.clear()
    assert all(p.in_sync for p in await p1.round(woken=True))
    assert "t1" in asked
    await _everyone_serves(cluster, sha)


async def test_a_receiver_that_stops_answering_does_not_hold_the_rollout(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """t1 served the last rollout, then stops answering (a killed host sends no reset, so
    calls hang rather than fail): the next rollout gives up on it within the reach timeout
    and goes on with the others. The twin: the same rollout with t1 answering reaches it."""
    await _rolled_out(cluster)
    p1 = cluster.nodes["p1"].repl.replicator
    p1.reach_timeout = 0.5
    hung = asyncio.Event()  # never set

    def hanging(method_name: str) -> object:
        real = getattr(NodeClient, method_name)

        async def call(self: NodeClient, *args: object, **kwargs: object) -> object:
            if self.target.name == "t1":
                await hung.wait()
            return await real(self, *args, **kwargs)

        return call

    for method in ("get_state", "stage", "activate", "confirm"):
        monkeypatch.setattr(NodeClient, method, hanging(method))
    sha = await _import(cluster, _newer())
    async with asyncio.timeout(20):  # the RPC timeout is 30 s: waiting on t1 fails here
        steps = await _steps(cluster)
    t1 = [s for s in steps if s.node == "t1"]
    assert t1 and not t1[-1].in_sync and t1[-1].state == "unreachable", t1
    await _everyone_serves(cluster, sha, ("p1", "b1"))
    # the twin: t1 answers again, and the next rollout reaches it
    monkeypatch.undo()
    sha = await _import(cluster, _newer())
    steps = await _steps(cluster)
    assert [s.in_sync for s in steps if s.node == "t1"][-1:] == [True], steps
    await _everyone_serves(cluster, sha)
