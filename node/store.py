"""[shell] The node's certificate store: aiosqlite, migrations, keys sealed at rest, audit.

Layout of the database (schema version in ``PRAGMA user_version``, see ``_MIGRATIONS``):

* ``certificates`` -- every certificate (identity, intermediate, root) by the sha256 of its DER;
* ``keys`` -- the private key of a certificate, PKCS#8 DER sealed with AES-256-GCM under the
  node's store key; the associated data binds the row (``certsync-key-v1|`` + sha256), so a
  ciphertext copied to another row, swapped or altered fails to open (:class:`IntegrityError`);
* ``csrs`` -- certificate signing requests with their keys, sealed the same way and bound to
  the request id;
* ``meta`` -- key/value: ``default_sha256``, ``epoch``, ``revision``, ``last_sync`` ...;
* ``audit`` -- one row per change: when, who (the mTLS identity), what; never key material.

Every change is one ``BEGIN IMMEDIATE ... COMMIT`` transaction in WAL mode with
``synchronous=FULL``: a crash leaves the old state or the new one. The pure helpers
(:func:`set_digest`, :func:`replicated_members`, :func:`seal`, :func:`unseal`) hold the logic
worth testing on its own; :class:`Store` is the thin async shell around SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, TypeVar

import aiosqlite
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from node.chain import ChainIndex, build_chain, classify
from node.errors import AlreadyExists, BadInput, ConfigError, Conflict, IntegrityError, NotFound
from node.model import PrivateKey, Role

__all__ = [
    "SCHEMA_VERSION",
    "STORE_KEY_BYTES",
    "AuditEvent",
    "SetEntry",
    "Store",
    "StoreView",
    "StoredCert",
    "StoredCsr",
    "cert_sha256",
    "csr_aad",
    "key_aad",
    "replicated_members",
    "role_of",
    "seal",
    "set_digest",
    "unseal",
]

STORE_KEY_BYTES: Final = 32
#: below these, CPU work of a change runs on the event loop: a thread hop costs more
_INLINE_CHAINS: Final = 4  # chains to build (a signature check or two each)
_INLINE_SEALS: Final = 4  # keys to seal (AES-GCM over a PKCS#8)
_INLINE_ENTRIES: Final = 64  # entries to serialise and check against their keys
_NONCE_BYTES: Final = 12
_KEY_AAD_PREFIX: Final = b"certsync-key-v1|"
_CSR_AAD_PREFIX: Final = b"certsync-csr-key-v1|"
_CHECK_AAD: Final = b"certsync-store-check-v1"
_CHECK_PLAINTEXT: Final = b"certsync store key check"

#: meta keys the store maintains itself; ``set_meta`` refuses them
_RESERVED_META: Final = frozenset({"default_sha256", "store_key_check"})

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
)
SCHEMA_VERSION: Final = len(_MIGRATIONS)


# --------------------------------------------------------------------------- plain values


@dataclass(frozen=True)
class StoredCert:
    """One certificate row, as plain values."""

    sha256: str
    name: str
    der: bytes = field(repr=False)
    role: Role
    has_key: bool
    is_default: bool
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    not_after: datetime
    added_at: datetime
    #: the parsed certificate when the store parsed it already (one parse per sha256)
    parsed: x509.Certificate | None = field(default=None, repr=False, compare=False)

    def certificate(self) -> x509.Certificate:
        """The parsed certificate."""
        if self.parsed is not None:
            return self.parsed
        return x509.load_der_x509_certificate(self.der)


@dataclass(frozen=True)
class StoredCsr:
    """One certificate signing request (its key is fetched with ``Store.get_csr_key``)."""

    id: str
    name: str
    pem: bytes
    created_at: datetime


#: a chain, nearest first, and the problems that keep it from a root (build_chain's answer)
_Chain = tuple[tuple[x509.Certificate, ...], tuple[str, ...]]


@dataclass(frozen=True, eq=False)
class _CertRows:
    """The certificate rows of a :class:`StoreView` and what is derived from them alone;
    views whose rows did not change (a meta change) share one."""

    rows: tuple[tuple[Any, ...], ...]
    load: Callable[[Sequence[Any]], StoredCert]
    #: chains by sha256, with the issuer names followed to build them; carried over to the
    #: next rows unless a certificate with one of those names as subject came or went
    #: (Store._current), so a change rebuilds only the chains it can affect
    chain_memo: dict[str, tuple[frozenset[x509.Name], _Chain]] = field(default_factory=dict)

    @functools.cached_property
    def _row_of(self) -> dict[str, tuple[Any, ...]]:
        return {str(r[0]): r for r in self.rows}

    @functools.cached_property
    def _loaded(self) -> dict[str, StoredCert]:
        return {}

    @functools.cached_property
    def _chains(self) -> dict[str, _Chain]:
        return {}

    @functools.cached_property
    def certs(self) -> tuple[StoredCert, ...]:
        """Every row as a :class:`StoredCert` (``is_default`` False), in row order."""
        return tuple(c for r in self.rows if (c := self.get(str(r[0]))) is not None)

    @functools.cached_property
    def _sha_of(self) -> dict[int, str]:
        """sha256 by ``id`` of the parsed certificates the chain index holds."""
        return {id(c.certificate()): c.sha256 for c in self.certs}

    def get(self, sha256: str) -> StoredCert | None:
        found = self._loaded.get(sha256)
        if found is None:
            row = self._row_of.get(sha256)
            if row is None:
                return None
            found = self._loaded[sha256] = self.load(row)
        return found

    @functools.cached_property
    def keyed(self) -> frozenset[str]:
        return frozenset(str(r[0]) for r in self.rows if r[-1])

    @functools.cached_property
    def chain_index(self) -> ChainIndex:
        return ChainIndex([c.certificate() for c in self.certs])

    def chain(self, sha256: str) -> _Chain:
        found = self._chains.get(sha256)
        if found is None:
            memo = self.chain_memo.get(sha256)
            if memo is not None:
                found = memo[1]
            else:
                stored = self.get(sha256)
                if stored is None:
                    raise _no_cert(sha256)
                cert = stored.certificate()
                candidates, names = self.chain_index.reach(cert)
                found = build_chain(cert, candidates)
                self.chain_memo[sha256] = (names, found)
            self._chains[sha256] = found
        return found

    def chains_to_build(self) -> int:
        """How many chains of certificates with keys :attr:`members` would build (not carried
        over from the last rows)."""
        return sum(1 for r in self.rows if r[-1] and str(r[0]) not in self.chain_memo
                   and str(r[0]) not in self._chains)

    @functools.cached_property
    def members(self) -> tuple[tuple[str, bool], ...]:
        """:func:`replicated_members` of these rows."""
        known = self._sha_of  # the pool's certificates by id: no DER hashing per change

        def sha_of(cert: x509.Certificate) -> str:
            return known.get(id(cert)) or cert_sha256(cert)

        return tuple(replicated_members(
            self.certs, lambda ident, _pool: self.chain(sha_of(ident)), sha_of))


@dataclass(frozen=True, eq=False)
class StoreView:
    """The store's certificates and meta values at one moment.

    Immutable, and the store hands out the same object until its next change, so what is
    derived from it (the chain index, chains, the set digest) is computed once per change
    and shared by every reader (the TLS refresh, the replicator, ``GetState``, the
    lifecycle), instead of once per reader and call; a change of meta values alone keeps
    the chains. Rows are checked and parsed when first asked for: an altered row raises
    :class:`IntegrityError` for whoever reads it, and does not keep meta values or other
    rows from being read.
    """

    meta: Mapping[str, str]
    cert_rows: _CertRows = field(repr=False)

    @property
    def rows(self) -> tuple[tuple[Any, ...], ...]:
        """The raw rows: sha256, der, name, role, not_after, added_at, has_key."""
        return self.cert_rows.rows

    @property
    def default_sha256(self) -> str | None:
        return self.meta.get("default_sha256") or None

    def get(self, sha256: str) -> StoredCert | None:
        """One certificate (``None`` when it is not stored)."""
        found = self.cert_rows.get(sha256)
        if found is not None and sha256 == self.default_sha256:
            return dataclasses.replace(found, is_default=True)
        return found

    def require(self, sha256: str) -> StoredCert:
        """One certificate; :class:`NotFound` when it is not stored."""
        found = self.get(sha256)
        if found is None:
            raise _no_cert(sha256)
        return found

    @functools.cached_property
    def certs(self) -> tuple[StoredCert, ...]:
        """Every certificate, oldest first."""
        return tuple(c for r in self.rows if (c := self.get(str(r[0]))) is not None)

    @property
    def keyed(self) -> frozenset[str]:
        """The sha256 of every certificate stored with its key (no row is parsed)."""
        return self.cert_rows.keyed

    @property
    def default(self) -> StoredCert | None:
        sha = self.default_sha256
        return self.get(sha) if sha else None

    @property
    def chain_index(self) -> ChainIndex:
        return self.cert_rows.chain_index

    def chain(self, sha256: str) -> tuple[tuple[x509.Certificate, ...], tuple[str, ...]]:
        """:func:`node.chain.build_chain` of a stored certificate over the stored ones
        (nearest first, and the problems found); :class:`NotFound` when it is not stored."""
        return self.cert_rows.chain(sha256)

    @functools.cached_property
    def digest(self) -> str:
        """:func:`set_digest` of the replicated set (every certificate with a key and its
        chain, and the default)."""
        return set_digest(self.cert_rows.members, self.default_sha256)


@dataclass(frozen=True)
class SetEntry:
    """A certificate to store, with its private key when it has one."""

    cert: x509.Certificate
    key: PrivateKey | None
    name: str


@dataclass(frozen=True)
class AuditEvent:
    """One audit row: when, who (the mTLS identity, e.g. ``admin:ops``), what."""

    id: int
    at: datetime
    actor: str
    action: str
    detail: Mapping[str, Any]


# --------------------------------------------------------------------------- pure helpers


def key_aad(sha256: str) -> bytes:
    """Associated data binding a sealed key to its certificate row."""
    return _KEY_AAD_PREFIX + sha256.encode("ascii")


def csr_aad(csr_id: str) -> bytes:
    """Associated data binding a sealed key to its CSR row."""
    return _CSR_AAD_PREFIX + csr_id.encode("utf-8")


def seal(
    store_key: bytes, aad: bytes, plaintext: bytes, nonce: bytes | None = None
) -> tuple[bytes, bytes]:
    """AES-256-GCM: returns ``(nonce, ciphertext)``; a fresh random nonce unless one is given."""
    nonce = os.urandom(_NONCE_BYTES) if nonce is None else nonce
    return nonce, AESGCM(store_key).encrypt(nonce, plaintext, aad)


def unseal(store_key: bytes, aad: bytes, nonce: bytes, ciphertext: bytes, *, what: str) -> bytes:
    """Open what :func:`seal` made; :class:`IntegrityError` naming ``what`` if it does not open."""
    try:
        return AESGCM(store_key).decrypt(nonce, ciphertext, aad)
    except (InvalidTag, ValueError) as err:
        raise IntegrityError(
            f"the stored key of {what} fails authentication (the row was copied, swapped or "
            "altered, or the store key is wrong); restore the store from a backup or re-import it",
        ) from err


def _spki(public_key: Any) -> bytes:
    der: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def _key_der(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_key(der: bytes, *, what: str) -> PrivateKey:
    try:
        # The row decrypted under AES-GCM bound to it, so these are the exact bytes we
        # stored after the key passed the full check at import; RSA's costly consistency
        # check (tens of ms per read) would only repeat that.
        key = serialization.load_der_private_key(
            der, password=None, unsafe_skip_rsa_key_validation=True
        )
    except (ValueError, TypeError) as err:
        raise IntegrityError(
            f"the stored key of {what} is not a readable PKCS#8 key; "
            "restore the store from a backup"
        ) from err
    return key  # type: ignore[return-value]  # we only ever store the PrivateKey types


def cert_sha256(cert: x509.Certificate) -> str:
    """Lowercase hex sha256 of the DER certificate."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def role_of(cert: x509.Certificate, has_key: bool) -> Role:
    """``identity`` for any certificate we hold the key of (it is served), else the
    toolkit's :func:`node.chain.classify`."""
    return "identity" if has_key else classify(cert)


def _sans(cert: x509.Certificate) -> tuple[tuple[str, ...], tuple[str, ...]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return (), ()
    except ValueError:  # a malformed SAN extension covers nothing (DESIGN.md)
        return (), ()
    return (
        tuple(san.get_values_for_type(x509.DNSName)),
        tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress)),
    )


def set_digest(members: Iterable[tuple[str, bool]], default: str | None) -> str:
    """sha256 digest of a replicated set: its members' ``(sha256, has_key)`` and the default.

    Independent of order and duplicates; replication compares these between nodes.
    """
    h = hashlib.sha256(b"certsync-set-v1\n")
    for sha, has_key in sorted(set(members)):
        h.update(f"{sha}:{int(has_key)}\n".encode("ascii"))
    h.update(f"default:{default or '-'}\n".encode("ascii"))
    return h.hexdigest()


#: (identity, pool) -> (chain nearest-first, problems) -- the shape of node.chain.build_chain
ChainBuilder = Callable[
    [x509.Certificate, Sequence[x509.Certificate]],
    tuple[tuple[x509.Certificate, ...], tuple[str, ...]],
]


def replicated_members(
    certs: Sequence[StoredCert],
    build_chain: ChainBuilder,
    sha_of: Callable[[x509.Certificate], str] = cert_sha256,
) -> list[tuple[str, bool]]:
    """The replicated set: every certificate with a key, plus the certificates of its chain.
    ``sha_of`` names a chain certificate (a caller that knows them saves the hashing)."""
    parsed = {c.sha256: c.certificate() for c in certs}
    pool = list(parsed.values())
    has_key = {c.sha256: c.has_key for c in certs}
    members: set[str] = set()
    for c in certs:
        if not c.has_key:
            continue
        members.add(c.sha256)
        chain, _problems = build_chain(parsed[c.sha256], pool)
        members.update(sha_of(x) for x in chain)
    return sorted((sha, has_key.get(sha, False)) for sha in members)


def _iso(when: datetime) -> str:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"time {when!r} has no time zone; pass an aware UTC datetime")
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _redact(value: Any) -> Any:
    """Audit details are plain JSON; anything that looks like a PEM key is replaced."""
    if isinstance(value, str):
        return "[redacted]" if "PRIVATE KEY" in value else value
    if isinstance(value, Mapping):
        return {str(k): _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    raise TypeError(f"audit detail value of type {type(value).__name__} is not plain JSON data")


def _no_cert(sha256: str) -> NotFound:
    return NotFound(
        f"no certificate {sha256!r} in this store; run 'certsync cert list' to see the sha256s"
    )


def _no_csr(csr_id: str) -> NotFound:
    return NotFound(
        f"no request {csr_id!r} in this store; run 'certsync request list' to see the ids"
    )


def _csr_row(r: Sequence[Any]) -> StoredCsr:
    return StoredCsr(id=r[0], name=r[1], pem=bytes(r[2]), created_at=_parse_iso(r[3]))


@dataclass(frozen=True)
class _PreparedCert:
    sha256: str
    der: bytes
    name: str
    role: Role
    not_after: str
    sealed: tuple[bytes, bytes] | None
    #: it has a key: ``sealed`` now, or a key row that is kept as it is
    keyed: bool


def _prepare(
    store_key: bytes, entries: Sequence[SetEntry], *, stored_keys: frozenset[str] = frozenset()
) -> list[_PreparedCert]:
    """CPU part of a change (run off the event loop): check keys, serialise and seal them.
    A key of a certificate in ``stored_keys`` (stored with its key already) is checked but
    not sealed again: its row stays (a certificate has one key)."""
    out: dict[str, _PreparedCert] = {}
    for e in entries:
        der = e.cert.public_bytes(serialization.Encoding.DER)
        sha = hashlib.sha256(der).hexdigest()
        sealed = None
        if e.key is not None:
            if _spki(e.key.public_key()) != _spki(e.cert.public_key()):
                raise BadInput(
                    f"the private key given for certificate {sha!r} ({e.name!r}) does not match "
                    "its public key; import the key that belongs to this certificate"
                )
            if sha not in stored_keys:
                sealed = seal(store_key, key_aad(sha), _key_der(e.key))
        prev = out.get(sha)
        if prev is not None and prev.sealed is not None and sealed is None:
            sealed = prev.sealed
        keyed = e.key is not None or (prev is not None and prev.keyed)
        out[sha] = _PreparedCert(
            sha256=sha,
            der=der,
            name=e.name or (prev.name if prev else ""),
            role=role_of(e.cert, keyed),
            not_after=_iso(e.cert.not_valid_after_utc),
            sealed=sealed,
            keyed=keyed,
        )
    return list(out.values())


# --------------------------------------------------------------------------- the shell

_T = TypeVar("_T")


class Store:
    """The node's certificate store in one SQLite file.

    Concurrency: one aiosqlite connection per ``Store``; every operation, read or write, runs
    under one :class:`asyncio.Lock`, so changes are serialised and a read never sees a change
    half-made. Each change is one ``BEGIN IMMEDIATE ... COMMIT`` transaction; other processes
    opening the same file wait up to ``busy_timeout`` for the write lock.

    Missing keys: asking for a certificate, request or key that does not exist raises
    :class:`NotFound` with a one-sentence message; :meth:`get_key` returns ``None`` for a
    certificate stored without a key; :meth:`get_meta` returns ``None`` for an unset key.
    A key row that fails authentication raises :class:`IntegrityError`.

    Cancellation: a change cancelled before its ``COMMIT`` is issued is rolled back (the
    rollback is shielded from a second cancellation); once ``COMMIT`` is issued it completes.
    Either way the store holds the old state or the new one. A refused change
    (:class:`NotFound`, :class:`Conflict`, :class:`BadInput`) changes nothing, not a byte.

    Private keys never leave this class except through :meth:`get_key` /
    :meth:`get_csr_key`; they are never written to the audit log or to an error message.
    """

    def __init__(self, conn: aiosqlite.Connection, path: Path, store_key: bytes) -> None:
        self._conn = conn
        self._path = path
        self._store_key = store_key
        self._lock = asyncio.Lock()
        # In-memory views of the file, valid while nothing changes it: ``_generation``
        # counts our own commits, SQLite's ``data_version`` another connection's. Parsed
        # rows and opened keys are kept by sha256 (a row with that sha256 can only hold
        # that certificate, and its key row only the key matching it); a change made by
        # another connection drops them all, so a row altered behind our back is read,
        # and checked, again.
        self._generation = 0
        self._view: tuple[tuple[int, int], StoreView] | None = None
        self._rows_seen: dict[str, tuple[tuple[Any, ...], StoredCert]] = {}
        self._keys: dict[str, PrivateKey] = {}

    # ---------------------------------------------------------------- open / close

    @classmethod
    async def open(cls, path: Path, store_key: bytes) -> Store:
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
        text = await self.get_meta("store_key_check")
        if text is None:
            nonce, ct = seal(self._store_key, _CHECK_AAD, _CHECK_PLAINTEXT)
            async with self._lock, self._transaction():
                await self._put_meta({"store_key_check": (nonce + ct).hex()})
            return
        blob = bytes.fromhex(text)
        try:
            AESGCM(self._store_key).decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], _CHECK_AAD)
        except (InvalidTag, ValueError) as err:
            raise ConfigError(
                f"the store key does not open the store {str(self._path)!r}; "
                "configure the node key this store was created with"
            ) from err

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
            (_iso(now), actor, action, json.dumps(_redact(detail), sort_keys=True)),
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

    async def _key_row_exists(self, sha: str) -> bool:
        return await self._scalar_int("SELECT count(*) FROM keys WHERE cert_sha256 = ?", (sha,)) > 0

    async def _upsert(self, items: Sequence[_PreparedCert], now: str) -> None:
        # few statements, each a hop to aiosqlite's thread: executemany, no read-then-write
        if not items:
            return
        await self._conn.executemany(
            "INSERT INTO certificates (sha256, der, name, role, not_after, added_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(sha256) DO UPDATE SET "
            "name = CASE WHEN excluded.name = '' THEN certificates.name "
            "ELSE excluded.name END, "
            "role = CASE WHEN excluded.role = 'identity' THEN 'identity' "
            "ELSE certificates.role END",
            [(p.sha256, p.der, p.name, p.role, p.not_after, now) for p in items],
        )
        keyed = [(p.sha256, *p.sealed) for p in items if p.sealed is not None]
        if keyed:
            # a certificate that has its key already keeps that row (the same key: it matched)
            await self._conn.executemany(
                "INSERT INTO keys (cert_sha256, nonce, ciphertext) VALUES (?, ?, ?) "
                "ON CONFLICT(cert_sha256) DO NOTHING",
                keyed,
            )

    def _row_to_cert(self, row: Sequence[Any]) -> StoredCert:
        """A row as a :class:`StoredCert` (``is_default`` False: the view sets it). The same
        row as last time gives the same object; other fields over the same DER reuse its
        parse; new DER is checked against its sha256 and parsed."""
        sha, der, name, role, not_after, added_at, has_key = row
        der = bytes(der)
        fields = (name, role, not_after, added_at, bool(has_key))
        last = self._rows_seen.get(sha)
        if last is not None and last[1].der == der:
            if last[0] == fields:
                return last[1]
            stored = dataclasses.replace(
                last[1], name=name, role=role, has_key=bool(has_key),
                not_after=_parse_iso(not_after), added_at=_parse_iso(added_at))
        else:
            if hashlib.sha256(der).hexdigest() != sha:
                raise IntegrityError(
                    f"the stored certificate {sha!r} does not match its sha256 (the row was "
                    "altered); delete it and import it again"
                )
            cert = x509.load_der_x509_certificate(der)
            dns, ips = _sans(cert)
            stored = StoredCert(sha256=sha, name=name, der=der, role=role,
                                has_key=bool(has_key), is_default=False, dns_names=dns,
                                ip_addresses=ips, not_after=_parse_iso(not_after),
                                added_at=_parse_iso(added_at), parsed=cert)
        self._rows_seen[sha] = (fields, stored)
        return stored

    _CERT_SELECT = (
        "SELECT c.sha256, c.der, c.name, c.role, c.not_after, c.added_at, "
        "k.cert_sha256 IS NOT NULL FROM certificates c LEFT JOIN keys k ON k.cert_sha256 = c.sha256"
    )

    async def _current(self) -> StoreView:
        """The view of the store now (the caller holds ``self._lock``); one query when
        nothing changed since the last call."""
        data_version = await self._scalar_int("PRAGMA data_version")
        token = (self._generation, data_version)
        if self._view is not None:
            if self._view[0] == token:
                return self._view[1]
            if self._view[0][1] != data_version:  # another connection wrote: trust nothing
                self._rows_seen.clear()
                self._keys.clear()
                self._view = None
        meta = {str(k): str(v) for k, v in await self._fetchall("SELECT key, value FROM meta")}
        rows = tuple(await self._fetchall(self._CERT_SELECT + " ORDER BY c.added_at, c.sha256"))
        if self._view is not None and self._view[1].rows == rows:
            cert_rows = self._view[1].cert_rows  # only meta changed: keep parsed rows, chains
        else:
            present = {str(r[0]) for r in rows}
            keyed = {str(r[0]) for r in rows if r[-1]}
            chains = self._carried_chains(rows, present)  # before the caches forget the gone
            self._rows_seen = {sha: r for sha, r in self._rows_seen.items() if sha in present}
            self._keys = {sha: k for sha, k in self._keys.items() if sha in keyed}
            cert_rows = _CertRows(rows=rows, load=self._row_to_cert, chain_memo=chains)
        view = StoreView(meta=MappingProxyType(meta), cert_rows=cert_rows)
        self._view = (token, view)
        return view

    def _carried_chains(
        self, rows: Sequence[Sequence[Any]], present: set[str]
    ) -> dict[str, tuple[frozenset[x509.Name], _Chain]]:
        """The chains of the last view still valid for ``rows``: those of certificates still
        present whose issuer names are none of the subjects of what came or went."""
        if self._view is None:
            return {}
        before = self._view[1].cert_rows
        old = {str(r[0]) for r in before.rows}
        try:
            changed = {self._row_to_cert(r).certificate().subject
                       for r in rows if str(r[0]) not in old}
            changed |= {c.certificate().subject for sha in old - present
                        if (c := before.get(sha)) is not None}
        except IntegrityError:  # an altered row: build every chain again (and fail there)
            return {}
        return {sha: m for sha, m in before.chain_memo.items()
                if sha in present and m[0].isdisjoint(changed)}

    async def view(self) -> StoreView:
        """Every certificate and meta value as of now, as one immutable :class:`StoreView`
        (the same object until the store changes). The first call after a change works out
        the chains and the set digest off the event loop (signature checks are CPU work)."""
        view = await self._locked(self._current)
        rows = view.cert_rows
        if "members" not in rows.__dict__:
            # an altered row raises for whoever reads it, not for a reader of meta values
            with contextlib.suppress(IntegrityError):
                if rows.chains_to_build() <= _INLINE_CHAINS:
                    rows.members  # noqa: B018 -- a few signature checks: cheaper than a thread hop
                else:
                    await asyncio.to_thread(lambda: rows.members)
        return view

    async def _list(self) -> list[StoredCert]:
        return list((await self._current()).certs)

    async def _get(self, sha256: str) -> StoredCert:
        return (await self._current()).require(sha256)

    async def _require_key(self, sha256: str, what: str, *, stored: bool = True) -> None:
        if stored:
            await self._get(sha256)
        if not await self._key_row_exists(sha256):
            raise Conflict(
                f"certificate {sha256!r} has no private key in this store, so it cannot be the "
                f"{what}; import its key first or choose a certificate that has one"
            )

    # ---------------------------------------------------------------- certificates

    async def add(
        self,
        entries: Sequence[SetEntry],
        *,
        make_default: str | None,
        actor: str,
        now: datetime,
    ) -> None:
        """Store certificates (with keys, and chain certificates without) in one transaction.

        A certificate stored already keeps its row and gains a key if it had none; a non-empty
        name replaces the stored one. ``make_default`` (a sha256 with a key, in ``entries`` or
        stored) becomes the default; when the store has no default, the first entry with a key
        becomes it. Each add bumps the ``revision`` meta value.
        """
        when = _iso(now)
        prepared = await asyncio.to_thread(_prepare, self._store_key, entries)
        keyed_new = [p.sha256 for p in prepared if p.sealed is not None]
        async with self._lock:
            if make_default is not None and make_default not in keyed_new:
                in_batch = any(p.sha256 == make_default for p in prepared)
                await self._require_key(make_default, "default", stored=not in_batch)
            async with self._transaction():
                await self._upsert(prepared, when)
                default = make_default
                if default is not None:
                    await self._put_meta({"default_sha256": default})
                elif keyed_new:  # no default yet: the first entry with a key becomes it
                    inserted = await self._conn.execute_fetchall(
                        "INSERT INTO meta (key, value) VALUES ('default_sha256', ?) "
                        "ON CONFLICT(key) DO NOTHING RETURNING value",
                        (keyed_new[0],),
                    )
                    default = keyed_new[0] if list(inserted) else None
                await self._bump_revision()
                await self._audit(
                    actor,
                    "cert.add",
                    {
                        "certificates": [
                            {
                                "sha256": p.sha256,
                                "name": p.name,
                                "role": p.role,
                                "key": p.sealed is not None,
                            }
                            for p in prepared
                        ],
                        "default": default,
                    },
                    now,
                )

    async def list_certificates(self) -> list[StoredCert]:
        """Every certificate, oldest first."""
        return await self._locked(self._list)

    async def get(self, sha256: str) -> StoredCert:
        """One certificate; :class:`NotFound` if it is not stored."""
        return await self._locked(lambda: self._get(sha256))

    async def get_key(self, sha256: str) -> PrivateKey | None:
        """The private key of a certificate (``None`` if stored without one);
        :class:`NotFound` when the certificate is not stored."""
        async with self._lock:
            await self._get(sha256)
        return (await self.keys([sha256])).get(sha256)

    async def keys(
        self, sha256s: Iterable[str], *, view: StoreView | None = None
    ) -> dict[str, PrivateKey]:
        """The private keys of those of ``sha256s`` stored with one, by sha256, in one trip
        (none when every key is open already and ``view``, a view just read, is given).

        A key opened once is kept in memory (the node serves it anyway) until its row goes
        away or another connection changes the file; only the others are decrypted (off the
        event loop). :class:`IntegrityError` when a row fails to open.
        """
        wanted = list(dict.fromkeys(sha256s))
        if view is not None and all(s in self._keys for s in wanted if s in view.keyed):
            return {s: self._keys[s] for s in wanted if s in view.keyed}
        async with self._lock:
            view = await self._current()
            keyed = view.keyed
            wanted = [s for s in wanted if s in keyed]
            missing = [s for s in wanted if s not in self._keys]
            sealed: dict[str, tuple[StoredCert, bytes, bytes]] = {}
            for start in range(0, len(missing), 500):  # SQLite's bound-parameter limit
                part = missing[start:start + 500]
                marks = ", ".join("?" * len(part))
                for sha, nonce, ct in await self._fetchall(
                    f"SELECT cert_sha256, nonce, ciphertext FROM keys "  # noqa: S608 -- marks only
                    f"WHERE cert_sha256 IN ({marks})", part,
                ):
                    cert = view.get(str(sha))
                    if cert is not None:
                        sealed[str(sha)] = (cert, bytes(nonce), bytes(ct))
        opened = await asyncio.to_thread(
            lambda: {sha: self._open_cert_key(*row) for sha, row in sealed.items()}
        ) if sealed else {}
        current = self._view[1].keyed if self._view is not None else frozenset()
        self._keys.update((sha, k) for sha, k in opened.items() if sha in current)
        found = {sha: self._keys.get(sha) or opened.get(sha) for sha in wanted}
        return {sha: k for sha, k in found.items() if k is not None}

    def _open_cert_key(self, cert: StoredCert, nonce: bytes, ct: bytes) -> PrivateKey:
        what = f"certificate {cert.sha256!r}"
        der = unseal(self._store_key, key_aad(cert.sha256), nonce, ct, what=what)
        key = _load_key(der, what=what)
        if _spki(key.public_key()) != _spki(cert.certificate().public_key()):
            raise IntegrityError(
                f"the stored key of {what} does not match the certificate; "
                "restore the store from a backup or re-import it"
            )
        return key

    async def set_default(self, sha256: str, *, actor: str, now: datetime) -> None:
        """Make a certificate with a key the default (:class:`Conflict` when it has none)."""
        _iso(now)
        async with self._lock:
            await self._require_key(sha256, "default")
            previous = await self._meta("default_sha256")
            async with self._transaction():
                await self._put_meta({"default_sha256": sha256})
                await self._bump_revision()
                detail = {"sha256": sha256, "previous": previous}
                await self._audit(actor, "cert.default", detail, now)

    async def delete(self, sha256: str, *, actor: str, now: datetime) -> None:
        """Delete a certificate (and its key).

        Deleting the default while another certificate with a key exists is a
        :class:`Conflict`: choose another default first. Deleting the last one is allowed.
        """
        _iso(now)
        async with self._lock:
            cert = await self._get(sha256)
            if cert.is_default:
                others = await self._scalar_int(
                    "SELECT count(*) FROM keys WHERE cert_sha256 != ?", (sha256,)
                )
                if others:
                    raise Conflict(
                        f"certificate {sha256!r} is the default and {others} other certificate(s) "
                        "with keys exist; choose another default first "
                        "('certsync cert default SHA256')"
                    )
            async with self._transaction():
                await self._conn.execute("DELETE FROM certificates WHERE sha256 = ?", (sha256,))
                if cert.is_default:
                    await self._conn.execute("DELETE FROM meta WHERE key = 'default_sha256'")
                await self._bump_revision()
                detail = {"sha256": sha256, "name": cert.name, "role": cert.role}
                await self._audit(actor, "cert.delete", detail, now)

    async def replace_all(
        self,
        entries: Sequence[SetEntry],
        *,
        default: str | None,
        meta: Mapping[str, str],
        actor: str,
        now: datetime,
        durable: bool = True,
    ) -> None:
        """Replace the whole certificate set (replication activation) plus meta, in one transaction.

        Certificates in both the old and new set keep their ``added_at``; CSRs are untouched.
        ``default`` must be an entry with a key (or ``None``). ``durable=False``: see
        :meth:`_transaction` (a replica's set, which its primary pushes again if lost).
        """
        when = _iso(now)
        self._check_meta_keys(meta)
        # what is stored with its key already keeps its key row: O(changed) sealing
        before = await self.view()
        prepare = functools.partial(_prepare, self._store_key, entries, stored_keys=before.keyed)
        to_seal = sum(1 for e in entries
                      if e.key is not None and cert_sha256(e.cert) not in before.keyed)
        # a replica's activation usually seals one or two keys: cheaper here than a thread hop
        prepared = (prepare() if to_seal <= _INLINE_SEALS and len(entries) <= _INLINE_ENTRIES
                    else await asyncio.to_thread(prepare))
        keyed = {p.sha256 for p in prepared if p.keyed}
        if default is not None and default not in keyed:
            raise Conflict(
                f"the default {default!r} is not a certificate with a key in the new set; "
                "send its key with it or choose another default"
            )
        new = {p.sha256 for p in prepared}
        async with self._lock, self._transaction(durable=durable):
            current = await self._current()
            if current.cert_rows is not before.cert_rows:  # rows changed meanwhile: seal all
                prepared = await asyncio.to_thread(_prepare, self._store_key, entries)
            old = {str(r[0]) for r in await self._fetchall("SELECT sha256 FROM certificates")}
            gone = sorted(old - new)
            if gone:
                await self._conn.executemany(
                    "DELETE FROM certificates WHERE sha256 = ?", [(s,) for s in gone]
                )
            # a certificate that stays but loses its key in the new set loses it here too
            keyless = sorted((new - keyed) & old)
            if keyless:
                await self._conn.executemany(
                    "DELETE FROM keys WHERE cert_sha256 = ?", [(s,) for s in keyless]
                )
            # rows that stay exactly as they are need no statement
            stored = {str(r[0]): (r[2], r[3], bool(r[-1])) for r in current.rows}
            await self._upsert([p for p in prepared
                                if stored.get(p.sha256) != (p.name, p.role, p.keyed)], when)
            if default is None:
                await self._conn.execute("DELETE FROM meta WHERE key = 'default_sha256'")
            await self._put_meta({**meta, **({"default_sha256": default} if default else {})})
            await self._audit(
                actor,
                "set.replace",
                {
                    "added": sorted(new - old),
                    "removed": gone,
                    "default": default,
                    "meta": dict(meta),
                },
                now,
            )
        # the keys arrived with the set, matched and sealed: no need to open them again
        self._keys.update((cert_sha256(e.cert), e.key) for e in entries if e.key is not None)

    async def chain(
        self, sha256: str
    ) -> tuple[tuple[x509.Certificate, ...], tuple[str, ...]]:
        """The chain of a stored certificate built from the stored certificates (nearest first)
        and the problems found, as :func:`node.chain.build_chain` returns them."""
        return (await self.view()).chain(sha256)

    async def digest(self) -> str:
        """:func:`set_digest` of the replicated set as stored now (computed once per change)."""
        return (await self.view()).digest

    # ---------------------------------------------------------------- meta

    @staticmethod
    def _check_meta_keys(values: Mapping[str, str]) -> None:
        for k, v in values.items():
            if k in _RESERVED_META:
                raise BadInput(
                    f"meta key {k!r} is maintained by the store itself; use its own method"
                )
            if not isinstance(v, str):
                raise BadInput(f"meta value for {k!r} must be text, not {type(v).__name__}")

    async def get_meta(self, key: str) -> str | None:
        """A meta value, or ``None`` when unset."""
        return (await self.view()).meta.get(key)

    async def set_meta(
        self,
        values: Mapping[str, str],
        *,
        actor: str | None = None,
        now: datetime | None = None,
        durable: bool = True,
    ) -> None:
        """Set meta values in one transaction; audited when ``actor`` and ``now`` are given.
        ``durable=False``: see :meth:`_transaction` (for values the primary sends again)."""
        self._check_meta_keys(values)
        if (actor is None) != (now is None):
            raise ValueError("set_meta needs both actor and now, or neither")
        async with self._lock:
            before = self._view
            async with self._transaction(durable=durable):
                await self._put_meta(values)
                if actor is not None and now is not None:
                    await self._audit(actor, "meta.set", dict(values), now)
            if before is not None and before[0][0] + 1 == self._generation:
                # only meta changed, and only by us: the view of before, with these values,
                # under the new generation and the data_version seen before (so a change by
                # another connection meanwhile still shows at the next reading)
                view = StoreView(meta=MappingProxyType({**before[1].meta, **values}),
                                 cert_rows=before[1].cert_rows)
                self._view = ((self._generation, before[0][1]), view)

    # ---------------------------------------------------------------- CSRs

    async def add_csr(
        self, *, name: str, pem: bytes, key: PrivateKey, actor: str, now: datetime
    ) -> StoredCsr:
        """Store a CSR with its key; its id is the first 16 hex digits of sha256(PEM)."""
        when = _iso(now)
        try:
            csr = x509.load_pem_x509_csr(pem)
        except ValueError as err:
            raise BadInput(f"the request {name!r} is not a PEM CSR; give the PEM text") from err
        if _spki(csr.public_key()) != _spki(key.public_key()):
            raise BadInput(
                f"the key given for request {name!r} does not match the request's public key; "
                "give the key the request was made with"
            )
        csr_id = hashlib.sha256(pem).hexdigest()[:16]
        nonce, ct = await asyncio.to_thread(
            lambda: seal(self._store_key, csr_aad(csr_id), _key_der(key))
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
        return StoredCsr(id=csr_id, name=name, pem=pem, created_at=_parse_iso(when))

    async def list_csrs(self) -> list[StoredCsr]:
        """Every CSR, oldest first."""
        async with self._lock:
            rows = await self._fetchall(
                "SELECT id, name, pem, created_at FROM csrs ORDER BY created_at, id"
            )
        return [_csr_row(r) for r in rows]

    async def get_csr(self, csr_id: str) -> StoredCsr:
        """One CSR; :class:`NotFound` if there is none with that id."""
        async with self._lock:
            rows = await self._fetchall(
                "SELECT id, name, pem, created_at FROM csrs WHERE id = ?", (csr_id,)
            )
        if not rows:
            raise _no_csr(csr_id)
        return _csr_row(rows[0])

    async def get_csr_key(self, csr_id: str) -> PrivateKey:
        """The key a CSR was made with; :class:`IntegrityError` if its row was tampered with."""
        async with self._lock:
            rows = await self._fetchall(
                "SELECT pem, nonce, ciphertext FROM csrs WHERE id = ?", (csr_id,)
            )
        if not rows:
            raise _no_csr(csr_id)
        pem, nonce, ct = (bytes(x) for x in rows[0])

        def _open() -> PrivateKey:
            what = f"request {csr_id!r}"
            der = unseal(self._store_key, csr_aad(csr_id), nonce, ct, what=what)
            key = _load_key(der, what=what)
            if _spki(key.public_key()) != _spki(x509.load_pem_x509_csr(pem).public_key()):
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
                id=r[0], at=_parse_iso(r[1]), actor=r[2], action=r[3], detail=json.loads(r[4])
            )
            for r in rows
        ]

    async def record_audit(
        self, *, actor: str, action: str, detail: Mapping[str, Any], now: datetime
    ) -> None:
        """Append an audit event on its own (e.g. a refused call)."""
        _iso(now)
        _redact(detail)
        async with self._lock, self._transaction():
            await self._audit(actor, action, detail, now)
