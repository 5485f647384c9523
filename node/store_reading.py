"""[shell] How :class:`node.store.Store` reads its views: the rows, carried over a change.

:class:`StoreReading` keeps the last :class:`~node.store_view.StoreView` and, after our own
changes (each transaction names the certificates it may change, see
:meth:`node.store_file.StoreFile._transaction`), reads only those rows again and builds the
new :class:`~node.store_rows.CertRows` from the last ones (:func:`~node.store_rows.merge_rows`,
chains carried over unless an issuer came or went), so a change costs what changed. A change
made by another connection (SQLite's ``data_version``) drops every cache and reads every row
again, checking each. The concurrency contract is the store's.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import aiosqlite
from cryptography import x509

from node.errors import IntegrityError
from node.model import PrivateKey
from node.store_history import SetHistoryMixin
from node.store_rows import CertRows, RowFields, StoredCert, merge_rows, row_to_cert
from node.store_view import StoreView

__all__ = ["INLINE_CHAINS", "StoreReading"]

#: below this many chains to build, a view's set is worked out on the event loop
INLINE_CHAINS: Final = 4  # chains to build (a signature check or two each)

#: a chain, nearest first, and the problems that keep it from a root (build_chain's answer)
_Chain = tuple[tuple[x509.Certificate, ...], tuple[str, ...]]


class StoreReading(SetHistoryMixin):
    """The views of the store's file; see the module docstring."""

    def __init__(self, conn: aiosqlite.Connection, path: Path, store_key: bytes) -> None:
        super().__init__(conn, path, store_key)
        # In-memory views of the file, valid while nothing changes it: ``_generation``
        # counts our own commits, SQLite's ``data_version`` another connection's. Parsed
        # rows and opened keys are kept by sha256 (a row with that sha256 can only hold
        # that certificate, and its key row only the key matching it); a change made by
        # another connection drops them all, so a row altered behind our back is read,
        # and checked, again.
        self._view: tuple[tuple[int, int], StoreView] | None = None
        self._rows_seen: dict[str, tuple[RowFields, StoredCert]] = {}
        self._keys: dict[str, PrivateKey] = {}
        #: the last view read through the reader connection, by its ``data_version``
        self._reader_cache: tuple[int, StoreView] | None = None

    def _row_to_cert(self, row: Sequence[Any]) -> StoredCert:
        """A row as a :class:`StoredCert` (:func:`node.store_view.row_to_cert`, with the
        last answer for its sha256)."""
        seen = self._rows_seen[str(row[0])] = row_to_cert(row, self._rows_seen.get(row[0]))
        return seen[1]

    _CERT_SELECT = (
        "SELECT c.sha256, c.der, c.name, c.role, c.not_after, c.added_at, "
        "k.cert_sha256 IS NOT NULL FROM certificates c LEFT JOIN keys k ON k.cert_sha256 = c.sha256"
    )

    async def _current(self) -> StoreView:
        """The view of the store now (the caller holds ``self._lock``); one query when
        nothing changed since the last call. After our own changes only the rows they
        touched are read again and the rest is carried over (:class:`CertRows`'s base)."""
        if self._via_reader():
            return await self._reader_view()
        data_version = await self._scalar_int("PRAGMA data_version")
        token = (self._generation, data_version)
        touched, self._touched = self._touched, set()
        if self._view is not None:
            if self._view[0] == token:
                return self._view[1]
            if self._view[0][1] != data_version:  # another connection wrote: trust nothing
                self._rows_seen.clear()
                self._keys.clear()
                self._view = None
        meta = {str(k): str(v) for k, v in await self._fetchall("SELECT key, value FROM meta")}
        if self._view is None:
            cert_rows = self._rows_from(await self._all_rows(), None, None)
        elif touched is None:
            cert_rows = self._rows_from(await self._all_rows(), self._view[1].cert_rows, None)
        elif touched:
            before = self._view[1].cert_rows
            fresh = await self._some_rows(sorted(touched))
            cert_rows = self._rows_from(None, before, (fresh, touched))
        else:
            cert_rows = self._view[1].cert_rows  # only meta (or other tables) changed
        view = StoreView(meta=MappingProxyType(meta), cert_rows=cert_rows)
        self._view = (token, view)
        return view

    async def _all_rows(self) -> tuple[tuple[Any, ...], ...]:
        return tuple(await self._fetchall(self._CERT_SELECT + " ORDER BY c.added_at, c.sha256"))

    async def _some_rows(self, shas: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        out: dict[str, tuple[Any, ...]] = {}
        for start in range(0, len(shas), 500):  # SQLite's bound-parameter limit
            part = shas[start:start + 500]
            marks = ", ".join("?" * len(part))
            sql = f"{self._CERT_SELECT} WHERE c.sha256 IN ({marks})"  # only "?" marks are joined in
            for r in await self._fetchall(sql, part):
                out[str(r[0])] = r
        return out

    def _rows_from(
        self, rows: tuple[tuple[Any, ...], ...] | None, before: CertRows | None,
        fresh: tuple[dict[str, tuple[Any, ...]], Collection[str]] | None,
    ) -> CertRows:
        """The rows of the new view: ``rows`` (all of them), or ``before``'s with the rows
        of ``fresh`` (re-read rows by sha256, and the sha256s asked for) merged in; the
        chains and the replicated set carried over from ``before`` when it is worked out
        (or cheap to work out here), else derived from scratch (off the loop, in view())."""
        if before is None:
            assert rows is not None
            return CertRows(rows=rows, load=self._row_to_cert)
        old = before.row_of
        if rows is None:
            assert fresh is not None
            now, asked = fresh
            changed = {sha for sha in asked if old.get(sha) != now.get(sha)}
            if not changed:
                return before
            rows = merge_rows(before.rows, now, changed)
        else:
            if rows == before.rows:
                return before  # only meta changed: keep parsed rows, chains
            now = {str(r[0]): r for r in rows}
            changed = {sha for sha in old.keys() | now.keys() if old.get(sha) != now.get(sha)}
        present = {sha for sha in changed if sha in now}
        chains = self._carried_chains(before, changed, now)
        for sha in changed - present:
            self._rows_seen.pop(sha, None)
            self._keys.pop(sha, None)
        base = before if before.settled or (
            before.has_base and before.chains_to_build() <= INLINE_CHAINS) else None
        if base is not None:
            base.settle()
        cert_rows = CertRows(rows=rows, load=self._row_to_cert, chain_memo=chains,
                             base=base, changed=changed)
        for sha in changed & present:  # a key row gone with the certificate staying
            if sha not in cert_rows.keyed:
                self._keys.pop(sha, None)
        return cert_rows

    async def _reader_view(self) -> StoreView:
        """The view read through the reader connection while a change holds the writer's:
        kept only while the reader's ``data_version`` stays (any commit, ours included,
        moves it); parsed rows are reused (each is checked against its DER)."""
        data_version = await self._scalar_int("PRAGMA data_version")
        if self._reader_cache is not None and self._reader_cache[0] == data_version:
            return self._reader_cache[1]
        meta = {str(k): str(v) for k, v in await self._fetchall("SELECT key, value FROM meta")}
        rows = tuple(await self._fetchall(self._CERT_SELECT + " ORDER BY c.added_at, c.sha256"))
        seen = dict(self._rows_seen)

        def load(r: Sequence[Any]) -> StoredCert:
            return row_to_cert(r, seen.get(str(r[0])))[1]

        cert_rows = CertRows(rows=rows, load=load)
        before = self._view[1].cert_rows if self._view is not None else None
        if before is not None and before.settled:
            # carried over from the writer's last view (every change between is committed:
            # the diff of the rows finds it), so a read beside a change does not build
            # every chain again
            if rows == before.rows:
                cert_rows = before
            else:
                old = before.row_of
                now = {str(r[0]): r for r in rows}
                changed = {sha for sha in old.keys() | now.keys() if old.get(sha) != now.get(sha)}
                try:
                    came_or_went = {load(now[sha]).certificate().subject if sha in now
                                    else before.row_cert(sha).certificate().subject
                                    for sha in changed if (sha in now) != (sha in old)}
                except IntegrityError:
                    came_or_went = None
                if came_or_went is not None:
                    chains = {sha: m for sha, m in before.chain_memo.items()
                              if (sha not in changed or sha in now)
                              and m[0].isdisjoint(came_or_went)}
                    cert_rows = CertRows(rows=rows, load=load, chain_memo=chains, base=before,
                                         changed=changed)
        view = StoreView(meta=MappingProxyType(meta), cert_rows=cert_rows)
        self._reader_cache = (data_version, view)
        return view

    def _carried_chains(
        self, before: CertRows, changed: set[str], now: Mapping[str, Sequence[Any]]
    ) -> dict[str, tuple[frozenset[x509.Name], _Chain]]:
        """The chains of ``before`` still valid after ``changed`` (``now``: their rows
        now, by sha256, absent when gone): those of certificates still present whose issuer
        names are none of the subjects of what came or went."""
        old = before.row_of
        try:
            came_or_went = set()
            for sha in changed:
                if sha in old and sha not in now:
                    gone = before.get(sha)
                    if gone is not None:
                        came_or_went.add(gone.certificate().subject)
                elif sha in now and sha not in old:
                    came_or_went.add(self._row_to_cert(now[sha]).certificate().subject)
        except IntegrityError:  # an altered row: build every chain again (and fail there)
            return {}
        memo = before.chain_memo
        if not came_or_went:
            return {sha: m for sha, m in memo.items() if sha not in changed or sha in now}
        return {sha: m for sha, m in memo.items()
                if (sha not in changed or sha in now) and m[0].isdisjoint(came_or_went)}
