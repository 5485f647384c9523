"""sync.promotion's fencing rules: who may push at which epoch, and which promotion a node
adopts. Each refusal has its accepted twin, at the edge of the comparison."""

from __future__ import annotations

import pytest

from node.errors import Conflict, PermissionDenied, StaleEpoch
from sync.promotion import Promotion, is_newer, sender_refusal

CLUSTER = "6f1c1f64-7a0e-4a7e-9d3b-0c4f5f3a9e11"


def _promotion(epoch: int, primary: str) -> Promotion:
    return Promotion(cluster_id=CLUSTER, epoch=epoch, primary=primary, admin_cert_der=b"",
                     signature=b"")


@pytest.mark.parametrize(
    ("epoch", "primary", "current_epoch", "current_primary", "adopt"),
    [
        (3, "b1", 2, "b1", True),  # higher epoch, same primary
        (3, "t1", 2, "b1", True),  # higher epoch, another primary
        (2, "b1", 2, "b1", False),  # the same promotion again: nothing to do
        (1, "p1", 2, "b1", False),  # lower epoch (p1's old one): fenced, never adopted
        (1, "p1", 3, "b1", False),  # far lower
        (2, "b1", 1, "p1", True),  # the twin of the fenced case: one epoch higher adopts
    ],
)
def test_only_a_strictly_higher_epoch_is_adopted(
    epoch: int, primary: str, current_epoch: int, current_primary: str, adopt: bool
) -> None:
    assert is_newer(_promotion(epoch, primary), epoch=current_epoch,
                    primary=current_primary) is adopt


def test_the_same_epoch_with_another_primary_is_a_conflict() -> None:
    with pytest.raises(Conflict, match="epoch 2 already belongs to 'b1', not 't1'"):
        is_newer(_promotion(2, "t1"), epoch=2, primary="b1")


@pytest.mark.parametrize(
    ("kind", "name", "epoch", "error", "message"),
    [
        ("admin", "admin", 2, PermissionDenied, "admin 'admin' may not call Stage"),
        ("node", "p1", 1, StaleEpoch, "pushes at epoch 1, but this node is at epoch 2"),
        ("node", "t1", 2, PermissionDenied, "node 't1' is not the primary of epoch 2"),
        ("node", "b1", 3, PermissionDenied, "node 'b1' is not the primary of epoch 2"),
    ],
)
def test_a_push_from_anyone_but_the_primary_of_this_epoch_is_refused(
    kind: str, name: str, epoch: int, error: type[Exception], message: str
) -> None:
    refusal = sender_refusal(kind, name, "Stage", epoch, current_epoch=2, current_primary="b1")
    assert isinstance(refusal, error)
    assert message in str(refusal)


def test_the_stale_epoch_refusal_carries_both_epochs() -> None:
    refusal = sender_refusal("node", "p1", "Activate", 1, current_epoch=2, current_primary="b1")
    assert isinstance(refusal, StaleEpoch)
    assert (refusal.data["epoch"], refusal.data["current"]) == (1, 2)
    assert "(primary 'b1')" in str(refusal)


def test_the_primary_of_this_epoch_is_accepted() -> None:
    """The twin of every refusal above."""
    assert sender_refusal("node", "b1", "Stage", 2, current_epoch=2, current_primary="b1") is None
