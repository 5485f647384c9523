"""[shell] CSRs and their keys travel from the primary to its backup only (issue 11).

A CSR made on the primary before a failover must complete on the promoted backup, so the
failover pair (the topology's primary and backup) hold the same CSRs; traffic nodes hold
none. CSRs are not part of the served set: the set's digest, its stages and activations are
untouched, and traffic nodes' digests do not change.

* :func:`push_requests` (the primary, after each replication round): when the peer's
  ``requests_digest`` (in its ``GetState``) differs from ours, send every CSR with its key
  sealed for that peer's identity key (:func:`sync.transfer.wrap_csr_key`, HPKE bound to
  cluster, epoch, revision, sender, recipient, request and the set's digest);
* :func:`receive_requests` (the peer): only the primary of our epoch may send
  (:func:`sync.promotion.sender_refusal`, audited); a traffic node refuses; every key is
  opened with our own key off the event loop and checked against its request, the digest
  must be the one announced, then the CSR table is replaced in one transaction and any
  stored certificate without a key is linked to a CSR key that matches it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import structlog
from cryptography.hazmat.primitives.asymmetric import ec

from node.api import certsync_pb2
from node.errors import CertsyncError, PermissionDenied, TransferRejected
from node.identity import Identity
from node.linking import requests_digest
from node.model import PrivateKey
from node.store_view import StoredCsr
from node.text import parse_stored_time, stored_time
from sync.client import NodeClient
from sync.promotion import sender_refusal
from sync.topology import Topology
from sync.transfer import TransferContext, wrap_csr_key

if TYPE_CHECKING:  # the receiver imports this module; its Replica is only a type here
    from sync.receiver import Replica

__all__ = ["pair_targets", "push_requests", "push_to_pair", "receive_requests"]

_log = structlog.get_logger("sync.csr_replication")


def pair_targets(topology: Topology, me: str) -> tuple[str, ...]:
    """The other node of the failover pair (the topology's primary and backup), if any."""
    pair = [topology.primary.name] + ([topology.backup.name] if topology.backup else [])
    return tuple(n for n in pair if n != me)


async def push_requests(replica: Replica, client: NodeClient, recipient: str,
                        public_key: ec.EllipticCurvePublicKey,
                        promotion: certsync_pb2.Promotion) -> bool:
    """Bring ``recipient``'s CSRs to ours when its digest differs; True when sent."""
    store = replica.store
    digest = await store.requests_digest()
    state = await client.get_state()
    if state.requests_digest == digest or state.epoch != replica.epoch:
        return False
    csrs = await store.csrs_with_keys()
    revision = int(await store.get_meta("revision") or 0)
    ctx = TransferContext(cluster_id=replica.topology.cluster_id, epoch=replica.epoch,
                          revision=revision, sender=replica.name, recipient=recipient)

    def wrap() -> list[certsync_pb2.ReplicatedRequest]:
        return [certsync_pb2.ReplicatedRequest(
            id=c.id, name=c.name, pem=c.pem.decode("ascii"), created_at=stored_time(c.created_at),
            fulfilled_by=c.fulfilled_by or "",
            wrapped_key=wrap_csr_key(ctx, public_key, csr_id=c.id, pem=c.pem, key=k,
                                     set_digest=digest))
            for c, k in csrs]

    request = certsync_pb2.PushRequestsRequest(
        promotion=promotion, epoch=replica.epoch, revision=revision,
        sender=replica.name, requests_digest=digest, requests=await asyncio.to_thread(wrap))
    await client.push_requests(request)
    _log.info("replication.requests_pushed", node=recipient, requests=len(csrs))
    return True


async def push_to_pair(replica: Replica, clients: Mapping[str, NodeClient],
                       keys: Mapping[str, ec.EllipticCurvePublicKey],
                       promotion: certsync_pb2.Promotion) -> None:
    """:func:`push_requests` to the other node of the pair; failures are logged, and the
    next round tries again."""
    for name in pair_targets(replica.topology, replica.name):
        if name not in clients:
            continue
        try:
            await push_requests(replica, clients[name], name, keys[name], promotion)
        except CertsyncError as err:
            _log.warning("replication.requests_failed", node=name, error=type(err).__name__)


async def _refuse(replica: Replica, identity: Identity, err: CertsyncError) -> None:
    await replica.store.record_audit(
        actor=f"{identity.kind}:{identity.name}", action="replication.refused",
        detail={"method": "PushRequests", "error": type(err).__name__, "why": err.message},
        now=replica.now)
    raise err


async def receive_requests(replica: Replica, request: certsync_pb2.PushRequestsRequest,
                           identity: Identity) -> str:
    """Store the primary's CSRs (see the module docstring); returns our digest after."""
    refusal = sender_refusal(identity.kind, identity.name, "PushRequests", request.epoch,
                             current_epoch=replica.epoch, current_primary=replica.primary)
    if refusal is None and identity.name != request.sender:
        refusal = PermissionDenied(f"node {identity.name!r} may not push as "
                                   f"{request.sender!r}")
    if refusal is None and replica.topology.node(replica.name).role == "traffic":
        refusal = PermissionDenied(f"node {replica.name!r} is a traffic node and holds no "
                                   "requests; only the backup receives them")
    if refusal is not None:
        await _refuse(replica, identity, refusal)
    ctx = TransferContext(cluster_id=replica.topology.cluster_id, epoch=request.epoch,
                          revision=request.revision, sender=request.sender,
                          recipient=replica.name)

    def unwrap() -> list[tuple[StoredCsr, PrivateKey]]:
        out = []
        for r in request.requests:
            pem = r.pem.encode("ascii")
            key = replica.open_csr_key(ctx, csr_id=r.id, pem=pem, wrapped=r.wrapped_key,
                                       set_digest=request.requests_digest)
            out.append((StoredCsr(id=r.id, name=r.name, pem=pem,
                                  created_at=parse_stored_time(r.created_at),
                                  fulfilled_by=r.fulfilled_by or None), key))
        return out

    try:
        csrs: Sequence[tuple[StoredCsr, PrivateKey]] = await asyncio.to_thread(unwrap)
        got = requests_digest((c.id, c.fulfilled_by) for c, _ in csrs)
        if got != request.requests_digest:
            raise TransferRejected(f"the requests from {request.sender!r} have digest "
                                   f"{got!r}, not the {request.requests_digest!r} announced")
    except TransferRejected as err:
        await _refuse(replica, identity, err)
        raise
    actor = f"node:{identity.name}"
    await replica.store.replace_csrs(csrs, actor=actor, now=replica.now)
    await replica.store.link_stored(actor=actor, now=replica.now)
    _log.info("replication.requests_received", sender=request.sender, requests=len(csrs))
    return await replica.store.requests_digest()
