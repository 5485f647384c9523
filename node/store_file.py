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
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Self, TypeVar

import aiosqlite
from cryptography import x509

from node.errors import AlreadyExists, BadInput, ConfigError, IntegrityError
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


class StoreFile:
    """The SQLite file under a :class:`node.store.Store`; see the module docstring."""

    def __init__(self, conn: aiosqlite.Connection, path: Path, store_key: bytes) -> None:
        self._conn = conn
        self._path = path
        self._store_key = store_key
        self._lock = asyncio.Lock()
        #: our own commits, counted (the views of :class:`node.store.Store` are keyed by it)
        self._generation = 0

    # ---------------------------------------------------------------- open / close

    @classmethod
    async def open(cls, path: Path, store_key: bytes) -> Self:
        """Open (creating the file with mode 0600, and migrating) the store at ``path``."""
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
        try:
            await store._setup()
        except BaseException:
            await conn.close()
            raise
        return store

    async def _setup(self) -> None:
        c = self._conn
        try:
            await c.execute("PRAGMA busy_timeout = 10000")
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
            async with self._lock, self._transaction():
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

    @property
    def path(self) -> Path:
        return self._path

    # ---------------------------------------------------------------- plumbing

    async def _rollback(self) -> None:
        # "no transaction is active" when COMMIT already went through: nothing to undo
        with contextlib.suppress(sqlite3.OperationalError):
            await self._conn.execute("ROLLBACK")

    @asynccontextmanager
    async def _transaction(self, *, durable: bool = True) -> AsyncIterator[None]:
        """One write transaction; the caller holds ``self._lock``.

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
        except BaseException:
            await asyncio.shield(self._rollback())
            raise
        finally:
            self._generation += 1
            if durable:
                await asyncio.shield(self._conn.execute("PRAGMA synchronous = NORMAL"))

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        rows = await self._conn.execute_fetchall(sql, params)
        return [tuple(r) for r in rows]

    async def _scalar_int(self, sql: str, params: Sequence[Any] = ()) -> int:
        rows = await self._fetchall(sql, params)
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    async def _locked(self, fn: Callable[[], Awaitable[_T]]) -> _T:
        async with self._lock:
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
            async with self._transaction():
                await self._conn.execute(
                    "INSERT INTO csrs (id, name, pem, nonce, ciphertext, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (csr_id, name, pem, nonce, ct, when),
                )
                await self._audit(actor, "csr.add", {"id": csr_id, "name": name}, now)
        return StoredCsr(id=csr_id, name=name, pem=pem, created_at=parse_stored_time(when))

    async def list_csrs(self) -> list[StoredCsr]:
        """Every CSR, oldest first."""
        async with self._lock:
            rows = await self._fetchall(
                "SELECT id, name, pem, created_at FROM csrs ORDER BY created_at, id"
            )
        return [csr_row(r) for r in rows]

    async def get_csr(self, csr_id: str) -> StoredCsr:
        """One CSR; :class:`NotFound` if there is none with that id."""
        async with self._lock:
            rows = await self._fetchall(
                "SELECT id, name, pem, created_at FROM csrs WHERE id = ?", (csr_id,)
            )
        if not rows:
            raise no_csr(csr_id)
        return csr_row(rows[0])

    async def get_csr_key(self, csr_id: str) -> PrivateKey:
        """The key a CSR was made with; :class:`IntegrityError` if its row was tampered with."""
        async with self._lock:
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

    # ---------------------------------------------------------------- audit

    async def audit_log(self, limit: int = 100) -> list[AuditEvent]:
        """The latest ``limit`` audit events, newest first."""
        async with self._lock:
            rows = await self._fetchall(
                "SELECT id, at, actor, action, detail FROM audit ORDER BY id DESC LIMIT ?", (limit,)
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
        async with self._lock, self._transaction():
            await self._audit(actor, action, detail, now)
