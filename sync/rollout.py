"""[core] The all-or-none rollout of a proposed revision, as a state machine over events.

A change on the primary *proposes* a revision; the cluster's *current* revision changes only
when that proposal's rollout completes. :class:`Rollout` is where one proposal stands, and
each function here is a transition: it takes the rollout and an event (plain values) and
returns the next rollout. The replicator (shell) performs the steps and feeds their outcomes
back in; nothing here does I/O or reads a clock.

States (DESIGN.md, ``status --json`` ``rollout.state``):

* ``idle`` -- no proposal: every node should serve the current revision;
* ``staging`` -- the proposal is being staged on every reachable receiver;
* ``canary`` -- every reachable receiver staged it; one canary activates and is probed;
* ``activating`` -- the canary serves it; every other receiver activates, the primary last;
* ``halted`` -- a receiver refused the stage or the canary failed: nobody else activates.
  It stays proposed until ``replicate`` retries it (:func:`retry`), a newer change replaces
  it (:func:`propose`) or ``rollback`` discards it (:func:`discard`).

Transitions::

    idle/halted/any --propose(newer)--> staging
    staging --staged(no refusal)--> canary (or activating when no receiver staged)
    staging --staged(a refusal)--> halted
    canary --canary_result(ok)--> activating
    canary --canary_result(failed)--> halted
    activating --completed--> idle (current = revision)
    halted --retry--> staging;  any --discard--> idle
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal

__all__ = [
    "IDLE",
    "Outcome",
    "Rollout",
    "RolloutError",
    "StageOutcome",
    "activation_order",
    "canary_result",
    "choose_canary",
    "completed",
    "discard",
    "propose",
    "retry",
    "should_start",
    "staged",
]

State = Literal["idle", "staging", "canary", "activating", "halted"]
#: a receiver's answer to a stage: it staged, it refused (with a reason), it did not answer
StageOutcome = Literal["staged", "refused", "unreachable"]


class RolloutError(ValueError):
    """An event that does not apply to the rollout's state (a bug in the caller)."""


@dataclass(frozen=True)
class Outcome:
    """What one receiver answered to one step."""

    node: str
    result: StageOutcome
    reason: str = ""


@dataclass(frozen=True)
class Rollout:
    """Where the rollout of ``revision`` stands; ``current`` is the cluster's current revision
    (the last one whose rollout completed; 0: none yet)."""

    state: State = "idle"
    revision: int = 0
    current: int = 0
    canary: str | None = None
    halted_reason: str | None = None
    staged: tuple[str, ...] = ()  # receivers that staged the proposal

    def as_json(self) -> dict[str, object]:
        """The ``status --json`` ``rollout`` object."""
        return {"revision": self.revision or self.current, "state": self.state,
                "canary": self.canary, "halted_reason": self.halted_reason}


IDLE: Final = Rollout()


def _expect(rollout: Rollout, *states: State) -> None:
    if rollout.state not in states:
        raise RolloutError(f"rollout of revision {rollout.revision} is {rollout.state}, not "
                           f"{' or '.join(states)}")


def should_start(rollout: Rollout, proposed: int, *, asked: bool) -> bool:
    """Does a round start (or restart) the rollout of ``proposed``? A proposal that is not
    current starts, unless it is halted and nobody ``asked`` (``replicate``) to retry it;
    ``asked`` also re-runs a proposal in flight in another call (pushes are idempotent)."""
    if proposed == rollout.current and rollout.state == "idle":
        return False
    if rollout.revision != proposed:
        return True  # a newer change replaces whatever was proposed
    if rollout.state == "halted":
        return asked
    return asked or rollout.state == "idle"


def propose(rollout: Rollout, revision: int) -> Rollout:
    """A proposal of ``revision`` starts staging (replacing any other proposal)."""
    return Rollout(state="staging", revision=revision, current=rollout.current)


def retry(rollout: Rollout) -> Rollout:
    """``replicate`` retries a halted (or any) proposal from its first step."""
    return propose(rollout, rollout.revision)


def discard(rollout: Rollout) -> Rollout:
    """``rollback`` discards the proposal; nothing of it is current."""
    return Rollout(state="idle", revision=rollout.current, current=rollout.current)


def staged(rollout: Rollout, outcomes: Sequence[Outcome], *, canary: str | None) -> Rollout:
    """Every reachable receiver answered the stage. One refusal halts everything (with that
    node's reason); unreachable receivers do not block. ``canary``: the receiver
    :func:`choose_canary` picked among those that staged (None: go straight on)."""
    _expect(rollout, "staging")
    refused = [o for o in outcomes if o.result == "refused"]
    ok = tuple(o.node for o in outcomes if o.result == "staged")
    if refused:
        reason = "; ".join(f"node {o.node!r} refused the stage: {o.reason}" for o in refused)
        return replace(rollout, state="halted", halted_reason=reason, staged=ok, canary=None)
    if canary is not None and canary not in ok:
        raise RolloutError(f"canary {canary!r} did not stage revision {rollout.revision}")
    return replace(rollout, state="canary" if canary else "activating", canary=canary,
                   staged=ok, halted_reason=None)


def canary_result(rollout: Rollout, ok: bool, reason: str = "") -> Rollout:
    """The canary was activated and probed (``ok``), or it could not be reached to activate
    or its probe failed (it returns to its previous set by itself): halted there."""
    _expect(rollout, "canary")
    if ok:
        return replace(rollout, state="activating")
    return replace(rollout, state="halted",
                   halted_reason=f"canary {rollout.canary!r} failed: {reason}")


def completed(rollout: Rollout) -> Rollout:
    """The primary switched: the proposal is the current revision."""
    _expect(rollout, "activating")
    return Rollout(state="idle", revision=rollout.revision, current=rollout.revision,
                   canary=rollout.canary)


def choose_canary(roles: Mapping[str, str], staged_nodes: Sequence[str], *,
                  configured: str | None = None) -> str | None:
    """The canary among the receivers that staged: ``configured`` when it staged; else the
    first traffic node (in the order given); else the backup; else any; None when no
    receiver staged."""
    if configured is not None and configured in staged_nodes:
        return configured
    for role in ("traffic", "backup"):
        for node in staged_nodes:
            if roles.get(node) == role:
                return node
    return staged_nodes[0] if staged_nodes else None


def activation_order(receivers: Sequence[str], canary: str | None) -> tuple[str, ...]:
    """The receivers that activate after the canary (every one but it, in order); the
    primary's own endpoint comes after all of them."""
    return tuple(n for n in receivers if n != canary)
