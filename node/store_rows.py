"""[core] The certificate rows of a store view, and what derives from them, carried over.

:class:`CertRows` holds one reading of the ``certificates`` table (with whether each row has
a key) and derives from the rows alone: each row parsed and checked when first asked for,
the chain index, chains, the replicated set and its digest. A change of the store gives new
rows; built with ``base`` (the rows before) and ``changed`` (the sha256s whose row came,
went or differs), every derived value is the base's with the changed part redone -- a
change costs what changed, not what is stored. :func:`merge_rows` makes those rows from
the base's and the changed rows read again. The answers are those of a reading from
scratch (``base=None``); ``tests/unit/test_store_rows.py`` checks that after random
sequences of changes.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import itertools
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from cryptography import x509

from node.chain import ChainIndex, build_chain
from node.errors import IntegrityError, NotFound
from node.formats import cert_sha256
from node.model import Role
from node.text import parse_stored_time

__all__ = [
    "CertRows",
    "RowFields",
    "StoredCert",
    "cached",
    "merge_rows",
    "no_cert",
    "row_key",
    "row_to_cert",
    "sans",
    "set_digest",
]

_T = TypeVar("_T")


class cached(Generic[_T]):  # lower case: a decorator, like functools.cached_property
    """:func:`functools.cached_property` without its lock: in Python 3.11 one lock per
    property serves every instance, so a reader on the event loop waited for a worker
    thread working out another view's replicated set. Two threads that race compute the
    same value; the last one stays."""

    def __init__(self, fn: Callable[[Any], _T]) -> None:
        self._fn = fn
        self._name = fn.__name__
        self.__doc__ = fn.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, obj: Any, owner: type | None = None) -> _T:
        if obj is None:
            return self  # type: ignore[return-value]  # the descriptor, read off the class
        value = self._fn(obj)
        obj.__dict__[self._name] = value
        return value


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


def sans(cert: x509.Certificate) -> tuple[tuple[str, ...], tuple[str, ...]]:
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
    h.update("".join(f"{sha}:{int(has_key)}\n" for sha, has_key in sorted(set(members)))
             .encode("ascii"))
    h.update(f"default:{default or '-'}\n".encode("ascii"))
    return h.hexdigest()


#: what a row holds besides its DER: name, role, not_after, added_at, has_key
RowFields = tuple[Any, ...]


def row_to_cert(
    row: Sequence[Any], last: tuple[RowFields, StoredCert] | None
) -> tuple[RowFields, StoredCert]:
    """A certificate row (sha256, der, name, role, not_after, added_at, has_key) as a
    :class:`StoredCert` (``is_default`` False: the view sets it), with its fields.

    ``last`` is what this returned for the same sha256 before: the same row gives the same
    object; other fields over the same DER reuse its parse; new DER is checked against its
    sha256 (:class:`IntegrityError`) and parsed.
    """
    sha, der, name, role, not_after, added_at, has_key = row
    der = bytes(der)
    fields = (name, role, not_after, added_at, bool(has_key))
    if last is not None and last[1].der == der:
        if last[0] == fields:
            return last
        stored = dataclasses.replace(
            last[1], name=name, role=role, has_key=bool(has_key),
            not_after=parse_stored_time(not_after), added_at=parse_stored_time(added_at))
    else:
        if hashlib.sha256(der).hexdigest() != sha:
            raise IntegrityError(
                f"the stored certificate {sha!r} does not match its sha256 (the row was "
                "altered); delete it and import it again"
            )
        cert = x509.load_der_x509_certificate(der)
        dns, ips = sans(cert)
        stored = StoredCert(sha256=sha, name=name, der=der, role=role,
                            has_key=bool(has_key), is_default=False, dns_names=dns,
                            ip_addresses=ips, not_after=parse_stored_time(not_after),
                            added_at=parse_stored_time(added_at), parsed=cert)
    return fields, stored


def no_cert(sha256: str) -> NotFound:
    return NotFound(
        f"no certificate {sha256!r} in this store; run 'certsync cert list' to see the sha256s"
    )


def row_key(row: Sequence[Any]) -> tuple[str, str]:
    """The order of the rows: ``added_at``, then sha256 (``ORDER BY c.added_at, c.sha256``)."""
    return (str(row[5]), str(row[0]))


def merge_rows(
    rows: Sequence[Sequence[Any]], fresh: Mapping[str, Sequence[Any]], changed: Collection[str]
) -> tuple[tuple[Any, ...], ...]:
    """``rows`` (in :func:`row_key` order) with the rows of ``changed`` replaced by those in
    ``fresh`` (a sha256 of ``changed`` not in ``fresh`` is gone), in the same order."""
    out = [tuple(r) for r in rows if r[0] not in changed]
    for sha in changed:
        row = fresh.get(sha)
        if row is not None:
            bisect.insort(out, tuple(row), key=row_key)
    return tuple(out)


#: a chain, nearest first, and the problems that keep it from a root (build_chain's answer)
_Chain = tuple[tuple[x509.Certificate, ...], tuple[str, ...]]


@dataclass(frozen=True)
class _SetState:
    """The replicated set of some rows, kept so the next rows redo only what changed:
    per certificate with a key the members its chain adds, and how many add each member."""

    contrib: dict[str, tuple[str, ...]]
    counts: dict[str, int]


_SERIALS = itertools.count(1)


class CertRows:
    """The certificate rows of a :class:`node.store_view.StoreView` and what is derived
    from them alone; views whose rows did not change (a meta change) share one.

    ``rows``: (sha256, der, name, role, not_after, added_at, has_key) in :func:`row_key`
    order. ``load`` turns a row into a :class:`StoredCert` (the store's parse cache).
    ``chain_memo``: chains by sha256 with the issuer names followed to build them, carried
    over by the store from the last rows unless a certificate with one of those names as
    subject came or went. ``base`` and ``changed``: see the module docstring; the base is
    let go once this derived what it needed (:meth:`settle`), so rows never chain up.
    Immutable as far as a reader can tell; derived values are computed on first use.
    """

    def __init__(
        self, rows: tuple[tuple[Any, ...], ...], load: Callable[[Sequence[Any]], StoredCert],
        chain_memo: dict[str, tuple[frozenset[x509.Name], _Chain]] | None = None,
        *, base: CertRows | None = None, changed: Collection[str] = (),
    ) -> None:
        self.rows = rows
        self.load = load
        self.chain_memo = chain_memo if chain_memo is not None else {}
        self._base = base
        self._changed = frozenset(changed)
        #: which rows these are, and which rows ``changed`` is relative to (0: none), so a
        #: reader that worked something out for the rows before redoes only what changed
        self.serial = next(_SERIALS)
        self._parent = base.serial if base is not None else 0
        #: the chains carried over (the others are built again)
        self._carried = frozenset(self.chain_memo)
        self._chains: dict[str, _Chain] = {}
        self._digests: dict[str | None, str] = {}

    @cached
    def row_of(self) -> dict[str, tuple[Any, ...]]:
        """Every row by sha256 (read-only)."""
        base = self._base
        if base is None:
            return {str(r[0]): r for r in self.rows}
        out = dict(base.row_of)
        for sha in self._changed:
            out.pop(sha, None)
        for r in self.rows:
            if r[0] in self._changed:
                out[str(r[0])] = r
        return out

    @cached
    def _loaded(self) -> dict[str, StoredCert]:
        base = self._base
        if base is None:
            return {}
        return {sha: c for sha, c in base._loaded.items() if sha not in self._changed}

    @cached
    def certs(self) -> tuple[StoredCert, ...]:
        """Every row as a :class:`StoredCert` (``is_default`` False), in row order."""
        return tuple(c for r in self.rows if (c := self.get(str(r[0]))) is not None)

    @cached
    def _positions(self) -> dict[str, int]:
        return {str(r[0]): i for i, r in enumerate(self.rows)}

    def position(self, sha256: str | None) -> int | None:
        """Where the row of ``sha256`` is in :attr:`certs` (``None``: not stored)."""
        if sha256 is None or sha256 not in self.row_of:
            return None
        return self._positions[sha256] if len(self.certs) == len(self.rows) else next(
            (i for i, c in enumerate(self.certs) if c.sha256 == sha256), None)

    def row_cert(self, sha256: str) -> StoredCert:
        """:meth:`get` of a sha256 known to be stored."""
        found = self.get(sha256)
        if found is None:
            raise no_cert(sha256)
        return found

    def get(self, sha256: str) -> StoredCert | None:
        found = self._loaded.get(sha256)
        if found is None:
            row = self.row_of.get(sha256)
            if row is None:
                return None
            found = self._loaded[sha256] = self.load(row)
        return found

    @cached
    def keyed(self) -> frozenset[str]:
        base = self._base
        if base is None:
            return frozenset(str(r[0]) for r in self.rows if r[-1])
        row_of = self.row_of
        return (base.keyed - self._changed) | {
            sha for sha in self._changed if (r := row_of.get(sha)) is not None and r[-1]}

    @property
    def chain_index(self) -> ChainIndex:
        return self._index_and_ids[0]

    def chain(self, sha256: str) -> _Chain:
        found = self._chains.get(sha256)
        if found is None:
            memo = self.chain_memo.get(sha256)
            if memo is not None:
                found = memo[1]
            else:
                stored = self.get(sha256)
                if stored is None:
                    raise no_cert(sha256)
                cert = stored.certificate()
                candidates, names = self.chain_index.reach(cert)
                found = build_chain(cert, candidates)
                self.chain_memo[sha256] = (names, found)
            self._chains[sha256] = found
        return found

    def rechained(self) -> frozenset[str]:
        """The certificates with keys whose chain was not carried over from the parent rows
        (built again, or to be: it may differ from the one before)."""
        return self.keyed - self._carried

    def chains_to_build(self) -> int:
        """How many chains of certificates with keys :attr:`members` would build (not carried
        over from the last rows)."""
        return len((self.keyed - self._carried).difference(self._chains))

    def sha_of(self, cert: x509.Certificate) -> str:
        """The sha256 of a certificate of these rows (parsed by them), else of ``cert``."""
        return self._index_and_ids[1].get(id(cert)) or cert_sha256(cert)

    def _swapped(self) -> tuple[list[tuple[str, x509.Certificate]],
                                list[tuple[str, x509.Certificate]]]:
        """(sha256, parsed certificate) of the base's rows of ``changed`` that this does not
        hold as the same object (gone, or parsed again), and of this one's that are new."""
        base = self._base
        assert base is not None
        gone, added = [], []
        for sha in self._changed:
            old = base.get(sha) if sha in base.row_of else None
            new = self.get(sha) if sha in self.row_of else None
            if old is not None and new is not None and old.certificate() is new.certificate():
                continue
            if old is not None:
                gone.append((sha, old.certificate()))
            if new is not None:
                added.append((sha, new.certificate()))
        return gone, added

    @cached
    def _index_and_ids(self) -> tuple[ChainIndex, dict[int, str]]:
        base = self._base
        if base is None:
            pairs = [(row_key(r), c) for r in self.rows if (c := self.get(str(r[0]))) is not None]
            return (ChainIndex.ordered((k, c.certificate()) for k, c in pairs),
                    {id(c.certificate()): c.sha256 for _, c in pairs})
        base_index, base_ids = base._index_and_ids
        gone, added = self._swapped()
        ids = dict(base_ids)
        for _sha, cert in gone:
            ids.pop(id(cert), None)
        for sha, cert in added:
            ids[id(cert)] = sha
        base_row, row = base.row_of, self.row_of
        index = base_index.updated([(row_key(base_row[sha]), c) for sha, c in gone],
                                    [(row_key(row[sha]), c) for sha, c in added])
        return index, ids

    @cached
    def _state(self) -> _SetState:
        self._loaded  # noqa: B018 -- what comes from the base, taken before it is let go
        index, ids = self._index_and_ids
        keyed = self.keyed
        base = self._base
        if base is None:
            contrib: dict[str, tuple[str, ...]] = {}
            counts: dict[str, int] = {}
            redo: Iterable[str] = (str(r[0]) for r in self.rows if r[0] in keyed)
        else:
            state = base._state
            contrib, counts = dict(state.contrib), dict(state.counts)
            # a chain carried over is the one the base built: its members stay
            again = self._changed | (base.keyed - self._carried)
            for sha in again & contrib.keys():
                for m in contrib.pop(sha):
                    left = counts[m] - 1
                    if left:
                        counts[m] = left
                    else:
                        del counts[m]
            redo = (keyed & again) | (keyed - self._carried)
        for sha in redo:
            if sha in contrib:
                continue
            chain, _problems = self._chain_with(sha, index)
            members = tuple(dict.fromkeys((sha, *(ids.get(id(x)) or cert_sha256(x)
                                                  for x in chain))))
            contrib[sha] = members
            for m in members:
                counts[m] = counts.get(m, 0) + 1
        self._base = None  # everything needed of it is here now
        return _SetState(contrib=contrib, counts=counts)

    def _chain_with(self, sha256: str, index: ChainIndex) -> _Chain:
        found = self._chains.get(sha256)
        if found is not None:
            return found
        memo = self.chain_memo.get(sha256)
        if memo is None:
            stored = self.get(sha256)
            assert stored is not None
            cert = stored.certificate()
            candidates, names = index.reach(cert)
            memo = self.chain_memo[sha256] = (names, build_chain(cert, candidates))
        self._chains[sha256] = memo[1]
        return memo[1]

    def settle(self) -> None:
        """Work out what the next rows carry over (and let the base go)."""
        self._state  # noqa: B018 -- computed for what it keeps

    def changes_from(self, other: CertRows) -> frozenset[str]:
        """The sha256s whose rows differ between ``other`` and these rows: what changed
        since the parent rows, else a comparison of the two (no row parsed)."""
        if other is self:
            return frozenset()
        if other.serial == self._parent:
            return self._changed
        mine, theirs = self.row_of, other.row_of
        return frozenset(sha for sha in mine.keys() | theirs.keys()
                         if mine.get(sha) != theirs.get(sha))

    def rechained_from(self, other: CertRows) -> frozenset[str]:
        """The certificates with keys whose chain may differ from the one ``other`` gave."""
        if other is self:
            return frozenset()
        return self.rechained() if other.serial == self._parent else self.keyed

    def changes_since(self, serial: int) -> frozenset[str] | None:
        """The sha256s whose rows differ from those of the rows numbered ``serial`` (empty:
        these are those rows); ``None`` when that is not known (work it all out again)."""
        if serial == self.serial:
            return frozenset()
        return self._changed if serial == self._parent and serial else None

    @property
    def settled(self) -> bool:
        """Whether what the next rows carry over is worked out already."""
        return "_state" in self.__dict__

    @property
    def has_base(self) -> bool:
        return self._base is not None

    @cached
    def members(self) -> tuple[tuple[str, bool], ...]:
        """The replicated set: every certificate with a key and the certificates of its
        chain, as sorted ``(sha256, has_key)`` (:func:`node.store_view.replicated_members`)."""
        keyed = self.keyed
        return tuple(sorted((m, m in keyed) for m in self._state.counts))

    def digest(self, default: str | None) -> str:
        """:func:`set_digest` of :attr:`members` and ``default`` (once per default)."""
        found = self._digests.get(default)
        if found is None:
            found = self._digests[default] = set_digest(self.members, default)
        return found
