"""[core] The store as plain values: its records, the row cache, :class:`StoreView`, the digest.

Nothing here touches the file: :mod:`node.store` reads rows and hands them to
:class:`node.store_rows.CertRows`, which parses and checks each row when first asked for and
derives the chain index, chains and the replicated set (:func:`replicated_members` as it
would be worked out from scratch, :func:`set_digest`) from the rows alone, carried over from
the rows before a change. :func:`prepare` is the CPU part of a change (check keys against their
certificates, serialise and seal them); the nonces it seals with are a parameter.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from node.chain import ChainIndex, classify
from node.errors import BadInput, NotFound
from node.formats import cert_sha256
from node.model import PrivateKey, Role
from node.sealing import key_aad, key_der, seal, spki
from node.store_rows import (
    CertRows,
    RowFields,
    StoredCert,
    cached,
    no_cert,
    row_to_cert,
    sans,
    set_digest,
)
from node.text import parse_stored_time, stored_time

__all__ = [
    "AuditEvent",
    "CertRows",
    "ChainBuilder",
    "PreparedCert",
    "RowFields",
    "SetEntry",
    "StoreView",
    "StoredCert",
    "StoredCsr",
    "changes_nothing",
    "csr_row",
    "no_cert",
    "no_csr",
    "prepare",
    "redact",
    "replicated_members",
    "role_of",
    "row_to_cert",
    "sans",
    "set_digest",
]


@dataclass(frozen=True)
class StoredCsr:
    """One certificate signing request (its key is fetched with ``Store.get_csr_key``)."""

    id: str
    name: str
    pem: bytes
    created_at: datetime
    #: the sha256 of the certificate its key was linked to (issue 11); ``None``: pending
    fulfilled_by: str | None = None


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
    cert_rows: CertRows = field(repr=False)

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
            raise no_cert(sha256)
        return found

    @cached
    def certs(self) -> tuple[StoredCert, ...]:
        """Every certificate, oldest first (the rows' own, with the default marked)."""
        certs = self.cert_rows.certs
        at = self.cert_rows.position(self.default_sha256)
        if at is None:
            return certs
        return (*certs[:at], dataclasses.replace(certs[at], is_default=True), *certs[at + 1:])

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

    @property
    def digest(self) -> str:
        """:func:`set_digest` of the replicated set (every certificate with a key and its
        chain, and the default); once per rows and default, so a meta change keeps it."""
        return self.cert_rows.digest(self.default_sha256)


@dataclass(frozen=True)
class SetEntry:
    """A certificate to store, with its private key when it has one."""

    cert: x509.Certificate
    key: PrivateKey | None
    name: str
    #: ``name`` was not asked for (the CN, say): a certificate stored already keeps its own
    name_is_default: bool = False


@dataclass(frozen=True)
class AuditEvent:
    """One audit row: when, who (the mTLS identity, e.g. ``admin:ops``), what."""

    id: int
    at: datetime
    actor: str
    action: str
    detail: Mapping[str, Any]


def role_of(cert: x509.Certificate, has_key: bool) -> Role:
    """``identity`` for any certificate we hold the key of (it is served), else the
    toolkit's :func:`node.chain.classify`."""
    return "identity" if has_key else classify(cert)


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


def redact(value: Any) -> Any:
    """Audit details are plain JSON; anything that looks like a PEM key is replaced."""
    if isinstance(value, str):
        return "[redacted]" if "PRIVATE KEY" in value else value
    if isinstance(value, Mapping):
        return {str(k): redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    raise TypeError(f"audit detail value of type {type(value).__name__} is not plain JSON data")


def no_csr(csr_id: str) -> NotFound:
    return NotFound(
        f"no request {csr_id!r} in this store; run 'certsync request list' to see the ids"
    )


def csr_row(r: Sequence[Any]) -> StoredCsr:
    """A row (id, name, pem, created_at[, fulfilled_by]) as a :class:`StoredCsr`."""
    return StoredCsr(id=r[0], name=r[1], pem=bytes(r[2]), created_at=parse_stored_time(r[3]),
                     fulfilled_by=(str(r[4]) if len(r) > 4 and r[4] else None))


@dataclass(frozen=True)
class PreparedCert:
    sha256: str
    der: bytes
    name: str
    role: Role
    not_after: str
    sealed: tuple[bytes, bytes] | None
    #: it has a key: ``sealed`` now, or a key row that is kept as it is
    keyed: bool


def prepare(
    store_key: bytes,
    entries: Sequence[SetEntry],
    new_nonce: Callable[[], bytes],
    *,
    stored_keys: frozenset[str] = frozenset(),
) -> list[PreparedCert]:
    """CPU part of a change (run off the event loop): check keys, serialise and seal them,
    each under a nonce from ``new_nonce`` (the shell's randomness). A key of a certificate
    in ``stored_keys`` (stored with its key already) is checked but not sealed again: its
    row stays (a certificate has one key)."""
    out: dict[str, PreparedCert] = {}
    for e in entries:
        der = e.cert.public_bytes(serialization.Encoding.DER)
        sha = hashlib.sha256(der).hexdigest()
        sealed = None
        if e.key is not None:
            if spki(e.key.public_key()) != spki(e.cert.public_key()):
                raise BadInput(
                    f"the private key given for certificate {sha!r} ({e.name!r}) does not match "
                    "its public key; import the key that belongs to this certificate"
                )
            if sha not in stored_keys:
                sealed = seal(store_key, key_aad(sha), key_der(e.key), new_nonce())
        prev = out.get(sha)
        if prev is not None and prev.sealed is not None and sealed is None:
            sealed = prev.sealed
        keyed = e.key is not None or (prev is not None and prev.keyed)
        out[sha] = PreparedCert(
            sha256=sha,
            der=der,
            name=e.name or (prev.name if prev else ""),
            role=role_of(e.cert, keyed),
            not_after=stored_time(e.cert.not_valid_after_utc),
            sealed=sealed,
            keyed=keyed,
        )
    return list(out.values())


def changes_nothing(
    view: StoreView, prepared: Sequence[PreparedCert], make_default: str | None
) -> bool:
    """Whether adding ``prepared`` (making ``make_default`` the default) to ``view`` would
    leave every row and the default as they are (what :meth:`Store._upsert` would do)."""
    default = view.meta.get("default_sha256")
    if make_default is not None and make_default != default:
        return False
    if default is None and any(p.sealed is not None for p in prepared):
        return False  # the first entry with a key would become the default
    stored = view.cert_rows.row_of
    for p in prepared:
        row = stored.get(p.sha256)
        if row is None:
            return False
        name, role, has_key = str(row[2]), str(row[3]), bool(row[-1])
        if ((p.name and p.name != name) or (p.role == "identity" and role != "identity")
                or (p.sealed is not None and not has_key)):
            return False
    return True
