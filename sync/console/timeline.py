"""[core] The expiry timeline's geometry: one bar per certificate, a line for now, windows.

:func:`timeline` turns certificates (name, not_before, not_after, default) and ``now`` into
numbers the template draws as an SVG (no script): every bar runs from ``not_before`` to
``not_after``; inside it the renewal window (``RENEW_BEFORE``, 30 days before expiry) and
the alert window (``ALERT_BEFORE``, 25 days) are shaded; the default certificate's bar is
marked; a vertical line shows ``now``. Time runs left to right over the span from the
earliest start to the latest end (and ``now``), with a margin for labels.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from node.lifecycle import ALERT_BEFORE, RENEW_BEFORE
from node.text import rfc3339

__all__ = ["BAR_HEIGHT", "LABEL_WIDTH", "PLOT_WIDTH", "Span", "timeline"]

LABEL_WIDTH = 260
PLOT_WIDTH = 720
BAR_HEIGHT = 18
_ROW = 28
_TOP = 30
_AXIS = 30


@dataclass(frozen=True)
class Span:
    """One certificate on the timeline."""

    sha256: str
    name: str
    not_before: dt.datetime
    not_after: dt.datetime
    default: bool


def _ticks(start: dt.datetime, end: dt.datetime, count: int = 6) -> list[dt.datetime]:
    step = (end - start) / count
    return [start + step * i for i in range(count + 1)]


def timeline(spans: Sequence[Span], *, now: dt.datetime) -> dict[str, Any]:
    """The SVG's size, the now line, one bar per span (default first, then by expiry) with
    its windows, and axis ticks; x in pixels, ``LABEL_WIDTH`` being the plot's left edge."""
    ordered = sorted(spans, key=lambda s: (not s.default, s.not_after, s.name))
    start = min([s.not_before for s in ordered] + [now - RENEW_BEFORE])
    end = max([s.not_after for s in ordered] + [now + RENEW_BEFORE])
    total = (end - start).total_seconds() or 1.0

    def x(when: dt.datetime) -> float:
        clamped = min(max(when, start), end)
        return round(LABEL_WIDTH + PLOT_WIDTH * (clamped - start).total_seconds() / total, 2)

    bars = []
    for i, s in enumerate(ordered):
        y = _TOP + i * _ROW
        renew_from = max(s.not_after - RENEW_BEFORE, s.not_before)
        alert_from = max(s.not_after - ALERT_BEFORE, s.not_before)
        bars.append({
            "sha256": s.sha256,
            "name": s.name,
            "default": s.default,
            "expired": s.not_after <= now,
            "y": y,
            "text_y": y + BAR_HEIGHT - 5,
            "x": x(s.not_before),
            "width": round(max(x(s.not_after) - x(s.not_before), 1.0), 2),
            "not_before": rfc3339(s.not_before),
            "not_after": rfc3339(s.not_after),
            "renewal": {"x": x(renew_from), "width": round(x(s.not_after) - x(renew_from), 2)},
            "alert": {"x": x(alert_from), "width": round(x(s.not_after) - x(alert_from), 2)},
        })
    height = _TOP + max(len(ordered), 1) * _ROW + _AXIS
    return {
        "width": LABEL_WIDTH + PLOT_WIDTH + 50,  # room for the last tick's label
        "height": height,
        "bar_height": BAR_HEIGHT,
        "now": {"x": x(now), "label": rfc3339(now)},
        "plot_top": _TOP - 10,
        "plot_bottom": height - _AXIS,
        "bars": bars,
        "ticks": [{"x": x(t), "label": t.date().isoformat()} for t in _ticks(start, end)],
        "axis_y": height - _AXIS + 16,
        "renew_days": RENEW_BEFORE.days,
        "alert_days": ALERT_BEFORE.days,
    }
