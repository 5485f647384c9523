"""[core] A certificate's life: renewal window, retry back-off, expiry alerts, CA changes.

Pure functions over frozen dataclasses; no I/O and no clock: ``now`` is always a
parameter (an aware ``datetime``). The shell (the node's expiry monitor, the ACME
renewer, the CLI) takes a snapshot, asks these functions what to do, then does it.

Policy (DESIGN.md, issue 6):

* an ACME certificate renews by itself from ``RENEW_BEFORE`` (30 days) before ``not_after``;
* after a failed attempt the next one waits ``retry_delay(failures)``: 1 h, 2 h, 4 h, 8 h,
  then 12 h for good;
* any certificate (ACME or not) that is within ``ALERT_BEFORE`` (25 days) of ``not_after``
  and not yet replaced by a renewal raises an alert, at most once per ``ALERT_INTERVAL``
  (a day) per certificate, counted from ``last_alert_at``;
* making a certificate default when its chain ends in another root is a CA change: it is
  refused unless confirmed, or staged to happen after a wait (``parse_wait("48h")``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal, TypeAlias

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from node.errors import BadInput, Conflict
from node.formats import cert_sha256

__all__ = [
    "ALERT_BEFORE",
    "ALERT_INTERVAL",
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "LETS_ENCRYPT_DIRECTORY",
    "MAX_WAIT",
    "RENEW_BEFORE",
    "Action",
    "CertState",
    "RenewalDecision",
    "RenewalState",
    "RootId",
    "StagedCaChange",
    "ca_change_due",
    "changes_ca",
    "check_default_change",
    "days_left",
    "next_attempt_after_failure",
    "parse_wait",
    "record_alert",
    "record_failure",
    "record_success",
    "renewal_decision",
    "retry_delay",
    "root_of",
    "stage_ca_change",
    "supersedes",
]

#: the ACME directory of Let's Encrypt production, the default for a node's [acme] table
LETS_ENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"

RENEW_BEFORE = timedelta(days=30)
ALERT_BEFORE = timedelta(days=25)
ALERT_INTERVAL = timedelta(days=1)
BACKOFF_BASE = timedelta(hours=1)
BACKOFF_CAP = timedelta(hours=12)
#: the longest staged CA change we accept; a longer wait is almost surely a typo
MAX_WAIT = timedelta(days=365)

Action: TypeAlias = Literal["none", "renew", "wait"]
#: ``valid``: outside the renewal window; ``due``: renew now; ``backoff``: waiting after a
#: failure; ``expiring``: in the window but not renewed by certsync (not ACME);
#: ``expired``: past ``not_after``; ``replaced``: a renewal with the same names supersedes it.
RenewalState: TypeAlias = Literal["valid", "due", "backoff", "expiring", "expired", "replaced"]


def _check_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value!r}")


@dataclass(frozen=True)
class CertState:
    """What the lifecycle needs to know about one certificate, as plain values.

    ``failures`` counts consecutive failed renewal attempts, the last one at
    ``last_failure_at``; ``acme`` says whether certsync renews it by itself;
    ``superseded`` says a renewal (same names, later ``not_after``) is already stored.
    """

    sha256: str
    names: tuple[str, ...]
    not_after: datetime
    acme: bool = False
    failures: int = 0
    last_failure_at: datetime | None = None
    last_alert_at: datetime | None = None
    superseded: bool = False

    def __post_init__(self) -> None:
        _check_aware("not_after", self.not_after)
        if self.last_failure_at is not None:
            _check_aware("last_failure_at", self.last_failure_at)
        if self.last_alert_at is not None:
            _check_aware("last_alert_at", self.last_alert_at)
        if self.failures < 0:
            raise ValueError(f"failures must be >= 0, got {self.failures!r}")

    @classmethod
    def from_certificate(cls, cert: x509.Certificate, *, acme: bool = False) -> CertState:
        """The state of a certificate never renewed nor alerted about: its SHA-256, its DNS
        SANs (as written) and ``not_after``."""
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = tuple(san.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            names = ()
        return cls(
            sha256=cert_sha256(cert),
            names=names,
            not_after=cert.not_valid_after_utc,
            acme=acme,
        )


@dataclass(frozen=True)
class RenewalDecision:
    """What to do about one certificate at ``now``.

    ``next_attempt`` is when the renewer should look again (``now`` when ``action`` is
    ``renew``; ``None`` when certsync does not renew this certificate); ``alert`` says
    whether an expiry alert is to be sent now.
    """

    action: Action
    next_attempt: datetime | None
    alert: bool
    days_left: int
    state: RenewalState


def days_left(not_after: datetime, now: datetime) -> int:
    """Whole days until ``not_after`` (floor; negative once expired, -1 on the first day)."""
    _check_aware("not_after", not_after)
    _check_aware("now", now)
    return (not_after - now) // timedelta(days=1)


def retry_delay(failures: int) -> timedelta:
    """Wait after ``failures`` consecutive failures: 1 h doubling, capped at 12 h."""
    if failures < 1:
        raise ValueError(f"retry_delay needs at least one failure, got {failures!r}")
    # 2**4 * 1h already exceeds the cap; clamping the exponent keeps the numbers small
    delay: timedelta = BACKOFF_BASE * (2 ** min(failures - 1, 8))
    return min(delay, BACKOFF_CAP)


def next_attempt_after_failure(failed_at: datetime, failures: int) -> datetime:
    """When to try again after the ``failures``-th consecutive failure at ``failed_at``."""
    _check_aware("failed_at", failed_at)
    return failed_at + retry_delay(failures)


def _alert_due(cert: CertState, now: datetime) -> bool:
    if cert.superseded or now < cert.not_after - ALERT_BEFORE:
        return False
    return cert.last_alert_at is None or now - cert.last_alert_at >= ALERT_INTERVAL


def renewal_decision(cert: CertState, now: datetime) -> RenewalDecision:
    """Decide, for ``cert`` at ``now``, whether to renew, wait, or do nothing, and whether
    to alert."""
    _check_aware("now", now)
    left = days_left(cert.not_after, now)
    alert = _alert_due(cert, now)
    window_opens = cert.not_after - RENEW_BEFORE
    expired = now >= cert.not_after
    if cert.superseded:
        return RenewalDecision("none", None, False, left, "replaced")
    if not cert.acme:
        state: RenewalState = (
            "expired" if expired else "expiring" if now >= window_opens else "valid"
        )
        return RenewalDecision("none", None, alert, left, state)
    if now < window_opens:
        return RenewalDecision("none", window_opens, alert, left, "valid")
    if cert.failures and cert.last_failure_at is not None:
        retry_at = next_attempt_after_failure(cert.last_failure_at, cert.failures)
        if now < retry_at:
            waiting: RenewalState = "expired" if expired else "backoff"
            return RenewalDecision("wait", retry_at, alert, left, waiting)
    return RenewalDecision("renew", now, alert, left, "expired" if expired else "due")


def record_failure(cert: CertState, now: datetime) -> CertState:
    """``cert`` after a failed renewal attempt at ``now``."""
    _check_aware("now", now)
    return replace(cert, failures=cert.failures + 1, last_failure_at=now)


def record_success(cert: CertState) -> CertState:
    """``cert`` once a renewal is stored: it is superseded and its failures are cleared."""
    return replace(cert, failures=0, last_failure_at=None, superseded=True)


def record_alert(cert: CertState, now: datetime) -> CertState:
    """``cert`` after an alert was delivered at ``now``."""
    _check_aware("now", now)
    return replace(cert, last_alert_at=now)


def _name_set(names: Iterable[str]) -> frozenset[str]:
    return frozenset(n.lower().rstrip(".") for n in names)


def supersedes(
    new_names: Iterable[str],
    new_not_after: datetime,
    old_names: Iterable[str],
    old_not_after: datetime,
) -> bool:
    """A renewal: the same names (case-insensitive) and a strictly later ``not_after``."""
    new_set, old_set = _name_set(new_names), _name_set(old_names)
    return bool(new_set) and new_set == old_set and new_not_after > old_not_after


# --- CA change --------------------------------------------------------------------------


@dataclass(frozen=True)
class RootId:
    """The root a chain ends in: its subject and, when known, its key identifier.

    ``key_id`` is the root's subject key identifier (from the root itself when the chain
    holds it, else the authority key identifier of the top certificate); ``None`` when the
    chain does not say.
    """

    subject: str
    key_id: bytes | None

    def same_ca(self, other: RootId) -> bool:
        """Same subject, and the same key when both sides know it."""
        if self.subject != other.subject:
            return False
        return self.key_id is None or other.key_id is None or self.key_id == other.key_id

    def describe(self) -> str:
        return self.subject if self.key_id is None else f"{self.subject} (key {self.key_id.hex()})"


def _ski(cert: x509.Certificate) -> bytes:
    try:
        ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
    value = ext.value
    assert isinstance(value, x509.SubjectKeyIdentifier)
    return value.digest


def _aki(cert: x509.Certificate) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    assert isinstance(value, x509.AuthorityKeyIdentifier)
    return value.key_identifier


def root_of(chain: Sequence[x509.Certificate]) -> RootId:
    """The root ``chain`` ends in; ``chain[0]`` is the identity certificate.

    Walks issuer -> subject through the chain (any order after the first); stops at a
    self-signed certificate (the root itself) or where the chain ends (the root is then
    named by the top certificate's issuer and authority key identifier).
    """
    if not chain:
        raise ValueError("root_of needs at least one certificate")
    by_subject = {c.subject: c for c in chain}
    current = chain[0]
    seen: set[bytes] = set()
    while True:
        if current.issuer == current.subject:
            return RootId(current.subject.rfc4514_string(), _ski(current))
        seen.add(current.tbs_certificate_bytes)
        parent = by_subject.get(current.issuer)
        if parent is None or parent.tbs_certificate_bytes in seen:
            return RootId(current.issuer.rfc4514_string(), _aki(current))
        current = parent


def changes_ca(
    current_chain: Sequence[x509.Certificate] | None, new_chain: Sequence[x509.Certificate]
) -> bool:
    """Whether serving ``new_chain`` instead of ``current_chain`` changes the root CA.

    No current default (``None``) is never a change.
    """
    if current_chain is None:
        return False
    return not root_of(current_chain).same_ca(root_of(new_chain))


def check_default_change(
    sha256: str,
    current_chain: Sequence[x509.Certificate] | None,
    new_chain: Sequence[x509.Certificate],
    *,
    confirm_ca_change: bool,
) -> None:
    """Refuse making ``sha256`` default when that changes the CA and it was not confirmed."""
    if confirm_ca_change or not changes_ca(current_chain, new_chain):
        return
    assert current_chain is not None
    old, new = root_of(current_chain), root_of(new_chain)
    raise Conflict(
        f"making {sha256!r} default changes the CA from {old.describe()!r} to "
        f"{new.describe()!r}, and clients that pin the old CA would lose their connection; "
        "pass --confirm-ca-change, or stage it with 'cert stage-ca-change SHA256 --after 48h'",
        sha256=sha256,
        old_root=old.subject,
        new_root=new.subject,
    )


_WAIT_PART = re.compile(r"(\d{1,6})([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_wait(text: str) -> timedelta:
    """Parse a wait such as ``48h``, ``2d``, ``30m`` or ``1d12h`` into a ``timedelta``."""
    stripped = text.strip().lower()
    parts = _WAIT_PART.findall(stripped)
    if not stripped or "".join(n + u for n, u in parts) != stripped:
        raise BadInput(
            f"wait {text!r} is not a duration; write a number and a unit (s, m, h, d), "
            "e.g. '48h', '2d' or '30m'"
        )
    total = timedelta()
    for number, unit in parts:
        total += timedelta(**{_UNITS[unit]: int(number)})
    if total > MAX_WAIT:
        raise BadInput(f"wait {text!r} is longer than {MAX_WAIT.days} days; give a shorter wait")
    return total


@dataclass(frozen=True)
class StagedCaChange:
    """A CA change published in the trust bundle now and served from ``switch_at`` on."""

    sha256: str
    staged_at: datetime
    switch_at: datetime


def stage_ca_change(sha256: str, after: str, now: datetime) -> StagedCaChange:
    """Stage making ``sha256`` default after the wait ``after`` (e.g. ``"48h"``) from ``now``."""
    _check_aware("now", now)
    return StagedCaChange(sha256, now, now + parse_wait(after))


def ca_change_due(staged: StagedCaChange, now: datetime) -> bool:
    """Whether the staged change is to happen now (the wait is over)."""
    _check_aware("now", now)
    return now >= staged.switch_at
