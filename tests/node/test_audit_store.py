"""The store's audit log filters (since, actor, action, paging) and ReadAudit's roles."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.api import certsync_pb2
from node.audit_rpc import read_audit
from node.errors import BadInput, PermissionDenied
from node.identity import Identity
from node.store import Store

KEY = bytes(range(32))
T0 = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
ADMIN = Identity(kind="admin", name="ops", cluster_id="c")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "store.db", KEY)
    try:
        for i, (actor, action) in enumerate([("admin:ops", "cert.add"),
                                             ("node:t1", "rpc.refused"),
                                             ("admin:ops", "cert.default"),
                                             ("admin:dev", "cert.add")]):
            await s.record_audit(actor=actor, action=action, detail={"n": i},
                                 now=T0 + dt.timedelta(hours=i))
        yield s
    finally:
        await s.close()


async def test_filters(store: Store) -> None:
    every = await store.audit_log()
    assert [e.detail["n"] for e in every] == [3, 2, 1, 0]  # newest first
    since = await store.audit_log(since=T0 + dt.timedelta(hours=2))
    assert [e.detail["n"] for e in since] == [3, 2]
    assert [e.detail["n"] for e in await store.audit_log(actor="admin:ops")] == [2, 0]
    assert [e.detail["n"] for e in await store.audit_log(action="cert.add")] == [3, 0]
    page = await store.audit_log(2)
    rest = await store.audit_log(2, before_id=page[-1].id)
    assert [e.detail["n"] for e in page + rest] == [3, 2, 1, 0]
    both = await store.audit_log(since=T0 + dt.timedelta(minutes=30), actor="admin:ops")
    assert [e.detail["n"] for e in both] == [2]
    assert await store.audit_log(actor="admin:nobody") == []


async def test_read_audit_for_an_admin(store: Store) -> None:
    resp = await read_audit(store, certsync_pb2.ReadAuditRequest(
        since="2027-01-01T01:00:00Z", limit=2), ADMIN, now=T0)
    assert [(e.actor, e.action, e.outcome) for e in resp.entries] == [
        ("admin:dev", "cert.add", "ok"), ("admin:ops", "cert.default", "ok")]
    assert resp.truncated  # a third entry (n=1) matches too
    whole = await read_audit(store, certsync_pb2.ReadAuditRequest(actor="node:t1"), ADMIN,
                             now=T0)
    assert [e.outcome for e in whole.entries] == ["refused"] and not whole.truncated


async def test_read_audit_refuses_a_node_and_audits_it(store: Store) -> None:
    before = len(await store.audit_log())
    with pytest.raises(PermissionDenied, match="only an admin may read the audit log"):
        await read_audit(store, certsync_pb2.ReadAuditRequest(),
                         Identity(kind="node", name="t1", cluster_id="c"), now=T0)
    latest = (await store.audit_log(1))[0]
    assert (latest.actor, latest.action, latest.detail["method"]) == (
        "node:t1", "rpc.refused", "ReadAudit")
    assert len(await store.audit_log()) == before + 1


@pytest.mark.parametrize("since", ["yesterday", "2027-01-01T00:00:00"])
async def test_read_audit_bad_since(store: Store, since: str) -> None:
    with pytest.raises(BadInput, match="since"):
        await read_audit(store, certsync_pb2.ReadAuditRequest(since=since), ADMIN, now=T0)
