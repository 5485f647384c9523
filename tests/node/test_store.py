"""The certificate store: every method with its errors, tampering, canaries, migrations."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from node.chain import build_chain
from node.errors import (
    AlreadyExists,
    BadInput,
    ConfigError,
    Conflict,
    IntegrityError,
    NotFound,
)
from node.formats import cert_sha256
from node.model import PrivateKey
from node.store import Store
from node.store_file import SCHEMA_VERSION
from node.store_view import SetEntry, StoredCert, replicated_members, set_digest
from tests.pki import Pki, make_intermediate, make_key, make_leaf, make_root

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ACTOR = "admin:ops"
KEY = bytes(range(32))


def entries(pki: Pki, name: str = "site") -> list[SetEntry]:
    return [
        SetEntry(pki.leaf.cert, pki.leaf.key, name),
        SetEntry(pki.intermediate.cert, None, ""),
        SetEntry(pki.root.cert, None, ""),
    ]


def fresh_chain(san: str = "support.example.com", root_cn: str = "Example Root CA") -> Pki:
    """A chain whose leaf has a key of its own (tests.pki caches keys by default)."""
    root = make_root(root_cn)
    inter = make_intermediate(root, f"{root_cn} Intermediate")
    leaf = make_leaf(inter, [san], key=make_key(fresh=True))
    return Pki(root, inter, leaf)


def der(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def raw_files(path: Path) -> bytes:
    """The durable bytes of the store: the database file and its WAL."""
    out = path.read_bytes()
    wal = path.with_name(path.name + "-wal")
    return out + (wal.read_bytes() if wal.exists() else b"")


def write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def dump(path: Path) -> list[str]:
    """A logical dump through an independent read-only connection."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


async def assert_refused_unchanged(
    path: Path, change: Callable[[], Awaitable[Any]], error: type[Exception], match: str
) -> None:
    before_raw, before_dump = raw_files(path), dump(path)
    with pytest.raises(error, match=match):
        await change()
    assert raw_files(path) == before_raw
    assert dump(path) == before_dump


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store.sqlite3"


@pytest.fixture
async def store(db: Path) -> AsyncIterator[Store]:
    s = await Store.open(db, KEY)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture(scope="module")
def pki() -> Pki:
    return fresh_chain()


@pytest.fixture(scope="module")
def pki2() -> Pki:
    return fresh_chain("other.example.com", "Other Root CA")


# --------------------------------------------------------------------------- open / migrations


async def test_open_creates_schema_wal_and_private_file(db: Path) -> None:
    s = await Store.open(db, KEY)
    await s.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"certificates", "keys", "csrs", "meta", "audit"} <= tables
    finally:
        conn.close()
    assert file_mode(db) == 0o600


@pytest.mark.parametrize("prepare", ["missing", "empty-file", "empty-sqlite"])
async def test_open_migrates_from_nothing(db: Path, prepare: str, pki: Pki) -> None:
    if prepare == "empty-file":
        write(db, b"")
    elif prepare == "empty-sqlite":
        sqlite3.connect(db).close()
    s = await Store.open(db, KEY)
    try:
        await s.add(entries(pki), make_default=None, actor=ACTOR, now=T0)
    finally:
        await s.close()
    s = await Store.open(db, KEY)  # re-open: no migration runs twice
    try:
        assert len(await s.list_certificates()) == 3
        assert await s.get_key(cert_sha256(pki.leaf.cert)) is not None
    finally:
        await s.close()


@pytest.mark.parametrize(
    ("setup", "key", "match"),
    [
        ("none", b"short", "32 random bytes"),
        ("other-key", bytes(32), "does not open the store"),
        ("garbage", KEY, "not a usable certsync store"),
        ("newer", KEY, "newer than this certsync"),
    ],
)
async def test_open_refuses(db: Path, setup: str, key: bytes, match: str) -> None:
    if setup == "other-key":
        s = await Store.open(db, KEY)
        await s.close()
    elif setup == "garbage":
        write(db, b"this is not a database file at all" * 100)
    elif setup == "newer":
        conn = sqlite3.connect(db)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.close()
    with pytest.raises(ConfigError, match=match):
        await Store.open(db, key)


async def test_open_accepts_the_right_key_again(db: Path) -> None:
    """Positive twin of the wrong-key case."""
    s = await Store.open(db, KEY)
    await s.set_meta({"epoch": "3"})
    await s.close()
    s = await Store.open(db, KEY)
    try:
        assert await s.get_meta("epoch") == "3"
    finally:
        await s.close()


# --------------------------------------------------------------------------- add / list / get


async def test_add_chain_roles_key_and_default(store: Store, pki: Pki) -> None:
    await store.add(entries(pki), make_default=None, actor=ACTOR, now=T0)
    got = {c.sha256: c for c in await store.list_certificates()}
    leaf, inter, root = (cert_sha256(c) for c in (pki.leaf.cert, *pki.chain))
    table = [
        (leaf, "identity", True, True, "site"),
        (inter, "intermediate", False, False, ""),
        (root, "root", False, False, ""),
    ]
    for sha, role, has_key, is_default, name in table:
        c = got[sha]
        assert (c.role, c.has_key, c.is_default, c.name) == (role, has_key, is_default, name)
        assert c.added_at == T0
        assert (
            c.certificate() == {leaf: pki.leaf.cert, inter: pki.chain[0], root: pki.chain[1]}[sha]
        )
    assert got[leaf].dns_names == ("support.example.com",)
    assert got[leaf].not_after == pki.leaf.cert.not_valid_after_utc
    assert await store.get_meta("default_sha256") == leaf
    assert await store.get_meta("revision") == "1"


async def test_add_without_key_sets_no_default(store: Store, pki: Pki) -> None:
    await store.add(entries(pki)[1:], make_default=None, actor=ACTOR, now=T0)
    assert all(not c.is_default and not c.has_key for c in await store.list_certificates())
    assert await store.get_meta("default_sha256") is None


async def test_add_ip_sans_and_self_signed(store: Store) -> None:
    leaf = make_leaf(None, ["node1.example.com", "192.0.2.7", "2001:db8::1"])
    await store.add([SetEntry(leaf.cert, leaf.key, "n1")], make_default=None, actor=ACTOR, now=T0)
    c = await store.get(cert_sha256(leaf.cert))
    assert c.dns_names == ("node1.example.com",)
    assert c.ip_addresses == ("192.0.2.7", "2001:db8::1")
    assert (c.role, c.has_key, c.is_default) == ("identity", True, True)


async def test_existing_certificate_gains_key_keeps_added_at(store: Store, pki: Pki) -> None:
    sha = cert_sha256(pki.leaf.cert)
    await store.add([SetEntry(pki.leaf.cert, None, "bare")], make_default=None, actor=ACTOR, now=T0)
    assert (await store.get(sha)).has_key is False
    assert await store.get_key(sha) is None
    later = T0 + timedelta(hours=1)
    await store.add(
        [SetEntry(pki.leaf.cert, pki.leaf.key, "renamed")], make_default=sha, actor=ACTOR, now=later
    )
    c = await store.get(sha)
    assert (c.has_key, c.name, c.added_at, c.is_default) == (True, "renamed", T0, True)
    # an empty name keeps the stored one
    await store.add([SetEntry(pki.leaf.cert, None, "")], make_default=None, actor=ACTOR, now=later)
    assert (await store.get(sha)).name == "renamed"
    assert (await store.get(sha)).has_key is True


async def test_make_default_switches(store: Store, pki: Pki, pki2: Pki) -> None:
    await store.add(entries(pki), make_default=None, actor=ACTOR, now=T0)
    sha2 = cert_sha256(pki2.leaf.cert)
    await store.add(entries(pki2, "other"), make_default=sha2, actor=ACTOR, now=T0)
    defaults = [c.sha256 for c in await store.list_certificates() if c.is_default]
    assert defaults == [sha2]


async def test_add_without_make_default_keeps_default(store: Store, pki: Pki, pki2: Pki) -> None:
    """Negative twin: a second keyed import does not steal the default."""
    await store.add(entries(pki), make_default=None, actor=ACTOR, now=T0)
    await store.add(entries(pki2, "other"), make_default=None, actor=ACTOR, now=T0)
    assert await store.get_meta("default_sha256") == cert_sha256(pki.leaf.cert)


@pytest.mark.parametrize(
    ("case", "error", "match"),
    [
        ("wrong-key", BadInput, "does not match its public key"),
        ("default-without-key", Conflict, "has no private key"),
        ("default-unknown", NotFound, "no certificate 'f{64}'"),
    ],
)
async def test_add_refused_changes_nothing(
    store: Store, db: Path, pki: Pki, pki2: Pki, case: str, error: type[Exception], match: str
) -> None:
    await store.add(entries(pki), make_default=None, actor=ACTOR, now=T0)
    if case == "wrong-key":
        batch = [SetEntry(pki2.leaf.cert, pki.leaf.key, "x")]
        default = None
    elif case == "default-without-key":
        batch = entries(pki2)[1:]
        default = cert_sha256(pki2.chain[0])
    else:
        batch = entries(pki2)
        default = "f" * 64
    await assert_refused_unchanged(
        db, lambda: store.add(batch, make_default=default, actor=ACTOR, now=T0), error, match
    )


async def test_get_and_get_key(store: Store, pki: Pki) -> None:
    await store.add(entries(pki), make_default=None, actor=ACTOR, now=T0)
    key = await store.get_key(cert_sha256(pki.leaf.cert))
    assert key is not None and der(key) == der(pki.leaf.key)
    assert await store.get_key(cert_sha256(pki.root.cert)) is None


@pytest.mark.parametrize("method", ["get", "get_key", "set_default", "delete", "chain"])
async def test_unknown_sha_is_not_found(store: Store, db: Path, method: str) -> None:
    sha = "0" * 64
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "get": lambda: store.get(sha),
        "get_key": lambda: store.get_key(sha),
        "set_default": lambda: store.set_default(sha, actor=ACTOR, now=T0),
        "delete": lambda: store.delete(sha, actor=ACTOR, now=T0),
        "chain": lambda: store.chain(sha),
    }
    await assert_refused_unchanged(db, calls[method], NotFound, f"no certificate '{sha}'")


async def test_naive_time_is_a_programming_error(store: Store, pki: Pki) -> None:
    with pytest.raises(ValueError, match="no time zone"):
        await store.add(entries(pki), make_default=None, actor=ACTOR, now=datetime(2026, 1, 1))  # noqa: DTZ001  # the point of the test
    assert await store.list_certificates() == []


# --------------------------------------------------------------------------- default / delete


async def test_set_default(store: Store, db: Path, pki: Pki, pki2: Pki) -> None:
    await store.add(entries(pki) + entries(pki2, "two"), make_default=None, actor=ACTOR, now=T0)
    sha2 = cert_sha256(pki2.leaf.cert)
    await store.set_default(sha2, actor=ACTOR, now=T0)
    assert (await store.get(sha2)).is_default
    assert not (await store.get(cert_sha256(pki.leaf.cert))).is_default
    # negative twin: a certificate without a key cannot be the default
    await assert_refused_unchanged(
        db,
        lambda: store.set_default(cert_sha256(pki2.root.cert), actor=ACTOR, now=T0),
        Conflict,
        "has no private key",
    )


async def test_delete_non_default_and_cascade(store: Store, db: Path, pki: Pki, pki2: Pki) -> None:
    await store.add(entries(pki) + entries(pki2, "two"), make_default=None, actor=ACTOR, now=T0)
    sha2 = cert_sha256(pki2.leaf.cert)
    await store.delete(sha2, actor=ACTOR, now=T0)
    with pytest.raises(NotFound):
        await store.get(sha2)
    conn = sqlite3.connect(db)
    try:
        assert (
            conn.execute("SELECT count(*) FROM keys WHERE cert_sha256 = ?", (sha2,)).fetchone()[0]
            == 0
        )
    finally:
        conn.close()


async def test_delete_default_while_others_have_keys(
    store: Store, db: Path, pki: Pki, pki2: Pki
) -> None:
    await store.add(entries(pki) + entries(pki2, "two"), make_default=None, actor=ACTOR, now=T0)
    sha1, sha2 = cert_sha256(pki.leaf.cert), cert_sha256(pki2.leaf.cert)
    await assert_refused_unchanged(
        db,
        lambda: store.delete(sha1, actor=ACTOR, now=T0),
        Conflict,
        "choose another default first",
    )
    # after choosing another default, it can go
    await store.set_default(sha2, actor=ACTOR, now=T0)
    await store.delete(sha1, actor=ACTOR, now=T0)
    assert await store.get_meta("default_sha256") == sha2


async def test_delete_last_keyed_default_is_allowed(store: Store, pki: Pki) -> None:
    await store.add(entries(pki), make_default=None, actor=ACTOR, now=T0)
    await store.delete(cert_sha256(pki.leaf.cert), actor=ACTOR, now=T0)
    assert await store.get_meta("default_sha256") is None
    assert {c.role for c in await store.list_certificates()} == {"intermediate", "root"}


# --------------------------------------------------------------------------- replace_all / meta


async def test_replace_all(store: Store, pki: Pki, pki2: Pki) -> None:
    await store.add(entries(pki), make_default=None, actor=ACTOR, now=T0)
    csr_key = make_key(fresh=True)
    await store.add_csr(name="keep", pem=_csr_pem(csr_key), key=csr_key, actor=ACTOR, now=T0)
    later = T0 + timedelta(days=1)
    # the new set keeps pki's root (shared) and brings pki2's chain
    new = [*entries(pki2, "two"), SetEntry(pki.root.cert, None, "")]
    sha2 = cert_sha256(pki2.leaf.cert)
    await store.replace_all(
        new, default=sha2, meta={"epoch": "2", "revision": "7"}, actor="node:primary", now=later
    )
    got = {c.sha256: c for c in await store.list_certificates()}
    assert set(got) == {cert_sha256(e.cert) for e in new}
    assert got[sha2].is_default and got[sha2].has_key
    assert got[cert_sha256(pki.root.cert)].added_at == T0  # unchanged rows keep their date
    assert got[sha2].added_at == later
    assert (await store.get_meta("epoch"), await store.get_meta("revision")) == ("2", "7")
    assert [c.name for c in await store.list_csrs()] == ["keep"]
    event = (await store.audit_log(1))[0]
    assert (event.actor, event.action) == ("node:primary", "set.replace")
    assert cert_sha256(pki.leaf.cert) in event.detail["removed"]


async def test_replace_all_drops_key_absent_from_new_set(store: Store, pki: Pki) -> None:
    await store.add(entries(pki), make_default=None, actor=ACTOR, now=T0)
    await store.replace_all(
        [SetEntry(pki.leaf.cert, None, "site")], default=None, meta={}, actor=ACTOR, now=T0
    )
    c = await store.get(cert_sha256(pki.leaf.cert))
    assert (c.has_key, c.is_default) == (False, False)


@pytest.mark.parametrize(
    ("default", "meta", "error", "match"),
    [
        ("root", {}, Conflict, "not a certificate with a key"),
        ("unknown", {}, Conflict, "not a certificate with a key"),
        ("leaf", {"default_sha256": "x"}, BadInput, "maintained by the store"),
    ],
)
async def test_replace_all_refused_changes_nothing(
    store: Store,
    db: Path,
    pki: Pki,
    pki2: Pki,
    default: str,
    meta: dict[str, str],
    error: type[Exception],
    match: str,
) -> None:
    await store.add(entries(pki), make_default=None, actor=ACTOR, now=T0)
    shas = {
        "root": cert_sha256(pki2.root.cert),
        "leaf": cert_sha256(pki2.leaf.cert),
        "unknown": "e" * 64,
    }
    await assert_refused_unchanged(
        db,
        lambda: store.replace_all(
            entries(pki2), default=shas[default], meta=meta, actor=ACTOR, now=T0
        ),
        error,
        match,
    )


async def test_meta(store: Store, db: Path) -> None:
    assert await store.get_meta("epoch") is None
    await store.set_meta({"epoch": "1", "last_sync": "2026-01-01T00:00:00Z"})
    await store.set_meta({"epoch": "2"}, actor=ACTOR, now=T0)
    assert await store.get_meta("epoch") == "2"
    assert await store.get_meta("last_sync") == "2026-01-01T00:00:00Z"
    events = await store.audit_log()
    assert [(e.action, dict(e.detail)) for e in events] == [("meta.set", {"epoch": "2"})]
    await assert_refused_unchanged(
        db, lambda: store.set_meta({"store_key_check": "00"}), BadInput, "maintained by the store"
    )


# --------------------------------------------------------------------------- CSRs


def _csr_pem(key: PrivateKey, cn: str = "req.example.com") -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


async def test_csr_round_trip(store: Store) -> None:
    key = make_key(fresh=True)
    pem_text = _csr_pem(key)
    stored = await store.add_csr(name="req", pem=pem_text, key=key, actor=ACTOR, now=T0)
    assert (stored.name, stored.pem, stored.created_at) == ("req", pem_text, T0)
    assert await store.list_csrs() == [stored]
    assert await store.get_csr(stored.id) == stored
    assert der(await store.get_csr_key(stored.id)) == der(key)


@pytest.mark.parametrize(
    ("case", "error", "match"),
    [
        ("duplicate", AlreadyExists, "stored already"),
        ("wrong-key", BadInput, "does not match the request"),
        ("not-a-csr", BadInput, "is not a PEM CSR"),
    ],
)
async def test_add_csr_refused(
    store: Store, db: Path, case: str, error: type[Exception], match: str
) -> None:
    key = make_key(fresh=True)
    first = _csr_pem(key)
    await store.add_csr(name="req", pem=first, key=key, actor=ACTOR, now=T0)
    pem_text, k = {
        "duplicate": (first, key),
        "wrong-key": (_csr_pem(key, "other.example.com"), make_key(fresh=True)),
        "not-a-csr": (b"-----BEGIN JUNK-----\n-----END JUNK-----\n", key),
    }[case]
    await assert_refused_unchanged(
        db,
        lambda: store.add_csr(name="again", pem=pem_text, key=k, actor=ACTOR, now=T0),
        error,
        match,
    )


@pytest.mark.parametrize("method", ["get_csr", "get_csr_key"])
async def test_unknown_csr(store: Store, method: str) -> None:
    with pytest.raises(NotFound, match="no request 'nope'"):
        await getattr(store, method)("nope")


# --------------------------------------------------------------------------- audit


async def test_every_change_is_audited_once(store: Store, pki: Pki, pki2: Pki) -> None:
    sha1, sha2 = cert_sha256(pki.leaf.cert), cert_sha256(pki2.leaf.cert)
    key = make_key(fresh=True)
    steps: list[tuple[Callable[[], Awaitable[Any]], str]] = [
        (lambda: store.add(entries(pki), make_default=None, actor="admin:a", now=T0), "cert.add"),
        (lambda: store.add(entries(pki2), make_default=None, actor="admin:b", now=T0), "cert.add"),
        (lambda: store.set_default(sha2, actor="admin:c", now=T0), "cert.default"),
        (lambda: store.delete(sha1, actor="admin:d", now=T0), "cert.delete"),
        (
            lambda: store.add_csr(name="r", pem=_csr_pem(key), key=key, actor="admin:e", now=T0),
            "csr.add",
        ),
        (
            lambda: store.record_audit(
                actor="node:x", action="rpc.refused", detail={"method": "Import"}, now=T0
            ),
            "rpc.refused",
        ),
        (
            lambda: store.replace_all(entries(pki2), default=sha2, meta={}, actor="node:p", now=T0),
            "set.replace",
        ),
    ]
    for i, (step, action) in enumerate(steps, start=1):
        await step()
        events = await store.audit_log(limit=100)
        assert len(events) == i
        assert events[0].action == action
    assert [e.actor for e in await store.audit_log(limit=3)] == ["node:p", "node:x", "admin:e"]


async def test_audit_never_holds_key_material(store: Store, db: Path, pki: Pki) -> None:
    canary = pem(pki.leaf.key).decode()
    await store.record_audit(actor=ACTOR, action="oops", detail={"pasted": canary}, now=T0)
    await store.add(entries(pki), make_default=None, actor=ACTOR, now=T0)
    text = repr(await store.audit_log())
    assert "PRIVATE KEY" not in text and "[redacted]" in text
    # negative twin: harmless text is kept as given
    await store.record_audit(actor=ACTOR, action="note", detail={"text": "hello"}, now=T0)
    assert (await store.audit_log(1))[0].detail == {"text": "hello"}


# --------------------------------------------------------------------------- tamper / canary


def _keyed_two(pki: Pki, pki2: Pki) -> list[SetEntry]:
    return entries(pki) + entries(pki2, "two")


@pytest.mark.parametrize("tamper", ["none", "swap", "copy", "flip-ct", "flip-nonce", "cert-der"])
async def test_tampered_rows_fail(db: Path, pki: Pki, pki2: Pki, tamper: str) -> None:
    s = await Store.open(db, KEY)
    await s.add(_keyed_two(pki, pki2), make_default=None, actor=ACTOR, now=T0)
    await s.close()
    a, b = cert_sha256(pki.leaf.cert), cert_sha256(pki2.leaf.cert)
    conn = sqlite3.connect(db)
    with conn:
        rows = dict(
            (r[0], (r[1], r[2]))
            for r in conn.execute("SELECT cert_sha256, nonce, ciphertext FROM keys")
        )
        upd = "UPDATE keys SET nonce = ?, ciphertext = ? WHERE cert_sha256 = ?"
        if tamper == "swap":
            conn.execute(upd, (*rows[b], a))
            conn.execute(upd, (*rows[a], b))
        elif tamper == "copy":
            conn.execute(upd, (*rows[a], b))
        elif tamper == "flip-ct":
            ct = bytearray(rows[a][1])
            ct[len(ct) // 2] ^= 1
            conn.execute(upd, (rows[a][0], bytes(ct), a))
        elif tamper == "flip-nonce":
            nonce = bytearray(rows[a][0])
            nonce[0] ^= 0x80
            conn.execute(upd, (bytes(nonce), rows[a][1], a))
        elif tamper == "cert-der":
            conn.execute(
                "UPDATE certificates SET der = ? WHERE sha256 = ?",
                (pki2.leaf.cert.public_bytes(serialization.Encoding.DER), a),
            )
    conn.close()
    s = await Store.open(db, KEY)
    try:
        if tamper == "none":
            ka = await s.get_key(a)
            assert ka is not None and der(ka) == der(pki.leaf.key)
        else:
            victims = {"swap": [a, b], "copy": [b]}.get(tamper, [a])
            for sha in victims:
                with pytest.raises(IntegrityError, match=f"certificate '{sha}'") as info:
                    await s.get_key(sha)
                assert "PRIVATE KEY" not in str(info.value)
            if tamper == "copy":  # the source row is still good
                ka = await s.get_key(a)
                assert ka is not None and der(ka) == der(pki.leaf.key)
    finally:
        await s.close()


async def test_tampered_csr_key_fails(db: Path) -> None:
    s = await Store.open(db, KEY)
    k1, k2 = make_key(fresh=True), make_key(fresh=True)
    c1 = await s.add_csr(name="a", pem=_csr_pem(k1), key=k1, actor=ACTOR, now=T0)
    c2 = await s.add_csr(name="b", pem=_csr_pem(k2, "b.example.com"), key=k2, actor=ACTOR, now=T0)
    await s.close()
    conn = sqlite3.connect(db)
    with conn:
        n, ct = conn.execute("SELECT nonce, ciphertext FROM csrs WHERE id = ?", (c1.id,)).fetchone()
        conn.execute("UPDATE csrs SET nonce = ?, ciphertext = ? WHERE id = ?", (n, ct, c2.id))
    conn.close()
    s = await Store.open(db, KEY)
    try:
        assert der(await s.get_csr_key(c1.id)) == der(k1)  # the untouched row still opens
        with pytest.raises(IntegrityError, match=f"request '{c2.id}'"):
            await s.get_csr_key(c2.id)
    finally:
        await s.close()


async def test_canary_key_never_in_raw_files(db: Path) -> None:
    canary = ec.generate_private_key(ec.SECP256R1())
    leaf = make_leaf(None, ["canary.example.com"], key=canary)
    scalar = canary.private_numbers().private_value.to_bytes(32, "big")
    needles = [der(canary), pem(canary), scalar, pem(canary).split(b"\n")[1]]
    s = await Store.open(db, KEY)
    try:
        await s.add([SetEntry(leaf.cert, canary, "canary")], make_default=None, actor=ACTOR, now=T0)
        await s.add_csr(name="c", pem=_csr_pem(canary), key=canary, actor=ACTOR, now=T0)
        assert (await s.get_key(cert_sha256(leaf.cert))) is not None
        live = raw_files(db) + db.with_name(db.name + "-shm").read_bytes()
        # negative twin: the search does find what is stored in clear (the certificate)
        assert leaf.cert.public_bytes(serialization.Encoding.DER) in live
        for needle in needles:
            assert needle not in live
    finally:
        await s.close()
    checkpointed = raw_files(db)  # after close the WAL is checkpointed into the main file
    assert leaf.cert.public_bytes(serialization.Encoding.DER) in checkpointed
    for needle in needles:
        assert needle not in checkpointed


# --------------------------------------------------------------------------- digest


@settings(max_examples=60, deadline=None)
@given(
    members=st.lists(
        st.tuples(st.text("0123456789abcdef", min_size=64, max_size=64), st.booleans()),
        min_size=1,
        max_size=6,
    ),
    default=st.none() | st.text("0123456789abcdef", min_size=64, max_size=64),
    data=st.data(),
)
def test_set_digest_properties(
    members: list[tuple[str, bool]], default: str | None, data: st.DataObject
) -> None:
    d = set_digest(members, default)
    shuffled = data.draw(st.permutations(members))
    assert set_digest(shuffled + members[:1], default) == d  # order and duplicates do not matter
    other_default = "-" if default else members[0][0]
    assert set_digest(members, other_default) != d
    flipped = [(members[0][0], not members[0][1])] + [m for m in members if m != members[0]]
    if members[0] in members[1:] or (members[0][0], not members[0][1]) in members:
        return  # the flip may leave the same set
    assert set_digest(flipped, default) != d


async def test_digest_is_the_replicated_set(db: Path, tmp_path: Path, pki: Pki, pki2: Pki) -> None:
    one = await Store.open(db, KEY)
    two = await Store.open(tmp_path / "two.sqlite3", bytes(32))
    try:
        await one.add(entries(pki), make_default=None, actor=ACTOR, now=T0)
        await one.add(entries(pki2, "b"), make_default=None, actor=ACTOR, now=T0)
        await two.add(
            list(reversed(entries(pki2, "b") + entries(pki))),
            actor=ACTOR,
            make_default=cert_sha256(pki.leaf.cert),
            now=T0 + timedelta(days=3),
        )
        assert await one.digest() == await two.digest()
        # an unrelated CA certificate is not part of the replicated set
        stray = make_root("Stray Root")
        await two.add([SetEntry(stray.cert, None, "")], make_default=None, actor=ACTOR, now=T0)
        assert await one.digest() == await two.digest()
        # negative twins: another default, or a key less, changes the digest
        before = await two.digest()
        await two.set_default(cert_sha256(pki2.leaf.cert), actor=ACTOR, now=T0)
        assert await two.digest() != before
        await two.replace_all(
            [*entries(pki2, "b"), SetEntry(pki.leaf.cert, None, "")],
            default=cert_sha256(pki2.leaf.cert),
            meta={},
            actor=ACTOR,
            now=T0,
        )
        assert await two.digest() not in (before, await one.digest())
    finally:
        await one.close()
        await two.close()


def test_replicated_members_uses_the_chain(pki: Pki) -> None:
    stray = make_root("Stray Root")
    certs = [
        _stored(pki.leaf.cert, True),
        _stored(pki.chain[0], False),
        _stored(pki.chain[1], False),
        _stored(stray.cert, False),
    ]
    got = replicated_members(certs, build_chain)
    assert got == sorted(
        [
            (cert_sha256(pki.leaf.cert), True),
            (cert_sha256(pki.chain[0]), False),
            (cert_sha256(pki.chain[1]), False),
        ]
    )
    assert replicated_members(certs[1:], build_chain) == []  # no key, nothing replicated


def _stored(cert: Any, has_key: bool) -> StoredCert:
    return StoredCert(
        sha256=cert_sha256(cert),
        name="",
        der=cert.public_bytes(serialization.Encoding.DER),
        role="identity",
        has_key=has_key,
        is_default=False,
        dns_names=(),
        ip_addresses=(),
        not_after=T0,
        added_at=T0,
    )


async def test_chain_of_stored_certificate(store: Store, pki: Pki) -> None:
    await store.add(entries(pki), make_default=None, actor=ACTOR, now=T0)
    chain, problems = await store.chain(cert_sha256(pki.leaf.cert))
    assert (chain, problems) == (pki.chain, ())
    await store.delete(cert_sha256(pki.root.cert), actor=ACTOR, now=T0)
    _chain, problems = await store.chain(cert_sha256(pki.leaf.cert))
    assert problems  # negative twin: without the root the chain is incomplete


# --------------------------------------------------------------------------- concurrency / cancel


async def test_concurrent_changes_are_serialised(store: Store) -> None:
    leaves = [make_leaf(None, [f"h{i}.example.com"], key=make_key(fresh=True)) for i in range(12)]
    await asyncio.gather(
        *(
            store.add([SetEntry(x.cert, x.key, f"h{i}")], make_default=None, actor=ACTOR, now=T0)
            for i, x in enumerate(leaves)
        )
    )
    assert len(await store.list_certificates()) == 12
    assert await store.get_meta("revision") == "12"
    assert len(await store.audit_log(100)) == 12


@pytest.mark.parametrize("steps", range(0, 40, 3))
async def test_cancelled_change_leaves_old_or_new(store: Store, db: Path, steps: int) -> None:
    """Cancel an import after ``steps`` turns of the event loop: all of it or none of it."""
    first = fresh_chain("first.example.com", "First Root")
    await store.add(entries(first), make_default=None, actor=ACTOR, now=T0)
    before = dump(db)
    second = fresh_chain("second.example.com", "Second Root")
    sha2 = cert_sha256(second.leaf.cert)
    task = asyncio.create_task(
        store.add(entries(second, "second"), make_default=sha2, actor=ACTOR, now=T0)
    )
    for _ in range(steps):
        await asyncio.sleep(0)  # one turn of the loop, not a wait for a condition
    task.cancel()
    try:
        await task
        done = True
    except asyncio.CancelledError:
        done = False
    shas = {c.sha256 for c in await store.list_certificates()}
    if sha2 in shas:
        assert len(shas) == 6 and await store.get_meta("default_sha256") == sha2
    else:
        assert not done
        assert dump(db) == before
    # no transaction is left open: the next change works
    third = fresh_chain("third.example.com", "Third Root")
    await store.add(entries(third, "third"), make_default=None, actor=ACTOR, now=T0)
    assert cert_sha256(third.leaf.cert) in {c.sha256 for c in await store.list_certificates()}


async def test_reads_never_see_half_a_change(store: Store, pki: Pki) -> None:
    """Reads while a change runs see either side of it, never a half-made change."""
    other = fresh_chain("x.example.com", "X Root")
    writer = asyncio.create_task(
        store.add(entries(pki) + entries(other, "x"), make_default=None, actor=ACTOR, now=T0)
    )
    seen: set[int] = set()
    while not writer.done():
        seen.add(len(await store.list_certificates()))
    await writer
    seen.add(len(await store.list_certificates()))
    assert seen <= {0, 6} and 6 in seen


# --------------------------------------------------------------------------- the view


async def test_view_is_shared_until_a_change(store: Store, pki: Pki, pki2: Pki) -> None:
    await store.add(entries(pki), make_default=None, actor=ACTOR, now=T0)
    first = await store.view()
    assert await store.view() is first  # nothing changed: the same object, chains kept
    await store.set_meta({"last_sync": "x"})
    second = await store.view()
    assert second is not first and second.meta["last_sync"] == "x"
    assert second.cert_rows is first.cert_rows  # a meta change keeps the parsed rows
    await store.add(entries(pki2, "two"), make_default=None, actor=ACTOR, now=T0)
    third = await store.view()
    assert third.cert_rows is not second.cert_rows
    assert {c.sha256 for c in third.certs} >= {cert_sha256(pki2.leaf.cert)}
    # negative twin: a refused change changes nothing, and the view stays valid
    with pytest.raises(NotFound):
        await store.set_default("0" * 64, actor=ACTOR, now=T0)
    assert (await store.view()).certs == third.certs


async def test_view_sees_another_connections_change(store: Store, db: Path, pki: Pki) -> None:
    await store.add(entries(pki), make_default=None, actor=ACTOR, now=T0)
    sha = cert_sha256(pki.leaf.cert)
    assert await store.get_key(sha) is not None  # opened once, kept in memory
    assert await store.get_meta("note") is None
    await store.set_meta({"mine": "1"})  # the view is patched in place, not read again...
    assert await store.get_meta("mine") == "1"
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("INSERT INTO meta (key, value) VALUES ('note', 'outside')")
        # and a key row altered behind the store's back must be read, and refused, again
        (ct,) = conn.execute("SELECT ciphertext FROM keys WHERE cert_sha256 = ?",
                             (sha,)).fetchone()
        flipped = bytearray(ct)
        flipped[0] ^= 1
        conn.execute("UPDATE keys SET ciphertext = ? WHERE cert_sha256 = ?",
                     (bytes(flipped), sha))
    conn.close()
    assert await store.get_meta("note") == "outside"  # ...and still sees other writers
    assert await store.get_meta("mine") == "1"
    with pytest.raises(IntegrityError, match=sha):
        await store.get_key(sha)


async def test_chain_follows_its_issuers(store: Store) -> None:
    """A chain is rebuilt when an issuer arrives or goes, and kept otherwise."""
    chain = fresh_chain("chain.example.com", "Chain Root")
    leaf_sha = cert_sha256(chain.leaf.cert)
    await store.add([SetEntry(chain.leaf.cert, chain.leaf.key, "leaf")], make_default=None,
                    actor=ACTOR, now=T0)
    alone, problems = (await store.view()).chain(leaf_sha)
    assert alone == () and problems
    await store.add([SetEntry(chain.intermediate.cert, None, ""),
                     SetEntry(chain.root.cert, None, "")], make_default=None, actor=ACTOR, now=T0)
    full, problems = (await store.view()).chain(leaf_sha)
    assert full == (chain.intermediate.cert, chain.root.cert) and problems == ()
    other = fresh_chain("other.example.com", "Other Root")
    await store.add(entries(other, "other"), make_default=None, actor=ACTOR, now=T0)
    view = await store.view()
    pool = [c.certificate() for c in view.certs]
    assert view.chain(leaf_sha) == build_chain(chain.leaf.cert, pool)
    await store.delete(cert_sha256(chain.intermediate.cert), actor=ACTOR, now=T0)
    cut, problems = (await store.view()).chain(leaf_sha)
    assert cut == () and problems
    assert await store.digest() == (await store.view()).digest


async def test_replace_all_keeps_stored_key_rows(store: Store, db: Path, pki: Pki,
                                                 pki2: Pki) -> None:
    """Activation keeps the key row of a certificate stored with its key already (it seals
    and writes only what changed; that part shows in CPU, not in the rows)."""
    await store.add(entries(pki), make_default=None, actor=ACTOR, now=T0)
    a, b = cert_sha256(pki.leaf.cert), cert_sha256(pki2.leaf.cert)

    def key_rows() -> dict[str, tuple[bytes, bytes]]:
        conn = sqlite3.connect(db)
        try:
            return {r[0]: (r[1], r[2]) for r in
                    conn.execute("SELECT cert_sha256, nonce, ciphertext FROM keys")}
        finally:
            conn.close()

    first = key_rows()
    await store.replace_all(entries(pki) + entries(pki2, "two"), default=b, meta={},
                            actor=ACTOR, now=T0 + timedelta(hours=1))
    second = key_rows()
    assert second[a] == first[a]  # kept as it was
    assert set(second) == {a, b}
    assert der(await store.get_key(b) or make_key()) == der(pki2.leaf.key)
    view = await store.view()
    assert view.default_sha256 == b and view.keyed == {a, b}
    # negative twin: the same certificate pushed without its key loses the key row
    keyless = [SetEntry(pki.leaf.cert, None, "site"), *entries(pki2, "two")]
    await store.replace_all(keyless, default=b, meta={}, actor=ACTOR,
                            now=T0 + timedelta(hours=2))
    assert set(key_rows()) == {b}
    assert await store.get_key(a) is None


def _chain_pool() -> list[tuple[Any, PrivateKey | None]]:
    """Roots, a cross-signed intermediate (one subject, two issuers), an intermediate whose
    leaf may arrive first, and leaves: every chain-building case the carry-over must keep."""
    root_a, root_b = make_root("Memo Root A", slot=11), make_root("Memo Root B", slot=12)
    inter_a = make_intermediate(root_a, "Memo Inter", slot=13)
    inter_b = make_intermediate(root_b, "Memo Inter", slot=13)  # the same subject and key
    other = make_intermediate(root_a, "Memo Other Inter", slot=14)
    leaves = [make_leaf(inter_a, ["one.memo.example"], slot=15),
              make_leaf(root_b, ["two.memo.example"], slot=16),
              make_leaf(other, ["three.memo.example"], slot=17)]
    return ([(c.cert, None) for c in (root_a, root_b, inter_a, inter_b, other)]
            + [(leaf.cert, leaf.key) for leaf in leaves])


_POOL = _chain_pool()


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(0, len(_POOL) - 1)), max_size=14))
def test_chains_kept_across_changes_equal_a_fresh_build(
    ops: list[tuple[bool, int]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """After any sequence of adds and deletes, every stored chain is what build_chain gives
    over the stored certificates now (the view carries chains over; this checks it)."""
    path = tmp_path_factory.mktemp("memo") / "store.sqlite3"

    async def run() -> None:
        store = await Store.open(path, KEY)
        try:
            for add, i in ops:
                cert, key = _POOL[i]
                if add:
                    await store.add([SetEntry(cert, key, "")], make_default=None, actor=ACTOR,
                                    now=T0)
                else:
                    with contextlib.suppress(NotFound, Conflict):
                        await store.delete(cert_sha256(cert), actor=ACTOR, now=T0)
                view = await store.view()
                pool = [c.certificate() for c in view.certs]
                for c in view.certs:
                    assert view.chain(c.sha256) == build_chain(c.certificate(), pool), c.name
        finally:
            await store.close()

    asyncio.run(run())


async def test_admin_changes_commit_fsynced_replica_sets_do_not(
        store: Store, pki: Pki, pki2: Pki) -> None:
    """An admin's change commits with synchronous=FULL; a replica's activated set and
    last_sync with NORMAL (the primary pushes them again if a power cut loses them)."""
    statements: list[str] = []
    assert [tuple(r) for r in await store._conn.execute_fetchall("PRAGMA synchronous")] == [(1,)]
    await store._conn.set_trace_callback(statements.append)

    level = ["NORMAL"]  # what Store.open leaves the connection at

    def sync_level_at_commit() -> list[str]:
        out = []
        for sql in statements:
            for part in sql.split(";"):
                part = part.strip().upper()
                if part.startswith("PRAGMA SYNCHRONOUS"):
                    level[0] = part.rsplit("=", 1)[1].strip()
                elif part == "COMMIT":
                    out.append(level[0])
        statements.clear()
        return out

    await store.add(entries(pki), make_default=None, actor=ACTOR, now=T0)
    assert sync_level_at_commit() == ["FULL"]
    await store.replace_all(entries(pki2, "two"), default=cert_sha256(pki2.leaf.cert),
                            meta={"revision": "7"}, actor="node:p1", now=T0, durable=False)
    assert sync_level_at_commit() == ["NORMAL"]
    await store.set_meta({"last_sync": "x"}, durable=False)
    assert sync_level_at_commit() == ["NORMAL"]
    await store.set_meta({"epoch": "2"})  # e.g. an adopted promotion: durable
    assert sync_level_at_commit() == ["FULL"]
