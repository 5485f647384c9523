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
    RootId,
    StagedCaChange,
    ca_change_due,
    renewal_decision,
    root_of,
    supersedes,
)
from node.store_view import StoredCert, StoreView
from node.text import common_name, rfc3339

__all__ = [
    "ACTOR",
    "PENDING_KEY",
    "CertStatus",
    "LifecycleRecord",
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
    "same_ca_in",
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
    certs: Sequence[StoredCert], *, same_ca: Callable[[StoredCert, StoredCert], bool]
) -> dict[str, str]:
    """Which certificates with a key are superseded, and by which (the latest renewal).

    A renewal has the same DNS names and a strictly later ``not_after``
    (:func:`node.lifecycle.supersedes`), a key too, so it can be served instead, and comes
    from the same CA: ``same_ca(new, old)`` (:func:`same_ca_in`: their stored chains end in
    the same root), so a self-signed certificate with the names of a CA-signed one does not
    replace it.
    """
    keyed = [c for c in certs if c.has_key and c.dns_names]
    # only certificates with the same names can supersede each other: compare within groups
    # (O(N) for a store of distinct names, not O(N^2)); supersedes() still decides
    groups: dict[frozenset[str], list[StoredCert]] = {}
    for c in keyed:
        groups.setdefault(_names_key(c.dns_names), []).append(c)
    out: dict[str, str] = {}
    for old in keyed:
        newer = [c for c in groups[_names_key(old.dns_names)]
                 if supersedes(c.dns_names, c.not_after, old.dns_names, old.not_after)
                 and same_ca(c, old)]
        if newer:  # the latest (the first of equals)
            out[old.sha256] = max(newer, key=lambda c: c.not_after).sha256
    return out


def same_ca_in(view: StoreView) -> Callable[[StoredCert, StoredCert], bool]:
    """``same_ca`` of :func:`replaced_by` over ``view``: the chains the store builds for both
    end in the same root (:meth:`node.lifecycle.RootId.same_ca`); roots are worked out once
    per certificate asked about."""
    roots: dict[str, RootId] = {}

    def root(c: StoredCert) -> RootId:
        found = roots.get(c.sha256)
        if found is None:
            cert = c.certificate()
            chain, _problems = view.chain(c.sha256)
            found = roots[c.sha256] = root_of((cert, *(x for x in chain if x != cert)))
        return found

    return lambda new, old: root(new).same_ca(root(old))


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
