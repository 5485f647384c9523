"""Replication in one process: three real nodes (store, TLS endpoint, gRPC server with mTLS
each, material from ``cluster init``), pushes over real gRPC, "in sync" proven by real TLS
handshakes. Each node has its own clock so dates can move between stage and activate.

Multi-process clusters and the CLI are tested elsewhere (tests/cluster).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from node.api import certsync_pb2
from node.app import NodeApp
from node.errors import (
    CoverageError,
    NodeUnreachable,
    PermissionDenied,
    StaleEpoch,
    TransferRejected,
)
from node.formats import cert_sha256
from node.rpc import server_credentials, start_grpc_server
from node.service import CertStoreService
from node.store import Store
from node.store_view import SetEntry
from node.tls import TlsEndpoint
from sync.client import NodeClient, NodeTarget
from sync.cluster_init import init_cluster, plan_init
from sync.config import NodeConfig, load_node_config, load_store_key
from sync.daemon import Replication, cluster_of, wire_replication
from sync.probe import served_sha256
from sync.promotion import sign_promotion
from sync.receiver import describe_promotion, promotion_from_msg, promotion_to_msg
from sync.replicator import Peer
from sync.rollout_shell import selection_of
from tests import pki

SITE = "support.example.com"
NAMES = ("p1", "b1", "t1")
REQUIRED = (SITE, "p1.example.com", "b1.example.com", "t1.example.com")
DEADLINE = 30.0


class Clock:
    """A node's clock: real time plus an offset the test can move."""

    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset


@dataclass
class Node:
    name: str
    config: NodeConfig
    app: NodeApp
    repl: Replication
    clock: Clock
    grpc_port: int = 0
    tls_port: int = 0
    server: Any = None
    loop_task: asyncio.Task[None] | None = None

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def tls(self) -> str:
        return f"127.0.0.1:{self.tls_port}"


@dataclass
class Cluster:
    directory: Path
    nodes: dict[str, Node] = field(default_factory=dict)

    def client(self, node: str, *, who: str = "admin") -> NodeClient:
        d = self.directory
        cert, key = ((d / "admin.pem", d / "admin-key.pem") if who == "admin"
                     else (d / who / "node.pem", d / who / "node-key.pem"))
        target = NodeTarget.from_files(name=node, address=self.nodes[node].grpc,
                                       ca_cert=d / "ca.pem", cert=cert, key=key)
        return NodeClient(target, timeout=20)

    def start_loops(self) -> None:
        for n in self.nodes.values():
            n.loop_task = asyncio.create_task(n.repl.replicator.run())

    async def call(self, node: str, fn: Callable[[NodeClient], Awaitable[Any]],
                   *, who: str = "admin") -> Any:
        async with self.client(node, who=who) as c:
            return await fn(c)


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("repl") / "c"
    req = plan_init(d, site=SITE, primary="p1=p1.example.com", backup="b1=b1.example.com",
                    traffic=["t1=t1.example.com"], sync_interval_seconds=1)
    init_cluster(req, now=dt.datetime.now(dt.UTC))
    return d


@pytest.fixture
async def cluster(cluster_dir: Path, tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(cluster_dir)
    peers: dict[str, Peer] = {}
    stores: list[Store] = []
    try:
        for name in NAMES:
            config = load_node_config(cluster_dir / name / "node.toml")
            store = await Store.open(tmp_path / f"{name}.sqlite3",
                                     load_store_key(config.store_key_path))
            stores.append(store)
            endpoint = TlsEndpoint(node_name=name, workers=2)
            clock = Clock()
            app = NodeApp(name=name, cluster=cluster_of(config.topology, name), store=store,
                          endpoint=endpoint, clock=clock)
            tls_port = endpoint.start("127.0.0.1", 0)
            await app.refresh()
            ca, cert, key = (config.ca_cert_path.read_bytes(), config.cert_path.read_bytes(),
                             config.key_path.read_bytes())
            store_service = CertStoreService(app, describe=describe_promotion)
            repl = await wire_replication(app, topology=config.topology, ca_pem=ca,
                                          cert_pem=cert, key_pem=key,
                                          state=store_service.node_state, peers=peers,
                                          interval=1.0)
            server, port = await start_grpc_server(
                store_service, address="127.0.0.1:0",
                credentials=server_credentials(ca_pem=ca, cert_pem=cert, key_pem=key),
                replication=repl.service)
            node = Node(name, config, app, repl, clock, port, tls_port, server)
            c.nodes[name] = node
            public = x509.load_pem_x509_certificate(cert).public_key()
            assert isinstance(public, ec.EllipticCurvePublicKey)
            peers[name] = Peer(name, node.grpc, node.tls, public)
        yield c
    finally:
        for n in c.nodes.values():
            n.repl.replicator.stop()
            if n.loop_task is not None:
                await asyncio.wait_for(n.loop_task, DEADLINE)
            await n.repl.replicator.close()
        for n in c.nodes.values():
            await n.server.stop(None)
            n.app.endpoint.stop()
        for s in stores:
            await s.close()


# --------------------------------------------------------------------------- helpers


def _pem(p: pki.Pki) -> bytes:
    return pki.pem_bundle(p.leaf.cert, *p.chain, key=p.leaf.key)


def _chain(sans: tuple[str, ...] = (SITE, "*.example.com"), *,
           not_after: dt.datetime | None = None) -> pki.Pki:
    now = dt.datetime.now(dt.UTC)
    return pki.make_chain(sans=sans, not_before=now - dt.timedelta(days=1),
                          not_after=not_after or now + dt.timedelta(days=90))


async def _import(c: Cluster, p: pki.Pki, node: str = "p1", *, force: bool = False) -> str:
    resp = await c.call(node, lambda cl: cl.import_files([("chain.pem", _pem(p))],
                                                         make_default=True, force=force))
    sha: str = resp.identity_sha256
    assert sha == cert_sha256(p.leaf.cert)
    return sha


async def _served(c: Cluster, node: str) -> set[str]:
    """What ``node`` serves for every required name and without SNI (real handshakes)."""
    return set((await _served_map(c, node)).values())


async def _served_map(c: Cluster, node: str) -> dict[str | None, str]:
    return {n: await served_sha256(c.nodes[node].tls, n, timeout=5) for n in (*REQUIRED, None)}


async def _wait_for(cond: Callable[[], Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while not await cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _replicate(c: Cluster, *, nodes: tuple[str, ...] = (), force: bool = False,
                     who: str = "admin", at: str = "p1") -> list[certsync_pb2.ReplicateProgress]:
    """The last progress of each other node (a rollout reports every step of each node,
    then its own switch and a summary without a node)."""
    async with c.client(at, who=who) as cl:
        steps = [p async for p in cl.replicate(nodes, force=force)]
    final = {p.node: p for p in steps if p.node not in ("", at)}
    return list(final.values())


async def _state(c: Cluster, node: str) -> certsync_pb2.NodeState:
    result: certsync_pb2.NodeState = await c.call(node, lambda cl: cl.get_state())
    return result


# --------------------------------------------------------------------------- tests


async def test_import_on_the_primary_is_served_by_every_node(cluster: Cluster) -> None:
    cluster.start_loops()
    p = _chain()
    sha = await _import(cluster, p)

    async def everyone_serves_it() -> bool:
        try:
            served = [await _served(cluster, n) for n in NAMES]
        except NodeUnreachable:
            return False
        return served == [{sha}] * len(NAMES)

    await _wait_for(everyone_serves_it, "every node to serve the imported certificate")
    states = [await _state(cluster, n) for n in NAMES]
    assert {(s.epoch, s.revision, s.set_digest) for s in states} == {
        (states[0].epoch, states[0].revision, states[0].set_digest)}
    assert [s.role for s in states] == ["primary", "backup", "traffic"]

    async def confirmed() -> bool:
        states = [await _state(cluster, n) for n in ("b1", "t1")]
        return all(s.last_sync for s in states)

    await _wait_for(confirmed, "the primary to confirm both nodes")


async def test_an_empty_primary_pushes_nothing(cluster: Cluster) -> None:
    # the negative twin: nothing imported, so no default covers anything and nothing moves
    before = await _state(cluster, "t1")
    with pytest.raises(CoverageError, match=SITE):
        await _replicate(cluster)
    after = await _state(cluster, "t1")
    assert (after.revision, after.set_digest) == (before.revision, before.set_digest)


async def test_replicate_reports_each_node_in_sync(cluster: Cluster) -> None:
    sha = await _import(cluster, _chain())
    progress = await _replicate(cluster)
    assert sorted(p.node for p in progress) == ["b1", "t1"]
    assert all(p.in_sync and p.state == "in_sync" for p in progress), progress
    for n in ("b1", "t1"):
        assert await _served(cluster, n) == {sha}
    # named nodes only
    only = await _replicate(cluster, nodes=("t1",))
    assert [p.node for p in only] == ["t1"] and only[0].in_sync


async def test_concurrent_replicates_make_one_revision(cluster: Cluster) -> None:
    cluster.start_loops()
    await _import(cluster, _chain())
    revision = (await _state(cluster, "p1")).revision
    results = await asyncio.gather(*(_replicate(cluster) for _ in range(4)))
    assert all(p.in_sync for r in results for p in r)
    states = [await _state(cluster, n) for n in NAMES]
    assert {s.revision for s in states} == {revision}
    assert len({s.set_digest for s in states}) == 1


def _primary_map(c: Cluster) -> dict[str | None, str | None]:
    """What the primary itself selects for every required name and without SNI."""
    app = c.nodes["p1"].app
    return {n: app.served_for(n).key for n in (*REQUIRED, None)}


async def test_coverage_gate_refuses_at_the_change_and_force_pushes_everywhere(
        cluster: Cluster) -> None:
    """An import --default leaving names uncovered is refused at the change (exit 1, the
    names and their nodes listed) and nothing moves; forced, it is audited with the checks it
    overrode and pushed forced to every node, which records it."""
    await _import(cluster, _chain())
    assert all(p.in_sync for p in await _replicate(cluster))
    good = _primary_map(cluster)
    narrow = _chain((SITE,))
    with pytest.raises(CoverageError) as err:
        await _import(cluster, narrow)
    assert err.value.exit_code == 1
    message = str(err.value)
    assert "p1.example.com (node p1)" in message and "t1.example.com (node t1)" in message
    assert SITE not in message.split("covering", 1)[1]  # the covered site is not listed
    assert _primary_map(cluster) == good  # the primary's own endpoint did not move
    for n in ("b1", "t1"):
        assert await _served_map(cluster, n) == good
    listed = {c.sha256 for c in await cluster.call("p1", lambda cl: cl.list_certificates())}
    assert cert_sha256(narrow.leaf.cert) not in listed
    # forced: applied, audited (every check named), then pushed forced by the loop itself
    sha = await _import(cluster, narrow, force=True)
    cluster.start_loops()
    # a rollout: the primary's own endpoint switches last, once every node serves it
    for n in ("b1", "t1", "p1"):
        async def serving(node: str = n) -> bool:
            return (await _served_map(cluster, node))[None] == sha
        await _wait_for(serving, f"{n} serving the forced default")
    forced = [e for e in await cluster.nodes["p1"].app.store.audit_log()
              if e.action == "change.forced"]
    assert forced and forced[0].detail["overrode"] == ["coverage"]
    assert set(forced[0].detail["uncovered"]) == {"p1.example.com", "b1.example.com",
                                                   "t1.example.com"}
    for n in ("b1", "t1"):
        assert any(e.action == "replication.forced"
                   for e in await cluster.nodes[n].app.store.audit_log())


async def test_replicate_without_force_is_still_gated(cluster: Cluster) -> None:
    """Twin: a set whose default leaves names uncovered (forced past the gate here by writing
    the store directly, as an older node could have) is not pushed without --force."""
    await _import(cluster, _chain())
    assert all(p.in_sync for p in await _replicate(cluster))
    narrow = _chain((SITE,))
    app = cluster.nodes["p1"].app
    await app.store.add([SetEntry(cert=narrow.leaf.cert, key=narrow.leaf.key, name="n")],
                        make_default=cert_sha256(narrow.leaf.cert), actor="test",
                        now=dt.datetime.now(dt.UTC))
    await app.refresh()
    with structlog.testing.capture_logs() as logs:
        with pytest.raises(CoverageError):
            await _replicate(cluster)
        await cluster.nodes["p1"].repl.replicator.round()
    assert any(e["event"] == "replication.blocked" for e in logs)
    assert all(p.in_sync for p in await _replicate(cluster, force=True))


@pytest.mark.parametrize(
    ("who", "node", "call"),
    [
        ("t1", "b1", "stage"),
        ("t1", "p1", "replicate"),
        ("t1", "b1", "promote"),
        ("b1", "t1", "stage"),  # the backup is not the primary either
        ("admin", "t1", "stage"),  # an admin does not push sets by hand
    ],
)
async def test_non_primary_identities_are_refused(cluster: Cluster, who: str, node: str,
                                                  call: str) -> None:
    await _import(cluster, _chain())
    before = await _state(cluster, node)
    p1 = cluster.nodes["p1"].repl.replicator
    snap = await p1.snapshot()
    request = await p1.stage_request(node, snap)
    request.sender = who
    request.promotion.primary = who
    admin = _admin_promotion(cluster, epoch=5, primary="b1")
    with pytest.raises(PermissionDenied):
        if call == "stage":
            await cluster.call(node, lambda cl: cl.stage(request), who=who)
        elif call == "replicate":
            await _replicate(cluster, who=who, at=node)
        else:
            await cluster.call(node, lambda cl: cl.promote(admin), who=who)
    after = await _state(cluster, node)
    assert (after.epoch, after.set_digest) == (before.epoch, before.set_digest)
    audit = await cluster.nodes[node].app.store.audit_log()
    assert any(e.actor.endswith(f":{who}") and "refused" in e.action for e in audit)


async def test_primary_identity_may_stage(cluster: Cluster) -> None:
    # the positive twin of the table above: the same request from the primary is accepted
    await _import(cluster, _chain())
    p1 = cluster.nodes["p1"].repl.replicator
    snap = await p1.snapshot()
    request = await p1.stage_request("b1", snap)
    staged = await cluster.call("b1", lambda cl: cl.stage(request), who="p1")
    assert staged.set_digest == snap.digest


@pytest.mark.parametrize("how", ["replayed-old-revision", "misdirected", "altered"])
async def test_replayed_or_misdirected_blobs_are_refused(cluster: Cluster, how: str) -> None:
    await _import(cluster, _chain())
    assert all(p.in_sync for p in await _replicate(cluster))
    p1 = cluster.nodes["p1"].repl.replicator
    old_snap = await p1.snapshot()
    old_for_t1 = await p1.stage_request("t1", old_snap)
    old_for_b1 = await p1.stage_request("b1", old_snap)
    await _import(cluster, _chain())
    assert all(p.in_sync for p in await _replicate(cluster))
    current = _primary_map(cluster)
    new_snap = await p1.snapshot()
    assert new_snap.revision > old_snap.revision
    if how == "replayed-old-revision":
        request = old_for_t1  # the whole old request again
    elif how == "misdirected":
        request = certsync_pb2.StageRequest()
        request.CopyFrom(old_for_b1)  # blobs for b1 ...
        request.revision = new_snap.revision  # ... even with a fresh revision
    else:
        request = certsync_pb2.StageRequest()
        request.CopyFrom(old_for_t1)
        request.revision = new_snap.revision  # blob bound to the old revision
    with pytest.raises(TransferRejected):
        await cluster.call("t1", lambda cl: cl.stage(request), who="p1")
    assert await _served_map(cluster, "t1") == current
    state = await _state(cluster, "t1")
    assert (state.revision, state.set_digest) == (new_snap.revision, new_snap.digest)


async def test_expired_between_stage_and_activate_is_never_activated(cluster: Cluster) -> None:
    await _import(cluster, _chain())
    assert all(p.in_sync for p in await _replicate(cluster))
    before = _primary_map(cluster)
    short = _chain(not_after=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    await _import(cluster, short)
    p1 = cluster.nodes["p1"].repl.replicator
    snap = await p1.snapshot()
    request = await p1.stage_request("t1", snap)
    staged = await cluster.call("t1", lambda cl: cl.stage(request), who="p1")
    assert staged.set_digest == snap.digest
    cluster.nodes["t1"].clock.offset = dt.timedelta(hours=2)
    with pytest.raises(TransferRejected, match="not valid"):
        await cluster.call("t1", lambda cl: cl.activate(
            epoch=snap.epoch, revision=snap.revision, set_digest=snap.digest), who="p1")
    assert await _served_map(cluster, "t1") == before
    # the twin: the same set activates on a node whose clock did not move
    request_b1 = await p1.stage_request("b1", snap)
    await cluster.call("b1", lambda cl: cl.stage(request_b1), who="p1")
    await cluster.call("b1", lambda cl: cl.activate(
        epoch=snap.epoch, revision=snap.revision, set_digest=snap.digest), who="p1")
    served = await _served_map(cluster, "b1")
    # the primary's own endpoint stays on the current set until a rollout completes
    assert served == {n: selection_of(snap, n).key for n in (*REQUIRED, None)}
    assert served != before
    assert served[None] == cert_sha256(short.leaf.cert)
    # activating again is a no-op (idempotent); the answer names the set activated
    again = await cluster.call("b1", lambda cl: cl.activate(
        epoch=snap.epoch, revision=snap.revision, set_digest=snap.digest), who="p1")
    assert (again.name, again.epoch, again.revision, again.set_digest, again.primary) == (
        "b1", snap.epoch, snap.revision, snap.digest, "p1")
    stored = await _state(cluster, "b1")
    assert (stored.revision, stored.set_digest) == (again.revision, again.set_digest)


def _admin_promotion(c: Cluster, *, epoch: int, primary: str) -> certsync_pb2.Promotion:
    d = c.directory
    key = serialization.load_pem_private_key((d / "admin-key.pem").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    topology = c.nodes["p1"].config.topology
    return promotion_to_msg(sign_promotion(
        cluster_id=topology.cluster_id, epoch=epoch, primary=primary,
        admin_cert=x509.load_pem_x509_certificate((d / "admin.pem").read_bytes()),
        admin_key=key))


async def test_promote_fences_the_old_primary_which_steps_down(cluster: Cluster) -> None:
    shared = await _import(cluster, _chain())
    assert all(p.in_sync for p in await _replicate(cluster))
    # p1 is cut off; the admin promotes b1 and tells t1
    promotion = _admin_promotion(cluster, epoch=2, primary="b1")
    state = await cluster.call("b1", lambda cl: cl.promote(promotion))
    assert (state.role, state.epoch) == ("primary", 2)
    await cluster.call("t1", lambda cl: cl.announce(promotion))
    assert (await _state(cluster, "t1")).primary == "b1"
    # p1 still believes it is primary at epoch 1 and gets a new certificate
    assert cluster.nodes["p1"].repl.replica.is_primary
    stale = await _import(cluster, _chain())
    p1 = cluster.nodes["p1"].repl.replicator
    snap = await p1.snapshot()
    request = await p1.stage_request("t1", snap)
    with pytest.raises(StaleEpoch):
        await cluster.call("t1", lambda cl: cl.stage(request), who="p1")
    assert await _served(cluster, "t1") == {shared}
    assert any(e.action == "replication.refused" and e.actor == "node:p1"
               for e in await cluster.nodes["t1"].app.store.audit_log())
    # p1's next push sees the higher epoch, verifies it, and steps down
    progress = await p1.push("t1")
    assert progress.state == "fenced"
    replica = cluster.nodes["p1"].repl.replica
    assert (replica.epoch, replica.primary, replica.role) == (2, "b1", "backup")
    assert await _served(cluster, "t1") == {shared}
    # the new primary syncs the former one back to its set
    b1_progress = await _replicate(cluster, at="b1")
    assert all(p.in_sync for p in b1_progress), b1_progress
    assert await _served(cluster, "p1") == {shared} != {stale}
    # and the former primary may no longer be asked to replicate
    with pytest.raises(Exception, match="not the primary"):
        await _replicate(cluster, at="p1")


async def test_a_forged_promotion_is_refused(cluster: Cluster) -> None:
    promotion = _admin_promotion(cluster, epoch=2, primary="b1")
    promotion.primary = "t1"  # altered after signing
    with pytest.raises(PermissionDenied):
        await cluster.call("t1", lambda cl: cl.announce(promotion))
    assert (await _state(cluster, "t1")).epoch == 1


async def test_a_push_resends_only_what_the_node_lacks(cluster: Cluster) -> None:
    first = await _import(cluster, _chain())
    assert all(p.in_sync for p in await _replicate(cluster))
    assert set((await _state(cluster, "t1")).held_sha256) == {first}
    second = await _import(cluster, _chain())
    p1 = cluster.nodes["p1"].repl.replicator
    snap = await p1.snapshot()
    request = await p1.stage_request("t1", snap, held=frozenset({first}))
    assert [k.sha256 for k in request.kept] == [first]
    assert len(request.items) == 1  # only the new certificate travels
    staged = await cluster.call("t1", lambda cl: cl.stage(request), who="p1")
    assert staged.set_digest == snap.digest  # the receiver rebuilt the whole set
    assert all(p.in_sync for p in await _replicate(cluster))
    assert set((await _state(cluster, "t1")).held_sha256) == {first, second}
    assert await _served_map(cluster, "t1") == _primary_map(cluster)
    assert (await _state(cluster, "t1")).default_sha256 == second


async def test_a_node_missing_a_kept_item_refuses_and_gets_everything(cluster: Cluster) -> None:
    # negative twin: the primary believes t1 holds a certificate it does not
    first = await _import(cluster, _chain())
    assert all(p.in_sync for p in await _replicate(cluster))
    p1 = cluster.nodes["p1"].repl.replicator
    snap = await p1.snapshot()
    bogus = "0" * 64
    request = await p1.stage_request("t1", snap, held=frozenset({first}))
    request.kept.append(certsync_pb2.KeptItem(sha256=bogus, name="ghost"))
    with pytest.raises(TransferRejected, match="does not hold"):
        await cluster.call("t1", lambda cl: cl.stage(request), who="p1")
    # the replicator's own record going wrong is repaired: it asks, then pushes whole
    second = await _import(cluster, _chain())
    p1._held["t1"] = frozenset({bogus})  # simulate a stale record of what t1 holds
    assert all(p.in_sync for p in await _replicate(cluster))
    assert await _served_map(cluster, "t1") == _primary_map(cluster)
    assert (await _state(cluster, "t1")).default_sha256 == second


# --------------------------------------------------------------------------- fencing by epoch


async def _fence_t1(c: Cluster, *, epochs: tuple[int, ...]) -> None:
    """The admin promotes b1 through ``epochs`` and tells t1 each time."""
    for epoch in epochs:
        promotion = _admin_promotion(c, epoch=epoch, primary="b1")
        async with c.client("b1") as cl:
            await cl.promote(promotion)
        async with c.client("t1") as cl:
            await cl.announce(promotion)
    state = await _state(c, "t1")
    assert (state.epoch, state.primary) == (epochs[-1], "b1")


@pytest.mark.parametrize("gap", ["initial", "signed"])
async def test_a_lower_epoch_announce_is_refused(cluster: Cluster, gap: str) -> None:
    """t1 at epoch 2 (primary b1) is told of p1's epoch-1 promotion again (or, at epoch 3, of
    an admin-signed epoch-2 one): it keeps the higher epoch and refuses the old primary."""
    if gap == "initial":
        await _fence_t1(cluster, epochs=(2,))
        old = promotion_to_msg(cluster.nodes["p1"].repl.replica.promotion)
        assert (old.epoch, old.primary) == (1, "p1")
    else:
        await _fence_t1(cluster, epochs=(2, 3))
        old = _admin_promotion(cluster, epoch=2, primary="p1")
    high = (await _state(cluster, "t1")).epoch
    state = await cluster.call("t1", lambda cl: cl.announce(old))
    assert (state.epoch, state.primary) == (high, "b1")
    replica = cluster.nodes["t1"].repl.replica
    assert await replica.adopt(promotion_from_msg(old), actor="admin:test") is False
    assert (replica.epoch, replica.primary) == (high, "b1")
    assert (await _state(cluster, "t1")).epoch == high  # nor was it stored


async def test_a_higher_epoch_announce_is_adopted(cluster: Cluster) -> None:
    """The twin: the next epoch, for any node of the topology, is adopted and stored."""
    await _fence_t1(cluster, epochs=(2,))
    state = await cluster.call(
        "t1", lambda cl: cl.announce(_admin_promotion(cluster, epoch=3, primary="p1")))
    assert (state.epoch, state.primary) == (3, "p1")
    replica = cluster.nodes["t1"].repl.replica
    assert (replica.epoch, replica.primary, replica.role) == (3, "p1", "traffic")
    meta = (await cluster.nodes["t1"].app.store.view()).meta
    assert (meta["epoch"], meta["primary"]) == ("3", "p1")


@pytest.mark.parametrize("call", ["stage", "activate", "confirm"])
async def test_each_push_step_one_epoch_behind_is_stale(cluster: Cluster, call: str) -> None:
    """p1 pushes at epoch 1 to t1 at epoch 2: every step is refused as a stale epoch (not as a
    plain permission error), with both epochs on the error, and t1 is unchanged."""
    shared = await _import(cluster, _chain())
    assert all(p.in_sync for p in await _replicate(cluster))
    await _fence_t1(cluster, epochs=(2,))
    await _import(cluster, _chain())
    p1 = cluster.nodes["p1"].repl.replicator
    snap = await p1.snapshot()
    assert snap.epoch == 1
    request = await p1.stage_request("t1", snap)
    with pytest.raises(StaleEpoch, match="at epoch 1, but this node is at epoch 2") as info:
        if call == "stage":
            await cluster.call("t1", lambda cl: cl.stage(request), who="p1")
        elif call == "activate":
            await cluster.call("t1", lambda cl: cl.activate(
                epoch=snap.epoch, revision=snap.revision, set_digest=snap.digest), who="p1")
        else:
            await cluster.call("t1", lambda cl: cl.confirm(
                epoch=snap.epoch, revision=snap.revision, set_digest=snap.digest), who="p1")
    assert "primary 'b1'" in str(info.value)
    assert await _served(cluster, "t1") == {shared}
    assert (await _state(cluster, "t1")).epoch == 2


async def test_a_push_at_the_current_epoch_from_its_primary_is_accepted(
    cluster: Cluster,
) -> None:
    """The twin: after the fence, b1 (primary of epoch 2) stages and activates on t1."""
    await _fence_t1(cluster, epochs=(2,))
    new = await _import(cluster, _chain(), node="b1")
    b1 = cluster.nodes["b1"].repl.replicator
    snap = await b1.snapshot()
    assert snap.epoch == 2
    request_b1 = await b1.stage_request("t1", snap)
    got = await cluster.call("t1", lambda cl: cl.stage(request_b1), who="b1")
    assert got.set_digest == snap.digest
    await cluster.call("t1", lambda cl: cl.activate(
        epoch=snap.epoch, revision=snap.revision, set_digest=snap.digest), who="b1")
    assert await _served(cluster, "t1") == {new}
