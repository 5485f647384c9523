"""[shell] ``ReadAudit``: the node's audit log over gRPC, for admin identities only.

A node identity (or any other non-admin) is refused with PERMISSION_DENIED, and the refusal
is itself audited. ``since`` is an RFC 3339 time (the CLI turns ``--since 24h`` into one with
its own clock); entries come newest first, at most ``limit`` (0: :data:`DEFAULT_LIMIT`, never
more than :data:`MAX_LIMIT`), with ``truncated`` set when more match.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Final

from node.api import certsync_pb2
from node.audit_view import audit_entry
from node.errors import BadInput, PermissionDenied
from node.identity import Identity
from node.store import Store

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "read_audit"]

DEFAULT_LIMIT: Final = 1000
MAX_LIMIT: Final = 10000


def _since(text: str) -> dt.datetime | None:
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as err:
        raise BadInput(f"since {text!r} is not an RFC 3339 time, e.g. "
                       "'2027-01-01T00:00:00Z'") from err
    if when.tzinfo is None:
        raise BadInput(f"since {text!r} has no time zone; end it with 'Z'")
    return when


async def read_audit(
    store: Store, request: certsync_pb2.ReadAuditRequest, identity: Identity, *, now: dt.datetime
) -> certsync_pb2.ReadAuditResponse:
    """The answer to ``ReadAudit`` from ``identity`` (see the module docstring)."""
    if identity.kind != "admin":
        await store.record_audit(
            actor=f"{identity.kind}:{identity.name}", action="rpc.refused",
            detail={"method": "ReadAudit", "why": "admin only"}, now=now)
        raise PermissionDenied(
            f"{identity.kind} {identity.name!r} may not call ReadAudit: only an admin may read "
            "the audit log; use the admin configuration (admin.toml)")
    if request.limit < 0 or request.before_id < 0:
        raise BadInput(f"limit {request.limit} and before_id {request.before_id} must not be "
                       "negative")
    limit = min(request.limit or DEFAULT_LIMIT, MAX_LIMIT)
    events = await store.audit_log(
        limit + 1, since=_since(request.since), actor=request.actor or None,
        action=request.action or None, before_id=request.before_id or None)
    entries = []
    for event in events[:limit]:
        entry = audit_entry(event)
        entries.append(certsync_pb2.AuditEntry(
            id=event.id, time=entry["time"], actor=entry["actor"], action=entry["action"],
            target=entry["target"], outcome=entry["outcome"],
            detail_json=json.dumps(entry["detail"], sort_keys=True)))
    return certsync_pb2.ReadAuditResponse(entries=entries, truncated=len(events) > limit)
