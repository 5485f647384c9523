"""[core] The SNI selection index (pure core): which certificate a TLS server name gets.

Built once from the store's certificates; each lookup is a few dictionary probes:

* an exact DNS SAN beats a wildcard; an iPAddress SAN answers a client that sends an IP
  literal (RFC 6066 forbids that, some clients do it) and counts as ``exact``;
* among certificates that match equally, the later ``not_after`` wins; ties go to the
  smallest key, so the choice never depends on input order;
* no server name, a name nothing covers, or a name that is not a valid hostname gets the
  default (whose key may be ``None`` when the store has no default).

SANs and server names are normalised with the coverage rules of :mod:`node.names`, so the
index answers exactly what :func:`node.names.check_coverage` would, certificate by
certificate (a property test checks this against a brute-force scan).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from node.errors import HostnameError
from node.names import SanSet, parse_hostname, san_rule

__all__ = ["Selection", "SniBuilder", "SniEntry", "SniIndex"]

#: one lower-case LDH label that IDNA 2008 accepts as is (no hyphen first or last, none in
#: 3rd and 4th position): exactly IDNA's verdict on an ASCII label, except ``xn--`` labels,
#: which need Punycode checks and take the slow path through ``parse_hostname``.
_PLAIN_LABEL = re.compile(r"(?!-)(?!..--)[a-z0-9-]{1,63}(?<!-)\Z")
_MAX_NAME = 253
_MAX_LABEL = 63
_Reason = Literal["exact", "wildcard", "default"]


@dataclass(frozen=True)
class SniEntry:
    """One certificate as the index sees it: ``key`` (its sha256), SANs and expiry."""

    key: str
    sans: SanSet
    not_after: datetime


@dataclass(frozen=True)
class Selection:
    key: str | None
    reason: _Reason


def _best(entries: list[SniEntry]) -> SniEntry:
    """The later not_after wins; among equals, the smallest key."""
    return max(sorted(entries, key=lambda e: e.key), key=lambda e: e.not_after)


class SniIndex:
    """Exact names, wildcard parents and IP addresses, each a dict of ready answers.

    Immutable after :meth:`build`; safe to share between threads and TLS callbacks.
    """

    __slots__ = ("_default", "_exact", "_ip", "_memo", "_wild")

    def __init__(
        self,
        exact: dict[str, Selection],
        wild: dict[str, Selection],
        ip: dict[str, Selection],
        default: Selection,
    ) -> None:
        self._exact = exact
        self._wild = wild
        self._ip = ip
        self._default = default
        # answers by server name as received: the exact names, then every other name once
        # resolved (bounded; emptied back to the exact names when full, so a flood of
        # random names costs memory MEMO_LIMIT at most). Only a cache: lookup gives the
        # same answer with or without it.
        self._memo: dict[str, Selection] = dict(exact)

    #: names remembered besides the exact ones
    MEMO_LIMIT = 65_536

    @classmethod
    def build(cls, entries: Iterable[SniEntry], default: str | None) -> SniIndex:
        exact: dict[str, list[SniEntry]] = {}
        wild: dict[str, list[SniEntry]] = {}
        ip: dict[str, list[SniEntry]] = {}
        tables = {"exact": exact, "wild": wild, "ip": ip}
        for entry in entries:
            for table, name in _names_of(entry):
                tables[table].setdefault(name, []).append(entry)
        shared: dict[Selection, Selection] = {}  # one object per answer: a smaller working set

        def answers(found: dict[str, list[SniEntry]], reason: _Reason) -> dict[str, Selection]:
            out: dict[str, Selection] = {}
            for name, candidates in found.items():
                sel = Selection(_best(candidates).key, reason)
                out[name] = shared.setdefault(sel, sel)
            return out

        return cls(
            answers(exact, "exact"),
            answers(wild, "wildcard"),
            answers(ip, "exact"),
            Selection(default, "default"),
        )

    @property
    def default(self) -> Selection:
        return self._default

    def lookup(self, server_name: str | None) -> Selection:
        """What ``server_name`` gets; never raises (garbage gets the default)."""
        if server_name is None:
            return self._default
        # 1. the name as received: an exact name (what Python's ssl usually hands an SNI
        # callback) or a name resolved before
        hit = self._memo.get(server_name)
        if hit is not None:
            return hit
        hit = self.resolve(server_name)
        if len(self._memo) >= len(self._exact) + self.MEMO_LIMIT:
            self._memo = dict(self._exact)
        self._memo[server_name] = hit
        return hit

    def resolve(self, server_name: str | None) -> Selection:
        """:meth:`lookup` without the cache of names seen (for tests and benchmarks)."""
        if not server_name:
            return self._default
        hit = self._exact.get(server_name)
        if hit is not None:
            return hit
        if server_name.isascii() and ":" not in server_name:
            # 2. ASCII without ':': the normalised form is the lower-cased name without one
            # trailing dot (or the name is invalid), so a miss here is a miss everywhere.
            name = server_name.lower()
            if name[-1:] == ".":
                name = name[:-1]
            hit = self._exact.get(name)
            if hit is not None:
                return hit
            first, _, parent = name.partition(".")
            hit = self._wild.get(parent)
            if hit is None:
                # a dotted-quad equals its normalised form; anything else gets the default
                return self._ip.get(server_name, self._default)
            if len(name) <= _MAX_NAME and (
                (first.isalnum() and len(first) <= _MAX_LABEL) or _PLAIN_LABEL.match(first)
            ):
                return hit
            if not first.startswith("xn--"):
                return self._default
        # 3. everything else: the full hostname rules (U-labels, A-labels, IPv6 text)
        return self._slow(server_name)

    def _slow(self, server_name: str) -> Selection:
        try:
            host = parse_hostname(server_name)
        except HostnameError:
            return self._default
        if host.kind == "ip":
            return self._ip.get(host.value, self._default)
        hit = self._exact.get(host.value)
        if hit is not None:
            return hit
        return self._wild.get(host.value.partition(".")[2], self._default)


def _names_of(entry: SniEntry) -> list[tuple[str, str]]:
    """(table, name) of each name ``entry`` answers: ``exact``, ``wild`` or ``ip``."""
    out = []
    for san in entry.sans.dns_names:
        rule = san_rule(san)
        if rule.kind == "exact":
            out.append(("exact", rule.key))
        elif rule.kind == "wildcard":
            out.append(("wild", rule.key))
    for text in entry.sans.ip_addresses:
        try:
            host = parse_hostname(text)
        except HostnameError:
            continue
        if host.kind == "ip":
            out.append(("ip", host.value))
    return out


class SniBuilder:
    """:meth:`SniIndex.build` kept up to date: :meth:`update` with the entries now served
    redoes the names of entries that came, went or changed (by identity), and :meth:`index`
    is the index :meth:`SniIndex.build` would give for them -- a change of the served set
    costs what changed. Not thread-safe (its owner serialises updates); each index it
    hands out is immutable."""

    def __init__(self) -> None:
        self._entries: dict[str, SniEntry] = {}
        self._names: dict[str, list[tuple[str, str]]] = {}
        self._found: dict[str, dict[str, dict[str, SniEntry]]] = {"exact": {}, "wild": {},
                                                                  "ip": {}}
        self._answers: dict[str, dict[str, Selection]] = {"exact": {}, "wild": {}, "ip": {}}
        self._shared: dict[Selection, Selection] = {}

    def update(self, entries: Mapping[str, SniEntry]) -> None:
        """Serve ``entries`` (by key) from the next :meth:`index` on."""
        old = self._entries
        touched: set[tuple[str, str]] = set()
        for key, entry in old.items():
            if entries.get(key) is not entry:
                for table, name in self._names.pop(key):
                    self._found[table][name].pop(key, None)
                    touched.add((table, name))
        for key, entry in entries.items():
            if old.get(key) is not entry:
                names = self._names[key] = _names_of(entry)
                for table, name in names:
                    self._found[table].setdefault(name, {})[key] = entry
                    touched.add((table, name))
        self._entries = dict(entries)
        for table, name in touched:
            candidates = self._found[table].get(name)
            if not candidates:
                self._found[table].pop(name, None)
                self._answers[table].pop(name, None)
                continue
            sel = Selection(_best(list(candidates.values())).key,
                            "wildcard" if table == "wild" else "exact")
            self._answers[table][name] = self._shared.setdefault(sel, sel)
        if len(self._shared) > 2 * len(self._entries) + 64:  # forget answers no longer given
            given = {sel for table in self._answers.values() for sel in table.values()}
            self._shared = {sel: sel for sel in given}

    def index(self, default: str | None) -> SniIndex:
        """The index of the entries of the last :meth:`update`, with ``default``."""
        a = self._answers
        return SniIndex(dict(a["exact"]), dict(a["wild"]), dict(a["ip"]),
                        Selection(default, "default"))
