"""[core] The renewal monitor's decisions and stored state, as plain values.

What :class:`node.renewal.Lifecycle` (the shell) decides before it acts: each certificate's
lifecycle record in store meta (``lifecycle:<sha256>`` -> JSON) and the pending CA change
(``pending_ca_change`` -> JSON), which certificates are superseded (:func:`replaced_by`: same
names, later expiry, same CA by the stored chains), and
what one monitor round does (:func:`plan_tick`). The rules themselves (windows, back-off,
alerts, CA changes) are :mod:`node.lifecycle`'s; time is always a parameter.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from node.lifecycle import (
    CertState,
    RenewalDecision,
    StagedCaChange,
    ca_change_due,
    renewal_decision,
)
from node.linking import IssuerId, issuer_of, takes_over
from node.store_view import StoredCert
from node.text import common_name, rfc3339

__all__ = [
    "ACTOR",
    "PENDING_KEY",
    "CertStatus",
    "LifecycleRecord",
    "Replacements",
    "TickPlan",
    "TickReport",
    "chain_pem",
    "common_name",
    "format_time",
    "parse_time",
    "pending_from_json",
    "pending_to_json",
    "plan_tick",
    "replaced_by",
    "state_key",
]

#: the audit actor of changes the monitor makes by itself
ACTOR: Final = "node:lifecycle"
PENDING_KEY: Final = "pending_ca_change"
_STATE_PREFIX: Final = "lifecycle:"

def state_key(sha256: str) -> str:
    """The meta key of a certificate's lifecycle state."""
    return _STATE_PREFIX + sha256


def format_time(when: dt.datetime | None) -> str | None:
    """``rfc3339`` of ``when``, None for no time (the lifecycle record's JSON null)."""
    return rfc3339(when) if when is not None else None


def parse_time(text: Any) -> dt.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


# --- stored state (plain values <-> JSON) -------------------------------------------------


@dataclass(frozen=True)
class LifecycleRecord:
    """What the meta row of one certificate holds."""

    acme: bool = False
    hostname: str | None = None
    key_type: str | None = None
    failures: int = 0
    last_failure_at: dt.datetime | None = None
    last_alert_at: dt.datetime | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "acme": self.acme,
                "hostname": self.hostname,
                "key_type": self.key_type,
                "failures": self.failures,
                "last_failure_at": format_time(self.last_failure_at),
                "last_alert_at": format_time(self.last_alert_at),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | None) -> LifecycleRecord:
        """The record in ``text`` (none yet: the empty record); :class:`ValueError` when it is
        unreadable (the shell logs that and starts over rather than stop the monitor)."""
        if not text:
            return cls()
        try:
            data = json.loads(text)
            return cls(
                acme=bool(data.get("acme", False)),
                hostname=data.get("hostname") or None,
                key_type=data.get("key_type") or None,
                failures=max(int(data.get("failures", 0)), 0),
                last_failure_at=parse_time(data.get("last_failure_at")),
                last_alert_at=parse_time(data.get("last_alert_at")),
            )
        except (ValueError, TypeError, AttributeError) as err:
            raise ValueError("unreadable lifecycle record") from err

    def state(self, stored: StoredCert, superseded: bool) -> CertState:
        return CertState(
            sha256=stored.sha256,
            names=stored.dns_names,
            not_after=stored.not_after,
            acme=self.acme and self.hostname is not None,
            failures=self.failures,
            last_failure_at=self.last_failure_at,
            last_alert_at=self.last_alert_at,
            superseded=superseded,
        )

    def with_state(self, state: CertState) -> LifecycleRecord:
        return replace(
            self,
            failures=state.failures,
            last_failure_at=state.last_failure_at,
            last_alert_at=state.last_alert_at,
        )


def pending_to_json(staged: StagedCaChange) -> str:
    return json.dumps(
        {
            "sha256": staged.sha256,
            "staged_at": format_time(staged.staged_at),
            "switch_at": format_time(staged.switch_at),
        },
        sort_keys=True,
    )


def pending_from_json(text: str | None) -> StagedCaChange | None:
    """The staged CA change in ``text`` (none: None); :class:`ValueError` when unreadable."""
    if not text:
        return None
    try:
        data = json.loads(text)
        staged_at, switch_at = parse_time(data["staged_at"]), parse_time(data["switch_at"])
        if staged_at is None or switch_at is None:
            return None
        return StagedCaChange(str(data["sha256"]), staged_at, switch_at)
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError("unreadable pending CA change") from err


# --- the pure part ------------------------------------------------------------------------


def _names_key(names: Sequence[str]) -> frozenset[str]:
    return frozenset(n.lower().rstrip(".") for n in names)


def replaced_by(
    certs: Sequence[StoredCert],
    issuer: Callable[[StoredCert], IssuerId] = lambda c: issuer_of(c.certificate()),
) -> dict[str, str]:
    """Which certificates with a key are superseded, and by which (the latest renewal).

    A renewal has the same DNS names, a strictly later ``not_after``, the same issuing CA
    (:func:`node.linking.takes_over`) and a key too, so it can be served instead.
    """
    keyed = [c for c in certs if c.has_key and c.dns_names]
    # only certificates with the same names and issuer name can supersede each other:
    # compare within groups (O(N) for a store of distinct names, not O(N^2)); takes_over()
    # still decides (issue 11: from the same issuing CA)
    groups: dict[tuple[frozenset[str], str], list[StoredCert]] = {}
    issuers = {c.sha256: issuer(c) for c in keyed}
    for c in keyed:
        groups.setdefault((_names_key(c.dns_names), issuers[c.sha256].name), []).append(c)
    # the latest of a group (the first of equals) supersedes every member it outlives
    latest = {k: max(group, key=lambda c: c.not_after) for k, group in groups.items()}
    out: dict[str, str] = {}
    for old in keyed:
        new = latest[(_names_key(old.dns_names), issuers[old.sha256].name)]
        if takes_over(new.dns_names, new.not_after, issuers[new.sha256],
                      old.dns_names, old.not_after, issuers[old.sha256]):
            out[old.sha256] = new.sha256
    return out


class Replacements:
    """:func:`replaced_by` of some certificates, kept so that of the next ones (after a
    store change) redoes only the groups of what changed: :meth:`updated`. ``replaced``
    is the answer; ``tests/unit/test_replaced_by.py`` checks it against :func:`replaced_by`
    after random changes."""

    def __init__(self, issuer: Callable[[StoredCert], IssuerId] = lambda c: issuer_of(
            c.certificate())) -> None:
        self._issuer = issuer
        self._groups: dict[tuple[frozenset[str], str], dict[str, StoredCert]] = {}
        self._group_of: dict[str, tuple[frozenset[str], str]] = {}
        self._issuers: dict[str, IssuerId] = {}
        self.replaced: dict[str, str] = {}

    @classmethod
    def of(cls, certs: Iterable[StoredCert],
           issuer: Callable[[StoredCert], IssuerId] | None = None) -> Replacements:
        out = cls() if issuer is None else cls(issuer)
        certs = list(certs)
        return out.updated({c.sha256 for c in certs}, {c.sha256: c for c in certs}.get)

    def updated(self, changed: Iterable[str],
                get: Callable[[str], StoredCert | None]) -> Replacements:
        """A new answer (this one stays as it is): the certificates of ``changed`` are now
        ``get(sha256)`` (``None``: gone)."""
        out = Replacements(self._issuer)
        groups, group_of = dict(self._groups), dict(self._group_of)
        issuers, replaced = dict(self._issuers), dict(self.replaced)
        touched: set[tuple[frozenset[str], str]] = set()
        for sha in changed:
            key = group_of.pop(sha, None)
            if key is not None:
                groups[key] = {k: v for k, v in groups[key].items() if k != sha}
                touched.add(key)
            issuers.pop(sha, None)
            replaced.pop(sha, None)
            c = get(sha)
            if c is None or not c.has_key or not c.dns_names:
                continue
            issuers[sha] = self._issuer(c)
            key = (_names_key(c.dns_names), issuers[sha].name)
            if key not in touched:
                groups[key] = dict(groups.get(key, {}))
                touched.add(key)
            groups[key][sha] = c
            group_of[sha] = key
        for key in touched:
            group = groups[key]
            if not group:
                del groups[key]
                continue
            ordered = sorted(group.values(), key=lambda c: (c.added_at, c.sha256))
            for sha in group:
                replaced.pop(sha, None)
            replaced.update(replaced_by(ordered, lambda c: issuers[c.sha256]))
        out._groups, out._group_of, out._issuers, out.replaced = (
            groups, group_of, issuers, replaced)
        return out


@dataclass(frozen=True)
class CertStatus:
    """One certificate's lifecycle as ``status`` and ``cert list`` show it."""

    sha256: str
    days_left: int
    renewal_state: str
    next_attempt: dt.datetime | None
    replaceable: bool
    acme: bool


@dataclass(frozen=True)
class TickPlan:
    """What one monitor round will do, decided from a snapshot."""

    renew: tuple[str, ...]
    alert: tuple[str, ...]
    switch: StagedCaChange | None
    decisions: dict[str, RenewalDecision] = field(default_factory=dict)


def plan_tick(
    states: Iterable[CertState],
    staged: StagedCaChange | None,
    *,
    primary: bool,
    can_renew: bool,
    now: dt.datetime,
) -> TickPlan:
    """Decide one round: which ACME certificates to renew (on a primary that can order),
    which certificates to alert about (any node), and whether the staged switch is due."""
    decisions = {s.sha256: renewal_decision(s, now) for s in states}
    renew = tuple(
        sha for sha, d in decisions.items() if d.action == "renew" and primary and can_renew
    )
    alert = tuple(sha for sha, d in decisions.items() if d.alert)
    switch = staged if staged is not None and primary and ca_change_due(staged, now) else None
    return TickPlan(renew, alert, switch, decisions)


@dataclass(frozen=True)
class TickReport:
    """What one round did (for logs and tests)."""

    renewed: dict[str, str] = field(default_factory=dict)  # old sha256 -> new sha256
    failed: tuple[str, ...] = ()
    alerted: tuple[str, ...] = ()
    switched: str | None = None


def chain_pem(chains: Iterable[Sequence[x509.Certificate]]) -> bytes:
    seen: set[bytes] = set()
    out: list[bytes] = []
    for chain in chains:
        for cert in chain:
            der = cert.public_bytes(serialization.Encoding.DER)
            if der not in seen:
                seen.add(der)
                out.append(cert.public_bytes(serialization.Encoding.PEM))
    return b"".join(out)
