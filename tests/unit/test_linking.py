"""``node.linking``: the store-wide link model, renewals by issuing CA, delete dependents,
the CSR digest (issue 11). Tables with a negative twin per rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from node.linking import (
    IssuerId,
    KeyHolder,
    Link,
    LinkCandidate,
    dependents,
    describe_link,
    issuer_of,
    plan_links,
    requests_digest,
    takes_over,
)
from tests.pki import make_chain, make_root

T0 = datetime(2026, 1, 1, tzinfo=UTC)
K1, K2 = b"spki-1", b"spki-2"
CA = IssuerId("CN=Example Intermediate CA", b"ki")


# ------------------------------------------------------------------ plan_links


def test_a_keyless_certificate_links_to_a_csr_key_with_its_public_key() -> None:
    links = plan_links([LinkCandidate("leaf", K1)], [KeyHolder("csr", "r1", K1)])
    assert links == [Link("leaf", KeyHolder("csr", "r1", K1))]
    # twin: a key nowhere in the store links nothing
    assert plan_links([LinkCandidate("leaf", K2)], [KeyHolder("csr", "r1", K1)]) == []


def test_a_certificate_key_is_preferred_to_a_csr_key_whatever_the_order() -> None:
    holders = [KeyHolder("csr", "r1", K1), KeyHolder("cert", "old", K1)]
    for order in (holders, holders[::-1]):
        assert plan_links([LinkCandidate("renewal", K1)], order) == [
            Link("renewal", KeyHolder("cert", "old", K1))]


def test_among_equals_the_first_holder_wins() -> None:
    holders = [KeyHolder("csr", "r1", K1), KeyHolder("csr", "r2", K1)]
    assert plan_links([LinkCandidate("c", K1)], holders)[0].source.ref == "r1"
    assert plan_links([LinkCandidate("c", K1)], holders[::-1])[0].source.ref == "r2"


def test_a_certificate_with_its_key_is_not_linked_again() -> None:
    holders = [KeyHolder("cert", "a", K1), KeyHolder("csr", "r1", K1)]
    assert plan_links([LinkCandidate("a", K1)], holders) == []
    # twin: another certificate with that key is
    assert [k.cert_sha256 for k in plan_links([LinkCandidate("b", K1)], holders)] == ["b"]


def test_several_candidates_link_once_each() -> None:
    candidates = [LinkCandidate("a", K1), LinkCandidate("b", K2), LinkCandidate("a", K1)]
    holders = [KeyHolder("csr", "r1", K1), KeyHolder("csr", "r2", K2)]
    assert [(k.cert_sha256, k.source.ref) for k in plan_links(candidates, holders)] == [
        ("a", "r1"), ("b", "r2")]


def test_the_link_notice_names_request_or_certificate() -> None:
    assert "request r1" in describe_link(Link("a" * 64, KeyHolder("csr", "r1", K1)))
    assert "fulfilled" in describe_link(Link("a" * 64, KeyHolder("csr", "r1", K1)))
    line = describe_link(Link("a" * 64, KeyHolder("cert", "b" * 64, K1)))
    assert "b" * 64 in line and "request" not in line and "\n" not in line


# ------------------------------------------------------------------ takes_over

NAMES = ("support.example.com", "*.example.com")


@pytest.mark.parametrize(
    ("new_names", "days", "issuer", "expected"),
    [
        (NAMES, 30, CA, True),  # a renewal
        (("SUPPORT.example.com.", "*.example.com"), 30, CA, True),  # names compare loosely
        (NAMES, 30, IssuerId(CA.name, None), True),  # one side without key id: the name
        (NAMES, 0, CA, False),  # the same expiry is no renewal
        (NAMES, -1, CA, False),  # an earlier one neither
        (("support.example.com",), 30, CA, False),  # other names
        (NAMES, 30, IssuerId("CN=Other CA", b"ki"), False),  # another issuing CA
        (NAMES, 30, IssuerId(CA.name, b"other key"), False),  # same name, another key
        ((), 30, CA, False),  # no names: nothing to take over
    ],
)
def test_takes_over(new_names: tuple[str, ...], days: int, issuer: IssuerId,
                    expected: bool) -> None:
    old_names = NAMES if new_names else ()
    assert takes_over(new_names, T0 + timedelta(days=days), issuer,
                      old_names, T0, CA) is expected


def test_issuer_of_reads_name_and_authority_key_id() -> None:
    chain = make_chain(sans=["support.example.com"])
    got = issuer_of(chain.leaf.cert)
    assert got.name == chain.leaf.cert.issuer.rfc4514_string()
    assert got.key_id is None  # tests.pki sets no authority key identifier
    ski = x509.SubjectKeyIdentifier.from_public_key(chain.intermediate.key.public_key())
    with_aki = (x509.CertificateBuilder().subject_name(chain.leaf.cert.subject)
                .issuer_name(chain.leaf.cert.issuer).public_key(chain.leaf.key.public_key())
                .serial_number(7).not_valid_before(T0).not_valid_after(T0 + timedelta(days=1))
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                    ski), critical=False)
                .sign(chain.intermediate.key, hashes.SHA256()))
    assert issuer_of(with_aki) == IssuerId(got.name, ski.digest)
    other = make_chain(sans=["support.example.com"], intermediate_cn="Other Intermediate")
    assert not got.same(issuer_of(other.leaf.cert))  # twin: another issuer
    root = make_root("Bare Root")
    assert issuer_of(root.cert).name == root.cert.subject.rfc4514_string()


# ------------------------------------------------------------------ dependents


def test_the_intermediate_the_default_needs_is_a_dependency() -> None:
    chains = {"leaf": ["leaf", "int", "root"], "other": ["other", "int2"]}
    assert dependents("int", chains, "leaf") == ["leaf (the default) needs it in its chain"]
    assert dependents("int2", chains, "leaf") == [
        "other (an identity certificate with a key) needs it in its chain"]
    # twin: a certificate nothing needs
    assert dependents("stray", chains, "leaf") == []


def test_the_default_depends_on_itself_and_a_leaf_not_on_itself() -> None:
    chains = {"leaf": ["leaf", "int"]}
    assert dependents("leaf", chains, "leaf") == ["leaf is the default certificate"]
    assert dependents("leaf", chains, None) == []


# ------------------------------------------------------------------ requests_digest


def test_the_requests_digest_follows_ids_and_states_not_order() -> None:
    a = requests_digest([("r1", None), ("r2", "sha")])
    assert a == requests_digest([("r2", "sha"), ("r1", None)])
    assert a != requests_digest([("r1", None), ("r2", None)])  # a state changed
    assert a != requests_digest([("r1", None)])  # one went
    assert requests_digest([]) != a
