"""sync.plan: what replication does, from reported state. One row per rule, with twins."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.plan import NodeState, Plan, plan

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
STALE = dt.timedelta(minutes=5)
RECENT = NOW - dt.timedelta(seconds=10)
PRIMARY = NodeState("p1", True, epoch=3, revision=10, digest="d10", last_sync=NOW,
                    serving_ok=True)
SYNCED = NodeState("b1", True, epoch=3, revision=10, digest="d10", last_sync=RECENT,
                   serving_ok=True)


def _one(node: NodeState, primary: NodeState = PRIMARY) -> Plan:
    return plan(primary, [node], now=NOW, stale_after=STALE)


@pytest.mark.parametrize(
    ("node", "bucket"),
    [
        pytest.param(SYNCED, "in_sync", id="same-and-served"),
        pytest.param(replace(SYNCED, serving_ok=None), "probe", id="same-not-probed"),
        pytest.param(replace(SYNCED, serving_ok=False), "push_to", id="same-served-wrong"),
        pytest.param(replace(SYNCED, revision=9, digest="d9"), "push_to", id="behind"),
        pytest.param(replace(SYNCED, digest="other"), "push_to", id="digest-differs"),
        pytest.param(replace(SYNCED, revision=11), "push_to", id="ahead-same-epoch"),
        pytest.param(replace(SYNCED, epoch=2), "push_to", id="lower-epoch"),
        pytest.param(replace(SYNCED, epoch=2, serving_ok=True), "push_to",
                     id="lower-epoch-same-rev"),
        pytest.param(replace(SYNCED, reachable=False), "unreachable", id="down"),
        pytest.param(replace(SYNCED, epoch=4), "refuse", id="higher-epoch"),
    ],
)
def test_each_node_lands_in_one_bucket(node: NodeState, bucket: str) -> None:
    result = _one(node)
    buckets = {name: getattr(result, name) for name in
               ("push_to", "probe", "in_sync", "unreachable", "refuse")}
    assert {name for name, value in buckets.items() if value} == {bucket}
    assert buckets[bucket] == ("b1",)


def test_higher_epoch_fences_the_primary_and_stops_all_pushes() -> None:
    behind = replace(SYNCED, name="t1", revision=1, digest="d1")
    unprobed = replace(SYNCED, name="t2", serving_ok=None)
    new_primary = replace(SYNCED, name="b1", epoch=5)
    result = plan(PRIMARY, [behind, new_primary, unprobed, replace(SYNCED, name="t3", epoch=4)],
                  now=NOW, stale_after=STALE)
    assert result.step_down and result.step_down_to_epoch == 5
    assert result.refuse == ("b1", "t3")
    assert result.push_to == () and result.probe == ()


def test_without_higher_epoch_the_primary_keeps_its_role() -> None:
    behind = replace(SYNCED, name="t1", revision=1, digest="d1")
    result = plan(PRIMARY, [behind, SYNCED], now=NOW, stale_after=STALE)
    assert not result.step_down and result.step_down_to_epoch is None
    assert result.push_to == ("t1",) and result.in_sync == ("b1",)


def test_an_unreachable_node_with_a_higher_epoch_cannot_fence() -> None:
    # what it reported before going silent is not current: no step-down on hearsay
    result = _one(replace(SYNCED, reachable=False, epoch=9))
    assert not result.step_down and result.unreachable == ("b1",)


@pytest.mark.parametrize(
    ("last_sync", "stale"),
    [
        (RECENT, False),
        (NOW - STALE, False),  # exactly at the threshold: not yet stale
        (NOW - STALE - dt.timedelta(seconds=1), True),
        (None, True),  # never synced
    ],
)
def test_stale_is_by_age_of_last_successful_sync(
    last_sync: dt.datetime | None, stale: bool
) -> None:
    for node in (replace(SYNCED, last_sync=last_sync),
                 replace(SYNCED, last_sync=last_sync, reachable=False)):
        assert _one(node).stale == (("b1",) if stale else ())


def test_stale_does_not_change_what_is_pushed() -> None:
    old = replace(SYNCED, last_sync=NOW - dt.timedelta(days=1))
    result = _one(old)
    assert result.stale == ("b1",) and result.in_sync == ("b1",) and result.push_to == ()


@pytest.mark.parametrize(
    ("revisions", "epochs", "highest"),
    [
        ((10, 10), (3, 3), 10),
        ((9, 8), (3, 3), 10),
        ((12, 10), (3, 3), 12),  # a node ahead of the primary at its epoch
        ((99, 10), (2, 3), 10),  # a higher revision at an older epoch does not count
    ],
)
def test_highest_revision(revisions: tuple[int, int], epochs: tuple[int, int],
                          highest: int) -> None:
    nodes = [replace(SYNCED, name=f"n{i}", revision=r, epoch=e)
             for i, (r, e) in enumerate(zip(revisions, epochs, strict=True))]
    assert plan(PRIMARY, nodes, now=NOW, stale_after=STALE).highest_revision == highest


def test_no_other_nodes_is_an_empty_plan() -> None:
    assert plan(PRIMARY, [], now=NOW, stale_after=STALE) == Plan(highest_revision=10)


_states = st.builds(
    NodeState,
    name=st.text("abc", min_size=1, max_size=3),
    reachable=st.booleans(),
    epoch=st.integers(1, 4),
    revision=st.integers(8, 11),
    digest=st.sampled_from(["d10", "dx"]),
    last_sync=st.none() | st.sampled_from([RECENT, NOW - dt.timedelta(hours=1)]),
    serving_ok=st.none() | st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(others=st.lists(_states, max_size=6, unique_by=lambda s: s.name))
def test_every_node_is_in_exactly_one_action_bucket(others: list[NodeState]) -> None:
    result = plan(PRIMARY, others, now=NOW, stale_after=STALE)
    placed = [*result.push_to, *result.probe, *result.in_sync, *result.unreachable,
              *result.refuse]
    if result.step_down:
        # fenced: what would have been pushed or probed is dropped, nothing else moves
        assert not result.push_to and not result.probe
        assert set(placed) <= {s.name for s in others}
    else:
        assert sorted(placed) == sorted(s.name for s in others)
    # order follows the input
    order = [s.name for s in others]
    for bucket in (result.push_to, result.in_sync, result.stale):
        assert list(bucket) == [n for n in order if n in bucket]
    for name in result.in_sync:
        state = next(s for s in others if s.name == name)
        assert (state.epoch, state.revision, state.digest, state.serving_ok) == (
            3, 10, "d10", True)
