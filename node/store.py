"""[shell] The node's certificate store: the certificate set in SQLite, keys sealed at rest.

Layout of the database (schema and migrations: :mod:`node.store_file`):

* ``certificates`` -- every certificate (identity, intermediate, root) by the sha256 of its DER;
* ``keys`` -- the private key of a certificate, PKCS#8 DER sealed with AES-256-GCM under the
  node's store key and bound to its row (:mod:`node.sealing`), so a ciphertext copied to
  another row, swapped or altered fails to open (:class:`IntegrityError`);
* ``csrs`` -- certificate signing requests with their keys, sealed the same way and bound to
  the request id (:class:`node.store_file.StoreFile`);
* ``meta`` -- key/value: ``default_sha256``, ``epoch``, ``revision``, ``last_sync`` ...;
* ``audit`` -- one row per change: when, who (the mTLS identity), what; never key material.

Every change is one ``BEGIN IMMEDIATE ... COMMIT`` transaction in WAL mode with
``synchronous=FULL``: a crash leaves the old state or the new one. The logic worth testing on
its own is pure and lives beside this shell: the records, the row cache, :class:`StoreView`,
the set digest and change preparation in :mod:`node.store_view`, sealing in
:mod:`node.sealing`; :class:`Store` is the thin async shell around SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import aiosqlite
from cryptography import x509

from node.errors import BadInput, Conflict, IntegrityError
from node.formats import cert_sha256
from node.linking import (
    KeyHolder,
    Link,
    LinkCandidate,
    apply_links,
    plan_entry_links,
    stored_links,
)
from node.model import PrivateKey
from node.sealing import NONCE_BYTES, key_aad, load_key, spki, unseal
from node.store_reading import INLINE_CHAINS, StoreReading
from node.store_view import (
    PreparedCert,
    SetEntry,
    StoredCert,
    StoreView,
    changes_nothing,
    prepare,
)
from node.text import stored_time

__all__ = ["Store"]

#: below these, CPU work of a change runs on the event loop: a thread hop costs more
_INLINE_SEALS: Final = 4  # keys to seal (AES-GCM over a PKCS#8)
_INLINE_ENTRIES: Final = 64  # entries to serialise and check against their keys

#: meta keys the store maintains itself; ``set_meta`` refuses them
_RESERVED_META: Final = frozenset({"default_sha256", "store_key_check"})

#: a chain, nearest first, and the problems that keep it from a root (build_chain's answer)
_Chain = tuple[tuple[x509.Certificate, ...], tuple[str, ...]]


def _nonce() -> bytes:
    """A fresh AES-GCM nonce (the randomness :mod:`node.sealing` takes as a parameter)."""
    return os.urandom(NONCE_BYTES)


class Store(StoreReading):
    """The node's certificate store in one SQLite file.

    Concurrency: a writer connection and a reader connection per ``Store``. Every change runs
    on the writer under one :class:`asyncio.Lock`, so changes are serialised; each is one
    ``BEGIN IMMEDIATE ... COMMIT`` transaction that waits up to ``busy_seconds`` for another
    process's write lock, then fails with :class:`StoreBusy` (a full volume:
    :class:`StoreFull`), changing nothing. A read runs on the writer (with its cached views)
    when no change holds or waits for it, else on the reader: in WAL mode it never waits for
    a writer, and it never sees a change half-made.

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
        super().__init__(conn, path, store_key)
        self._spkis: dict[str, bytes] = {}  # public keys by certificate sha256 (DER fixed)
        self._links_of: tuple[int, tuple[list[KeyHolder], list[LinkCandidate]]] | None = None

    # ---------------------------------------------------------------- views

    async def _key_row_exists(self, sha: str) -> bool:
        return await self._scalar_int("SELECT count(*) FROM keys WHERE cert_sha256 = ?", (sha,)) > 0

    async def _upsert(self, items: Sequence[PreparedCert], now: str) -> None:
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

    async def view(self) -> StoreView:
        """Every certificate and meta value as of now, as one immutable :class:`StoreView`
        (the same object until the store changes). The first call after a change works out
        the chains and the set digest off the event loop (signature checks are CPU work)."""
        view = await self._locked(self._current)
        rows = view.cert_rows
        if "members" not in rows.__dict__:
            # an altered row raises for whoever reads it, not for a reader of meta values
            with contextlib.suppress(IntegrityError):
                if rows.chains_to_build() <= INLINE_CHAINS:
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
    ) -> list[Link]:
        """Store certificates (with keys, and chain certificates without) in one transaction.

        A certificate stored already keeps its row and gains a key if it had none; a non-empty
        name replaces the stored one unless the entry's ``name_is_default``. Every
        certificate without a key, arriving or stored, is linked to a stored key, a CSR's
        key or a key of the batch with its public key (:func:`node.linking.plan_links`); a
        CSR whose key is linked is marked fulfilled. Returns the links made.

        ``make_default`` (a sha256 with a key, in ``entries`` or stored) becomes the default;
        when the store has no default, the first entry with a key becomes it. Each add that
        changes something bumps the ``revision`` meta value; one that would change nothing
        (everything stored as given, the default as asked) writes nothing, not even an audit
        row.
        """
        when = stored_time(now)
        entries, links = await self._link(entries)
        if not entries and make_default is None:
            return links
        prepared = await asyncio.to_thread(prepare, self._store_key, entries, _nonce)
        keyed_new = [p.sha256 for p in prepared if p.sealed is not None]
        async with self._lock:
            if make_default is not None and make_default not in keyed_new:
                in_batch = any(p.sha256 == make_default for p in prepared)
                await self._require_key(make_default, "default", stored=not in_batch)
            if changes_nothing(await self._current(), prepared, make_default):
                return links  # none: a link would have changed an entry
            async with self._transaction(certs=[p.sha256 for p in prepared]):
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
                        "links": [{"sha256": k.cert_sha256, "from": k.source.kind,
                                   "ref": k.source.ref} for k in links],
                    },
                    now,
                )
                await self._fulfil([(k.source.ref, k.cert_sha256) for k in links
                                    if k.source.kind == "csr"])
        return links

    # ---------------------------------------------------------------- links (issue 11)

    def _spki_of(self, sha: str, cert: x509.Certificate) -> bytes:
        found = self._spkis.get(sha)
        if found is None:
            found = self._spkis[sha] = spki(cert.public_key())
        return found

    def _stored_links(self, view: StoreView) -> tuple[list[KeyHolder], list[LinkCandidate]]:
        """:func:`node.linking.stored_links` of ``view``, once per rows."""
        kept = self._links_of
        if kept is None or kept[0] != view.cert_rows.serial:
            kept = self._links_of = (view.cert_rows.serial, stored_links(view, self._spki_of))
        return kept[1]

    async def key_holders(self) -> list[KeyHolder]:
        """Every key the store holds: certificates' keys first, then CSRs' keys (oldest
        first)."""
        async with self._read_section():
            view = await self._current()
            csrs = await self._csr_spkis()
        return [*self._stored_links(view)[0], *(KeyHolder("csr", i, k) for i, k in csrs)]

    async def link_stored(self, *, actor: str, now: datetime) -> list[Link]:
        """Link every stored certificate without a key to a stored key or CSR key with its
        public key (after a CSR or a key arrived); one transaction when there is any."""
        return await self.add([], make_default=None, actor=actor, now=now)

    async def _link(self, entries: Sequence[SetEntry]) -> tuple[list[SetEntry], list[Link]]:
        """``entries`` with the keys the store links to them, plus entries for stored
        certificates that gain a key, and the links (:func:`node.linking.plan_links`). A
        default name of an entry stored already gives way to the stored name."""
        async with self._read_section():
            view = await self._current()
            csrs = await self._csr_spkis()
        planned = plan_entry_links(entries, view, csrs, self._spki_of,
                                   self._stored_links(view))
        batch, links = planned.batch, planned.links
        if not links:
            return planned.entries, []
        stored_keys = await self.keys(
            [k.source.ref for k in links if k.source.kind == "cert" and k.source.ref not in batch])
        found: dict[str, PrivateKey] = {}
        for k in links:
            if k.source.kind == "csr":
                found[k.cert_sha256] = await self.get_csr_key(k.source.ref)
            else:
                key = batch[k.source.ref].key if k.source.ref in batch else None
                key = key or stored_keys.get(k.source.ref)
                if key is not None:
                    found[k.cert_sha256] = key
        return apply_links(planned, view, found)

    async def list_certificates(self) -> list[StoredCert]:
        """Every certificate, oldest first."""
        return await self._locked(self._list)

    async def get(self, sha256: str) -> StoredCert:
        """One certificate; :class:`NotFound` if it is not stored."""
        return await self._locked(lambda: self._get(sha256))

    async def get_key(self, sha256: str) -> PrivateKey | None:
        """The private key of a certificate (``None`` if stored without one);
        :class:`NotFound` when the certificate is not stored."""
        async with self._read_section():
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
        if view is not None:
            keyed, opened = view.keyed, self._keys
            if all(s in opened for s in wanted if s in keyed):
                return {s: opened[s] for s in wanted if s in keyed}
        async with self._read_section():
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
        key = load_key(der, what=what)
        if spki(key.public_key()) != spki(cert.certificate().public_key()):
            raise IntegrityError(
                f"the stored key of {what} does not match the certificate; "
                "restore the store from a backup or re-import it"
            )
        return key

    async def set_default(self, sha256: str, *, actor: str, now: datetime) -> None:
        """Make a certificate with a key the default (:class:`Conflict` when it has none)."""
        stored_time(now)
        async with self._lock:
            await self._require_key(sha256, "default")
            previous = await self._meta("default_sha256")
            async with self._transaction(certs=()):
                await self._put_meta({"default_sha256": sha256})
                await self._bump_revision()
                detail = {"sha256": sha256, "previous": previous}
                await self._audit(actor, "cert.default", detail, now)

    async def delete(
        self, sha256: str, *, actor: str, now: datetime, force: bool = False,
        dependents: Sequence[str] = (),
    ) -> None:
        """Delete a certificate (and its key).

        Deleting the default while another certificate with a key exists is a
        :class:`Conflict`: choose another default first. Deleting the last one is allowed.
        ``force`` deletes the default anyway (the store is then without one); the audit row
        records it and ``dependents``, what the caller found depending on it.
        """
        stored_time(now)
        async with self._lock:
            cert = await self._get(sha256)
            if cert.is_default and not force:
                others = await self._scalar_int(
                    "SELECT count(*) FROM keys WHERE cert_sha256 != ?", (sha256,)
                )
                if others:
                    raise Conflict(
                        f"certificate {sha256!r} is the default and {others} other certificate(s) "
                        "with keys exist; choose another default first "
                        "('certsync cert default SHA256')"
                    )
            async with self._transaction(certs=[sha256]):
                await self._conn.execute("DELETE FROM certificates WHERE sha256 = ?", (sha256,))
                if cert.is_default:
                    await self._conn.execute("DELETE FROM meta WHERE key = 'default_sha256'")
                await self._bump_revision()
                detail: dict[str, Any] = {"sha256": sha256, "name": cert.name, "role": cert.role}
                if force:
                    detail.update(forced=True, dependents=list(dependents))
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
        when = stored_time(now)
        self._check_meta_keys(meta)
        # what is stored with its key already keeps its key row: O(changed) sealing
        before = await self.view()
        prepare_all = functools.partial(prepare, self._store_key, entries, _nonce,
                                        stored_keys=before.keyed)
        to_seal = sum(1 for e in entries
                      if e.key is not None and cert_sha256(e.cert) not in before.keyed)
        # a replica's activation usually seals one or two keys: cheaper here than a thread hop
        prepared = (prepare_all() if to_seal <= _INLINE_SEALS and len(entries) <= _INLINE_ENTRIES
                    else await asyncio.to_thread(prepare_all))
        keyed = {p.sha256 for p in prepared if p.keyed}
        if default is not None and default not in keyed:
            raise Conflict(
                f"the default {default!r} is not a certificate with a key in the new set; "
                "send its key with it or choose another default"
            )
        new = {p.sha256 for p in prepared}
        touched = set(new)  # and every row stored now (below): the rows it may change
        async with self._lock, self._transaction(durable=durable, certs=touched):
            current = await self._current()
            if current.cert_rows is not before.cert_rows:  # rows changed meanwhile: seal all
                prepared = await asyncio.to_thread(prepare, self._store_key, entries, _nonce)
            old = {str(r[0]) for r in await self._fetchall("SELECT sha256 FROM certificates")}
            touched.update(old)
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
            async with self._transaction(durable=durable, certs=()):
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
