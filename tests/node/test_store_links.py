"""The store applies the link model (issue 11): a certificate without its key is linked to
a stored key or a CSR key with its public key, in either order; CSRs are fulfilled, deleted,
replaced on the backup; names are kept on re-import; a forced delete is audited."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from node.errors import BadInput, NotFound
from node.formats import cert_sha256
from node.linking import requests_digest
from node.model import PrivateKey
from node.store import Store
from node.store_file import _MIGRATIONS, SCHEMA_VERSION
from node.store_view import SetEntry
from tests.pki import Pki, make_chain, make_key, make_leaf

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ACTOR = "admin:ops"
KEY = bytes(range(32))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "store.sqlite3", KEY)
    try:
        yield s
    finally:
        await s.close()


def _csr_pem(key: PrivateKey, cn: str = "support.example.com") -> bytes:
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


def _leaf_for(pki: Pki, key: PrivateKey, days: int = 0) -> x509.Certificate:
    return make_leaf(pki.intermediate, key=key,
                     not_after=pki.leaf.cert.not_valid_after_utc + timedelta(days=days)).cert


async def test_a_signed_certificate_alone_takes_the_csr_key_and_fulfils_it(
    store: Store,
) -> None:
    pki = make_chain()
    key = make_key(fresh=True)
    csr = await store.add_csr(name="site", pem=_csr_pem(key), key=key, actor=ACTOR, now=T0)
    leaf = _leaf_for(pki, key)
    links = await store.add([SetEntry(leaf, None, "site")], make_default=None, actor=ACTOR,
                            now=T0)
    sha = cert_sha256(leaf)
    assert [(k.cert_sha256, k.source.kind, k.source.ref) for k in links] == [
        (sha, "csr", csr.id)]
    stored = await store.get(sha)
    assert stored.has_key and stored.role == "identity" and stored.is_default
    assert (await store.get_csr(csr.id)).fulfilled_by == sha
    opened = await store.get_key(sha)
    assert opened is not None and opened.public_key() == key.public_key()
    # twin: a certificate for a key nowhere in the store stays key-less, no request fulfilled
    stray = make_chain(sans=["other.example.com"]).leaf.cert
    assert await store.add([SetEntry(stray, None, "")], make_default=None, actor=ACTOR,
                           now=T0) == []
    assert not (await store.get(cert_sha256(stray))).has_key


async def test_a_key_arriving_after_its_certificate_links_the_stored_one(store: Store) -> None:
    pki = make_chain()
    key = make_key(fresh=True)
    renewal = _leaf_for(pki, key, days=30)
    await store.add([SetEntry(renewal, None, "renewal")], make_default=None, actor=ACTOR,
                    now=T0)
    assert not (await store.get(cert_sha256(renewal))).has_key
    first = _leaf_for(pki, key)
    links = await store.add([SetEntry(first, key, "first")], make_default=None, actor=ACTOR,
                            now=T0)
    assert [(k.cert_sha256, k.source.ref) for k in links] == [
        (cert_sha256(renewal), cert_sha256(first))]
    assert (await store.get(cert_sha256(renewal))).has_key
    assert (await store.get(cert_sha256(renewal))).name == "renewal"  # its name stays


async def test_a_csr_made_after_its_certificate_links_it(store: Store) -> None:
    pki = make_chain()
    key = make_key(fresh=True)
    leaf = _leaf_for(pki, key)
    await store.add([SetEntry(leaf, None, "")], make_default=None, actor=ACTOR, now=T0)
    assert await store.link_stored(actor=ACTOR, now=T0) == []  # twin: nothing to link yet
    await store.add_csr(name="late", pem=_csr_pem(key), key=key, actor=ACTOR, now=T0)
    assert [k.cert_sha256 for k in await store.link_stored(actor=ACTOR, now=T0)] == [
        cert_sha256(leaf)]
    assert (await store.get(cert_sha256(leaf))).has_key


async def test_a_default_name_keeps_the_stored_name_and_an_asked_one_replaces_it(
    store: Store,
) -> None:
    pki = make_chain()
    await store.add([SetEntry(pki.leaf.cert, pki.leaf.key, "Front door")], make_default=None,
                    actor=ACTOR, now=T0)
    sha = cert_sha256(pki.leaf.cert)
    await store.add([SetEntry(pki.leaf.cert, pki.leaf.key, "support.example.com",
                              name_is_default=True)], make_default=None, actor=ACTOR, now=T0)
    assert (await store.get(sha)).name == "Front door"
    await store.add([SetEntry(pki.leaf.cert, pki.leaf.key, "Renamed")], make_default=None,
                    actor=ACTOR, now=T0)
    assert (await store.get(sha)).name == "Renamed"
    # a certificate new to the store takes its default name
    other = make_chain(sans=["x.example.com"]).leaf
    await store.add([SetEntry(other.cert, other.key, "x.example.com", name_is_default=True)],
                    make_default=None, actor=ACTOR, now=T0)
    assert (await store.get(cert_sha256(other.cert))).name == "x.example.com"


async def test_delete_csr_and_its_twin(store: Store) -> None:
    key = make_key(fresh=True)
    csr = await store.add_csr(name="r", pem=_csr_pem(key), key=key, actor=ACTOR, now=T0)
    await store.delete_csr(csr.id, actor=ACTOR, now=T0)
    assert await store.list_csrs() == []
    with pytest.raises(NotFound, match="no request"):
        await store.delete_csr(csr.id, actor=ACTOR, now=T0)
    assert next(e.action for e in await store.audit_log()) == "csr.delete"


async def test_replace_csrs_makes_the_set_exact_and_checks_each_key(store: Store) -> None:
    k1, k2 = make_key(fresh=True), make_key(fresh=True)
    old = await store.add_csr(name="old", pem=_csr_pem(k1, "old.example.com"), key=k1,
                              actor=ACTOR, now=T0)
    before = await store.requests_digest()
    new = await store.add_csr(name="new", pem=_csr_pem(k2), key=k2, actor=ACTOR, now=T0)
    await store.replace_csrs([(new, k2)], actor="node:p1", now=T0)
    assert [c.id for c in await store.list_csrs()] == [new.id]
    assert await store.requests_digest() == requests_digest([(new.id, None)]) != before
    assert (await store.get_csr_key(new.id)).public_key() == k2.public_key()
    # twin: a key that does not belong to its request is refused, nothing changes
    with pytest.raises(BadInput, match="does not match"):
        await store.replace_csrs([(old, k2)], actor="node:p1", now=T0)
    assert [c.id for c in await store.list_csrs()] == [new.id]


async def test_a_forced_delete_of_the_default_is_audited(store: Store) -> None:
    pki = make_chain()
    other = make_chain(sans=["other.example.com"]).leaf
    await store.add([SetEntry(pki.leaf.cert, pki.leaf.key, "a"),
                     SetEntry(other.cert, other.key, "b")], make_default=None, actor=ACTOR,
                    now=T0)
    sha = cert_sha256(pki.leaf.cert)
    await store.delete(sha, actor=ACTOR, now=T0, force=True, dependents=["it is the default"])
    event = (await store.audit_log())[0]
    assert event.action == "cert.delete" and event.detail["forced"] is True
    assert event.detail["dependents"] == ["it is the default"]
    assert (await store.view()).default_sha256 is None


async def test_a_schema_1_store_gains_the_fulfilled_column(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    with sqlite3.connect(path) as conn:
        for sql in _MIGRATIONS[0]:
            conn.execute(sql)
        conn.execute("PRAGMA user_version = 1")
    store = await Store.open(path, KEY)
    try:
        assert await store.list_csrs() == []
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        cols = [r[1] for r in conn.execute("PRAGMA table_info(csrs)")]
    assert "fulfilled_by" in cols
