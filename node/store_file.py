"""[shell] The store's SQLite file: open and migrate it, transactions, the CSR and audit tables.

:class:`StoreFile` is the base of :class:`node.store.Store` and holds what does not concern
the certificate set: opening the file (mode 0600, WAL, schema migrations in
``PRAGMA user_version``, the store-key check), the one-transaction-per-change plumbing, the
``csrs`` table (requests with their keys, sealed by :mod:`node.sealing` and bound to the
request id) and the ``audit`` table (one row per change: when, who, what; never key
material). The concurrency, missing-key and cancellation contract is :class:`Store`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Self, TypeVar

import aiosqlite
from cryptography import x509

from node.errors import AlreadyExists, BadInput, ConfigError, IntegrityError
from node.linking import requests_digest
from node.model import PrivateKey
from node.sealing import (
    NONCE_BYTES,
    STORE_KEY_BYTES,
    csr_aad,
    key_check,
    key_check_opens,
    key_der,
    load_key,
    seal,
    spki,
    unseal,
)
from node.store_io import STORE_BUSY_SECONDS, open_reader, write_error
from node.store_view import AuditEvent, StoredCsr, csr_row, no_csr, redact
from node.text import parse_stored_time, stored_time

__all__ = ["SCHEMA_VERSION", "StoreFile"]

#: each migration is a list of statements, applied in order in one transaction that also
#: sets ``PRAGMA user_version`` to its 1-based index. Never edit a released entry: append.
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE certificates (
            sha256   TEXT PRIMARY KEY CHECK (length(sha256) = 64),
            der      BLOB NOT NULL,
            name     TEXT NOT NULL,
            role     TEXT NOT NULL CHECK (role IN ('identity', 'intermediate', 'root')),
            not_after TEXT NOT NULL,
            added_at TEXT NOT NULL
        ) STRICT""",
        """CREATE TABLE keys (
            cert_sha256 TEXT PRIMARY KEY
                REFERENCES certificates(sha256) ON DELETE CASCADE,
            nonce      BLOB NOT NULL CHECK (length(nonce) = 12),
            ciphertext BLOB NOT NULL
        ) STRICT""",
        """CREATE TABLE csrs (
            id         TEXT PRIMARY KEY,
            name       TEXT NOT NULL,
            pem        BLOB NOT NULL,
            nonce      BLOB NOT NULL CHECK (length(nonce) = 12),
            ciphertext BLOB NOT NULL,
            created_at TEXT NOT NULL
        ) STRICT""",
        """CREATE TABLE meta (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        ) STRICT""",
        """CREATE TABLE audit (
            id     INTEGER PRIMARY KEY AUTOINCREMENT,
            at     TEXT NOT NULL,
            actor  TEXT NOT NULL,
            action TEXT NOT NULL,
            detail TEXT NOT NULL
        ) STRICT""",
    ),
    # issue 11: a CSR whose key was linked to its signed certificate is fulfilled by it
    ("ALTER TABLE csrs ADD COLUMN fulfilled_by TEXT",),
    (  # the activated sets a node keeps for undo (node.store_history); sealed whole
        """CREATE TABLE set_history (
            id        INTEGER PRIMARY KEY AUTOINCREMENT,
            epoch     INTEGER NOT NULL,
            revision  INTEGER NOT NULL,
            digest    TEXT NOT NULL,
            default_sha256 TEXT NOT NULL,
            activated_at TEXT NOT NULL,
            nonce     BLOB NOT NULL CHECK (length(nonce) = 12),
            ciphertext BLOB NOT NULL
        ) STRICT""",
    ),
)
SCHEMA_VERSION: Final = len(_MIGRATIONS)

_T = TypeVar("_T")

#: the connection the current task reads through, set while a change holds the writer's
_READING: ContextVar[aiosqlite.Connection | None] = ContextVar("store_reading", default=None)


class StoreFile:
    """The SQLite file under a :class:`node.store.Store`; see the module docstring."""

    def __init__(self, conn: aiosqlite.Connection, path: Path, store_key: bytes) -> None:
        self._conn = conn
        self._path = path
        self._store_key = store_key
        self._lock = asyncio.Lock()
        #: reads while a change holds ``_lock`` (and the writer's connection) go here
        self._reader: aiosqlite.Connection | None = None
        self._read_lock = asyncio.Lock()
        self._busy_seconds = STORE_BUSY_SECONDS
        #: our own commits, counted (the views of :class:`node.store.Store` are keyed by it)
        self._generation = 0
        #: the certificates whose rows (or key rows) our commits since the last view may
        #: have changed; ``None``: any (the view reads every row again)
        self._touched: set[str] | None = set()
        #: public keys (DER SPKI) of CSRs by their PEM, parsed once (issue 11's linking)
        self._csr_spki_memo: dict[bytes, bytes] = {}

    # ---------------------------------------------------------------- open / close

    @classmethod
    async def open(
        cls, path: Path, store_key: bytes, *, busy_seconds: float = STORE_BUSY_SECONDS
    ) -> Self:
        """Open (creating the file with mode 0600, and migrating) the store at ``path``; a
        change waits up to ``busy_seconds`` for another process's write lock."""
        if len(store_key) != STORE_KEY_BYTES:
            raise ConfigError(
                f"the store key for {str(path)!r} is {len(store_key)} bytes long; "
                f"it must be {STORE_KEY_BYTES} random bytes"
            )
        try:
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        except OSError as err:
            raise ConfigError(
                f"cannot open the store {str(path)!r}: {err.strerror}; "
                "check the path and permissions"
            ) from err
        os.close(fd)
        conn = await aiosqlite.connect(path, isolation_level=None)
        store = cls(conn, path, store_key)
        store._busy_seconds = busy_seconds
        try:
            await store._setup()
            store._reader = await open_reader(path, busy_seconds=busy_seconds)
        except BaseException:
            await conn.close()
            raise
        return store

    async def _setup(self) -> None:
        c = self._conn
        try:
            await c.execute(f"PRAGMA busy_timeout = {int(self._busy_seconds * 1000)}")
            mode = await self._fetchall("PRAGMA journal_mode = WAL")
            if not mode or str(mode[0][0]).lower() != "wal":
                raise ConfigError(
                    f"the store {str(self._path)!r} cannot use WAL journaling; "
                    "put it on a local file system"
                )
            # NORMAL between transactions; _transaction raises it to FULL for durable ones
            await c.execute("PRAGMA synchronous = NORMAL")
            await c.execute("PRAGMA foreign_keys = ON")
            await c.execute("PRAGMA trusted_schema = OFF")
            await self._migrate()
        except sqlite3.DatabaseError as err:
            raise ConfigError(
                f"{str(self._path)!r} is not a usable certsync store ({err}); "
                "check the path or restore it from a backup"
            ) from err
        await self._check_store_key()

    async def _migrate(self) -> None:
        async with self._lock, self._transaction():
            version = await self._scalar_int("PRAGMA user_version")
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"the store {str(self._path)!r} has schema version {version}, newer than this "
                    f"certsync knows ({SCHEMA_VERSION}); upgrade certsync"
                )
            for number, statements in enumerate(_MIGRATIONS[version:], start=version + 1):
                for sql in statements:
                    await self._conn.execute(sql)
                # PRAGMA takes no bound parameters; number is our own int
                await self._conn.execute(f"PRAGMA user_version = {int(number)}")

    async def _check_store_key(self) -> None:
        text = await self._locked(lambda: self._meta("store_key_check"))
        if text is None:
            check = key_check(self._store_key, os.urandom(NONCE_BYTES))
            async with self._lock, self._transaction(certs=()):
                await self._put_meta({"store_key_check": check})
            return
        if not key_check_opens(self._store_key, text):
            raise ConfigError(
                f"the store key does not open the store {str(self._path)!r}; "
                "configure the node key this store was created with"
            )

    async def close(self) -> None:
        """Close the connection (waits for a running change to finish)."""
        async with self._lock:
            await self._conn.close()
        if self._reader is not None:
            async with self._read_lock:
                await self._reader.close()

    @property
    def path(self) -> Path:
        return self._path

    # ---------------------------------------------------------------- plumbing

    async def _rollback(self) -> None:
        # "no transaction is active" when COMMIT already went through: nothing to undo
        with contextlib.suppress(sqlite3.OperationalError):
            await self._conn.execute("ROLLBACK")

    @asynccontextmanager
    async def _transaction(
        self, *, durable: bool = True, certs: Collection[str] | None = None
    ) -> AsyncIterator[None]:
        """One write transaction; the caller holds ``self._lock``.

        ``certs`` names the certificates whose rows in ``certificates`` or ``keys`` it may
        change (``()``: none); ``None``: it may change any, and the next view reads every
        row again. The next view reads just these.

        ``durable=False`` commits with ``synchronous=NORMAL`` instead of ``FULL``: still
        atomic (a crash of the process or the machine leaves the old state or the new one),
        but a power loss may roll this transaction back. For what the primary can send
        again (a replicated set, ``last_sync``), not for an admin's change.

        aiosqlite runs statements in order on one thread, so a ROLLBACK queued after a
        cancelled statement runs after it; a ROLLBACK with nothing to undo is harmless.
        """
        # The connection stays at NORMAL, the common case on a replica; a durable
        # transaction raises it to FULL for its commit (which syncs the earlier ones too)
        try:
            if durable:  # one trip; no transaction is open, so executescript adds no COMMIT
                await self._conn.executescript("PRAGMA synchronous = FULL; BEGIN IMMEDIATE")
            else:
                await self._conn.execute("BEGIN IMMEDIATE")
            yield
            await asyncio.shield(self._conn.execute("COMMIT"))
        except sqlite3.Error as err:  # the lock held past the wait, a full volume: say so
            await asyncio.shield(self._rollback())
            mapped = write_error(err, self._path, waited=self._busy_seconds)
            if mapped is None:
                raise
            raise mapped from err
        except BaseException:
            await asyncio.shield(self._rollback())
            raise
        finally:
            self._generation += 1
            if certs is None or self._touched is None:
                self._touched = None
            else:
                self._touched.update(certs)
            if durable:
                await asyncio.shield(self._conn.execute("PRAGMA synchronous = NORMAL"))

    def _via_reader(self) -> bool:
        """Whether this task reads through the reader connection now (:meth:`_read_section`)."""
        return self._reader is not None and _READING.get() is self._reader

    @asynccontextmanager
    async def _read_section(self) -> AsyncIterator[None]:
        """Where a read runs: on the writer's connection under ``_lock`` (with the views
        cached for it) when no change holds or waits for it, else on the reader connection,
        so a read never waits for a change (which may itself wait for the write lock)."""
        waiters = getattr(self._lock, "_waiters", None)
        if self._reader is None or not (self._lock.locked() or waiters):
            async with self._lock:
                yield
            return
        async with self._read_lock:
            token = _READING.set(self._reader)
            try:
                yield
            finally:
                _READING.reset(token)

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        conn = self._reader if self._reader is not None and self._via_reader() else self._conn
        rows = await conn.execute_fetchall(sql, params)
        return [tuple(r) for r in rows]

    async def _scalar_int(self, sql: str, params: Sequence[Any] = ()) -> int:
        rows = await self._fetchall(sql, params)
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    async def _locked(self, fn: Callable[[], Awaitable[_T]]) -> _T:
        async with self._read_section():  # a read (every caller is one)
            return await fn()

    async def _audit(
        self, actor: str, action: str, detail: Mapping[str, Any], now: datetime
    ) -> None:
        await self._conn.execute(
            "INSERT INTO audit (at, actor, action, detail) VALUES (?, ?, ?, ?)",
            (stored_time(now), actor, action, json.dumps(redact(detail), sort_keys=True)),
        )

    async def _put_meta(self, values: Mapping[str, str]) -> None:
        await self._conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(k, str(v)) for k, v in values.items()],
        )

    async def _meta(self, key: str) -> str | None:
        rows = await self._fetchall("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    async def _bump_revision(self) -> None:
        await self._conn.execute(
            "INSERT INTO meta (key, value) VALUES ('revision', '1') ON CONFLICT(key) "
            "DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)"
        )

    # ---------------------------------------------------------------- CSRs

    async def add_csr(
        self, *, name: str, pem: bytes, key: PrivateKey, actor: str, now: datetime
    ) -> StoredCsr:
        """Store a CSR with its key; its id is the first 16 hex digits of sha256(PEM)."""
        when = stored_time(now)
        try:
            csr = x509.load_pem_x509_csr(pem)
        except ValueError as err:
            raise BadInput(f"the request {name!r} is not a PEM CSR; give the PEM text") from err
        if spki(csr.public_key()) != spki(key.public_key()):
            raise BadInput(
                f"the key given for request {name!r} does not match the request's public key; "
                "give the key the request was made with"
            )
        csr_id = hashlib.sha256(pem).hexdigest()[:16]
        nonce, ct = await asyncio.to_thread(
            lambda: seal(self._store_key, csr_aad(csr_id), key_der(key), os.urandom(NONCE_BYTES))
        )
        async with self._lock:
            if await self._scalar_int("SELECT count(*) FROM csrs WHERE id = ?", (csr_id,)):
                raise AlreadyExists(
                    f"request {csr_id!r} is stored already; see 'certsync request list'"
                )
            async with self._transaction(certs=()):
                await self._conn.execute(
                    "INSERT INTO csrs (id, name, pem, nonce, ciphertext, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (csr_id, name, pem, nonce, ct, when),
                )
                await self._audit(actor, "csr.add", {"id": csr_id, "name": name}, now)
        return StoredCsr(id=csr_id, name=name, pem=pem, created_at=parse_stored_time(when))

    async def list_csrs(self) -> list[StoredCsr]:
        """Every CSR, oldest first."""
        async with self._read_section():
            rows = await self._fetchall(
                "SELECT id, name, pem, created_at, fulfilled_by FROM csrs ORDER BY created_at, id"
            )
        return [csr_row(r) for r in rows]

    async def get_csr(self, csr_id: str) -> StoredCsr:
        """One CSR; :class:`NotFound` if there is none with that id."""
        async with self._read_section():
            rows = await self._fetchall(
                "SELECT id, name, pem, created_at, fulfilled_by FROM csrs WHERE id = ?", (csr_id,)
            )
        if not rows:
            raise no_csr(csr_id)
        return csr_row(rows[0])

    async def get_csr_key(self, csr_id: str) -> PrivateKey:
        """The key a CSR was made with; :class:`IntegrityError` if its row was tampered with."""
        async with self._read_section():
            rows = await self._fetchall(
                "SELECT pem, nonce, ciphertext FROM csrs WHERE id = ?", (csr_id,)
            )
        if not rows:
            raise no_csr(csr_id)
        pem, nonce, ct = (bytes(x) for x in rows[0])

        def _open() -> PrivateKey:
            what = f"request {csr_id!r}"
            der = unseal(self._store_key, csr_aad(csr_id), nonce, ct, what=what)
            key = load_key(der, what=what)
            if spki(key.public_key()) != spki(x509.load_pem_x509_csr(pem).public_key()):
                raise IntegrityError(
                    f"the stored key of {what} does not match the request; create a new request"
                )
            return key

        return await asyncio.to_thread(_open)

    async def delete_csr(self, csr_id: str, *, actor: str, now: datetime) -> None:
        """Delete a CSR and its key; :class:`NotFound` if there is none with that id."""
        stored_time(now)
        async with self._lock:
            if not await self._scalar_int("SELECT count(*) FROM csrs WHERE id = ?", (csr_id,)):
                raise no_csr(csr_id)
            async with self._transaction(certs=()):
                await self._conn.execute("DELETE FROM csrs WHERE id = ?", (csr_id,))
                await self._audit(actor, "csr.delete", {"id": csr_id}, now)

    async def _csr_spkis(self) -> list[tuple[str, bytes]]:
        """(id, public key as DER SPKI) of every CSR, oldest first (the caller holds the lock)."""
        rows = await self._fetchall("SELECT id, pem FROM csrs ORDER BY created_at, id")
        out = []
        for i, pem in rows:
            pem = bytes(pem)
            found = self._csr_spki_memo.get(pem)  # a PEM has one public key: parse it once
            if found is None:
                found = self._csr_spki_memo[pem] = spki(x509.load_pem_x509_csr(pem).public_key())
            out.append((str(i), found))
        if len(self._csr_spki_memo) > 4 * len(rows) + 64:  # forget the deleted ones
            keep = {bytes(pem) for _, pem in rows}
            self._csr_spki_memo = {p: k for p, k in self._csr_spki_memo.items() if p in keep}
        return out

    async def _fulfil(self, links: Sequence[tuple[str, str]]) -> None:
        """Mark CSRs fulfilled: (request id, certificate sha256) pairs (inside a transaction)."""
        if links:
            await self._conn.executemany(
                "UPDATE csrs SET fulfilled_by = ? WHERE id = ?",
                [(sha, csr_id) for csr_id, sha in links],
            )

    async def requests_digest(self) -> str:
        """:func:`node.linking.requests_digest` of the stored CSRs."""
        async with self._read_section():
            rows = await self._fetchall("SELECT id, fulfilled_by FROM csrs")
        return requests_digest((str(i), f) for i, f in rows)

    async def csrs_with_keys(self) -> list[tuple[StoredCsr, PrivateKey]]:
        """Every CSR with its key (for the backup; the keys are opened off the loop)."""
        return [(c, await self.get_csr_key(c.id)) for c in await self.list_csrs()]

    async def replace_csrs(
        self, csrs: Sequence[tuple[StoredCsr, PrivateKey]], *, actor: str, now: datetime
    ) -> None:
        """Make the stored CSRs exactly ``csrs`` (the primary's, on its backup), in one
        transaction; each key is checked against its request and sealed to its id."""
        stored_time(now)
        rows = []
        for c, key in csrs:
            if spki(x509.load_pem_x509_csr(c.pem).public_key()) != spki(key.public_key()):
                raise BadInput(f"the key given for request {c.id!r} does not match it")
            nonce, ct = seal(self._store_key, csr_aad(c.id), key_der(key), os.urandom(NONCE_BYTES))
            rows.append((c.id, c.name, c.pem, nonce, ct, stored_time(c.created_at),
                         c.fulfilled_by))
        async with self._lock, self._transaction(certs=()):
            before = {str(r[0]) for r in await self._fetchall("SELECT id FROM csrs")}
            await self._conn.execute("DELETE FROM csrs")
            await self._conn.executemany(
                "INSERT INTO csrs (id, name, pem, nonce, ciphertext, created_at, fulfilled_by) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            ids = {r[0] for r in rows}
            await self._audit(actor, "csr.replace", {"added": sorted(ids - before),
                                                     "removed": sorted(before - ids)}, now)

    # ---------------------------------------------------------------- audit

    async def audit_log(
        self, limit: int = 100, *, since: datetime | None = None, actor: str | None = None,
        action: str | None = None, before_id: int | None = None, offset: int = 0,
    ) -> list[AuditEvent]:
        """The latest ``limit`` audit events, newest first: at or after ``since``, by
        ``actor`` (exactly, e.g. ``admin:ops``), of ``action``, with an id below
        ``before_id`` (the next page), each filter when given; the first ``offset`` of them
        skipped (the console's numbered pages)."""
        where: list[str] = ["1"]
        params: list[Any] = []
        for clause, value in (("at >= ?", None if since is None else stored_time(since)),
                              ("actor = ?", actor), ("action = ?", action),
                              ("id < ?", before_id)):
            if value is not None:
                where.append(clause)
                params.append(value)
        async with self._read_section():
            rows = await self._fetchall(
                # only the fixed clauses above are joined in; every value is a parameter
                f"SELECT id, at, actor, action, detail FROM audit WHERE {' AND '.join(where)} "  # noqa: S608
                "ORDER BY id DESC LIMIT ? OFFSET ?", (*params, limit, offset),
            )
        return [
            AuditEvent(
                id=r[0], at=parse_stored_time(r[1]), actor=r[2], action=r[3],
                detail=json.loads(r[4]),
            )
            for r in rows
        ]

    async def record_audit(
        self, *, actor: str, action: str, detail: Mapping[str, Any], now: datetime
    ) -> None:
        """Append an audit event on its own (e.g. a refused call)."""
        stored_time(now)
        redact(detail)
        async with self._lock, self._transaction(certs=()):
            await self._audit(actor, action, detail, now)
