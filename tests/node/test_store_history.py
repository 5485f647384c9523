"""The kept activated sets (node.store_history): round trip with keys and chain, sealed at
rest, bound to their row, the newest KEEP kept, and the missing revision named."""

from __future__ import annotations

import base64
import dataclasses
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from node.errors import IntegrityError, NotFound
from node.sealing import key_der
from node.store import Store
from node.store_history import KEEP, HistoryItem, HistoryRecord
from tests.pki import make_chain, make_key, make_leaf

NOW = datetime(2026, 6, 1, tzinfo=UTC)
STORE_KEY = bytes(range(32))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "s.sqlite3", STORE_KEY)
    try:
        yield s
    finally:
        await s.close()


def _record(revision: int, *, digest: str | None = None) -> HistoryRecord:
    p = make_chain(sans=("support.example.com",))
    item = HistoryItem(name=f"r{revision}", cert=p.leaf.cert, key=p.leaf.key,
                       chain=tuple(p.chain), is_default=True)
    return HistoryRecord(epoch=1, revision=revision, digest=digest or f"{revision:064x}",
                         default_sha256=item.sha256, activated_at="", items=(item,))


async def test_a_recorded_set_comes_back_whole(store: Store) -> None:
    record = _record(3)
    await store.record_set(record, now=NOW)
    back = await store.history_set(3)
    assert (back.epoch, back.revision, back.digest, back.default_sha256) == (
        1, 3, record.digest, record.default_sha256)
    (item,) = back.items
    want = record.items[0]
    assert item.cert == want.cert and item.chain == want.chain and item.is_default
    assert item.key is not None and want.key is not None
    assert item.key.private_numbers() == want.key.private_numbers()  # type: ignore[union-attr]
    # the entries put chain certificates once, without keys
    entries = back.entries()
    assert [e.key is not None for e in entries] == [True] + [False] * len(want.chain)


async def test_keys_are_sealed_at_rest(store: Store, tmp_path: Path) -> None:
    record = _record(1)
    await store.record_set(record, now=NOW)
    assert record.items[0].key is not None
    der = record.items[0].key.private_bytes(serialization.Encoding.DER,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
    raw = b"".join(bytes(r[0]) for r in sqlite3.connect(tmp_path / "s.sqlite3").execute(
        "SELECT ciphertext FROM set_history"))
    assert raw and der not in raw and der[-32:] not in raw


async def test_a_row_moved_to_another_revision_does_not_open(tmp_path: Path) -> None:
    path = tmp_path / "moved.sqlite3"
    store = await Store.open(path, STORE_KEY)
    await store.record_set(_record(1), now=NOW)
    assert (await store.history_set(1)).revision == 1  # the twin: in its place it opens
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE set_history SET revision = 2")
    store = await Store.open(path, STORE_KEY)
    try:
        with pytest.raises(IntegrityError):
            await store.history_set(2)
    finally:
        await store.close()


async def test_the_newest_sets_are_kept_and_a_repeat_is_not_recorded(store: Store) -> None:
    for revision in range(1, KEEP + 3):
        await store.record_set(_record(revision), now=NOW)
    again = _record(KEEP + 2, digest=f"{KEEP + 2:064x}")
    await store.record_set(again, now=NOW)  # the newest already: a no-op
    revisions = [h.revision for h in await store.history()]
    assert revisions == list(range(KEEP + 2, 2, -1)) and len(revisions) == KEEP >= 4


async def test_a_revision_not_kept_is_named_with_the_kept_ones(store: Store) -> None:
    with pytest.raises(NotFound, match="kept: none"):
        await store.history_set()
    await store.record_set(_record(7), now=NOW)
    assert (await store.history_set()).revision == 7  # no revision: the newest
    with pytest.raises(NotFound, match=r"revision 8 .*kept: 7"):
        await store.history_set(8)


def test_encoding_with_the_memo_is_json_dumps_of_the_items() -> None:
    """The record's bytes do not depend on what the last record kept: the same as a fresh
    encoding, for items kept, changed (name, default) and new."""
    from node.store_history import _encode  # the private encoder under test

    def dumps(items: list[HistoryItem]) -> bytes:  # the format as first written
        def der(c: x509.Certificate) -> str:
            return base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
        return json.dumps([
            {"name": i.name, "cert": der(i.cert), "default": i.is_default,
             "key": base64.b64encode(key_der(i.key)).decode() if i.key is not None else None,
             "chain": [der(c) for c in i.chain]} for i in items]).encode()

    pki = make_chain()
    other = make_leaf(pki.intermediate, ["other.example.com"], key=make_key(slot=12))
    one = HistoryItem(name="a", cert=pki.leaf.cert, key=pki.leaf.key,
                      chain=(pki.intermediate.cert,), is_default=True)
    two = HistoryItem(name="b", cert=other.cert, key=other.key)
    memo: dict[str, Any] = {}
    for items in ([one], [one, two], [dataclasses.replace(one, name="c"), two],
                  [dataclasses.replace(one, is_default=False), two], [two]):
        assert _encode(items, memo) == dumps(items) == _encode(items)
