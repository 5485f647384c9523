"""[core] Decide what replication must do, from the state the nodes reported.

Pure: the replicator (shell) gathers a :class:`NodeState` per node -- from its status RPC
and the last probe of its TLS endpoint -- calls :func:`plan` with the current time, and
then acts on the :class:`Plan`. Pushes are idempotent and carry the epoch, so acting on a
plan that went stale meanwhile is safe (the receiver refuses what no longer applies).

Rules, for every node other than the primary:

* a node that reports a **higher epoch** than the primary fences it: the primary must step
  down and sync from the new primary, and nothing is pushed by it (``refuse``);
* an **unreachable** node is skipped this round (anti-entropy retries it);
* a node is **in sync** when epoch, revision and digest equal the primary's *and* its last
  probe showed it serving the primary's certificates (``serving_ok is True``);
* same state but not yet probed (``serving_ok is None``): ``probe`` it, no push needed;
* anything else reachable -- lower epoch, other revision or digest, or serving the wrong
  certificates -- gets a push (``push_to``);
* independently, a node is **stale** when its last successful sync is older than
  ``stale_after`` (or it never synced), so ``status`` can flag it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["NodeState", "Plan", "plan"]


@dataclass(frozen=True)
class NodeState:
    """What one node reported (``reachable=False``: it did not answer; the rest is stale)."""

    name: str
    reachable: bool
    epoch: int
    revision: int
    digest: str
    last_sync: dt.datetime | None = None
    serving_ok: bool | None = None  # None: not probed since its set last changed


@dataclass(frozen=True)
class Plan:
    """What to do this round; every tuple keeps the order of ``others``."""

    push_to: tuple[str, ...] = ()
    probe: tuple[str, ...] = ()
    in_sync: tuple[str, ...] = ()
    unreachable: tuple[str, ...] = ()
    stale: tuple[str, ...] = ()
    refuse: tuple[str, ...] = ()  # nodes at a higher epoch: they fence the primary
    #: the highest epoch seen above the primary's; set means "step down, sync from them"
    step_down_to_epoch: int | None = None
    #: the highest revision reported at the primary's epoch, the primary's own included.
    #: When it is above the primary's revision (a node is ahead, e.g. the primary's store
    #: was restored from a backup), the next push must carry a revision above it.
    highest_revision: int = 0

    @property
    def step_down(self) -> bool:
        return self.step_down_to_epoch is not None


def plan(
    primary: NodeState,
    others: Sequence[NodeState],
    *,
    now: dt.datetime,
    stale_after: dt.timedelta,
) -> Plan:
    """The plan for this round (see the module docstring for the rules)."""
    push: list[str] = []
    probe: list[str] = []
    in_sync: list[str] = []
    unreachable: list[str] = []
    stale: list[str] = []
    refuse: list[str] = []
    higher_epoch: int | None = None
    highest_revision = primary.revision
    for node in others:
        if node.last_sync is None or now - node.last_sync > stale_after:
            stale.append(node.name)
        if not node.reachable:
            unreachable.append(node.name)
            continue
        if node.epoch > primary.epoch:
            refuse.append(node.name)
            higher_epoch = max(node.epoch, higher_epoch or node.epoch)
            continue
        if node.epoch == primary.epoch:
            highest_revision = max(highest_revision, node.revision)
        same_set = (node.epoch, node.revision, node.digest) == (
            primary.epoch, primary.revision, primary.digest)
        if same_set and node.serving_ok is True:
            in_sync.append(node.name)
        elif same_set and node.serving_ok is None:
            probe.append(node.name)
        else:
            push.append(node.name)
    if higher_epoch is not None:
        push, probe = [], []  # a fenced primary pushes nothing
    return Plan(
        push_to=tuple(push), probe=tuple(probe), in_sync=tuple(in_sync),
        unreachable=tuple(unreachable), stale=tuple(stale), refuse=tuple(refuse),
        step_down_to_epoch=higher_epoch, highest_revision=highest_revision,
    )
