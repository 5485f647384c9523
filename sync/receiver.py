"""[shell] The receiving side of replication, and each node's view of who the primary is.

:class:`Replica` holds one node's replication state -- epoch, primary and the promotion that
proves them (kept in store meta ``epoch``, ``primary``, ``promotion``) -- and implements the
receiver's half of the two-phase push (DESIGN.md, "Replication, in more detail"):

* :meth:`Replica.stage` -- only a node identity that is the primary of the promotion it
  sends may push. A lower epoch than ours is refused (:class:`StaleEpoch`, audited); the same
  epoch from another sender than our primary is refused (:class:`PermissionDenied`,
  audited); a higher epoch is verified and adopted. Every item is unwrapped with this node's
  own mTLS key off the event loop and checked (key matches, chain signatures, dates valid
  at ``now``, and unless forced: the default covers this node's hostname and the site), and
  the digest of what was unwrapped must equal the one announced. The checked set is kept in
  memory keyed by ``(epoch, revision, digest)``; nothing is stored yet.
* :meth:`Replica.activate` -- re-checks dates with the clock *now* (a certificate that
  expired between stage and activate is never activated), then replaces the store's set and
  the replication meta in one transaction and refreshes the TLS endpoint. Activating the
  set that is active already is a no-op (idempotent).
* :meth:`Replica.confirm` -- the primary verified what this node serves: ``last_sync``.
* :meth:`Replica.announce` / :meth:`Replica.promote` -- adopt a higher, verified promotion.

A node that fails a check keeps serving what it had; the error says why.
:class:`ReplicationService` is the gRPC servicer over it (errors -> statuses through
``node.service``'s one table); ``Replicate`` is delegated to a :class:`ReplicateHandler`
(the replicator, which lives in :mod:`sync.replicator`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, NoReturn, Protocol, TypeVar

import grpc
import structlog
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from node.api import certsync_pb2, certsync_pb2_grpc
from node.errors import (
    BadInput,
    CertsyncError,
    CoverageError,
    NotPrimary,
    PermissionDenied,
    StaleEpoch,
    TransferRejected,
)
from node.guard import FORCED_DEFAULT_KEY, NO_DEFAULT
from node.identity import Identity
from node.model import PrivateKey
from node.refusals import authenticate, record_refusal
from node.rpc import abort_for, run_rpc
from node.store import Store
from node.store_history import HistoryRecord
from node.store_view import StoreView
from node.text import rfc3339
from sync.csr_replication import receive_requests
from sync.history import Pending, RevertGuard, SetKey, record_of, revert_meta
from sync.promotion import (
    Promotion,
    decode_promotion,
    encode_promotion,
    initial_promotion,
    is_newer,
    sender_refusal,
    verify_promotion,
)
from sync.staging import CheckedSet, KeptItem, Push, check_dates, check_push
from sync.topology import Topology
from sync.transfer import TransferContext, UnwrappedItem, WrappedItem, unwrap_csr_key

__all__ = [
    "NodeStateFn",
    "Replica",
    "ReplicateHandler",
    "ReplicationService",
    "describe_promotion",
    "promotion_from_msg",
    "promotion_to_msg",
]

#: staged sets kept in memory (a primary stages one set at a time; a few cover retries)
_MAX_STAGED: Final = 4

_log = structlog.get_logger("sync.receiver")


def promotion_to_msg(p: Promotion) -> certsync_pb2.Promotion:
    return certsync_pb2.Promotion(cluster_id=p.cluster_id, epoch=p.epoch, primary=p.primary,
                                  admin_cert_der=p.admin_cert_der, signature=p.signature)


def describe_promotion(state: certsync_pb2.NodeState, meta: Mapping[str, str]) -> None:
    """Add the promotion this node adopted (store meta ``promotion``) to its reported state
    (the servicer's ``describe`` hook)."""
    text = meta.get("promotion")
    if text:
        state.promotion.CopyFrom(promotion_to_msg(decode_promotion(text)))
    rollout = meta.get("rollout")  # the primary's rollout (sync.rollout_shell)
    if rollout and state.primary == state.name:
        state.rollout.ParseFromString(bytes.fromhex(rollout))
        if state.rollout.state != "idle" and state.rollout.current_digest:
            # a proposal is on its way: the cluster's set is still the current one
            state.revision = state.rollout.current_revision
            state.set_digest = state.rollout.current_digest
            state.default_sha256 = state.rollout.current_default_sha256


def promotion_from_msg(msg: certsync_pb2.Promotion) -> Promotion:
    return Promotion(cluster_id=msg.cluster_id, epoch=msg.epoch, primary=msg.primary,
                     admin_cert_der=msg.admin_cert_der, signature=msg.signature)


# --------------------------------------------------------------------------- the replica


class Replica:
    """One node's replication state and receiver logic; see the module docstring.

    Concurrency: adoption, activation and confirmation are serialised by one lock;
    staging runs concurrently (its CPU work is in a thread). ``listeners`` are called
    (synchronously, must not block) whenever the epoch or primary changes.
    """

    def __init__(
        self,
        *,
        name: str,
        topology: Topology,
        store: Store,
        ca_cert: x509.Certificate,
        node_key: ec.EllipticCurvePrivateKey,
        clock: Callable[[], dt.datetime],
        refresh: Callable[[], Awaitable[None]],
        serve: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self.topology = topology
        self.store = store
        self.ca_cert = ca_cert
        self._node_key = node_key
        self._clock = clock
        self._refresh = refresh
        self._serve = serve or refresh
        self._promotion = initial_promotion(topology.cluster_id, topology.primary.name)
        self._staged: dict[tuple[int, int, str], CheckedSet] = {}
        self._lock = asyncio.Lock()
        self.listeners: list[Callable[[], None]] = []
        #: rollouts: an activation not confirmed in time returns to the previous set
        self.guard = RevertGuard(self._revert, store)

    def __repr__(self) -> str:  # never show the node key
        return f"Replica(name={self.name!r}, epoch={self.epoch!r}, primary={self.primary!r})"

    # -- state -------------------------------------------------------------------------

    async def load(self) -> None:
        """Read epoch/primary/promotion from store meta (first start: epoch 1, written)."""
        text = await self.store.get_meta("promotion")
        if text:
            promotion = decode_promotion(text)
            self._verify(promotion)
            self._promotion = promotion
        else:
            await self.store.set_meta(self._meta())
        await self.guard.resume(self.now)
        _log.info("replica.loaded", epoch=self.epoch, primary=self.primary, role=self.role)

    @property
    def now(self) -> dt.datetime:
        return self._clock()

    @property
    def epoch(self) -> int:
        return self._promotion.epoch

    @property
    def primary(self) -> str:
        return self._promotion.primary

    @property
    def promotion(self) -> Promotion:
        return self._promotion

    @property
    def is_primary(self) -> bool:
        return self.primary == self.name

    @property
    def role(self) -> str:
        """primary while this node is the primary of its epoch; a former primary is a
        backup; the others keep their topology role."""
        if self.is_primary:
            return "primary"
        own = self.topology.node(self.name).role
        return "backup" if own == "primary" else own

    def _meta(self) -> dict[str, str]:
        p = self._promotion
        return {"epoch": str(p.epoch), "primary": p.primary, "promotion": encode_promotion(p)}

    def open_csr_key(self, ctx: TransferContext, *, csr_id: str, pem: bytes, wrapped: bytes,
                     set_digest: str) -> PrivateKey:
        """:func:`sync.transfer.unwrap_csr_key` with this node's own key (issue 11)."""
        return unwrap_csr_key(ctx, self._node_key, csr_id=csr_id, pem=pem, wrapped=wrapped,
                              set_digest=set_digest)

    def _verify(self, promotion: Promotion) -> None:
        verify_promotion(promotion, ca_cert=self.ca_cert, cluster_id=self.topology.cluster_id,
                         initial_primary=self.topology.primary.name)
        self.topology.node(promotion.primary)  # NotFound for a node not in the topology

    async def _adopt_locked(self, promotion: Promotion, *, actor: str) -> bool:
        if not is_newer(promotion, epoch=self.epoch, primary=self.primary):
            return False
        self._verify(promotion)
        before = self.role
        self._promotion = promotion
        self._staged.clear()
        await self.store.set_meta(self._meta(), actor=actor, now=self.now)
        _log.info("replica.adopted", epoch=promotion.epoch, primary=promotion.primary,
                  role=self.role, previous_role=before)
        for listener in self.listeners:
            listener()
        return True

    async def adopt(self, promotion: Promotion, *, actor: str) -> bool:
        """Adopt ``promotion`` if it verifies and is higher than ours; True if adopted."""
        async with self._lock:
            return await self._adopt_locked(promotion, actor=actor)

    async def _refuse(self, identity: Identity, method: str, err: CertsyncError) -> NoReturn:
        await self.store.record_audit(
            actor=f"{identity.kind}:{identity.name}", action="replication.refused",
            detail={"outcome": "refused", "method": method, "error": type(err).__name__,
                    "why": err.message},
            now=self.now,
        )
        _log.warning("replication.refused", method=method, error=type(err).__name__,
                     caller=f"{identity.kind}:{identity.name}")
        raise err

    async def _check_sender(self, identity: Identity, method: str, epoch: int) -> None:
        """The caller must be the node that is our primary at our epoch."""
        refusal = sender_refusal(identity.kind, identity.name, method, epoch,
                                 current_epoch=self.epoch, current_primary=self.primary)
        if refusal is not None:
            await self._refuse(identity, method, refusal)

    # -- receiver ----------------------------------------------------------------------

    async def stage(self, push: Push, identity: Identity) -> str:
        """Phase 1; returns the digest of the staged set."""
        if (identity.kind != "node" or identity.name != push.sender
                or push.promotion.primary != push.sender or push.promotion.epoch != push.epoch):
            await self._refuse(identity, "Stage", PermissionDenied(
                f"{identity.kind} {identity.name!r} may not stage a set as {push.sender!r} at "
                f"epoch {push.epoch}: only a node that is the primary of the promotion it sends "
                "may push"))
        if push.epoch > self.epoch:
            async with self._lock:
                try:
                    await self._adopt_locked(push.promotion, actor=f"node:{identity.name}")
                except PermissionDenied as err:
                    await self._refuse(identity, "Stage", err)
        await self._check_sender(identity, "Stage", push.epoch)
        view = await self.store.view()  # one reading for the replay check and held items
        current = int(view.meta.get("revision") or 0)
        same_epoch = view.meta.get("revision_epoch") == str(push.epoch)
        if same_epoch and push.revision < current:
            await self._refuse(identity, "Stage", TransferRejected(
                f"the push from {push.sender!r} carries revision {push.revision}, older than "
                f"this node's {current} at epoch {push.epoch}; it is a replay, push the current "
                "set"))
        required = (self.topology.site, self.topology.node(self.name).hostname)
        held = await self._held(push, identity, view)
        try:
            checked = await asyncio.to_thread(
                functools.partial(check_push, push, cluster_id=self.topology.cluster_id,
                                  recipient=self.name, recipient_key=self._node_key,
                                  required_names=required, now=self.now, held=held))
        except (TransferRejected, CoverageError) as err:
            await self._refuse(identity, "Stage", err)
        key = (checked.epoch, checked.revision, checked.digest)
        self._staged[key] = checked
        while len(self._staged) > _MAX_STAGED:
            self._staged.pop(next(iter(self._staged)))
        _log.info("replication.staged", epoch=push.epoch, revision=push.revision,
                  digest=checked.digest, certificates=len(checked.entries),
                  forced=checked.forced)
        return checked.digest

    async def _held(self, push: Push, identity: Identity,
                    view: StoreView) -> list[UnwrappedItem]:
        """The members the primary did not resend, from this node's store (with key and
        chain); refuses the Stage when one is missing, so the primary pushes everything."""
        if not push.kept:
            return []
        keys = await self.store.keys((k.sha256 for k in push.kept), view=view)
        held = []
        for kept in push.kept:
            found = view.get(kept.sha256)
            key = keys.get(kept.sha256)
            if found is None or key is None:
                await self._refuse(identity, "Stage", TransferRejected(
                    f"this node does not hold certificate {kept.sha256!r} with its key, which "
                    f"the push from {push.sender!r} did not resend; push the whole set"))
            chain, _problems = view.chain(kept.sha256)
            held.append(UnwrappedItem(name=kept.name, is_default=kept.is_default,
                                      cert=found.certificate(), key=key, chain=tuple(chain)))
        return held

    async def serve_store(self) -> None:
        """Serve what the store holds now, even while a rollout holds the endpoint back (the
        primary's own switch, the last step of a rollout)."""
        await self._serve()

    async def _is_active(self, epoch: int, revision: int, digest: str) -> bool:
        view = await self.store.view()
        return (int(view.meta.get("revision") or 0) == revision
                and epoch == self.epoch and view.digest == digest)

    async def activate(self, epoch: int, revision: int, digest: str, identity: Identity,
                       *, confirm_within: float = 0.0) -> None:
        """Phase 2: store and serve the staged set (idempotent). ``confirm_within`` > 0:
        unless the primary confirms this set within that many seconds, the node returns to
        the set it served before by itself (:class:`sync.history.RevertGuard`)."""
        async with self._lock:
            await self._check_sender(identity, "Activate", epoch)
            staged = self._staged.get((epoch, revision, digest))
            if staged is None:
                if await self._is_active(epoch, revision, digest):
                    return
                await self._refuse(identity, "Activate", TransferRejected(
                    f"no set is staged for epoch {epoch} revision {revision} digest {digest!r}; "
                    "stage it first (this node keeps serving what it had)"))
            now = self.now
            try:
                check_dates(staged.certificates, now, sender=staged.sender)
            except TransferRejected as err:
                del self._staged[(epoch, revision, digest)]
                await self._refuse(identity, "Activate", err)
            key = (epoch, revision, digest)
            previous = self.guard.previous_for_next(await record_of(self.store))
            meta = {**self._meta(), "revision": str(revision), "revision_epoch": str(epoch),
                    **revert_meta(Pending(key, previous) if confirm_within > 0 else None,
                                   now, confirm_within)}  # in the same transaction as the set
            if staged.forced:  # a later primary keeps pushing this default forced
                meta[FORCED_DEFAULT_KEY] = staged.default_sha256 or NO_DEFAULT
            # not fsynced: a set lost to a power cut is pushed again by the primary
            await self.store.replace_all(
                staged.entries, default=staged.default_sha256, meta=meta,
                actor=f"node:{identity.name}", now=now, durable=False)
            if staged.forced:
                await self.store.record_audit(
                    actor=f"node:{identity.name}", action="replication.forced",
                    detail={"epoch": epoch, "revision": revision, "digest": digest}, now=now)
            self._staged = {k: v for k, v in self._staged.items() if k[:2] > (epoch, revision)}
            await self._refresh()
            await self.store.record_set(await record_of(self.store, epoch=epoch), now=now)
            if confirm_within > 0:
                self.guard.arm(key, previous, confirm_within)
            else:
                self.guard.cancel()
        _log.info("replication.activated", epoch=epoch, revision=revision, digest=digest,
                  confirm_within=confirm_within)

    async def _revert(self, previous: HistoryRecord, key: SetKey) -> None:
        """No Confirm of ``key`` came in time: serve ``previous`` again (if still on ``key``)."""
        async with self._lock:
            if not await self._is_active(*key):
                return
            now = self.now
            meta = {**self._meta(), "revision": str(previous.revision),
                    "revision_epoch": str(previous.epoch)}
            await self.store.replace_all(
                previous.entries(), default=previous.default_sha256, meta=meta,
                actor=f"node:{self.name}", now=now, durable=False)
            await self.store.record_audit(
                actor=f"node:{self.name}", action="replication.reverted",
                detail={"epoch": key[0], "revision": key[1], "digest": key[2],
                        "back_to_revision": previous.revision,
                        "why": "the primary did not confirm the set in time"}, now=now)
            await self._refresh()
            if previous.items:
                await self.store.record_set(await record_of(self.store, epoch=previous.epoch),
                                            now=now)
        _log.warning("replication.reverted", epoch=key[0], revision=key[1],
                     back_to=previous.revision)

    async def confirm(self, epoch: int, revision: int, digest: str, identity: Identity) -> None:
        """The primary saw this node serve its set: record ``last_sync``."""
        async with self._lock:
            await self._check_sender(identity, "Confirm", epoch)
            if not await self._is_active(epoch, revision, digest):
                raise TransferRejected(
                    f"this node does not hold epoch {epoch} revision {revision} digest "
                    f"{digest!r}; push again")
            confirmed = self.guard.confirmed((epoch, revision, digest))  # none pending now
            await self.store.set_meta({"last_sync": rfc3339(self.now), **(
                revert_meta(None, self.now, 0) if confirmed else {})}, durable=False)

    async def announce(self, promotion: Promotion, identity: Identity) -> bool:
        """Adopt a delivered promotion when it is higher than ours."""
        try:
            return await self.adopt(promotion, actor=f"{identity.kind}:{identity.name}")
        except PermissionDenied as err:
            await self._refuse(identity, "Announce", err)

    async def promote(self, promotion: Promotion, identity: Identity) -> None:
        """Admin: make this node the primary of ``promotion``'s epoch."""
        if identity.kind != "admin":
            await self._refuse(identity, "Promote", PermissionDenied(
                f"{identity.kind} {identity.name!r} may not promote; only an admin may "
                "(use admin.toml)"))
        if promotion.primary != self.name:
            raise BadInput(f"the promotion names {promotion.primary!r}, but this is node "
                           f"{self.name!r}; call Promote on the node being promoted")
        if promotion.epoch <= self.epoch and not (
                promotion.epoch == self.epoch and self.is_primary):
            raise StaleEpoch(
                f"the promotion's epoch {promotion.epoch} is not above this node's epoch "
                f"{self.epoch}; promote again with a higher epoch",
                epoch=promotion.epoch, current=self.epoch)
        try:
            await self.adopt(promotion, actor=f"admin:{identity.name}")
        except PermissionDenied as err:
            await self._refuse(identity, "Promote", err)
        await self.store.record_audit(
            actor=f"admin:{identity.name}", action="replication.promoted",
            detail={"epoch": promotion.epoch, "primary": promotion.primary}, now=self.now)


# --------------------------------------------------------------------------- servicer


class ReplicateHandler(Protocol):
    """The replicator as the servicer sees it (``sync.replicator.Replicator``)."""

    def replicate(
        self, nodes: Sequence[str], *, force: bool, actor: str
    ) -> AsyncIterator[certsync_pb2.ReplicateProgress]:
        """Push now to ``nodes`` (empty: all others), yielding one progress per node as it
        finishes. Raises :class:`CertsyncError` before the first yield when it cannot push
        at all (not the primary; coverage gate without force)."""
        ...

    def trigger(self) -> None:
        """Wake the push loop (coalesces)."""
        ...

    async def rollback(self, to_revision: int, *, actor: str) -> certsync_pb2.RollbackResponse:
        """Propose an earlier activated set as a new revision (0: the one before the
        current); raises :class:`CertsyncError` when there is none or we are not primary."""
        ...


class NodeStateFn(Protocol):
    """The node's state as GetState answers it (``node.service.CertStoreService.node_state``)."""

    def __call__(self) -> Awaitable[certsync_pb2.NodeState]: ...


_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_Context = grpc.aio.ServicerContext[Any, Any]


def _unary(
    fn: Callable[[ReplicationService, _Req, Identity], Awaitable[_Resp]],
) -> Callable[[ReplicationService, _Req, _Context], Awaitable[_Resp]]:
    method = fn.__name__

    @functools.wraps(fn)
    async def wrapper(self: ReplicationService, request: _Req, context: _Context) -> _Resp:
        async def call() -> _Resp:
            identity = await self._authenticate(context, method)
            structlog.contextvars.bind_contextvars(caller=f"{identity.kind}:{identity.name}")
            return await fn(self, request, identity)

        return await run_rpc(context, method, call)

    return wrapper


class ReplicationService(certsync_pb2_grpc.ReplicationServicer):
    """gRPC ``certsync.v1.Replication`` over a :class:`Replica` (and the replicator)."""

    def __init__(self, replica: Replica, state: NodeStateFn,
                 replicator: ReplicateHandler | None = None) -> None:
        self._replica = replica
        self._state = state
        self._replicator = replicator

    def attach(self, replicator: ReplicateHandler) -> None:
        self._replicator = replicator

    async def _authenticate(self, context: _Context, method: str) -> Identity:
        """The caller's identity; a certificate naming none of this cluster's is audited."""
        replica = self._replica
        return await authenticate(context, cluster_id=replica.topology.cluster_id,
                                  sink=replica.store, now=lambda: replica.now, method=method)

    @_unary
    async def Stage(self, request: certsync_pb2.StageRequest,
                    identity: Identity) -> certsync_pb2.StageResponse:
        push = Push(
            promotion=promotion_from_msg(request.promotion), epoch=request.epoch,
            revision=request.revision, sender=request.sender,
            items=tuple(WrappedItem(name=i.name, is_default=i.is_default, pkcs12=i.pkcs12,
                                    wrapped_passphrase=i.wrapped_passphrase)
                        for i in request.items),
            default_sha256=request.default_sha256 or None, digest=request.set_digest,
            force=request.force,
            kept=tuple(KeptItem(sha256=k.sha256, name=k.name, is_default=k.is_default)
                       for k in request.kept))
        digest = await self._replica.stage(push, identity)
        return certsync_pb2.StageResponse(set_digest=digest)

    @_unary
    async def Activate(self, request: certsync_pb2.ActivateRequest,
                       identity: Identity) -> certsync_pb2.NodeState:
        r = self._replica
        await r.activate(request.epoch, request.revision, request.set_digest, identity,
                         confirm_within=request.confirm_within_ms / 1000.0)
        # the replication fields the primary reads: the set just activated (no store read)
        return certsync_pb2.NodeState(name=r.name, role=r.role, epoch=r.epoch, primary=r.primary,
                                      revision=request.revision, set_digest=request.set_digest,
                                      cluster_id=r.topology.cluster_id)

    @_unary
    async def Confirm(self, request: certsync_pb2.ConfirmRequest,
                      identity: Identity) -> certsync_pb2.ConfirmResponse:
        await self._replica.confirm(request.epoch, request.revision, request.set_digest,
                                    identity)
        return certsync_pb2.ConfirmResponse()

    @_unary
    async def Announce(self, request: certsync_pb2.AnnounceRequest,
                       identity: Identity) -> certsync_pb2.NodeState:
        await self._replica.announce(promotion_from_msg(request.promotion), identity)
        return await self._state()

    @_unary
    async def PushRequests(self, request: certsync_pb2.PushRequestsRequest,
                           identity: Identity) -> certsync_pb2.PushRequestsResponse:
        digest = await receive_requests(self._replica, request, identity)
        return certsync_pb2.PushRequestsResponse(requests_digest=digest)

    @_unary
    async def Promote(self, request: certsync_pb2.PromoteRequest,
                      identity: Identity) -> certsync_pb2.NodeState:
        await self._replica.promote(promotion_from_msg(request.promotion), identity)
        if self._replicator is not None:
            self._replicator.trigger()
        return await self._state()

    async def Replicate(
        self, request: certsync_pb2.ReplicateRequest, context: _Context
    ) -> AsyncIterator[certsync_pb2.ReplicateProgress]:
        with structlog.contextvars.bound_contextvars(method="Replicate", peer=context.peer(),
                                                     caller=None):
            try:
                identity = await self._authenticate(context, "Replicate")
                actor = f"{identity.kind}:{identity.name}"
                structlog.contextvars.bind_contextvars(caller=actor)
                replicator = await self._admin_on_primary(identity, "Replicate")
                async for progress in replicator.replicate(
                        list(request.nodes), force=request.force, actor=actor):
                    yield progress
                _log.info("rpc.ok")
            except CertsyncError as err:
                await abort_for(context, err)

    @_unary
    async def Rollback(self, request: certsync_pb2.RollbackRequest,
                       identity: Identity) -> certsync_pb2.RollbackResponse:
        replicator = await self._admin_on_primary(identity, "Rollback")
        return await replicator.rollback(request.to_revision,
                                         actor=f"{identity.kind}:{identity.name}")

    async def _admin_on_primary(self, identity: Identity, method: str) -> ReplicateHandler:
        """The replicator, for an admin calling ``method`` on the primary; a refusal is
        audited (not an admin) or names the primary (not the primary)."""
        if identity.kind != "admin":
            await record_refusal(self._replica.store, actor=f"{identity.kind}:{identity.name}",
                                 method=method, why="admin only", now=self._replica.now)
            raise PermissionDenied(f"{identity.kind} {identity.name!r} may not call {method}: "
                                   "only an admin may; use the admin configuration (admin.toml)")
        if self._replicator is None or not self._replica.is_primary:
            raise NotPrimary(
                f"node {self._replica.name!r} is not the primary of epoch "
                f"{self._replica.epoch} (that is {self._replica.primary!r}); run "
                f"{method.lower()} against {self._replica.primary!r}",
                node=self._replica.name, primary=self._replica.primary,
                epoch=self._replica.epoch)
        return self._replicator
