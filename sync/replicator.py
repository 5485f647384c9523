"""[shell] The primary's push loop: stage, activate, probe, confirm -- and anti-entropy.

Runs in every node process and acts only while that node is the primary of its epoch
(:attr:`sync.receiver.Replica.is_primary`). Decide, then act:

* the **replicated set** (:class:`Snapshot`) is every certificate with a key, its chain
  built over the stored certificates, and which one is default; its digest is the store's
  (:func:`node.store_view.set_digest` over :func:`node.store_view.replicated_members`). The
  revision is the store's ``revision`` meta, which changes only when the store changes -- so
  concurrent ``replicate`` calls and automatic pushes never make extra revisions;
* for each target, :meth:`Replicator.push` takes that target's lock, asks its state and
  lets :func:`sync.plan.plan` decide: a higher epoch fences us (verify its promotion, adopt
  it, step down); the same set that was seen served is in sync; the same set not yet
  probed is probed; anything else is wrapped for the target's ``node.pem`` key (off the
  loop) and staged, activated, probed (a real TLS handshake per required name and without
  SNI, compared with what this primary selects) and confirmed;
* the **coverage gate**: a set whose default leaves a required name uncovered is not pushed
  automatically (log event ``replication.blocked``) unless an admin forced that default past
  the gate at the change (store meta ``forced_default``, :mod:`node.guard`), which is pushed
  forced; ``replicate --force`` pushes it, logged and audited as forced;
* :meth:`Replicator.run` is the background loop: it wakes on :meth:`trigger` (after every
  store change; triggers coalesce) or every ``interval`` seconds (anti-entropy: down nodes
  catch up when they come back). A non-primary asks the nodes that may be primary for their
  state and adopts a verified higher epoch (the new primary's pushes fence everyone else).

Size: over 600 lines because the push path (push, stage, activate, probe, confirm) and the
rollout's entry points (round, replicate, rollback) share one set of per-node locks, clients
and probe caches; a rollout's steps already live in :mod:`sync.rollout_shell`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Final

import structlog
from cryptography import x509

from node.api import certsync_pb2
from node.errors import (
    CertsyncError,
    Conflict,
    CoverageError,
    NodeUnreachable,
    StaleEpoch,
    TransferRejected,
)
from node.formats import cert_sha256
from node.guard import FORCED_DEFAULT_KEY, NO_DEFAULT
from node.model import PrivateKey
from node.selection import Selection
from node.text import rfc3339
from sync import rollout as rollout_core
from sync.client import NodeClient, NodeTarget
from sync.csr_replication import pair_targets, push_to_pair
from sync.peers import Peer, follow, peers_from_topology
from sync.plan import NodeState, plan
from sync.probe import served_sha256
from sync.receiver import (
    Replica,
    promotion_from_msg,
    promotion_to_msg,
)
from sync.rollout_shell import (
    RolloutRunner,
    progress,
    proposed,
    record_from,
    rollout_msg,
    selection_of,
)
from sync.snapshot import SetItem, Snapshot
from sync.transfer import TransferContext, WrappedItem, wrap_item

__all__ = [
    "DEFAULT_CONCURRENCY",
    "Peer",
    "Replicator",
    "peers_from_topology",
]

#: serve these (certificate, chain, key) and this default on the node's endpoint
ServeSet = Callable[[Sequence[tuple[x509.Certificate, Sequence[x509.Certificate], PrivateKey]],
                     str | None], Awaitable[None]]

DEFAULT_CONCURRENCY: Final = 32
DEFAULT_PROBE_TIMEOUT: Final = 5.0
DEFAULT_RPC_TIMEOUT: Final = 30.0

_log = structlog.get_logger("sync.replicator")
#: plan()'s staleness is for status; the replicator never asks it
_FOREVER: Final = dt.timedelta(days=36500)
_PROBE_ATTEMPTS: Final = 3
_PROBE_PAUSE: Final = 0.2  # seconds, doubled on the next attempt
_RETRY_FIRST: Final = 0.5  # seconds until a round retries nodes not in sync; doubles


class Replicator:
    """See the module docstring. ``peers`` maps every node name (ourselves included or not)
    to where it is; ``credentials`` are this node's mTLS PEMs ``(ca, cert, key)``."""

    def __init__(
        self,
        *,
        replica: Replica,
        served_for: Callable[[str | None], Selection],
        peers: Mapping[str, Peer],
        credentials: tuple[bytes, bytes, bytes],
        interval: float,
        concurrency: int = DEFAULT_CONCURRENCY,
        probe_timeout: float = DEFAULT_PROBE_TIMEOUT,
        rpc_timeout: float = DEFAULT_RPC_TIMEOUT,
        canary: str | None = None,
        serve_set: ServeSet | None = None,
    ) -> None:
        self.replica = replica
        self._served_for = served_for
        self._peers = peers  # by reference: tests fill in addresses bound to port 0
        self._credentials = credentials
        self.interval = interval
        self._semaphore = asyncio.Semaphore(concurrency)
        self._probe_timeout = probe_timeout
        self._rpc_timeout = rpc_timeout
        self._locks: dict[str, asyncio.Lock] = {}
        self._clients: dict[str, NodeClient] = {}
        self._served_ok: dict[str, tuple[int, int, str]] = {}  # last state seen served
        self._held: dict[str, frozenset[str]] = {}  # what each node holds with its key
        self._snapshot: Snapshot | None = None
        self._snapshot_of: tuple[object, ...] | None = None
        self._items: dict[str, SetItem] = {}  # the last snapshot's, by sha256
        self._snapshot_lock = asyncio.Lock()
        self._blocked_logged: str | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        replica.listeners.append(self.trigger)
        #: when each node was last confirmed serving our set (this primary's clock)
        self.synced: dict[str, dt.datetime] = {}
        #: observers (sync.metrics): one push's (node, seconds); a change's seconds until
        #: a round found every node serving it
        self.on_push: list[Callable[[str, float], None]] = []
        self.on_converge: list[Callable[[float], None]] = []
        self._changes = 0
        self._changed_at: float | None = None  # monotonic time of the oldest unconverged change
        # --- rollouts (issue 12): see sync.rollout (the states) and sync.rollout_shell ---
        self.canary_name = canary
        self._serve_set = serve_set
        #: seconds a receiver waits for our Confirm after an activation before it reverts
        self.confirm_within = probe_timeout * _PROBE_ATTEMPTS + 5.0
        #: seconds a node has to answer before staging, else it is unreachable (no block)
        self.reach_timeout = probe_timeout
        self.rollout = rollout_core.IDLE
        self._rollout_lock = asyncio.Lock()
        self._runner = RolloutRunner(self)

    # -- plumbing ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.replica.name

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(n for n in self.replica.topology.names if n != self.name)

    def _client(self, name: str) -> NodeClient:
        client = self._clients.get(name)
        if client is None:
            peer = self._peers[name]
            ca, cert, key = self._credentials
            client = NodeClient(NodeTarget(name=name, address=peer.grpc_address, ca_pem=ca,
                                           cert_pem=cert, key_pem=key),
                                timeout=self._rpc_timeout)
            self._clients[name] = client
        return client

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    def trigger(self) -> None:
        """Push soon (after a store change or an adoption); triggers coalesce."""
        self._wake.set()

    def changed(self) -> None:
        """The store changed: the primary pushes soon. A non-primary does nothing here (an
        activation is a store change too; asking around for epochs after each one would
        add 2 RPCs per node and push); it looks for a higher epoch every period."""
        if self.replica.is_primary:
            self._changes += 1
            if self._changed_at is None:
                self._changed_at = time.monotonic()
            self._wake.set()

    @property
    def served(self) -> Mapping[str, tuple[int, int, str]]:
        """Per node, the (epoch, revision, digest) its last probe saw it serve."""
        return MappingProxyType(self._served_ok)

    def _converged(self, changes: int) -> None:
        """A round that began after ``changes`` changes found every node serving."""
        if self._changed_at is not None and changes == self._changes:
            seconds, self._changed_at = time.monotonic() - self._changed_at, None
            for observe in self.on_converge:
                observe(seconds)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    @property
    def required_names(self) -> tuple[str, ...]:
        return self.replica.topology.required_names()

    # -- the set -----------------------------------------------------------------------

    async def snapshot(self) -> Snapshot:
        """The replicated set now (the same object while epoch and store stay the same; a
        meta change that moves neither the revision nor the default keeps it too). Items of
        certificates whose row, chain and default flag stayed are the last snapshot's."""
        store = self.replica.store
        async with self._snapshot_lock:
            view = await store.view()
            default_sha = view.meta.get("default_sha256")
            revision = int(view.meta.get("revision") or 0)
            of = (view.cert_rows.serial, default_sha, revision, self.replica.epoch,
                  self.replica.promotion)
            cached = self._snapshot
            if cached is not None and self._snapshot_of == of:
                return cached
            keys = await store.keys(view.keyed, view=view)
            last = self._items
            items = []
            for c in view.certs:
                key = keys.get(c.sha256)
                if key is None:
                    continue
                chain = view.chain(c.sha256)[0]
                item = last.get(c.sha256)
                if (item is None or item.key is not key or item.chain is not chain
                        or item.name != c.name or item.is_default != (c.sha256 == default_sha)):
                    item = SetItem(name=c.name, cert=c.certificate(), key=key, chain=chain,
                                   is_default=c.sha256 == default_sha)
                items.append(item)
            self._items = {i.sha256: i for i in items}
            snap = Snapshot(epoch=self.replica.epoch, revision=revision,
                            digest=view.digest, items=tuple(items),
                            default=next((i for i in items if i.is_default), None),
                            promotion=self.replica.promotion)
            self._snapshot, self._snapshot_of = snap, of
            return snap

    def _wrap(self, snap: Snapshot, peer: Peer,
              held: frozenset[str] = frozenset()) -> list[WrappedItem]:
        """Every item of ``snap`` the peer does not hold already, wrapped for it."""
        ctx = TransferContext(cluster_id=self.replica.topology.cluster_id, epoch=snap.epoch,
                              revision=snap.revision, sender=self.name, recipient=peer.name)
        return [wrap_item(ctx, peer.public_key, name=i.name, key=i.key, cert=i.cert,
                          chain=i.chain, is_default=i.is_default, rng_bytes=os.urandom)
                for i in snap.items if i.sha256 not in held]

    # -- one target --------------------------------------------------------------------

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def _probe(self, name: str, snap: Snapshot | None = None) -> str | None:
        """None when ``name`` serves what we select for the names clients reach it by (the
        site and its own hostname) and without SNI; else a sentence saying where it differs.
        The handshakes run concurrently."""
        peer = self._peers[name]
        wanted = [
            (server_name, expected)
            for server_name in (*self.replica.topology.served_names(name), None)
            # we serve nothing for it: the digest comparison is all there is
            if (expected := (self._served_for(server_name) if snap is None else
                             selection_of(snap, server_name)).key) is not None
        ]
        got = await asyncio.gather(*(
            served_sha256(peer.tls_address, server_name, timeout=self._probe_timeout)
            for server_name, _ in wanted
        ))
        for (server_name, expected), served in zip(wanted, got, strict=True):
            if served != expected:
                what = f"server name {server_name!r}" if server_name else "no SNI"
                return (f"node {name!r} serves {served[:16]} for {what}, the primary "
                        f"{expected[:16]}")
        return None

    async def probe_with_retry(self, name: str, snap: Snapshot | None = None) -> str | None:
        """:meth:`_probe`, tried again after a short pause when the handshake fails or the
        answer differs: a node under load may answer slowly, and the primary's own selection
        may have moved on meanwhile (the next round settles anything left)."""
        for attempt in range(_PROBE_ATTEMPTS):
            try:
                mismatch = await self._probe(name, snap)
            except NodeUnreachable:
                if attempt + 1 == _PROBE_ATTEMPTS:
                    raise
                mismatch = "unreachable"
            if mismatch is None:
                return None
            if attempt + 1 < _PROBE_ATTEMPTS:
                await asyncio.sleep(_PROBE_PAUSE * (attempt + 1))
        return mismatch

    async def fenced_by(self, name: str, state: certsync_pb2.NodeState) -> str:
        """``name`` reports a higher epoch: verify and adopt its promotion, step down."""
        try:
            adopted = await self.replica.adopt(promotion_from_msg(state.promotion),
                                               actor=f"node:{name}")
        except CertsyncError as err:
            _log.warning("replication.bad_promotion", node=name, epoch=state.epoch,
                         error=type(err).__name__)
            return (f"node {name!r} reports epoch {state.epoch} without a valid promotion "
                    f"({err}); not stepping down")
        if adopted:
            _log.warning("replication.stepped_down", node=name, epoch=state.epoch,
                         primary=self.replica.primary)
        return (f"node {name!r} is at epoch {state.epoch} (primary "
                f"{self.replica.primary!r}); this node stepped down")

    async def push(self, name: str, *, force: bool = False, fresh_probe: bool = False,
                   latest: Snapshot | None = None,
                   current: bool = False) -> certsync_pb2.ReplicateProgress:
        """Bring ``name`` to this primary's set; idempotent. Never raises a CertsyncError:
        the outcome is in the progress message. ``latest``: the set as the caller just read
        it for a whole round (a change after it triggers the next round)."""
        async with self._lock(name):
            snap: Snapshot | None = None
            began = time.monotonic()
            try:
                if not self.replica.is_primary:
                    return progress(name, "fenced", f"{self.name!r} is no longer the primary "
                                     f"(epoch {self.replica.epoch}: {self.replica.primary!r})")
                client = self._client(name)
                # the fan-out limit covers the transfer; probing and confirming (cheap
                # handshakes) do not hold back the next node's activation
                async with self._semaphore:
                    snap = latest if latest is not None else await self.snapshot()
                    known = self._served_ok.get(name)
                    if (not fresh_probe and known is not None and known[0] == snap.epoch
                            and known[1] < snap.revision):
                        # it served our previous revision of this epoch a moment ago: it
                        # lacks only the new one, so skip asking (Stage refuses anything stale)
                        pushed = True
                        await self._stage_activate(name, snap, force=force,
                                                   held=self._held.get(name, frozenset()))
                    else:
                        state = await client.get_state()
                        if state.epoch > snap.epoch:
                            return progress(name, "fenced", await self.fenced_by(name, state),
                                             snap=snap, error="StaleEpoch")
                        if state.epoch == snap.epoch and state.revision > snap.revision:
                            if current and (await self.snapshot()).digest != snap.digest:
                                # a proposal is pending: a canary not yet back, or a node
                                # that activated it; it reverts or takes the next rollout
                                return progress(name, "failed", f"node {name!r} holds "
                                                f"revision {state.revision}, above the "
                                                f"current {snap.revision}", snap=snap)
                            raised = await self._raise_revision(state.revision)
                            if current:  # the same set under a higher revision is current
                                await self.replica.store.record_set(
                                    record_from(raised), now=self.replica.now)
                            snap = raised
                        seen = (state.epoch, state.revision, state.set_digest)
                        served = None if fresh_probe else (known == seen or None)
                        decision = plan(
                            NodeState(self.name, True, snap.epoch, snap.revision, snap.digest),
                            [NodeState(name, True, state.epoch, state.revision,
                                       state.set_digest, serving_ok=served)],
                            now=self.replica.now, stale_after=_FOREVER,
                        )
                        if decision.in_sync:
                            return progress(name, "in_sync", "in sync", in_sync=True,
                                             snap=snap)
                        pushed = bool(decision.push_to)
                        if pushed:
                            await self._stage_activate(name, snap, force=force,
                                                       held=frozenset(state.held_sha256))
                mismatch = await self.probe_with_retry(name, snap)
                if mismatch is not None:
                    self._served_ok.pop(name, None)
                    return progress(name, "failed", mismatch, snap=snap, error="CheckFailed")
                await self.confirm(name, snap)
                for observe in self.on_push if pushed else ():
                    observe(name, time.monotonic() - began)
                verb = "pushed, serving" if pushed else "serving"
                _log.info("replication.in_sync", node=name, epoch=snap.epoch,
                          revision=snap.revision, pushed=pushed)
                return progress(name, "in_sync", f"{verb} revision {snap.revision}",
                                 in_sync=True, snap=snap)
            except NodeUnreachable as err:
                self._served_ok.pop(name, None)
                self._held.pop(name, None)
                return progress(name, "unreachable", str(err), snap=snap,
                                 error=type(err).__name__)
            except StaleEpoch as err:
                self._served_ok.pop(name, None)
                self._held.pop(name, None)
                with contextlib.suppress(CertsyncError):  # adopt the epoch it holds now
                    state = await self._client(name).get_state()
                    if snap is not None and state.epoch > snap.epoch:
                        return progress(name, "fenced", await self.fenced_by(name, state),
                                         snap=snap, error="StaleEpoch")
                self.trigger()  # the next round reads its state and adopts the promotion
                return progress(name, "fenced", str(err), snap=snap, error=type(err).__name__)
            except CertsyncError as err:
                self._served_ok.pop(name, None)
                self._held.pop(name, None)  # ask what it holds next time
                _log.warning("replication.failed", node=name, error=type(err).__name__)
                return progress(name, "failed", str(err), snap=snap, error=type(err).__name__)

    async def _raise_revision(self, above: int) -> Snapshot:
        """A node is ahead of us at our epoch (e.g. our store came back from a backup): the
        next push must carry a revision above it."""
        async with self._snapshot_lock:
            current = int(await self.replica.store.get_meta("revision") or 0)
            if current <= above:
                await self.replica.store.set_meta({"revision": str(above + 1)})
                _log.warning("replication.revision_raised", revision=above + 1)
        return await self.snapshot()

    async def stage_request(self, name: str, snap: Snapshot, *, force: bool = False,
                            held: frozenset[str] = frozenset()) -> certsync_pb2.StageRequest:
        """The Stage call for ``name``: every item it does not ``held`` already wrapped for
        its key (off the loop); the ones it holds are named, not resent."""
        items = await asyncio.to_thread(self._wrap, snap, self._peers[name], held)
        return certsync_pb2.StageRequest(
            promotion=promotion_to_msg(snap.promotion), epoch=snap.epoch,
            revision=snap.revision, sender=self.name,
            items=[certsync_pb2.TransferItem(name=i.name, is_default=i.is_default,
                                             pkcs12=i.pkcs12,
                                             wrapped_passphrase=i.wrapped_passphrase)
                   for i in items],
            default_sha256=cert_sha256(snap.default.cert) if snap.default else "",
            set_digest=snap.digest, force=force,
            kept=[certsync_pb2.KeptItem(sha256=i.sha256, name=i.name, is_default=i.is_default)
                  for i in snap.items if i.sha256 in held])

    async def _stage_activate(self, name: str, snap: Snapshot, *, force: bool,
                              held: frozenset[str]) -> None:
        await self.stage_only(name, snap, force=force, held=held)
        await self.activate(name, snap)
        _log.info("replication.pushed", node=name, epoch=snap.epoch, revision=snap.revision,
                  digest=snap.digest, certificates=len(snap.items), forced=force)

    async def activate(self, name: str, snap: Snapshot) -> None:
        """Activate the staged ``snap`` on ``name``; it reverts by itself without our Confirm
        within :attr:`confirm_within` seconds."""
        await self._client(name).activate(epoch=snap.epoch, revision=snap.revision,
                                          set_digest=snap.digest,
                                          confirm_within_ms=int(self.confirm_within * 1000))
        self._held[name] = frozenset(i.sha256 for i in snap.items)

    async def confirm(self, name: str, snap: Snapshot) -> None:
        """``name`` was seen serving ``snap``: confirm it (no revert) and remember it."""
        await self._client(name).confirm(epoch=snap.epoch, revision=snap.revision,
                                         set_digest=snap.digest)
        self._served_ok[name] = (snap.epoch, snap.revision, snap.digest)
        self.synced[name] = self.replica.now

    def forget(self, name: str) -> None:
        self._served_ok.pop(name, None)
        self._held.pop(name, None)

    def lock_for(self, name: str) -> asyncio.Lock:
        return self._lock(name)

    def client_for(self, name: str) -> NodeClient:
        return self._client(name)

    def roles(self) -> dict[str, str]:
        return {n: self.replica.topology.node(n).role for n in self.targets}

    def holding(self) -> bool:
        """Does this node's TLS endpoint stay on the current set for now (see NodeApp)? A
        primary alone in its cluster serves each change at once (its rollout is itself)."""
        return bool(self.replica.is_primary and self.targets and not self._runner.switching)

    async def stage_only(self, name: str, snap: Snapshot, *, force: bool,
                         held: frozenset[str]) -> None:
        client = self._client(name)
        try:
            staged = await client.stage(
                await self.stage_request(name, snap, force=force, held=held))
        except TransferRejected:
            if not held:
                raise
            # it lacks a member we believed it held (restored, or changed by hand): resend all
            self._held.pop(name, None)
            staged = await client.stage(await self.stage_request(name, snap, force=force))
        if staged.set_digest != snap.digest:
            raise Conflict(f"node {name!r} staged digest {staged.set_digest!r}, not "
                           f"{snap.digest!r}; retrying on the next round")

    # -- many targets ------------------------------------------------------------------

    def _check_names(self, nodes: Sequence[str]) -> tuple[str, ...]:
        for n in nodes:
            self.replica.topology.node(n)  # NotFound names the known nodes
        chosen = tuple(dict.fromkeys(nodes)) if nodes else self.targets
        return tuple(n for n in chosen if n != self.name)

    async def _gate(self, snap: Snapshot, *, force: bool, actor: str) -> None:
        missing = snap.uncovered(self.required_names)
        if not missing:
            return
        if not force:
            raise CoverageError(
                f"the default certificate leaves {', '.join(missing)} uncovered, so it is not "
                "replicated; replace it, or run 'certsync replicate --force' to push it anyway",
                report=", ".join(missing),  # text, so it survives the trip to the client
            )
        _log.warning("replication.forced", uncovered=missing, revision=snap.revision,
                     actor=actor)
        await self.replica.store.record_audit(
            actor=actor, action="replication.forced",
            detail={"uncovered": missing, "epoch": snap.epoch, "revision": snap.revision,
                    "digest": snap.digest}, now=self.replica.now)

    async def replicate(
        self, nodes: Sequence[str], *, force: bool, actor: str
    ) -> AsyncIterator[certsync_pb2.ReplicateProgress]:
        """Push now to ``nodes`` (empty: all others) and yield one progress per node as it
        finishes; the gate and 'not the primary' raise before anything is pushed."""
        if not self.replica.is_primary:
            raise Conflict(f"node {self.name!r} is not the primary of epoch "
                           f"{self.replica.epoch} (that is {self.replica.primary!r}); "
                           f"run replicate against {self.replica.primary!r}")
        names = self._check_names(nodes)
        async with self._rollout_lock:
            snap = await self.snapshot()
            current = await self._runner.current()
            if proposed(snap, current) and rollout_core.should_start(
                    self.rollout, snap.revision, asked=True):
                # a default an admin forced past the coverage gate goes out forced
                force = force or await self._forced(snap)
                await self._gate(snap, force=force, actor=actor)
                async for step in self._runner.run(snap, force=force):
                    yield step
                return
            if current is None:
                await self._gate(snap, force=force, actor=actor)
            target = current or snap
            forced = force or bool(target.uncovered(self.required_names))
            tasks = [asyncio.create_task(self.push(n, force=forced, fresh_probe=True,
                                                   latest=target, current=True))
                     for n in names]
            try:
                for next_done in asyncio.as_completed(tasks):
                    yield await next_done
            finally:
                for task in tasks:
                    task.cancel()
            summary = progress("", self.rollout.state, self.rollout.halted_reason or
                               f"revision {target.revision} is current", snap=target,
                               in_sync=self.rollout.state != "halted")
            summary.rollout.CopyFrom(rollout_msg(self.rollout))
            yield summary

    async def round(self, *, woken: bool = False) -> list[certsync_pb2.ReplicateProgress]:
        """One automatic round: roll out a new proposal, else bring every other node that
        is not in sync to the current set (anti-entropy pushes only the current revision).
        ``woken``: by a change rather than the period -- then nodes this primary confirmed
        serving the current set are not asked again (the period asks everyone)."""
        if not self.replica.is_primary:
            await self.follow()
            return []
        async with self._rollout_lock:
            return await self._round_locked(woken=woken)

    def _all_confirmed(self, snap: Snapshot) -> bool:
        """Was every other node confirmed serving ``snap`` (and nothing failed since)?"""
        key = (snap.epoch, snap.revision, snap.digest)
        return bool(self.targets) and all(self._served_ok.get(n) == key for n in self.targets)

    async def _round_locked(self, *, woken: bool = False
                            ) -> list[certsync_pb2.ReplicateProgress]:
        changes = self._changes
        snap = await self.snapshot()
        current = await self._runner.current()
        if proposed(snap, current) and rollout_core.should_start(
                self.rollout, snap.revision, asked=False):
            forced = await self._forced(snap)  # an admin forced this default past the gate
            try:
                if not forced:
                    await self._gate(snap, force=False, actor=f"node:{self.name}")
            except CoverageError:
                missing = snap.uncovered(self.required_names)
                if self._blocked_logged != snap.digest:
                    _log.warning("replication.blocked", uncovered=missing,
                                 revision=snap.revision)
                    self._blocked_logged = snap.digest
            else:
                rolled = [p async for p in self._runner.run(snap, force=forced) if p.node]
                await self._push_requests()
                if self.rollout.state == "idle" and all(p.in_sync for p in rolled):
                    self._converged(changes)
                return rolled
        if current is None:
            fenced = await asyncio.gather(*(self._probe_only(n, snap) for n in self.targets))
            await self._push_requests()  # CSRs are not gated: they serve nothing
            return [r for r in fenced if r is not None]
        if woken and self._all_confirmed(current):
            # woken by our own switch to the set a rollout just confirmed everywhere (or a
            # change that left the replicated set as it is): asking each node's state again
            # would cost N calls for nothing; the period's round asks everyone
            results = [progress(n, "in_sync", f"confirmed serving revision {current.revision}",
                                in_sync=True, snap=current) for n in self.targets]
        else:
            forced = bool(current.uncovered(self.required_names))  # as it was proposed
            results = list(await asyncio.gather(*(self.push(n, latest=current, force=forced,
                                                            current=True)
                                                   for n in self.targets)))
        await self._push_requests()
        if results and all(r.in_sync for r in results):
            await self.replica.store.set_meta({"last_sync": rfc3339(self.replica.now)},
                                              durable=False)
            self._converged(changes)
        return results

    async def _forced(self, snap: Snapshot) -> bool:
        """Whether an admin forced this set's default past the coverage gate (store meta
        ``forced_default``, written by the change or by the forced push that brought it)."""
        want = snap.default.sha256 if snap.default is not None else NO_DEFAULT
        return await self.replica.store.get_meta(FORCED_DEFAULT_KEY) == want

    async def _push_requests(self) -> None:
        """Issue 11: CSRs with their keys, to the other node of the failover pair only."""
        pair = [n for n in pair_targets(self.replica.topology, self.name) if n in self._peers]
        await push_to_pair(self.replica, {n: self._client(n) for n in pair},
                           {n: self._peers[n].public_key for n in pair},
                           promotion_to_msg(self.replica.promotion))

    async def _probe_only(self, name: str, snap: Snapshot) -> certsync_pb2.ReplicateProgress | None:
        try:
            state = await self._client(name).get_state()
        except CertsyncError:
            return None
        if state.epoch > snap.epoch:
            return progress(name, "fenced", await self.fenced_by(name, state), snap=snap)
        return None

    async def rollback(self, to_revision: int, *, actor: str) -> certsync_pb2.RollbackResponse:
        """See :meth:`sync.rollout_shell.RolloutRunner.rollback` (under the rollout lock)."""
        async with self._rollout_lock:
            return await self._runner.rollback(to_revision, actor=actor)

    async def follow(self) -> None:
        """Not the primary: adopt a verified higher epoch (:func:`sync.peers.follow`)."""
        await follow(self.replica, self._client, self._peers)

    async def run(self) -> None:
        """The background loop until :meth:`stop`; never raises (errors are logged)."""
        try:
            await self._runner.serve_current_at_start(self._serve_set)
            retry = _RETRY_FIRST
            woken = False  # the first round after a start asks everyone, as the period does
            while not self._stopping:
                self._wake.clear()
                results: list[certsync_pb2.ReplicateProgress] = []
                try:
                    results = await self.round(woken=woken)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    _log.exception("replication.round_failed")
                # a node that could not be brought in sync (down, starting, busy) is tried
                # again soon, backing off to the anti-entropy period; all in sync: the period
                if any(not r.in_sync and r.state != "fenced" for r in results):
                    pause, retry = min(retry, self.interval), min(retry * 2, self.interval)
                else:
                    pause, retry = self.interval, _RETRY_FIRST
                woken = False
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self._wake.wait()
                        woken = True
        finally:
            await self.close()
