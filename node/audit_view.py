"""[core] The audit log as people read it: one entry per row, with its target and outcome.

A stored audit row (:class:`node.store_view.AuditEvent`) is when, who, what and a detail
object. :func:`audit_entry` adds what the CLI, the console and the support bundle show
(DESIGN.md: ``{"time", "actor", "action", "target", "outcome", "detail"}``):

* ``target`` -- what the action was about, from the detail: a certificate's sha256, its
  ``target`` when it names one, a CSR's id, the refused RPC's method, the new primary, or
  the revision pushed; ``""`` when none;
* ``outcome`` -- ``refused`` for a refused call (``*.refused``), ``forced`` for a change made
  past a check (``*.forced``, or a detail with ``"forced": true``), else ``ok``.

:func:`parse_duration` reads the ``--since`` of ``certsync audit`` (``30m``, ``24h``, ``7d``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Final

from node.errors import BadInput
from node.store_view import AuditEvent
from node.text import rfc3339

__all__ = ["MAX_SINCE", "audit_entry", "audit_outcome", "audit_target", "parse_duration"]

#: the longest ``--since`` (ten years: more is a typo, not a question)
MAX_SINCE: Final = timedelta(days=3650)
_PART: Final = re.compile(r"(\d{1,6})([smhdw])")
_UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
#: detail keys naming the target, in the order they are looked for
_TARGET_KEYS: Final = ("sha256", "target", "id", "method", "primary")


def parse_duration(text: str) -> timedelta:
    """``30m``, ``24h``, ``7d``, ``1d12h`` (units s, m, h, d, w) as a ``timedelta``;
    anything else is :class:`BadInput`."""
    stripped = text.strip().lower()
    parts = _PART.findall(stripped)
    if not stripped or "".join(n + u for n, u in parts) != stripped:
        raise BadInput(f"--since {text!r} is not a duration; write a number and a unit "
                       "(s, m, h, d, w), e.g. '30m', '24h' or '7d'")
    total = timedelta()
    for number, unit in parts:
        total += timedelta(**{_UNITS[unit]: int(number)})
    if total > MAX_SINCE:
        raise BadInput(f"--since {text!r} is longer than {MAX_SINCE.days} days; "
                       "leave --since out to see the whole log")
    return total


def audit_target(detail: Mapping[str, Any]) -> str:
    """What an audited action was about (see the module docstring)."""
    for key in _TARGET_KEYS:
        value = detail.get(key)
        if isinstance(value, str) and value:
            return value
    certs = detail.get("certificates")
    if isinstance(certs, list) and certs and isinstance(certs[0], Mapping):
        first = certs[0].get("sha256")
        if isinstance(first, str):
            return first
    revision = detail.get("revision")
    if isinstance(revision, int) and not isinstance(revision, bool):
        return f"revision {revision}"
    return ""


def audit_outcome(action: str, detail: Mapping[str, Any]) -> str:
    """``refused``, ``forced`` or ``ok`` (see the module docstring)."""
    if action.endswith(".refused"):
        return "refused"
    if action.endswith(".forced") or detail.get("forced") is True:
        return "forced"
    return "ok"


def audit_entry(event: AuditEvent) -> dict[str, Any]:
    """The DESIGN.md shape of one audit row."""
    detail = dict(event.detail)
    return {
        "time": rfc3339(event.at),
        "actor": event.actor,
        "action": event.action,
        "target": audit_target(detail),
        "outcome": audit_outcome(event.action, detail),
        "detail": detail,
    }
