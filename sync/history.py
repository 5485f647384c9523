"""[shell] A node's set as a :class:`~node.store_history.HistoryRecord`, and the receiver's
self-revert after an activation that is not confirmed in time.

:func:`record_of` reads the store's replicated set now (every certificate with its key and
chain, and which one is default) as a record, for the set history and for a revert.

:class:`RevertGuard` is what "returns to its previous set by itself" means on a receiver:
after an activation that asks for a confirmation within a deadline, it remembers the set the
node served before; when the primary's Confirm of that set does not arrive in time (its
probe failed, or the primary is gone), the node puts the previous set back on its own
(audited ``replication.reverted``). A later activation keeps the oldest unconfirmed
"previous" set, so a revert always returns to a set that was confirmed or served before.
The pending revert is kept in store meta ``revert_pending`` as well, so a node restarted
within the deadline still goes back (:meth:`RevertGuard.resume`): the previous set is in its
set history, where every activation records what it activated.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from node.errors import CertsyncError
from node.store import Store
from node.store_history import HistoryItem, HistoryRecord
from node.text import parse_stored_time, stored_time

__all__ = ["Pending", "RevertGuard", "record_of", "revert_meta"]

_log = structlog.get_logger("sync.history")

#: (epoch, revision, digest) of an activated set
SetKey = tuple[int, int, str]


async def record_of(store: Store, *, epoch: int | None = None) -> HistoryRecord:
    """The store's set now as a record (its revision from meta ``revision``; ``epoch`` is the
    one the set was activated at, by default meta ``revision_epoch``)."""
    view = await store.view()
    if epoch is None:
        epoch = int(view.meta.get("revision_epoch") or 0)
    keys = await store.keys(view.keyed, view=view)
    default = view.meta.get("default_sha256")
    items = tuple(
        HistoryItem(name=c.name, cert=c.certificate(), key=keys[c.sha256],
                    chain=tuple(view.chain(c.sha256)[0]), is_default=c.sha256 == default)
        for c in view.certs if c.sha256 in keys
    )
    return HistoryRecord(epoch=epoch, revision=int(view.meta.get("revision") or 0),
                         digest=view.digest, default_sha256=default if default in keys else None,
                         activated_at="", items=items)


def revert_meta(pending: Pending | None, now: dt.datetime, within: float) -> dict[str, str]:
    """The store meta that keeps ``pending`` (None: no revert pending) for a restart, its
    deadline ``within`` seconds after ``now``; written with the change it may undo."""
    text = "" if pending is None else "|".join(str(v) for v in (
        *pending.key, pending.previous.epoch, pending.previous.revision,
        pending.previous.digest, stored_time(now + dt.timedelta(seconds=within))))
    return {"revert_pending": text}


@dataclass
class Pending:
    """An activation waiting for its confirmation, and the set to return to without it."""

    key: SetKey
    previous: HistoryRecord
    task: asyncio.Task[None] | None = None


class RevertGuard:
    """See the module docstring. ``revert(previous, key)`` puts ``previous`` back if the node
    still serves the set ``key`` (the receiver's, under its lock)."""

    def __init__(self, revert: Callable[[HistoryRecord, SetKey], Awaitable[None]],
                 store: Store | None = None) -> None:
        self._revert = revert
        self._store = store
        self._pending: Pending | None = None

    async def persist(self, now: dt.datetime, within: float) -> None:
        """Keep the pending revert (or that there is none) in store meta."""
        if self._store is None:
            return
        await self._store.set_meta(revert_meta(self._pending, now, within), durable=False)

    async def resume(self, now: dt.datetime) -> None:
        """After a restart: arm the revert that was pending, for the time left of it."""
        if self._store is None:
            return
        text = await self._store.get_meta("revert_pending")
        if not text:
            return
        try:
            e, r, d, pe, pr, pd, deadline = text.split("|")
            previous = await self._resume_previous(int(pe), int(pr), pd)
            left = max(0.0, (parse_stored_time(deadline) - now).total_seconds())
        except (ValueError, CertsyncError) as err:
            _log.warning("replication.revert_lost", error=type(err).__name__)
            await self._store.set_meta({"revert_pending": ""}, durable=False)
            return
        self.arm((int(e), int(r), d), previous, left)
        _log.info("replication.revert_resumed", revision=int(r), seconds_left=left)

    async def _resume_previous(self, epoch: int, revision: int, digest: str) -> HistoryRecord:
        assert self._store is not None
        if revision == 0:  # the node held nothing before
            return HistoryRecord(epoch=epoch, revision=0, digest=digest, default_sha256=None,
                                 activated_at="")
        record = await self._store.history_set(revision)
        if record.digest != digest:
            raise ValueError(f"the kept set of revision {revision} is another one")
        return record

    @property
    def pending(self) -> Pending | None:
        return self._pending

    def previous_for_next(self, current: HistoryRecord) -> HistoryRecord:
        """The set a new activation returns to: the oldest unconfirmed previous one, else
        ``current`` (what the node serves now)."""
        return self._pending.previous if self._pending is not None else current

    def arm(self, key: SetKey, previous: HistoryRecord, within: float) -> None:
        """Expect the Confirm of ``key`` within ``within`` seconds; else revert."""
        self.cancel()
        pending = Pending(key=key, previous=previous)
        pending.task = asyncio.create_task(self._wait(pending, within))
        self._pending = pending

    async def _wait(self, pending: Pending, within: float) -> None:
        await asyncio.sleep(within)  # the deadline itself: nothing to poll for
        if self._pending is not pending:
            return
        self._pending = None
        with contextlib.suppress(CertsyncError):
            await self.persist(dt.datetime.now(dt.UTC), 0)
        _log.warning("replication.confirm_missed", epoch=pending.key[0],
                     revision=pending.key[1], back_to=pending.previous.revision)
        try:
            await self._revert(pending.previous, pending.key)
        except Exception:
            _log.exception("replication.revert_failed", revision=pending.key[1])

    def confirmed(self, key: SetKey) -> bool:
        """The primary confirmed ``key``: no revert. True when it was pending."""
        if self._pending is None or self._pending.key != key:
            return False
        self.cancel()
        return True

    def cancel(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and pending.task is not None:
            pending.task.cancel()

    async def close(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and pending.task is not None:
            pending.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending.task
