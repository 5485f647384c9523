"""sync.promotion: signed promotions, verified against the cluster CA. Every accept has twins."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.errors import PermissionDenied
from sync import pki
from sync.promotion import (
    Promotion,
    decode_promotion,
    encode_promotion,
    highest_verified,
    initial_promotion,
    promotion_bytes,
    sign_promotion,
    verify_promotion,
)
from tests.pki import der_with_bad_version

NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Cluster:
    cluster_id: str
    ca: pki.Issued
    admin: pki.Issued
    node: pki.Issued


def _cluster() -> Cluster:
    cluster_id = str(uuid.uuid4())
    ca = pki.make_ca(cluster_id, now=NOW, key=pki.new_key())
    return Cluster(
        cluster_id=cluster_id,
        ca=ca,
        admin=pki.issue_admin(ca, "admin", now=NOW, key=pki.new_key()),
        node=pki.issue_node(ca, "b1", now=NOW, key=pki.new_key()),
    )


OURS = _cluster()
OTHER = _cluster()


def _signed(by: pki.Issued = OURS.admin, *, cluster: Cluster = OURS, epoch: int = 2,
            primary: str = "b1") -> Promotion:
    return sign_promotion(cluster_id=cluster.cluster_id, epoch=epoch, primary=primary,
                          admin_cert=by.cert, admin_key=by.key)


def _verify(p: Promotion) -> None:
    verify_promotion(p, ca_cert=OURS.ca.cert, cluster_id=OURS.cluster_id, initial_primary="p1")


def test_an_admin_signed_promotion_verifies() -> None:
    _verify(_signed())
    _verify(_signed(epoch=17, primary="t3"))


def test_epoch_one_is_the_topology_primary_unsigned() -> None:
    _verify(initial_promotion(OURS.cluster_id, "p1"))


_REFUSED: list[tuple[str, Callable[[], Promotion]]] = [
    ("other-cluster-admin", lambda: _signed(OTHER.admin, cluster=OTHER)),
    ("other-ca-same-cluster-id", lambda: replace(
        _signed(OTHER.admin, cluster=OTHER), cluster_id=OURS.cluster_id)),
    ("node-identity-signs", lambda: _signed(OURS.node)),
    ("epoch-altered", lambda: replace(_signed(), epoch=3)),
    ("primary-altered", lambda: replace(_signed(), primary="t1")),
    ("cluster-altered", lambda: replace(_signed(), cluster_id=OTHER.cluster_id)),
    ("signature-dropped", lambda: replace(_signed(), signature=b"")),
    ("signature-of-other-promotion", lambda: replace(
        _signed(), signature=_signed(primary="t1").signature)),
    ("no-admin-cert", lambda: replace(_signed(), admin_cert_der=b"")),
    # cryptography raises InvalidVersion, not a ValueError, for this one
    ("admin-cert-bad-version", lambda: replace(
        _signed(), admin_cert_der=der_with_bad_version(OURS.admin.cert))),
    ("ca-cert-as-signer", lambda: _signed(OURS.ca)),
    ("epoch-one-other-primary", lambda: initial_promotion(OURS.cluster_id, "b1")),
    ("epoch-one-signed-copy", lambda: replace(_signed(), epoch=1)),
    ("epoch-zero", lambda: replace(_signed(), epoch=0)),
]


@pytest.mark.parametrize("make", [m for _, m in _REFUSED], ids=[i for i, _ in _REFUSED])
def test_refused_promotions(make: Callable[[], Promotion]) -> None:
    with pytest.raises(PermissionDenied):
        _verify(make())


def test_signing_epoch_one_is_refused() -> None:
    with pytest.raises(PermissionDenied, match="epoch 1"):
        _signed(epoch=1)


def test_canonical_bytes_separate_fields() -> None:
    # ("ab", 1, "c") and ("a", 1, "bc")-like shifts must never produce the same bytes
    assert promotion_bytes("x", 12, "p") != promotion_bytes("x", 1, "2p")
    with pytest.raises(PermissionDenied):
        promotion_bytes("x\0", 1, "p")


def test_encode_decode_round_trip_keeps_it_valid() -> None:
    p = _signed(epoch=5, primary="t2")
    back = decode_promotion(encode_promotion(p))
    assert back == p
    _verify(back)


@pytest.mark.parametrize("text", ["", "{}", "[1]", '{"cluster_id": "x", "epoch": "nope"}',
                                  '{"cluster_id":"x","epoch":2,"primary":"b","admin_cert":"!",'
                                  '"signature":""}'])
def test_decode_garbage_is_refused(text: str) -> None:
    with pytest.raises(PermissionDenied):
        decode_promotion(text)


@settings(max_examples=25, deadline=None)
@given(epoch=st.integers(min_value=2, max_value=2**40),
       primary=st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True),
       other=st.integers(min_value=2, max_value=2**40))
def test_signature_binds_epoch(epoch: int, primary: str, other: int) -> None:
    p = _signed(epoch=epoch, primary=primary)
    _verify(p)
    if other != epoch:
        with pytest.raises(PermissionDenied):
            _verify(replace(p, epoch=other))


# --------------------------------------------------------------------------- highest_verified


def _highest(*promotions: Promotion) -> Promotion | None:
    return highest_verified(promotions, ca_cert=OURS.ca.cert, cluster_id=OURS.cluster_id,
                            initial_primary="p1")


def test_highest_verified_takes_the_highest_epoch_that_verifies() -> None:
    initial = initial_promotion(OURS.cluster_id, "p1")
    two, three = _signed(epoch=2, primary="b1"), _signed(epoch=3, primary="t1")
    assert _highest(initial, three, two) == three
    assert _highest(initial, two) == two
    assert _highest(initial) == initial


@pytest.mark.parametrize("forged", ["other-cluster-admin", "node-signed", "epoch-1-other"])
def test_highest_verified_ignores_an_epoch_nobody_can_prove(forged: str) -> None:
    """Twin: a higher epoch that does not verify does not win."""
    initial = initial_promotion(OURS.cluster_id, "p1")
    two = _signed(epoch=2)
    bad = {
        "other-cluster-admin": _signed(OTHER.admin, epoch=9),
        "node-signed": _signed(OURS.node, epoch=9),
        "epoch-1-other": initial_promotion(OURS.cluster_id, "b1"),
    }[forged]
    assert _highest(initial, two, bad) == two
    assert _highest(bad) is None
