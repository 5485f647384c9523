"""The rollout state machine (sync.rollout): every transition with its twin."""

from __future__ import annotations

import pytest

from sync import rollout as r
from sync.rollout import IDLE, Outcome, Rollout, RolloutError

STAGED = Rollout(state="staging", revision=5, current=4)
ROLES = {"b1": "backup", "t1": "traffic", "t2": "traffic"}


def test_propose_starts_staging_and_keeps_the_current_revision() -> None:
    after = r.propose(Rollout(state="halted", revision=5, current=4, halted_reason="x"), 6)
    assert after == Rollout(state="staging", revision=6, current=4)


@pytest.mark.parametrize(("rollout", "proposed", "asked", "starts"), [
    (IDLE, 0, False, False),                                   # nothing proposed
    (Rollout(revision=4, current=4), 4, True, False),          # current: nothing to do
    (Rollout(revision=4, current=4), 5, False, True),          # a change proposes
    (Rollout(state="halted", revision=5, current=4), 5, False, False),  # halted stays
    (Rollout(state="halted", revision=5, current=4), 5, True, True),    # replicate retries
    (Rollout(state="halted", revision=5, current=4), 6, False, True),   # a newer change
    (Rollout(state="canary", revision=5, current=4), 5, False, False),  # in flight
    (Rollout(state="canary", revision=5, current=4), 5, True, True),
])
def test_should_start(rollout: Rollout, proposed: int, asked: bool, starts: bool) -> None:
    assert r.should_start(rollout, proposed, asked=asked) is starts


def test_one_refusal_halts_with_the_nodes_reason() -> None:
    after = r.staged(STAGED, [Outcome("b1", "staged"), Outcome("t1", "refused", "not valid"),
                              Outcome("t2", "unreachable", "down")], canary=None)
    assert after.state == "halted"
    assert after.halted_reason == "node 't1' refused the stage: not valid"
    assert after.staged == ("b1",)


def test_unreachable_receivers_do_not_block() -> None:
    after = r.staged(STAGED, [Outcome("b1", "staged"), Outcome("t2", "unreachable", "down")],
                     canary="b1")
    assert (after.state, after.canary, after.halted_reason) == ("canary", "b1", None)


def test_no_receiver_staged_goes_straight_to_activating() -> None:
    assert r.staged(STAGED, [Outcome("t2", "unreachable")], canary=None).state == "activating"


def test_a_canary_that_did_not_stage_is_a_bug() -> None:
    with pytest.raises(RolloutError):
        r.staged(STAGED, [Outcome("t2", "unreachable")], canary="t2")


def test_canary_result_goes_on_or_halts() -> None:
    at_canary = Rollout(state="canary", revision=5, current=4, canary="t1")
    assert r.canary_result(at_canary, True).state == "activating"
    halted = r.canary_result(at_canary, False, "probe differs")
    assert halted.state == "halted" and halted.halted_reason == "canary 't1' failed: probe differs"


def test_completed_makes_the_revision_current() -> None:
    done = r.completed(Rollout(state="activating", revision=5, current=4, canary="t1"))
    assert (done.state, done.revision, done.current) == ("idle", 5, 5)
    assert done.as_json() == {"revision": 5, "state": "idle", "canary": "t1",
                              "halted_reason": None}


@pytest.mark.parametrize("state", ["idle", "staging", "canary", "halted"])
def test_completed_only_while_activating(state: str) -> None:
    with pytest.raises(RolloutError):
        r.completed(Rollout(state=state, revision=5, current=4))  # type: ignore[arg-type]


def test_events_out_of_order_are_refused() -> None:
    with pytest.raises(RolloutError):
        r.staged(IDLE, [], canary=None)
    with pytest.raises(RolloutError):
        r.canary_result(STAGED, True)


def test_discard_and_retry() -> None:
    halted = Rollout(state="halted", revision=5, current=4, halted_reason="x")
    assert r.discard(halted) == Rollout(state="idle", revision=4, current=4)
    assert r.retry(halted) == Rollout(state="staging", revision=5, current=4)


@pytest.mark.parametrize(("staged", "configured", "canary"), [
    (["b1", "t1", "t2"], None, "t1"),     # a traffic node by default
    (["b1", "t2"], None, "t2"),
    (["b1"], None, "b1"),                 # the backup when there is no traffic node
    (["b1", "t1"], "b1", "b1"),           # rollout_canary chooses
    (["t1", "t2"], "b1", "t1"),           # ... when it staged
    ([], None, None),
    (["x9"], None, "x9"),
])
def test_choose_canary(staged: list[str], configured: str | None, canary: str | None) -> None:
    assert r.choose_canary(ROLES, staged, configured=configured) == canary


def test_activation_order_leaves_out_the_canary() -> None:
    assert r.activation_order(["b1", "t1", "t2"], "t1") == ("b1", "t2")
    assert r.activation_order(["b1", "t1"], None) == ("b1", "t1")
