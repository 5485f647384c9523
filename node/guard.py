"""[shell] The node's guards at the point of change: only the primary writes, and the
coverage gate (rules in :mod:`node.coverage_gate`).

* :func:`require_primary` -- every store-changing RPC on a node that is not the primary of
  its current epoch is refused with :class:`~node.errors.NotPrimary` (FAILED_PRECONDITION,
  exit 2) naming the primary and the epoch this node knows; nothing changes. Reads work on
  every node.
* :func:`gate_default` -- a change that would make ``cert`` the default (``None``: leave no
  default) is refused with :class:`~node.errors.CoverageError` (exit 1) when the default would
  leave a required name uncovered, unless forced. A forced change is audited
  (``change.forced``, naming every check it overrode), answered with a notice, and marks the
  set so the replicator pushes it forced to every node (store meta ``forced_default``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Final, Protocol

import structlog
from cryptography import x509

from node.coverage_gate import (
    RequiredName,
    broken_by,
    describe,
    forced_notice,
    gate_refusal,
    uncovered,
)
from node.errors import NotPrimary
from node.formats import cert_sha256
from node.store import Store
from node.store_view import SetEntry

__all__ = [
    "FORCED_DEFAULT_KEY",
    "NO_DEFAULT",
    "GuardedRuntime",
    "gate_default",
    "gate_import",
    "record_forced",
    "require_primary",
]

#: store meta: the sha256 of a default an admin forced past the coverage gate ("" when none);
#: the replicator pushes a set with that default forced
FORCED_DEFAULT_KEY: Final = "forced_default"

#: the value of ``forced_default`` when the forced change left no default
NO_DEFAULT: Final = "-"

_log = structlog.get_logger("node.guard")


class GuardedRuntime(Protocol):
    """What the guards read of the running node (``node.service.NodeRuntime`` has it)."""

    @property
    def name(self) -> str: ...

    @property
    def role(self) -> str: ...

    @property
    def store(self) -> Store: ...

    @property
    def required_names(self) -> Sequence[RequiredName]: ...

    def now(self) -> dt.datetime: ...


async def require_primary(rt: GuardedRuntime, method: str) -> None:
    """:class:`NotPrimary` unless this node is the primary of its current epoch."""
    if rt.role == "primary":
        return
    primary = await rt.store.get_meta("primary") or ""
    epoch = int(await rt.store.get_meta("epoch") or 0)
    _log.warning("change.not_primary", method=method, primary=primary, epoch=epoch)
    where = f"{primary!r}" if primary else "the primary"
    raise NotPrimary(
        f"node {rt.name!r} is not the primary of epoch {epoch} (the primary is {where}); "
        f"nothing was changed: run the change on {where} (without --node the CLI finds it)",
        node=rt.name, primary=primary, epoch=epoch,
    )


async def gate_default(
    rt: GuardedRuntime,
    cert: x509.Certificate | None,
    *,
    what: str,
    force: bool,
    method: str,
    actor: str,
    target: str,
    overrode: Sequence[str] = (),
) -> list[str]:
    """Check the default-to-be ``cert`` against the required names; returns the notices to
    give the admin. ``overrode`` names checks ``force`` already overrode (e.g. ``expiry``):
    when anything was overridden the change is audited with every check named."""
    missing = uncovered(cert, rt.required_names)
    if missing and not force:
        raise gate_refusal(what, missing)
    checks = [*overrode, *(("coverage",) if missing else ())]
    if not checks:
        return []
    return [await record_forced(rt.store, checks, missing, method=method, actor=actor,
                                target=target, now=rt.now())]


async def record_forced(store: Store, checks: Sequence[str], missing: Sequence[RequiredName],
                        *, method: str, actor: str, target: str, now: dt.datetime) -> str:
    """Audit a forced change (``change.forced``, naming every check it overrode), mark a
    default forced past the coverage gate, and return the notice for the admin."""
    if missing:
        await store.set_meta({FORCED_DEFAULT_KEY: target or NO_DEFAULT})
    await store.record_audit(
        actor=actor, action="change.forced",
        detail={"method": method, "sha256": target, "overrode": list(checks),
                "uncovered": [r.hostname for r in missing]},
        now=now,
    )
    _log.warning("change.forced", method=method, sha256=target, overrode=list(checks),
                 uncovered=describe(missing))
    return forced_notice(checks, missing)


async def gate_import(
    rt: GuardedRuntime,
    entries: Sequence[SetEntry],
    identity_sha: str | None,
    warnings: list[str],
    *,
    make_default: bool,
    force: bool,
    actor: str,
) -> bool:
    """The gate for an import that makes its identity certificate default: asked for with
    ``--default`` (refused unless forced), or a renewal of the default (not made default,
    with a warning, when it leaves a name uncovered that the current default covers).
    Returns whether it becomes the default."""
    cert = next(e.cert for e in entries if cert_sha256(e.cert) == identity_sha)
    if not make_default:  # a renewal: it may not uncover what the current default covers
        current = (await rt.store.view()).default
        broken = broken_by(current.certificate() if current is not None else None, cert,
                           rt.required_names)
        if broken:
            warnings.append(f"{identity_sha} is not made the default: it would leave "
                            f"{describe(broken)} uncovered")
        return not broken
    expired = cert.not_valid_after_utc <= rt.now()
    warnings += await gate_default(
        rt, cert, what=f"making {identity_sha} the default", force=force, method="Import",
        actor=actor, target=identity_sha or "", overrode=("expiry",) if expired else ())
    return True
