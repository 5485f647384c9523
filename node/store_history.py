"""[shell] The activated sets a node keeps, so a change can be undone (``certsync rollback``).

Each time a node's set becomes the one it serves (a receiver's activation, the primary's own
switch at the end of a rollout) the whole set -- every certificate with its key and chain,
and which one is default -- is recorded in the ``set_history`` table with its epoch,
revision and digest. The row is sealed whole with AES-256-GCM under the store key, bound to
its epoch, revision and digest (:mod:`node.sealing`), so keys stay encrypted at rest and a
row moved or altered fails to open (:class:`IntegrityError`). The newest :data:`KEEP` rows
are kept (the set served now and at least 3 before it); older ones are dropped.

:class:`SetHistoryMixin` adds the methods to :class:`node.store.Store`; its concurrency and
cancellation contract is the store's (one lock, one transaction per change).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import aiosqlite
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from node.errors import IntegrityError, NotFound
from node.formats import cert_sha256
from node.model import PrivateKey
from node.sealing import NONCE_BYTES, key_der, load_key, seal, unseal
from node.store_file import StoreFile
from node.store_view import SetEntry
from node.text import stored_time

__all__ = ["KEEP", "HistoryItem", "HistoryRecord", "SetHistoryMixin"]

#: sets kept per node: the one served now and 4 before it (DESIGN.md: at least 3)
KEEP: Final = 5
_AAD: Final = b"certsync-history-v1|"


@dataclass(frozen=True)
class HistoryItem:
    """One certificate of a recorded set (``key`` None: a chain certificate)."""

    name: str
    cert: x509.Certificate
    key: PrivateKey | None = field(repr=False)
    chain: tuple[x509.Certificate, ...] = ()
    is_default: bool = False

    @property
    def sha256(self) -> str:
        return cert_sha256(self.cert)


@dataclass(frozen=True)
class HistoryRecord:
    """One activated set as recorded (``items`` empty when only the summary was read)."""

    epoch: int
    revision: int
    digest: str
    default_sha256: str | None
    activated_at: str
    items: tuple[HistoryItem, ...] = ()

    def entries(self) -> list[SetEntry]:
        """The set as :meth:`node.store.Store.replace_all` takes it (chain certificates
        without keys once each)."""
        out = {i.sha256: SetEntry(cert=i.cert, key=i.key, name=i.name) for i in self.items}
        for item in self.items:
            for c in item.chain:
                sha = cert_sha256(c)
                if sha not in out:
                    out[sha] = SetEntry(cert=c, key=None, name=sha[:16])
        return list(out.values())


def _aad(epoch: int, revision: int, digest: str) -> bytes:
    return _AAD + f"{epoch}|{revision}|{digest}".encode("ascii")


def _der(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")


def _item_json(i: HistoryItem) -> str:
    return json.dumps(
        {"name": i.name, "cert": _der(i.cert), "default": i.is_default,
         "key": base64.b64encode(key_der(i.key)).decode("ascii") if i.key is not None else None,
         "chain": [_der(c) for c in i.chain]})


#: an item's JSON with what it was made from (compared by identity: the same objects)
_Fragment = tuple[object, object, object, str, bool, str]


def _encode(items: Sequence[HistoryItem], memo: dict[str, _Fragment] | None = None) -> bytes:
    """The items as JSON (what ``json.dumps`` of the list gives); ``memo`` keeps each item's
    JSON for the next record, which re-encodes only the items that changed (a record of
    1 000 certificates serialised every key again on every rollout)."""
    if memo is None:
        return ("[" + ", ".join(_item_json(i) for i in items) + "]").encode("utf-8")
    parts, kept = [], {}
    for i in items:
        sha = str(id(i.cert))  # the fragment holds the certificate: the id stays its own
        f = memo.get(sha)
        if f is None or not (f[0] is i.key and f[1] is i.cert and f[2] is i.chain
                             and f[3] == i.name and f[4] == i.is_default):
            f = (i.key, i.cert, i.chain, i.name, i.is_default, _item_json(i))
        kept[sha] = f
        parts.append(f[5])
    memo.clear()
    memo.update(kept)
    return ("[" + ", ".join(parts) + "]").encode("utf-8")


def _decode(plain: bytes, what: str) -> tuple[HistoryItem, ...]:
    try:
        raw: list[dict[str, Any]] = json.loads(plain)
        return tuple(
            HistoryItem(
                name=str(r["name"]),
                cert=x509.load_der_x509_certificate(base64.b64decode(r["cert"])),
                key=(load_key(base64.b64decode(r["key"]), what=what)
                     if r["key"] is not None else None),
                chain=tuple(x509.load_der_x509_certificate(base64.b64decode(c))
                            for c in r["chain"]),
                is_default=bool(r["default"]),
            )
            for r in raw
        )
    except (ValueError, KeyError, TypeError) as err:
        raise IntegrityError(f"{what} does not decode; restore the store from a backup") from err


class SetHistoryMixin(StoreFile):
    """``set_history`` over the store's connection; see the module docstring."""

    def __init__(self, conn: aiosqlite.Connection, path: Path, store_key: bytes) -> None:
        super().__init__(conn, path, store_key)
        #: each recorded item's JSON by sha256, for the next record (see _encode)
        self._history_json: dict[str, _Fragment] = {}

    async def record_set(self, record: HistoryRecord, *, now: datetime) -> None:
        """Record ``record`` (with its items) as the newest activated set; keeps :data:`KEEP`.
        Recording the set that is the newest already is a no-op."""
        when = stored_time(now)
        aad = _aad(record.epoch, record.revision, record.digest)

        def sealed() -> tuple[bytes, bytes]:  # keys serialised and sealed: CPU work
            plain = _encode(record.items, self._history_json)
            return seal(self._store_key, aad, plain, os.urandom(NONCE_BYTES))

        nonce, ct = await asyncio.to_thread(sealed) if len(record.items) > 4 else sealed()
        async with self._lock:
            newest = await self._fetchall(
                "SELECT epoch, revision, digest FROM set_history ORDER BY id DESC LIMIT 1")
            if newest and tuple(newest[0]) == (record.epoch, record.revision, record.digest):
                return
            async with self._transaction(durable=False, certs=()):
                await self._conn.execute(
                    "INSERT INTO set_history (epoch, revision, digest, default_sha256, "
                    "activated_at, nonce, ciphertext) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (record.epoch, record.revision, record.digest,
                     record.default_sha256 or "", when, nonce, ct))
                await self._conn.execute(
                    "DELETE FROM set_history WHERE id NOT IN "
                    "(SELECT id FROM set_history ORDER BY id DESC LIMIT ?)", (KEEP,))

    async def history(self) -> list[HistoryRecord]:
        """The recorded sets, newest first, without their items."""
        rows = await self._locked(lambda: self._fetchall(
            "SELECT epoch, revision, digest, default_sha256, activated_at FROM set_history "
            "ORDER BY id DESC"))
        return [HistoryRecord(epoch=int(r[0]), revision=int(r[1]), digest=str(r[2]),
                              default_sha256=str(r[3]) or None, activated_at=str(r[4]))
                for r in rows]

    async def history_set(self, revision: int | None = None) -> HistoryRecord:
        """A recorded set with its items: the newest one of ``revision`` (None: the newest
        of all); :class:`NotFound` naming the revisions kept when there is none."""
        rows = await self._locked(lambda: self._fetchall(
            "SELECT epoch, revision, digest, default_sha256, activated_at, nonce, ciphertext "
            "FROM set_history ORDER BY id DESC"))
        chosen = next((r for r in rows if revision is None or int(r[1]) == revision), None)
        if chosen is None:
            kept = ", ".join(str(r[1]) for r in rows) or "none"
            raise NotFound(f"no activated set of revision {revision!r} is kept on this node "
                           f"(kept: {kept}); choose one of those")
        epoch, rev, digest = int(chosen[0]), int(chosen[1]), str(chosen[2])
        what = f"the recorded set of revision {rev}"
        aad, nonce, ct = _aad(epoch, rev, digest), bytes(chosen[5]), bytes(chosen[6])
        items = await asyncio.to_thread(
            lambda: _decode(unseal(self._store_key, aad, nonce, ct, what=what), what))
        return HistoryRecord(epoch=epoch, revision=rev, digest=digest,
                             default_sha256=str(chosen[3]) or None,
                             activated_at=str(chosen[4]), items=items)
