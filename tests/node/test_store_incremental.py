"""The store's view after a change is carried over from the view before (only the rows the
change touched are read again, chains and the replicated set redone for what changed): after
any sequence of changes it equals the view a fresh reading of the file gives."""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.app import NodeApp, NodeCluster
from node.errors import Conflict, NotFound
from node.formats import cert_sha256
from node.model import PrivateKey
from node.sealing import key_der
from node.store import Store
from node.store_rows import CertRows, merge_rows, row_to_cert
from node.store_view import SetEntry, StoreView, replicated_members, set_digest
from node.tls import ServedCert, TlsEndpoint
from tests.pki import make_cross_signed_pool

KEY = bytes(range(32))
NOW = datetime(2026, 12, 3, tzinfo=UTC)


MATERIAL = make_cross_signed_pool("Inc", "inc.example")
SHAS = [cert_sha256(m.cert) for m in MATERIAL]
_I = st.integers(min_value=0, max_value=len(MATERIAL) - 1)
OPS = st.one_of(
    st.tuples(st.just("add"), st.lists(st.tuples(_I, st.booleans()), min_size=1, max_size=3)),
    st.tuples(st.just("delete"), _I),
    st.tuples(st.just("default"), _I),
    st.tuples(st.just("replace"), st.lists(st.tuples(_I, st.booleans()), max_size=5),
              st.booleans()),
    st.tuples(st.just("meta"), st.integers(min_value=0, max_value=3)),
    st.tuples(st.just("history"), st.integers(min_value=0, max_value=3)),
)


def _entry(i: int, keyed: bool) -> SetEntry:
    m = MATERIAL[i]
    key: PrivateKey | None = m.key if keyed else None
    return SetEntry(cert=m.cert, key=key, name=f"n{i}")


async def _apply(store: Store, op: tuple[Any, ...], step: int) -> None:
    kind = op[0]
    try:
        if kind == "add":
            await store.add([_entry(i, k) for i, k in op[1]], make_default=None,
                            actor="admin:t", now=NOW)
        elif kind == "delete":
            await store.delete(SHAS[op[1]], actor="admin:t", now=NOW, force=True)
        elif kind == "default":
            await store.set_default(SHAS[op[1]], actor="admin:t", now=NOW)
        elif kind == "replace":
            entries = {cert_sha256(MATERIAL[i].cert): _entry(i, k) for i, k in op[1]}
            keyed = [sha for sha, e in entries.items() if e.key is not None]
            await store.replace_all(list(entries.values()),
                                    default=keyed[0] if keyed and op[2] else None,
                                    meta={"epoch": str(step)}, actor="node:t", now=NOW,
                                    durable=False)
        elif kind == "meta":
            await store.set_meta({f"k{op[1]}": str(step)})
        else:  # an audit-only change and a CSR-free link pass: no certificate row changes
            await store.record_audit(actor="admin:t", action="t", detail={"n": op[1]}, now=NOW)
            await store.link_stored(actor="admin:t", now=NOW)
    except (Conflict, NotFound):
        pass  # refused: nothing changed


def _shas(chain: tuple[x509.Certificate, ...]) -> tuple[str, ...]:
    return tuple(cert_sha256(c) for c in chain)


def _answers(view: StoreView) -> dict[str, Any]:
    certs = view.certs
    return {
        "certs": [(c.sha256, c.name, c.role, c.has_key, c.is_default) for c in certs],
        "rows": view.rows,
        "keyed": view.keyed,
        "default": view.default_sha256,
        "meta": dict(view.meta),
        "members": view.cert_rows.members,
        "digest": view.digest,
        "chains": {c.sha256: (_shas(view.chain(c.sha256)[0]), view.chain(c.sha256)[1])
                   for c in certs},
        "candidates": {c.sha256: _shas(tuple(view.chain_index.candidates(c.certificate())))
                       for c in certs},
    }


def _from_scratch(view: StoreView) -> dict[str, Any]:
    """What the same rows give worked out from nothing, by the reference functions."""
    fresh = StoreView(meta=view.meta, cert_rows=CertRows(
        rows=view.rows, load=lambda r: row_to_cert(r, None)[1]))
    members = replicated_members(fresh.certs, lambda c, _p: fresh.chain(cert_sha256(c)))
    return {"members": tuple(members),
            "digest": set_digest(members, fresh.default_sha256), **{
                k: v for k, v in _answers(fresh).items() if k not in ("members", "digest")}}


def _served(served: list[ServedCert], default: str | None) -> Any:
    return default, {s.sha256: (_shas((s.cert, *s.chain)), key_der(s.key)) for s in served}


def _app(store: Store) -> NodeApp:
    return NodeApp(name="p1", cluster=NodeCluster(cluster_id="c", node_names=("p1",),
                                                  role="primary"),
                   store=store, endpoint=TlsEndpoint(node_name="p1"))


async def _run(ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "s.sqlite3"
        store = await Store.open(db, KEY)
        app = _app(store)  # what it serves is carried over from its last answer too
        try:
            for step, op in enumerate(ops):
                await _apply(store, op, step)
                if step % 2:  # some changes come two at a time, between two readings
                    continue
                view = await store.view()
                assert _served(*await app.served_certs(view)) == _served(
                    *await _app(store).served_certs(view)), op
                await app.refresh()
                names = [None, "a.inc.example", "b.inc.example", "c.inc.example",
                         "self.inc.example", "d.inc.example"]
                fresh = _app(store)
                await fresh.refresh()
                assert [app.served_for(n) for n in names] == [fresh.served_for(n) for n in names]
                got = _answers(await store.view())
                other = await Store.open(db, KEY)  # another connection: every row read
                try:
                    assert got == _answers(await other.view()), op
                finally:
                    await other.close()
                assert got == _from_scratch(await store.view()), op
                async with store._lock:  # as a change would: reads take the reader connection
                    assert _answers(await store.view()) == got, op
        finally:
            await store.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, min_size=1, max_size=14))
def test_the_carried_view_equals_a_fresh_reading(ops: list[tuple[Any, ...]]) -> None:
    asyncio.run(_run(ops))


def test_a_change_reads_only_its_rows_and_carries_the_rest(tmp_path: Path) -> None:
    """The parsed certificates and chains of rows a change did not touch are the same
    objects after it; the twin: a deleted issuer's dependants are built again."""

    async def run() -> None:
        store = await Store.open(tmp_path / "s.sqlite3", KEY)
        try:
            await store.add([_entry(i, i >= 5) for i in range(len(MATERIAL))],
                            make_default=None, actor="admin:t", now=NOW)
            before = await store.view()
            leaf_a, leaf_self = SHAS[5], SHAS[8]
            chain_a = before.chain(leaf_a)
            await store.set_meta({"x": "1"})
            assert (await store.view()).cert_rows is before.cert_rows  # meta only
            await store.delete(SHAS[9], actor="admin:t", now=NOW)  # unrelated to leaf a
            after = await store.view()
            assert after.cert_rows is not before.cert_rows
            assert after.get(leaf_self) is before.get(leaf_self)
            assert after.chain(leaf_a) is chain_a  # carried over, not built again
            leaf_b = SHAS[6]
            assert before.chain(leaf_b)[1] == ()
            await store.delete(SHAS[4], actor="admin:t", now=NOW)  # leaf b's issuer
            gone = await store.view()
            assert gone.chain(leaf_b)[0] == () and gone.chain(leaf_b)[1]
            assert gone.chain(leaf_a) is chain_a
        finally:
            await store.close()

    asyncio.run(run())


@pytest.mark.parametrize("changed", [set(), {"b"}, {"a", "z"}, {"c", "q"}])
def test_merge_rows_keeps_the_order(changed: set[str]) -> None:
    def row(sha: str, at: str) -> tuple[Any, ...]:
        return (sha, b"", "", "identity", "", at, False)

    old = (row("a", "1"), row("b", "1"), row("c", "2"))
    fresh = {"z": row("z", "0"), "b": row("b", "3"), "q": row("q", "2")}
    fresh = {k: v for k, v in fresh.items() if k in changed}
    merged = merge_rows(old, fresh, changed)
    expected = sorted([r for r in old if r[0] not in changed] + list(fresh.values()),
                      key=lambda r: (r[5], r[0]))
    assert list(merged) == expected
