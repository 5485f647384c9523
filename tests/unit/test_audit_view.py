"""node.audit_view: --since durations, and each audit row's target and outcome."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from node.audit_view import audit_entry, audit_outcome, audit_target, parse_duration
from node.errors import BadInput
from node.store_view import AuditEvent

SHA = "a" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", dt.timedelta(minutes=30)),
        ("24h", dt.timedelta(hours=24)),
        ("7d", dt.timedelta(days=7)),
        ("1d12h", dt.timedelta(days=1, hours=12)),
        ("2w", dt.timedelta(weeks=2)),
        (" 90S ", dt.timedelta(seconds=90)),
    ],
)
def test_durations(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "24", "h", "24x", "-1h", "1.5h", "24 h", "1h-", "P1D",
                                  "9999999d", "3651d"])
def test_bad_durations_name_the_value(text: str) -> None:
    with pytest.raises(BadInput, match="--since"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("detail", "target"),
    [
        ({"sha256": SHA}, SHA),
        ({"certificates": [{"sha256": SHA, "role": "identity"}], "default": None}, SHA),
        ({"id": "csr-1", "name": "x"}, "csr-1"),
        ({"method": "ReadAudit", "why": "admin only"}, "ReadAudit"),
        ({"epoch": 2, "primary": "b1"}, "b1"),
        ({"uncovered": ["x"], "epoch": 1, "revision": 7, "digest": "d"}, "revision 7"),
        ({"revision": True}, ""),
        ({"certificates": []}, ""),
        ({}, ""),
    ],
)
def test_targets(detail: dict[str, Any], target: str) -> None:
    assert audit_target(detail) == target


@pytest.mark.parametrize(
    ("action", "detail", "outcome"),
    [
        ("rpc.refused", {}, "refused"),
        ("replication.refused", {"why": "stale"}, "refused"),
        ("replication.forced", {}, "forced"),
        ("cert.delete", {"forced": True}, "forced"),
        ("cert.delete", {"forced": False}, "ok"),
        ("cert.add", {}, "ok"),
        ("refused.thing", {}, "ok"),
    ],
)
def test_outcomes(action: str, detail: dict[str, Any], outcome: str) -> None:
    assert audit_outcome(action, detail) == outcome


def test_entry_has_the_design_fields() -> None:
    at = dt.datetime(2027, 1, 2, 3, 4, 5, 600, tzinfo=dt.UTC)
    entry = audit_entry(AuditEvent(id=3, at=at, actor="admin:ops", action="cert.default",
                                   detail={"sha256": SHA}))
    assert entry == {"time": "2027-01-02T03:04:05Z", "actor": "admin:ops",
                     "action": "cert.default", "target": SHA, "outcome": "ok",
                     "detail": {"sha256": SHA}}
