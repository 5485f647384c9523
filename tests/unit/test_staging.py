"""sync.staging.check_push: the receiver's checks on a push, one refusal per rule, each with
the accepted twin (the same push with only that one thing put right)."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from node.errors import CoverageError, TransferRejected
from node.formats import cert_sha256
from node.store_view import set_digest
from node.text import rfc3339
from sync.promotion import initial_promotion
from sync.staging import CheckedSet, KeptItem, Push, check_dates, check_push
from sync.transfer import TransferContext, UnwrappedItem, WrappedItem, wrap_item
from tests.pki import NOW, Issued, make_chain, make_key, make_leaf, make_root

CLUSTER = "6f1c1f64-7a0e-4a7e-9d3b-0c4f5f3a9e11"
RECIPIENT = ec.generate_private_key(ec.SECP256R1())
REQUIRED = ("support.example.com", "b1.example.com")
PKI = make_chain(sans=("support.example.com", "*.example.com"))
CHAIN = (PKI.intermediate.cert, PKI.root.cert)
OTHER = make_leaf(PKI.intermediate, ("other.example.com",), slot=5)


def _wrap(issued: Issued, chain: tuple[x509.Certificate, ...], *, name: str,
          is_default: bool, epoch: int = 1, revision: int = 4) -> WrappedItem:
    ctx = TransferContext(cluster_id=CLUSTER, epoch=epoch, revision=revision, sender="p1",
                          recipient="b1")
    return wrap_item(ctx, RECIPIENT.public_key(), name=name, key=issued.key, cert=issued.cert,
                     chain=chain, is_default=is_default, rng_bytes=os.urandom)


def _digest(keyed: list[x509.Certificate], chain: list[x509.Certificate],
            default: x509.Certificate | None) -> str:
    members = [(cert_sha256(c), True) for c in keyed] + [(cert_sha256(c), False) for c in chain]
    return set_digest(members, cert_sha256(default) if default is not None else None)


def _push(items: tuple[WrappedItem, ...], *, default: x509.Certificate | None,
          digest: str | None = None, force: bool = False) -> Push:
    return Push(
        promotion=initial_promotion(CLUSTER, "p1"), epoch=1, revision=4, sender="p1",
        items=items, default_sha256=cert_sha256(default) if default is not None else None,
        digest=digest or _digest([PKI.leaf.cert], list(CHAIN), default), force=force,
    )


def _check(push: Push, *, now: object = NOW, held: tuple[UnwrappedItem, ...] = ()) -> CheckedSet:
    return check_push(push, cluster_id=CLUSTER, recipient="b1", recipient_key=RECIPIENT,
                      required_names=REQUIRED, now=now, held=held)  # type: ignore[arg-type]


SITE = _wrap(PKI.leaf, CHAIN, name="site", is_default=True)
GOOD = _push((SITE,), default=PKI.leaf.cert)


def test_a_good_push_is_checked_into_entries() -> None:
    checked = _check(GOOD)
    assert checked.digest == GOOD.digest
    assert checked.default_sha256 == cert_sha256(PKI.leaf.cert)
    assert {cert_sha256(e.cert) for e in checked.entries} == {
        cert_sha256(c) for c in (PKI.leaf.cert, *CHAIN)}
    keyed = [e for e in checked.entries if e.key is not None]
    assert [cert_sha256(e.cert) for e in keyed] == [cert_sha256(PKI.leaf.cert)]
    assert [e.name for e in keyed] == ["site"]
    assert not checked.forced
    # the chain certificates are named after their CN
    assert {e.name for e in checked.entries if e.key is None} == {
        "Example Intermediate", "Example Root CA"}


def test_a_digest_that_is_not_the_announced_one_is_refused() -> None:
    with pytest.raises(TransferRejected, match=r"has digest .* not the announced"):
        _check(replace(GOOD, digest="0" * 64))


def test_a_default_other_than_the_one_announced_is_refused() -> None:
    with pytest.raises(TransferRejected, match=r"names default .* but its items mark"):
        _check(replace(GOOD, default_sha256=cert_sha256(OTHER.cert)))


def test_two_defaults_are_refused() -> None:
    second = _wrap(OTHER, CHAIN, name="other", is_default=True)
    push = _push((SITE, second), default=PKI.leaf.cert)
    with pytest.raises(TransferRejected, match="more than one certificate default"):
        _check(push)
    # twin: the same two items with one default pass (given the right digest)
    fixed = _push((SITE, _wrap(OTHER, CHAIN, name="other", is_default=False)),
                  default=PKI.leaf.cert,
                  digest=_digest([PKI.leaf.cert, OTHER.cert], list(CHAIN), PKI.leaf.cert))
    assert len([e for e in _check(fixed).entries if e.key is not None]) == 2


def test_a_broken_chain_is_refused() -> None:
    stranger = make_root("Stranger Root", slot=7)
    broken = _wrap(PKI.leaf, (stranger.cert,), name="site", is_default=True)
    push = _push((broken,), default=PKI.leaf.cert,
                 digest=_digest([PKI.leaf.cert], [stranger.cert], PKI.leaf.cert))
    with pytest.raises(TransferRejected, match="did not sign"):
        _check(push)


@pytest.mark.parametrize("delta", [timedelta(days=-2), timedelta(days=366)])
def test_a_certificate_not_valid_now_is_refused(delta: timedelta) -> None:
    with pytest.raises(TransferRejected, match="is not valid at"):
        _check(GOOD, now=NOW + delta)


def test_validity_edges() -> None:
    cert = PKI.leaf.cert
    check_dates([cert], cert.not_valid_before_utc, sender="p1")  # from its first second
    with pytest.raises(TransferRejected):
        check_dates([cert], cert.not_valid_after_utc, sender="p1")  # not at not_after
    with pytest.raises(TransferRejected):
        check_dates([cert], cert.not_valid_before_utc - timedelta(seconds=1), sender="p1")


def test_an_uncovering_default_is_refused_unless_forced() -> None:
    narrow = make_leaf(PKI.intermediate, ("support.example.com",), slot=6)
    item = _wrap(narrow, CHAIN, name="narrow", is_default=True)
    digest = _digest([narrow.cert], list(CHAIN), narrow.cert)
    push = _push((item,), default=narrow.cert, digest=digest)
    with pytest.raises(CoverageError, match=r"does not cover b1\.example\.com"):
        _check(push)
    forced = _check(replace(push, force=True))
    assert forced.forced
    assert forced.default_sha256 == cert_sha256(narrow.cert)


def test_a_push_without_default_is_refused_unless_forced() -> None:
    item = _wrap(PKI.leaf, CHAIN, name="site", is_default=False)
    push = _push((item,), default=None, digest=_digest([PKI.leaf.cert], list(CHAIN), None))
    with pytest.raises(CoverageError, match="has no default certificate"):
        _check(push)
    assert _check(replace(push, force=True)).default_sha256 is None


def test_a_blob_for_another_revision_does_not_open() -> None:
    replayed = _wrap(PKI.leaf, CHAIN, name="site", is_default=True, revision=3)
    with pytest.raises(TransferRejected, match="does not open"):
        _check(_push((replayed,), default=PKI.leaf.cert))


def test_held_members_count_as_if_they_had_travelled() -> None:
    held = UnwrappedItem(name="site", is_default=True, cert=PKI.leaf.cert, key=PKI.leaf.key,
                         chain=CHAIN)
    push = replace(GOOD, items=(), kept=(KeptItem(cert_sha256(PKI.leaf.cert), "site", True),))
    assert _check(push, held=(held,)).digest == GOOD.digest
    # twin: without the held item the same push lacks its default
    with pytest.raises(TransferRejected, match="names default"):
        _check(push)


# --------------------------------------------------------------------------- the exact words
# A refusal travels to the primary and the admin as text: its words are part of what is
# checked (the sender, the dates and the advice), and so is every field of a CheckedSet.


def test_every_field_of_a_checked_set_comes_from_the_push() -> None:
    item = _wrap(PKI.leaf, CHAIN, name="site", is_default=True, epoch=3, revision=9)
    push = replace(_push((item,), default=PKI.leaf.cert), epoch=3, revision=9)
    checked = _check(push)
    assert (checked.epoch, checked.revision, checked.sender) == (3, 9, "p1")


def test_a_chain_certificate_without_common_name_is_named_by_its_fingerprint() -> None:
    root = make_root(slot=11)
    key = make_key("ec-p256", slot=12)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "No CN CA")])
    inter = (x509.CertificateBuilder().subject_name(subject).issuer_name(root.cert.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(PKI.leaf.cert.not_valid_before_utc)
             .not_valid_after(PKI.leaf.cert.not_valid_after_utc)
             .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
             .sign(root.key, hashes.SHA256()))
    leaf = make_leaf(Issued(inter, key), ("support.example.com", "*.example.com"), slot=13)
    item = _wrap(leaf, (inter,), name="site", is_default=True)
    checked = _check(_push((item,), default=leaf.cert,
                           digest=_digest([leaf.cert], [inter], leaf.cert)))
    assert [e.name for e in checked.entries if e.key is None] == [cert_sha256(inter)[:16]]


def test_a_broken_chain_names_the_sender_and_the_advice() -> None:
    stranger = make_root("Stranger Root", slot=7)
    broken = _wrap(PKI.leaf, (stranger.cert,), name="site", is_default=True)
    push = replace(_push((broken,), default=PKI.leaf.cert,
                         digest=_digest([PKI.leaf.cert], [stranger.cert], PKI.leaf.cert)))
    with pytest.raises(TransferRejected) as err:
        _check(push)
    assert str(err.value) == (
        f"item 'site' from 'p1': {stranger.cert.subject.rfc4514_string()!r} did not sign "
        f"{PKI.leaf.cert.subject.rfc4514_string()!r}; the chain is broken, fix it on the primary")


def test_a_date_refusal_names_the_sender_the_time_and_the_validity() -> None:
    cert = PKI.leaf.cert
    late = cert.not_valid_after_utc
    with pytest.raises(TransferRejected) as err:
        check_dates([cert], late, sender="p7")
    assert str(err.value) == (
        f"certificate {cert_sha256(cert)!r} ({cert.subject.rfc4514_string()}) from 'p7' is not "
        f"valid at {rfc3339(late)} (valid {rfc3339(cert.not_valid_before_utc)} to "
        f"{rfc3339(cert.not_valid_after_utc)}); replace it on the primary, this node keeps "
        "serving what it had")
    # through check_push, the sender of the push is named
    with pytest.raises(TransferRejected, match="from 'p1' is not valid at"):
        _check(GOOD, now=NOW + timedelta(days=366))


def test_two_defaults_and_a_wrong_default_say_push_again_from_the_primary() -> None:
    second = _wrap(OTHER, CHAIN, name="other", is_default=True)
    with pytest.raises(TransferRejected) as err:
        _check(_push((SITE, second), default=PKI.leaf.cert))
    assert str(err.value) == ("the push from 'p1' marks more than one certificate default; "
                              "push again from the primary")
    with pytest.raises(TransferRejected) as err:
        _check(replace(GOOD, default_sha256=cert_sha256(OTHER.cert)))
    assert str(err.value) == (
        f"the push from 'p1' names default {cert_sha256(OTHER.cert)!r} but its items mark "
        f"{cert_sha256(PKI.leaf.cert)!r}; push again from the primary")


def test_coverage_refusals_list_every_name_in_text_and_report() -> None:
    item = _wrap(PKI.leaf, CHAIN, name="site", is_default=False)
    push = _push((item,), default=None, digest=_digest([PKI.leaf.cert], list(CHAIN), None))
    with pytest.raises(CoverageError) as err:
        _check(push)
    assert str(err.value) == ("the push from 'p1' has no default certificate, so "
                              "support.example.com, b1.example.com would be uncovered; set a "
                              "default on the primary")
    assert err.value.report == "support.example.com, b1.example.com"
    narrow = make_leaf(PKI.intermediate, ("other.example.org",), slot=6)
    pushed = _push((_wrap(narrow, CHAIN, name="narrow", is_default=True),), default=narrow.cert,
                   digest=_digest([narrow.cert], list(CHAIN), narrow.cert))
    with pytest.raises(CoverageError) as err:
        _check(pushed)
    assert str(err.value) == (
        f"the default certificate {cert_sha256(narrow.cert)!r} from 'p1' does not cover "
        "support.example.com, b1.example.com; replace it on the primary or replicate --force")
    assert err.value.report == "support.example.com, b1.example.com"
