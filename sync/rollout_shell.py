"""[shell] Performing one rollout: the steps :mod:`sync.rollout` decides, over gRPC.

:class:`RolloutRunner` runs the rollout of a proposed :class:`~sync.snapshot.Snapshot` for
the primary's :class:`~sync.replicator.Replicator` and yields one progress message per node
and step as it happens, then a summary (node empty, ``rollout`` set):

1. **stage** on every other node concurrently. A node that answers with a refusal halts the
   rollout (none activates; the reason names it); one that does not answer does not block
   (it gets the current revision when it is back);
2. **canary**: activate on the canary (:func:`sync.rollout.choose_canary`) with a confirm
   deadline, probe its TLS endpoint, confirm. Unreachable, refused, or a probe that differs:
   halted -- without the Confirm the canary returns to its previous set by itself;
3. **activate** every other node that staged, concurrently, the same way; one whose probe
   fails returns to its previous set by itself and is reported, the rest go on;
4. the **primary's own endpoint** switches last (and the set is recorded in its history as
   the current one): the rollout is complete.

Every step holds the target's lock of the replicator, so anti-entropy never interleaves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import structlog

from node.api import certsync_pb2
from node.errors import CertsyncError, CheckFailed, NodeUnreachable, NotFound, StaleEpoch
from node.selection import Selection, SniBuilder, SniIndex
from node.store_history import HistoryItem, HistoryRecord
from sync import rollout as core
from sync.snapshot import SetItem, Snapshot

if TYPE_CHECKING:
    from sync.replicator import Replicator, ServeSet

__all__ = ["RolloutRunner", "progress", "proposed", "record_from", "rollout_msg", "selection_of",
           "snapshot_from"]

_log = structlog.get_logger("sync.rollout")
_INDEXES: dict[tuple[int, str], SniIndex] = {}
_BUILDER = SniBuilder()  # the index of the last snapshot asked about, kept up to date


def progress(name: str, state: str, message: str, *, in_sync: bool = False,
             snap: Snapshot | None = None, error: str = "") -> certsync_pb2.ReplicateProgress:
    p = certsync_pb2.ReplicateProgress(node=name, state=state, message=message,
                                       in_sync=in_sync, error=error)
    if snap is not None:
        p.epoch, p.revision, p.set_digest = snap.epoch, snap.revision, snap.digest
    return p


def proposed(snap: Snapshot, current: Snapshot | None) -> bool:
    """Is the store's set ``snap`` a proposal (not the cluster's ``current`` set)?"""
    if current is None:
        return bool(snap.items)
    return (snap.revision, snap.digest) != (current.revision, current.digest)


def selection_of(snap: Snapshot, server_name: str | None) -> Selection:
    """What a node serving ``snap`` serves for ``server_name`` (the TLS endpoint's rules)."""
    key = (snap.revision, snap.digest)
    index = _INDEXES.get(key)
    if index is None:
        if len(_INDEXES) > 8:
            _INDEXES.clear()
        _BUILDER.update({i.sha256: i.sni_entry for i in snap.items})  # redoes what changed
        index = _INDEXES[key] = _BUILDER.index(snap.default.sha256 if snap.default else None)
    return index.lookup(server_name)


def record_from(snap: Snapshot, *, at: str = "") -> HistoryRecord:
    return HistoryRecord(
        epoch=snap.epoch, revision=snap.revision, digest=snap.digest,
        default_sha256=snap.default.sha256 if snap.default else None, activated_at=at,
        items=tuple(HistoryItem(name=i.name, cert=i.cert, key=i.key, chain=i.chain,
                                is_default=i.is_default) for i in snap.items))


def snapshot_from(record: HistoryRecord, like: Snapshot) -> Snapshot:
    """``record`` as a set to push at the epoch and promotion of ``like``."""
    items = tuple(SetItem(name=i.name, cert=i.cert, key=i.key, chain=i.chain,
                          is_default=i.is_default) for i in record.items if i.key is not None)
    return Snapshot(epoch=like.epoch, revision=record.revision, digest=record.digest,
                    items=items, default=next((i for i in items if i.is_default), None),
                    promotion=like.promotion)


def rollout_msg(r: core.Rollout) -> certsync_pb2.RolloutInfo:
    return certsync_pb2.RolloutInfo(revision=r.revision or r.current, state=r.state,
                                    canary=r.canary or "", halted_reason=r.halted_reason or "",
                                    current_revision=r.current)


class RolloutRunner:
    """See the module docstring; one per replicator, used under its rollout lock."""

    def __init__(self, replicator: Replicator) -> None:
        self._rep = replicator
        self.switching = False  # the primary's own endpoint is being switched
        self._current: tuple[tuple[int, str, int], Snapshot] | None = None
        #: when staging began per node (monotonic): a push's duration ends at its Confirm
        self._began: dict[str, float] = {}

    def _progress(self, name: str, state: str, message: str, snap: Snapshot, *,
                  in_sync: bool = False, error: str = "") -> certsync_pb2.ReplicateProgress:
        return progress(name, state, message, in_sync=in_sync, snap=snap, error=error)

    async def current(self) -> Snapshot | None:
        """The cluster's current set: the newest activated set in this primary's history
        (None before the first rollout completed), at our epoch."""
        rep = self._rep
        history = await rep.replica.store.history()
        if not history:
            return None
        newest = history[0]
        like = await rep.snapshot()
        key = (newest.revision, newest.digest, like.epoch)
        if self._current is not None and self._current[0] == key:
            return self._current[1]
        if (like.revision, like.digest) == (newest.revision, newest.digest):
            snap = like
        else:
            snap = snapshot_from(await rep.replica.store.history_set(newest.revision), like)
        self._current = (key, snap)
        if rep.rollout.current != newest.revision and rep.rollout.state == "idle":
            rep.rollout = core.Rollout(revision=newest.revision, current=newest.revision)
        return snap

    async def serve_current_at_start(self, serve_set: ServeSet | None) -> None:
        """A primary that starts with a proposal pending serves the current set, not the
        proposal its store holds (the node served the store before replication started),
        and a rollout that had halted is still halted."""
        rep = self._rep
        if not rep.replica.is_primary:
            return
        text = await rep.replica.store.get_meta("rollout")
        if text:  # a halted rollout stays halted across a restart (until replicate)
            saved = certsync_pb2.RolloutInfo.FromString(bytes.fromhex(text))
            if saved.state == "halted":
                rep.rollout = core.Rollout(
                    state="halted", revision=saved.revision, current=saved.current_revision,
                    canary=saved.canary or None, halted_reason=saved.halted_reason or None)
        if serve_set is None:
            return
        try:
            snap = await rep.snapshot()
            current = await self.current()
            if current is not None and proposed(snap, current):
                await serve_set([(i.cert, i.chain, i.key) for i in current.items],
                                current.default.sha256 if current.default else None)
        except CertsyncError:
            _log.exception("rollout.serve_current_failed")

    async def activate_probe_confirm(self, name: str, snap: Snapshot) -> None:
        """Activate on ``name``, probe it, confirm; raises when any of it fails (then the
        node returns to its previous set by itself, for want of the Confirm)."""
        rep = self._rep
        await rep.activate(name, snap)
        mismatch = await rep.probe_with_retry(name, snap)
        if mismatch is not None:
            rep.forget(name)
            raise CheckFailed(f"probe after activation: {mismatch}")
        await rep.confirm(name, snap)
        began = self._began.pop(name, None)
        if began is not None:
            for observe in rep.on_push:  # the metrics' push time: staging to Confirm
                observe(name, time.monotonic() - began)

    async def switch_self(self, snap: Snapshot) -> None:
        """The last step: record ``snap`` as current and serve it on our own endpoint."""
        rep = self._rep
        await rep.replica.store.record_set(record_from(snap), now=rep.replica.now)
        # the newest record is this set: current() need not decode it from the history
        self._current = ((snap.revision, snap.digest, snap.epoch), snap)
        self.switching = True
        try:
            await rep.replica.serve_store()
        finally:
            self.switching = False

    async def _stage(self, name: str, snap: Snapshot, force: bool) -> core.Outcome:
        rep = self._rep
        self._began[name] = time.monotonic()
        async with rep.lock_for(name):
            try:
                # its state first, within reach_timeout, even when it served our previous
                # revision: a node that died since (a cut-off host sends no reset) would
                # otherwise hold the Stage, and the whole rollout, for the RPC timeout
                held = await self._reach(name, snap)
                try:
                    await rep.stage_only(name, snap, force=force, held=held)
                except StaleEpoch:
                    await self._reach(name, snap)  # a higher epoch: verify, adopt, step down
                    raise
            except NodeUnreachable as err:
                rep.forget(name)
                return core.Outcome(name, "unreachable", str(err))
            except CertsyncError as err:
                rep.forget(name)
                return core.Outcome(name, "refused", str(err))
        return core.Outcome(name, "staged")

    async def _reach(self, name: str, snap: Snapshot) -> frozenset[str]:
        """What ``name`` holds of our epoch, from its state; a node whose state we cannot
        read soon (down, cut off, not of our CA) is not a reachable receiver (it does not
        hold up the others); one at a higher epoch fences us (:class:`StaleEpoch`)."""
        rep = self._rep
        try:
            async with asyncio.timeout(rep.reach_timeout):
                state = await rep.client_for(name).get_state()
        except TimeoutError as err:
            raise NodeUnreachable(f"node {name!r} did not answer within "
                                  f"{rep.reach_timeout:g} s", node=name) from err
        except CertsyncError as err:
            raise NodeUnreachable(str(err), node=name) from err
        if state.epoch > snap.epoch:
            await rep.fenced_by(name, state)
            raise StaleEpoch(f"node {name!r} is at epoch {state.epoch}, above ours",
                             epoch=snap.epoch, current=state.epoch)
        return frozenset(state.held_sha256) if state.epoch == snap.epoch else frozenset()

    async def _activate(self, name: str, snap: Snapshot) -> certsync_pb2.ReplicateProgress:
        rep = self._rep
        async with rep.lock_for(name):
            try:
                await self.activate_probe_confirm(name, snap)
            except NodeUnreachable as err:
                return self._progress(name, "unreachable", f"{err}; if it switched, it returns "
                                      "to its previous set by itself", snap,
                                      error=type(err).__name__)
            except CertsyncError as err:
                return self._progress(name, "failed", f"{err}; it returns to its previous set "
                                      "by itself", snap, error=type(err).__name__)
        return self._progress(name, "in_sync", f"activated, serving revision {snap.revision}",
                              snap, in_sync=True)

    async def _set(self, r: core.Rollout) -> core.Rollout:
        """The rollout moved on: remember it (store meta ``rollout``, which GetState reports
        on the primary, with the current set's digest and default)."""
        rep = self._rep
        rep.rollout = r
        info, current = rollout_msg(r), await self.current()
        if current is not None:
            info.current_digest = current.digest
            info.current_default_sha256 = current.default.sha256 if current.default else ""
        await rep.replica.store.set_meta({"rollout": info.SerializeToString().hex()},
                                         durable=False)
        return r

    async def run(self, snap: Snapshot, *, force: bool
                  ) -> AsyncIterator[certsync_pb2.ReplicateProgress]:
        rep = self._rep
        r = await self._set(core.propose(rep.rollout, snap.revision))
        _log.info("rollout.staging", revision=snap.revision, digest=snap.digest)
        outcomes: list[core.Outcome] = []
        for done in asyncio.as_completed([self._stage(n, snap, force) for n in rep.targets]):
            o = await done
            outcomes.append(o)
            state = {"staged": "staged", "refused": "refused", "unreachable": "unreachable"}
            message = {"staged": f"staged revision {snap.revision}",
                       "refused": f"refused the stage: {o.reason}",
                       "unreachable": f"{o.reason}; it gets the current revision when back"}
            yield self._progress(o.node, state[o.result], message[o.result], snap,
                                 error="TransferRejected" if o.result == "refused" else "")
        ok = [n for n in rep.targets if any(o.node == n and o.result == "staged"
                                             for o in outcomes)]
        canary = (core.choose_canary(rep.roles(), ok, configured=rep.canary_name)
                  if not any(o.result == "refused" for o in outcomes) else None)
        r = await self._set(core.staged(r, outcomes, canary=canary))
        if r.state == "halted":
            for n in ok:
                yield self._progress(n, "held", "staged, not activated: the rollout halted",
                                     snap)
            yield await self._summary(r, snap)
            return
        if r.canary is not None:
            _log.info("rollout.canary", revision=snap.revision, canary=r.canary)
            result = await self._activate(r.canary, snap)
            yield result
            r = await self._set(core.canary_result(r, result.in_sync, result.message))
            if r.state == "halted":
                for n in core.activation_order(ok, r.canary):
                    yield self._progress(n, "held", "staged, not activated: the canary failed",
                                         snap)
                yield await self._summary(r, snap)
                return
        for next_done in asyncio.as_completed(
                [self._activate(n, snap) for n in core.activation_order(ok, r.canary)]):
            yield await next_done
        if not rep.replica.is_primary:
            yield self._progress(rep.name, "fenced", "no longer the primary", snap,
                                 error="StaleEpoch")
            return
        await self.switch_self(snap)
        r = await self._set(core.completed(r))
        _log.info("rollout.completed", revision=snap.revision)
        yield self._progress(rep.name, "in_sync", f"switched its own endpoint to revision "
                             f"{snap.revision}: the rollout is complete", snap, in_sync=True)
        yield await self._summary(r, snap)

    async def _summary(self, r: core.Rollout, snap: Snapshot) -> certsync_pb2.ReplicateProgress:
        if r.state == "halted":
            _log.warning("rollout.halted", revision=r.revision, reason=r.halted_reason)
        p = self._progress("", r.state, r.halted_reason or f"revision {r.revision} {r.state}",
                           snap, in_sync=r.state == "idle")
        p.rollout.CopyFrom(rollout_msg(r))
        return p

    async def rollback(self, to_revision: int, *, actor: str) -> certsync_pb2.RollbackResponse:
        """Make the activated set of ``to_revision`` (0: the one before the current) the
        primary's set as a new revision, audited, discarding any proposal; the next round
        (or ``replicate``) rolls it out through the same gate."""
        rep = self._rep
        store = rep.replica.store
        history = await store.history()
        if not history:
            raise NotFound("this primary keeps no activated set yet, so there is nothing to "
                           "roll back to")
        current = history[0]
        if to_revision == 0:
            older = [h for h in history if h.revision != current.revision]
            if not older:
                raise NotFound(f"only revision {current.revision} is kept, so there is nothing "
                               "earlier to roll back to")
            to_revision = older[0].revision
        record = await store.history_set(to_revision)
        before = await rep.snapshot()
        revision = max(before.revision, current.revision, record.revision) + 1
        now = rep.replica.now
        await store.replace_all(record.entries(), default=record.default_sha256,
                                meta={"revision": str(revision)}, actor=actor, now=now)
        await store.record_audit(
            actor=actor, action="rollout.rollback",
            detail={"restored_revision": to_revision, "revision": revision,
                    "default": record.default_sha256, "current_before": current.revision,
                    "discarded_proposal": before.revision if rep.rollout.state != "idle"
                    or before.revision != current.revision else None}, now=now)
        await self._set(core.discard(rep.rollout))
        _log.warning("rollout.rollback", restored=to_revision, revision=revision, actor=actor)
        rep.trigger()
        return certsync_pb2.RollbackResponse(revision=revision, restored_revision=to_revision,
                                             default_sha256=record.default_sha256 or "")
