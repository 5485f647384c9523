"""[core] The coverage gate at the point of change: will the default still cover every name?

The primary refuses a change that would leave the default certificate not covering every
required name (the site and each node's hostname) -- setting a default, importing or
creating one with ``--default``, deleting the default -- unless it is forced; a change made
in the background (an ACME renewal, a renewal switch, a staged CA change falling due) that
would *break* coverage (leave a name uncovered that the current default covers) is skipped.
The node learns the required names as plain values (:class:`RequiredName`, filled in from the
topology by the cluster layer); with none, there is nothing to check.

Pure: the caller reads the store and passes certificates in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from node.errors import CoverageError
from node.names import SanSet, check_all, sans_of

__all__ = [
    "RequiredName",
    "broken_by",
    "describe",
    "forced_notice",
    "gate_refusal",
    "uncovered",
    "uncovered_by",
]


@dataclass(frozen=True)
class RequiredName:
    """A hostname the default must cover, and the nodes clients reach by it."""

    hostname: str
    nodes: tuple[str, ...]


def uncovered(cert: x509.Certificate | None,
              required: Sequence[RequiredName]) -> tuple[RequiredName, ...]:
    """The required names ``cert`` (the would-be default; None: no default) leaves uncovered."""
    if cert is None:
        return tuple(required)
    return uncovered_by(sans_of(cert), required)


def uncovered_by(sans: SanSet, required: Sequence[RequiredName]) -> tuple[RequiredName, ...]:
    """The required names a certificate with ``sans`` leaves uncovered (e.g. one not ordered
    yet, whose names are known)."""
    if not required:
        return ()
    report = check_all(sans, [r.hostname for r in required])
    return tuple(r for r, item in zip(required, report.items, strict=True) if not item.covered)


def broken_by(current: x509.Certificate | None, new: x509.Certificate | None,
              required: Sequence[RequiredName]) -> tuple[RequiredName, ...]:
    """The names ``new`` leaves uncovered that ``current`` covers (what a background change
    from ``current`` to ``new`` would break)."""
    before = {r.hostname for r in uncovered(current, required)}
    return tuple(r for r in uncovered(new, required) if r.hostname not in before)


def describe(missing: Sequence[RequiredName]) -> str:
    """``t2.example.com (node t2), support.example.com (nodes p1, t2)``."""
    parts = []
    for r in missing:
        label = "node" if len(r.nodes) == 1 else "nodes"
        parts.append(f"{r.hostname} ({label} {', '.join(r.nodes)})" if r.nodes else r.hostname)
    return ", ".join(parts)


def gate_refusal(what: str, missing: Sequence[RequiredName]) -> CoverageError:
    """The refusal of a change (``what``: e.g. ``making 4d08... the default``) that would
    leave ``missing`` uncovered (exit 1)."""
    return CoverageError(
        f"{what} would leave the default not covering {describe(missing)}; choose a "
        "certificate that covers every required name, or pass --force to apply it anyway",
        report=", ".join(r.hostname for r in missing),
    )


def forced_notice(overrode: Sequence[str], missing: Sequence[RequiredName]) -> str:
    """The notice of a forced change naming every check it overrode."""
    checks = ", ".join(overrode)
    extra = f" (uncovered: {describe(missing)})" if missing else ""
    return f"--force overrode the {checks} check{'s' if len(overrode) > 1 else ''}{extra}"
