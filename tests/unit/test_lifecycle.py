"""Table tests for the certificate lifecycle core, with a fixed ``now`` at every boundary."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from hypothesis import given, settings
from hypothesis import strategies as st

from node.errors import BadInput, Conflict
from node.lifecycle import (
    ALERT_INTERVAL,
    BACKOFF_CAP,
    CertState,
    RootId,
    ca_change_due,
    changes_ca,
    check_default_change,
    days_left,
    next_attempt_after_failure,
    parse_wait,
    record_alert,
    record_failure,
    record_success,
    renewal_decision,
    retry_delay,
    root_of,
    stage_ca_change,
    supersedes,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SEC = timedelta(seconds=1)


def _cert(left: timedelta, **kw: Any) -> CertState:
    return CertState(sha256="ab" * 32, names=("www.example.com",), not_after=NOW + left, **kw)


# --- renewal window ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "action", "state", "days"),
    [
        (31 * DAY, "none", "valid", 31),
        (30 * DAY + SEC, "none", "valid", 30),  # one second before the window opens
        (30 * DAY, "renew", "due", 30),  # the window opens exactly 30 days before
        (29 * DAY, "renew", "due", 29),
        (SEC, "renew", "due", 0),
        (timedelta(0), "renew", "expired", 0),
        (-SEC, "renew", "expired", -1),
        (-3 * DAY, "renew", "expired", -3),
    ],
)
def test_acme_renewal_window(left: timedelta, action: str, state: str, days: int) -> None:
    d = renewal_decision(_cert(left, acme=True), NOW)
    assert (d.action, d.state, d.days_left) == (action, state, days)
    if action == "renew":
        assert d.next_attempt == NOW
    else:
        assert d.next_attempt == NOW + left - 30 * DAY


@pytest.mark.parametrize(
    ("left", "state"),
    [(31 * DAY, "valid"), (30 * DAY, "expiring"), (29 * DAY, "expiring"), (-SEC, "expired")],
)
def test_non_acme_certificates_are_never_renewed(left: timedelta, state: str) -> None:
    d = renewal_decision(_cert(left, acme=False), NOW)
    assert (d.action, d.next_attempt, d.state) == ("none", None, state)


@pytest.mark.parametrize("acme", [True, False])
def test_superseded_certificate_neither_renews_nor_alerts(acme: bool) -> None:
    d = renewal_decision(_cert(3 * DAY, acme=acme, superseded=True), NOW)
    assert (d.action, d.alert, d.state) == ("none", False, "replaced")
    # negative twin: the same certificate not yet superseded alerts
    assert renewal_decision(_cert(3 * DAY, acme=acme), NOW).alert


# --- alerts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "alert"),
    [
        (26 * DAY, False),
        (25 * DAY + SEC, False),
        (25 * DAY, True),
        (24 * DAY, True),
        (SEC, True),
        (-5 * DAY, True),  # expired and still not renewed: keep alerting daily
    ],
)
@pytest.mark.parametrize("acme", [True, False])
def test_alert_threshold(left: timedelta, alert: bool, acme: bool) -> None:
    assert renewal_decision(_cert(left, acme=acme), NOW).alert is alert


@pytest.mark.parametrize(
    ("since_last", "alert"),
    [
        (timedelta(hours=1), False),
        (timedelta(hours=23, minutes=59), False),
        (DAY, True),
        (DAY + timedelta(hours=5), True),
    ],
)
def test_at_most_one_alert_a_day(since_last: timedelta, alert: bool) -> None:
    cert = _cert(20 * DAY, acme=True, last_alert_at=NOW - since_last)
    assert renewal_decision(cert, NOW).alert is alert


def test_two_checks_in_one_day_give_one_alert() -> None:
    cert = _cert(24 * DAY, acme=True)
    first = renewal_decision(cert, NOW)
    assert first.alert
    cert = record_alert(cert, NOW)
    assert not renewal_decision(cert, NOW + timedelta(hours=6)).alert
    assert renewal_decision(cert, NOW + DAY).alert


@settings(max_examples=40, deadline=None)
@given(tick_minutes=st.integers(min_value=1, max_value=600))
def test_monitor_alerts_once_per_day_whatever_the_tick(tick_minutes: int) -> None:
    """Simulate a monitor ticking every ``tick_minutes`` from 26 days to expiry."""
    tick = timedelta(minutes=tick_minutes)
    cert = _cert(26 * DAY, acme=False)
    alerts: list[datetime] = []
    t = NOW
    while t < cert.not_after:
        if renewal_decision(cert, t).alert:
            alerts.append(t)
            cert = record_alert(cert, t)
        t += tick
    assert alerts, "at least one alert within 25 days of expiry"
    assert alerts[0] >= cert.not_after - 25 * DAY
    assert all(b - a >= ALERT_INTERVAL for a, b in itertools.pairwise(alerts))
    # and none is late by more than one tick
    assert all(b - a < ALERT_INTERVAL + tick for a, b in itertools.pairwise(alerts))


# --- retry back-off ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "hours"), [(1, 1), (2, 2), (3, 4), (4, 8), (5, 12), (6, 12), (50, 12)]
)
def test_retry_delay_schedule(failures: int, hours: int) -> None:
    assert retry_delay(failures) == timedelta(hours=hours)
    assert next_attempt_after_failure(NOW, failures) == NOW + timedelta(hours=hours)


@pytest.mark.parametrize("failures", [0, -1])
def test_retry_delay_needs_a_failure(failures: int) -> None:
    with pytest.raises(ValueError, match="at least one failure"):
        retry_delay(failures)


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=1, max_value=10_000))
def test_retry_delay_grows_and_is_capped(failures: int) -> None:
    assert timedelta(hours=1) <= retry_delay(failures) <= BACKOFF_CAP
    assert retry_delay(failures + 1) >= retry_delay(failures)


@pytest.mark.parametrize(
    ("failures", "since_failure", "action", "state"),
    [
        (1, timedelta(minutes=59), "wait", "backoff"),
        (1, timedelta(hours=1), "renew", "due"),
        (3, timedelta(hours=3, minutes=59), "wait", "backoff"),
        (3, timedelta(hours=4), "renew", "due"),
        (9, timedelta(hours=11), "wait", "backoff"),
        (9, timedelta(hours=12), "renew", "due"),
    ],
)
def test_backoff_after_failures(
    failures: int, since_failure: timedelta, action: str, state: str
) -> None:
    failed_at = NOW - since_failure
    cert = _cert(20 * DAY, acme=True, failures=failures, last_failure_at=failed_at)
    d = renewal_decision(cert, NOW)
    assert (d.action, d.state) == (action, state)
    expected_next = failed_at + retry_delay(failures) if action == "wait" else NOW
    assert d.next_attempt == expected_next


def test_failure_then_success_round() -> None:
    cert = _cert(29 * DAY, acme=True)
    cert = record_failure(cert, NOW)
    assert renewal_decision(cert, NOW).action == "wait"
    assert renewal_decision(cert, NOW).next_attempt == NOW + timedelta(hours=1)
    cert = record_failure(cert, NOW + timedelta(hours=1))
    assert renewal_decision(cert, NOW + timedelta(hours=1)).next_attempt == NOW + timedelta(hours=3)
    done = record_success(cert)
    assert (done.failures, done.superseded) == (0, True)
    assert renewal_decision(done, NOW + timedelta(hours=3)).action == "none"


def test_expired_in_backoff_reports_expired() -> None:
    cert = _cert(-DAY, acme=True, failures=2, last_failure_at=NOW - timedelta(minutes=5))
    d = renewal_decision(cert, NOW)
    assert (d.action, d.state, d.alert) == ("wait", "expired", True)


@pytest.mark.parametrize(
    "bad",
    [
        {"not_after": datetime(2026, 1, 1)},  # noqa: DTZ001  (the naive value is the test)
        {"last_alert_at": datetime(2026, 1, 1)},  # noqa: DTZ001
        {"failures": -1},
    ],
)
def test_cert_state_refuses_naive_times_and_negative_counts(bad: dict[str, object]) -> None:
    fields: dict[str, Any] = {"sha256": "00", "names": ("a.example",), "not_after": NOW}
    fields.update(bad)
    with pytest.raises(ValueError):
        CertState(**fields)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        renewal_decision(_cert(DAY), datetime(2026, 1, 1))  # noqa: DTZ001


@pytest.mark.parametrize(
    ("left", "days"), [(DAY, 1), (DAY - SEC, 0), (timedelta(0), 0), (-SEC, -1), (-DAY, -1)]
)
def test_days_left_is_floored(left: timedelta, days: int) -> None:
    assert days_left(NOW + left, NOW) == days


# --- renewals by import -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("new_names", "new_after", "expected"),
    [
        (("WWW.example.com", "example.com"), NOW + DAY, True),
        (("example.com", "www.example.com"), NOW, False),  # same not_after: not a renewal
        (("example.com", "www.example.com"), NOW - DAY, False),
        (("example.com",), NOW + DAY, False),  # fewer names
        (("example.com", "www.example.com", "x.example.com"), NOW + DAY, False),
        ((), NOW + DAY, False),
    ],
)
def test_supersedes(new_names: tuple[str, ...], new_after: datetime, expected: bool) -> None:
    old = ("www.example.com", "example.com")
    assert supersedes(new_names, new_after, old, NOW) is expected


# --- CA change ----------------------------------------------------------------------------


def _chain(
    ca: trustme.CA, *, with_root: bool, name: str = "www.example.com"
) -> list[x509.Certificate]:
    leaf = ca.issue_cert(name)
    pems = [b.bytes() for b in leaf.cert_chain_pems]
    if with_root:
        pems.append(ca.cert_pem.bytes())
    return [x509.load_pem_x509_certificate(p) for p in pems]


@pytest.fixture(scope="module")
def ca_a() -> trustme.CA:
    return trustme.CA(organization_name="Org A", organization_unit_name="CA")


@pytest.fixture(scope="module")
def ca_b() -> trustme.CA:
    return trustme.CA(organization_name="Org B", organization_unit_name="CA")


def test_root_of_is_the_same_with_or_without_the_root(ca_a: trustme.CA) -> None:
    with_root = root_of(_chain(ca_a, with_root=True))
    without = root_of(_chain(ca_a, with_root=False))
    assert with_root == without
    assert "Org A" in with_root.subject and with_root.key_id is not None


def test_root_of_walks_an_intermediate_in_any_order(ca_a: trustme.CA) -> None:
    child = ca_a.create_child_ca()
    leaf = child.issue_cert("x.example.com")
    certs = [x509.load_pem_x509_certificate(b.bytes()) for b in leaf.cert_chain_pems]
    root = x509.load_pem_x509_certificate(ca_a.cert_pem.bytes())
    assert len(certs) == 2
    assert root_of([certs[0], root, certs[1]]) == root_of(_chain(ca_a, with_root=True))


def test_self_signed_identity_is_its_own_root(ca_a: trustme.CA) -> None:
    root = x509.load_pem_x509_certificate(ca_a.cert_pem.bytes())
    assert root_of([root]).subject == root.subject.rfc4514_string()


@pytest.mark.parametrize(
    ("same_ca", "with_root_old", "with_root_new"),
    [(True, True, False), (True, False, False), (False, True, True), (False, False, True)],
)
def test_changes_ca(
    ca_a: trustme.CA, ca_b: trustme.CA, same_ca: bool, with_root_old: bool, with_root_new: bool
) -> None:
    old = _chain(ca_a, with_root=with_root_old)
    new = _chain(ca_a if same_ca else ca_b, with_root=with_root_new, name="new.example.com")
    assert changes_ca(old, new) is (not same_ca)


def test_same_subject_other_key_is_a_ca_change() -> None:
    a1 = trustme.CA(organization_name="Same", organization_unit_name="Same")
    a2 = trustme.CA(organization_name="Same", organization_unit_name="Same")
    c1, c2 = _chain(a1, with_root=False), _chain(a2, with_root=False)
    assert root_of(c1).subject == root_of(c2).subject
    assert changes_ca(c1, c2)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (RootId("CN=R", b"k"), RootId("CN=R", None), True),  # unknown key: subject decides
        (RootId("CN=R", b"k"), RootId("CN=R", b"j"), False),
        (RootId("CN=R", None), RootId("CN=S", None), False),
    ],
)
def test_root_identity(a: RootId, b: RootId, same: bool) -> None:
    assert a.same_ca(b) is same and b.same_ca(a) is same


def test_no_current_default_is_no_ca_change(ca_b: trustme.CA) -> None:
    assert not changes_ca(None, _chain(ca_b, with_root=False))
    check_default_change("cd" * 32, None, _chain(ca_b, with_root=False), confirm_ca_change=False)


def test_default_change_across_cas_needs_confirmation(ca_a: trustme.CA, ca_b: trustme.CA) -> None:
    old, new = _chain(ca_a, with_root=False), _chain(ca_b, with_root=False)
    with pytest.raises(Conflict, match=r"changes the CA.*--confirm-ca-change") as info:
        check_default_change("cd" * 32, old, new, confirm_ca_change=False)
    assert "Org A" in str(info.value) and "Org B" in str(info.value)
    assert info.value.exit_code == 2
    check_default_change("cd" * 32, old, new, confirm_ca_change=True)
    # negative twin: a renewal from the same CA needs no confirmation
    check_default_change("cd" * 32, old, _chain(ca_a, with_root=False), confirm_ca_change=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("48h", timedelta(hours=48)),
        ("2d", timedelta(days=2)),
        ("30m", timedelta(minutes=30)),
        ("90s", timedelta(seconds=90)),
        ("1d12h", timedelta(hours=36)),
        (" 48H ", timedelta(hours=48)),
        ("0h", timedelta(0)),
        ("365d", timedelta(days=365)),
    ],
)
def test_parse_wait(text: str, expected: timedelta) -> None:
    assert parse_wait(text) == expected


@pytest.mark.parametrize(
    "text", ["", "48", "h", "-2d", "2 d", "1.5h", "2w", "48h30", "366d", "48hh", "9999999h"]
)
def test_parse_wait_refuses(text: str) -> None:
    with pytest.raises(BadInput) as info:
        parse_wait(text)
    assert repr(text) in str(info.value)


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=8760), st.sampled_from(["h", "m", "s"]))
def test_parse_wait_round_trip(n: int, unit: str) -> None:
    expected = timedelta(**{{"h": "hours", "m": "minutes", "s": "seconds"}[unit]: n})
    assert parse_wait(f"{n}{unit}") == expected


@pytest.mark.parametrize(
    ("elapsed", "due"),
    [(timedelta(0), False), (48 * timedelta(hours=1) - SEC, False), (timedelta(hours=48), True)],
)
def test_staged_ca_change_switches_after_the_wait(elapsed: timedelta, due: bool) -> None:
    staged = stage_ca_change("ef" * 32, "48h", NOW)
    assert staged.switch_at == NOW + timedelta(hours=48)
    assert ca_change_due(staged, NOW + elapsed) is due


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=12))
def test_parse_wait_parses_or_raises_bad_input(text: str) -> None:
    try:
        wait = parse_wait(text)
    except BadInput as err:
        assert repr(text) in str(err)
    else:
        assert timedelta(0) <= wait <= timedelta(days=365)


def test_cert_state_from_certificate(ca_a: trustme.CA) -> None:
    not_after = datetime(2027, 1, 2, 3, 4, 5, tzinfo=UTC)
    leaf = ca_a.issue_cert("a.example.com", "b.example.com", not_after=not_after)
    cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    state = CertState.from_certificate(cert, acme=True)
    assert state.names == ("a.example.com", "b.example.com")
    assert state.not_after == not_after and state.acme
    assert state.sha256 == cert.fingerprint(hashes.SHA256()).hex()
    assert (state.failures, state.last_alert_at, state.superseded) == (0, None, False)


def test_cert_state_from_certificate_without_sans(ca_a: trustme.CA) -> None:
    root = x509.load_pem_x509_certificate(ca_a.cert_pem.bytes())
    assert CertState.from_certificate(root).names == ()
