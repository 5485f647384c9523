"""node.chain, the edges a mutation run asked for (deploy/mutation.sh node/chain.py): the
chain-length bound at its boundary, the empty-name wording, which path wins among cross
signers, and the identity choice when several certificates could be it. Each with its twin.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from node.chain import ChainIndex, analyze, build_chain
from node.model import Material
from tests.pki import NOW, Issued, make_intermediate, make_key, make_leaf, make_root

#: a walk that loops forever fails within seconds instead of hanging (a mutation run would
#: count a run into its CPU limit as a survivor); "thread": Hypothesis catches and retries
#: the signal method's exception, so only ending the process stops a loop inside a property
pytestmark = pytest.mark.timeout(20, method="thread")


def _ladder(intermediates: int) -> tuple[Issued, list[Issued], Issued]:
    """root -> i1 -> ... -> iN -> leaf (EC keys from fixed slots: cheap)."""
    root = make_root("Ladder Root", slot=40)
    chain = [root]
    for i in range(intermediates):
        chain.append(make_intermediate(chain[-1], f"Ladder {i + 1}", slot=41 + i))
    leaf = make_leaf(chain[-1], ["ladder.example.com"], slot=60)
    return root, chain[1:], leaf


def test_ten_issuers_is_the_longest_complete_chain() -> None:
    root, inters, leaf = _ladder(9)  # 9 intermediates + the root: 10 issuers
    pool = [root.cert, *(i.cert for i in inters)]
    chain, problems = build_chain(leaf.cert, pool)
    assert problems == ()
    assert chain == (*(i.cert for i in reversed(inters)), root.cert)


def test_eleven_issuers_are_refused_as_too_long() -> None:
    root, inters, leaf = _ladder(10)  # 10 intermediates + the root: 11 issuers
    pool = [root.cert, *(i.cert for i in inters)]
    chain, problems = build_chain(leaf.cert, pool)
    assert problems == ("the chain is longer than 10 certificates",)
    assert chain == tuple(i.cert for i in reversed(inters))  # the first 10 issuers
    assert ChainIndex(pool).build(leaf.cert) == (chain, problems)


def _raw(subject: x509.Name, issuer: x509.Name, key: object, signer: object,
         ca: bool) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
        .public_key(key.public_key())  # type: ignore[attr-defined]  # any private key
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW).not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(signer, hashes.SHA256())  # type: ignore[arg-type]  # EC keys here


def test_an_empty_issuer_name_is_named_as_such() -> None:
    key = make_key(slot=61)
    leaf = _raw(x509.Name.from_rfc4514_string("CN=orphan"), x509.Name([]), key,
                make_key(slot=62), ca=False)
    assert build_chain(leaf, []) == ((), ("no certificate for issuer (empty name)",))
    # twin: a named issuer is named
    named = _raw(x509.Name.from_rfc4514_string("CN=orphan"),
                 x509.Name.from_rfc4514_string("CN=Somebody"), key, make_key(slot=62),
                 ca=False)
    assert build_chain(named, []) == ((), ("no certificate for issuer CN=Somebody",))


def test_a_wrong_key_issuer_is_reported_with_both_names() -> None:
    root = make_root("Named Root", slot=63)
    impostor = make_root("Named Root", slot=64)  # same name, other key
    leaf = make_leaf(root, ["w.example.com"], slot=65)
    chain, problems = build_chain(leaf.cert, [impostor.cert])
    assert chain == ()
    assert problems == ("the certificate for issuer CN=Named Root,O=Example Test PKI does not "
                        "verify the signature of CN=w.example.com",)


def test_among_cross_signers_the_path_to_a_present_root_wins() -> None:
    """The intermediate is signed by root A (absent) and cross-signed by root B (present):
    whichever order the pool has, the chain through B is the complete one."""
    root_a, root_b = make_root("Cross Root A", slot=66), make_root("Cross Root B", slot=67)
    inter_a = make_intermediate(root_a, "Cross Inter", slot=68)
    inter_b = Issued(make_intermediate(root_b, "Cross Inter", slot=68).cert, inter_a.key)
    leaf = make_leaf(inter_a, ["x.example.com"], slot=69)
    for pool in ([inter_a.cert, inter_b.cert, root_b.cert],
                 [inter_b.cert, inter_a.cert, root_b.cert]):
        assert build_chain(leaf.cert, pool) == ((inter_b.cert, root_b.cert), ())
    # twin: without root B, the longest path found is reported with its missing root
    chain, problems = build_chain(leaf.cert, [inter_a.cert, inter_b.cert])
    assert chain == (inter_a.cert,)
    assert problems == ("no certificate for issuer CN=Cross Root A,O=Example Test PKI",)


def test_the_longer_broken_path_is_the_one_reported() -> None:
    """Two dead ends: directly under an absent root, or one level deeper; the deeper one is
    reported, whatever the pool order."""
    root_a = make_root("Deep Root A", slot=70)
    root_b = make_root("Deep Root B", slot=71)
    mid_b = make_intermediate(root_b, "Deep Mid", slot=72)
    inter_a = make_intermediate(root_a, "Deep Inter", slot=73)
    inter_b = Issued(make_intermediate(mid_b, "Deep Inter", slot=73).cert, inter_a.key)
    leaf = make_leaf(inter_a, ["y.example.com"], slot=74)
    for pool in ([inter_a.cert, inter_b.cert, mid_b.cert],
                 [inter_b.cert, mid_b.cert, inter_a.cert]):
        chain, problems = build_chain(leaf.cert, pool)
        assert chain == (inter_b.cert, mid_b.cert)
        assert problems == ("no certificate for issuer CN=Deep Root B,O=Example Test PKI",)


def test_the_end_entity_the_key_matches_wins_over_an_earlier_one() -> None:
    root = make_root("Pick Root", slot=75)
    first = make_leaf(root, ["first.example.com"], slot=76)
    second = make_leaf(root, ["second.example.com"], slot=77)
    report = analyze(Material(certificates=(first.cert, second.cert, root.cert),
                              keys=(second.key,)))
    assert (report.identity, report.key_matches) == (second.cert, second.cert)
    assert report.ordered == (second.cert, root.cert, first.cert)
    assert report.roles == ("identity", "root", "identity")
    # twin: without a key, the first end-entity certificate is the identity
    report = analyze(Material(certificates=(first.cert, second.cert, root.cert)))
    assert (report.identity, report.key_matches) == (first.cert, None)


def test_a_key_for_a_ca_certificate_makes_it_the_identity_without_end_entities() -> None:
    root = make_root("Keyed Root", slot=78)
    inter = make_intermediate(root, "Keyed Inter", slot=79)
    report = analyze(Material(certificates=(root.cert, inter.cert), keys=(inter.key,)))
    assert (report.identity, report.key_matches) == (inter.cert, inter.cert)
    assert report.complete and report.chain == (root.cert,)
    assert report.roles == ("identity", "root")
    # twin: a key matching nothing leaves only CA certificates: no identity
    report = analyze(Material(certificates=(root.cert, inter.cert), keys=(make_key(slot=80),)))
    assert report.identity is None and report.key_matches is None
    assert report.problems == ("no identity (end-entity) certificate in the input",)


def test_an_end_entity_without_its_key_is_still_the_identity_when_the_key_is_for_a_ca() -> None:
    root = make_root("Mixed Root", slot=81)
    leaf = make_leaf(root, ["m.example.com"], slot=82)
    report = analyze(Material(certificates=(root.cert, leaf.cert), keys=(root.key,)))
    assert (report.identity, report.key_matches) == (leaf.cert, root.cert)


def test_nothing_at_all_says_there_is_no_certificate() -> None:
    report = analyze(Material(certificates=()))
    assert report.problems == ("no certificate in the input",)
    assert (report.identity, report.complete, report.ordered) == (None, False, ())


def _self_signed_ca(cn: str, key: object) -> x509.Certificate:
    subject = x509.Name.from_rfc4514_string(f"CN={cn}")
    return _raw(subject, subject, key, key, ca=True)


def test_at_the_bound_a_later_self_signed_issuer_still_completes() -> None:
    """Ten issuers up, the 10th candidate in pool order is not a root, the next one with the
    same name and key is: the search goes on to it (at the bound, only that path stops)."""
    root, inters, leaf = _ladder(10)
    top = inters[0]  # "Ladder 1": the 10th issuer from the leaf
    top_root = _raw(top.cert.subject, top.cert.subject, top.key, top.key, ca=True)
    pool = [*(i.cert for i in inters), top_root, root.cert]
    chain, problems = build_chain(leaf.cert, pool)
    assert problems == ()
    assert chain == (*(i.cert for i in reversed(inters[1:])), top_root)


def test_at_the_bound_the_first_too_long_path_is_kept() -> None:
    """Two non-root candidates at the 10th level: the first in pool order is reported."""
    _root, inters, leaf = _ladder(10)
    top = inters[0]
    other_root = make_root("Ladder Other Root", slot=83)
    top_other = Issued(make_intermediate(other_root, "Ladder 1", slot=41).cert, top.key)
    assert top_other.cert.subject == top.cert.subject
    for first, second in ((top.cert, top_other.cert), (top_other.cert, top.cert)):
        pool = [*(i.cert for i in inters[1:]), first, second]
        chain, problems = build_chain(leaf.cert, pool)
        assert problems == ("the chain is longer than 10 certificates",)
        assert chain[-1] is first


def test_a_dead_end_two_levels_deep_does_not_stop_the_search() -> None:
    """First candidate: X_a <- M_a <- (absent); second: X_b <- root_b (present)."""
    absent = make_root("Two Absent", slot=84)
    mid_a = make_intermediate(absent, "Two Mid A", slot=85)
    root_b = make_root("Two Root B", slot=86)
    x_a = make_intermediate(mid_a, "Two X", slot=87)
    x_b = Issued(make_intermediate(root_b, "Two X", slot=87).cert, x_a.key)
    leaf = make_leaf(x_a, ["two.example.com"], slot=88)
    chain, problems = build_chain(leaf.cert, [x_a.cert, x_b.cert, mid_a.cert, root_b.cert])
    assert (chain, problems) == ((x_b.cert, root_b.cert), ())


def test_a_root_found_two_levels_deep_ends_the_search() -> None:
    """First candidate: X_b <- M_b <- root_b (present); second: X_a <- (absent)."""
    absent = make_root("Deep2 Absent", slot=89)
    root_b = make_root("Deep2 Root B", slot=90)
    mid_b = make_intermediate(root_b, "Deep2 Mid B", slot=91)
    x_a = make_intermediate(absent, "Deep2 X", slot=92)
    x_b = Issued(make_intermediate(mid_b, "Deep2 X", slot=92).cert, x_a.key)
    leaf = make_leaf(x_a, ["deep2.example.com"], slot=93)
    chain, problems = build_chain(leaf.cert, [x_b.cert, x_a.cert, mid_b.cert, root_b.cert])
    assert (chain, problems) == ((x_b.cert, mid_b.cert, root_b.cert), ())


def test_equally_long_dead_ends_report_the_first_found() -> None:
    absent_a, absent_b = make_root("Tie Absent A", slot=94), make_root("Tie Absent B", slot=95)
    x_a = make_intermediate(absent_a, "Tie X", slot=96)
    x_b = Issued(make_intermediate(absent_b, "Tie X", slot=96).cert, x_a.key)
    leaf = make_leaf(x_a, ["tie.example.com"], slot=97)
    for first, second, missing in ((x_a, x_b, "Tie Absent A"), (x_b, x_a, "Tie Absent B")):
        chain, problems = build_chain(leaf.cert, [first.cert, second.cert])
        assert chain == (first.cert,)
        assert problems == (f"no certificate for issuer CN={missing},O=Example Test PKI",)


def test_a_self_signed_ca_naming_only_an_ip_is_the_identity() -> None:
    key = make_key(slot=98)
    subject = x509.Name.from_rfc4514_string("CN=10.0.0.9")
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(NOW).not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("10.0.0.9"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    report = analyze(Material(certificates=(cert,)))
    assert report.identity == cert and report.complete
    # twin: the same CA naming nothing is a root, and there is no identity
    bare = _self_signed_ca("10.0.0.9", key)
    assert analyze(Material(certificates=(bare,))).identity is None


def test_without_an_identity_the_report_keeps_the_input_and_the_key() -> None:
    root = make_root("Report Root", slot=99)
    stray = make_key(slot=100)
    report = analyze(Material(certificates=(root.cert,), keys=(stray,)))
    assert report.ordered == (root.cert,) and report.roles == ("root",)
    assert report.chain == () and report.complete is False
    assert report.key is stray and report.key_matches is None
