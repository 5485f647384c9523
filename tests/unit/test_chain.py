"""node.chain: roles, identity choice, chain building and completeness (dates never count)."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from hypothesis import given, settings
from hypothesis import strategies as st

from node.chain import analyze, build_chain, classify, is_self_signed
from node.model import KEY_TYPES, KeyType, Material, PrivateKey
from tests.pki import (
    NOW,
    Pki,
    key_pem,
    make_chain,
    make_intermediate,
    make_key,
    make_leaf,
    make_root,
)

ROOT_PROBLEM = "no certificate for issuer CN=Example Root CA,O=Example Test PKI"
INTERMEDIATE_PROBLEM = "no certificate for issuer CN=Example Intermediate,O=Example Test PKI"


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_chain("ec-p256", sans=["support.example.com"])


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_complete_chain_every_key_type_in_any_input_order(key_type: KeyType) -> None:
    chain = make_chain(key_type, ca_key_type=key_type)
    shuffled = (chain.root.cert, chain.leaf.cert, chain.intermediate.cert)
    report = analyze(Material(certificates=shuffled, keys=(chain.leaf.key,)))
    assert report.ordered == (chain.leaf.cert, chain.intermediate.cert, chain.root.cert)
    assert report.roles == ("identity", "intermediate", "root")
    assert report.identity == chain.leaf.cert
    assert report.chain == chain.chain
    assert report.complete
    assert report.problems == ()
    assert report.key_matches == chain.leaf.cert


@pytest.mark.parametrize(
    ("drop", "problem"),
    [("intermediate", INTERMEDIATE_PROBLEM), ("root", ROOT_PROBLEM)],
)
def test_missing_link_is_named(pki: Pki, drop: str, problem: str) -> None:
    cas = {"intermediate": pki.intermediate.cert, "root": pki.root.cert}
    certs = [pki.leaf.cert] + [c for n, c in cas.items() if n != drop]
    report = analyze(Material(certificates=tuple(certs)))
    assert not report.complete
    assert report.problems == (problem,)
    assert report.identity == pki.leaf.cert


def test_issuer_with_the_right_name_but_wrong_key_does_not_complete(pki: Pki) -> None:
    impostor = make_intermediate(pki.root, key_type="ec-p256", slot=7)  # same name, other key
    report = analyze(Material(certificates=(pki.leaf.cert, impostor.cert, pki.root.cert)))
    assert not report.complete
    assert "does not verify the signature of CN=support.example.com" in report.problems[0]
    # twin: with the real intermediate also present, the verifying one is chosen
    report = analyze(
        Material(certificates=(pki.leaf.cert, impostor.cert, pki.intermediate.cert, pki.root.cert))
    )
    assert report.complete
    assert report.chain == pki.chain
    assert report.ordered[-1] == impostor.cert  # unrelated certificates come last


@pytest.mark.parametrize("ca", [False, None, True])
def test_self_signed_identity_is_its_own_complete_chain(ca: bool | None) -> None:
    # ca=True is what `openssl req -x509` makes with its default config
    leaf = make_leaf(None, ["box.example.com"], ca=ca, slot=3)
    report = analyze(Material(certificates=(leaf.cert,), keys=(leaf.key,)))
    assert report.identity == leaf.cert
    assert report.roles == ("identity",)
    assert report.complete
    assert report.chain == ()


def test_self_signed_ca_naming_hosts_without_key_is_the_identity() -> None:
    # `openssl req -x509 -addext subjectAltName=...` alone: a self-signed server certificate
    leaf = make_leaf(None, ["box.example.com"], ca=True, slot=3)
    report = analyze(Material(certificates=(leaf.cert,)))
    assert report.identity == leaf.cert
    assert report.roles == ("identity",)
    assert report.complete


def test_self_signed_ca_without_host_names_is_a_root_not_an_identity(pki: Pki) -> None:
    report = analyze(Material(certificates=(pki.root.cert,)))
    assert report.identity is None
    assert report.roles == ("root",)
    assert not report.complete


def test_self_signed_ca_naming_hosts_that_issued_another_is_a_root() -> None:
    ca = make_leaf(None, ["ca.example.com"], ca=True, slot=3)
    child = make_leaf(ca, ["box.example.com"], ca=True, slot=4)
    report = analyze(Material(certificates=(ca.cert,)))
    assert report.identity == ca.cert  # twin: alone it is a self-signed server certificate
    report = analyze(Material(certificates=(ca.cert, child.cert)))
    assert report.identity is None
    assert report.roles == ("root", "intermediate")


@pytest.mark.parametrize(
    ("material_of", "problem"),
    [
        (lambda p: Material(certificates=(p.intermediate.cert, p.root.cert)), "no identity"),
        (lambda p: Material(), "no certificate"),
        (lambda p: Material(keys=(p.leaf.key,)), "no certificate"),
    ],
)
def test_no_identity_is_incomplete_and_says_so(pki: Pki, material_of, problem: str) -> None:  # type: ignore[no-untyped-def]  # lambda table
    report = analyze(material_of(pki))
    assert report.identity is None
    assert not report.complete
    assert problem in report.problems[0]


def test_dates_never_affect_completeness() -> None:
    expired = make_chain(
        "ec-p256", not_before=NOW - timedelta(days=800), not_after=NOW - timedelta(days=400)
    )
    future = make_chain(
        "ec-p256", not_before=NOW + timedelta(days=400), not_after=NOW + timedelta(days=800)
    )
    for chain in (expired, future):
        report = analyze(Material(certificates=(chain.leaf.cert, *chain.chain)))
        assert report.complete


def test_identity_is_the_end_entity_the_key_matches(pki: Pki) -> None:
    other = make_leaf(pki.intermediate, ["other.example.com"], slot=4)
    report = analyze(
        Material(certificates=(pki.leaf.cert, other.cert, *pki.chain), keys=(other.key,))
    )
    assert report.identity == other.cert
    assert report.key_matches == other.cert
    assert report.ordered == (other.cert, *pki.chain, pki.leaf.cert)
    # twin: without a key the first end-entity certificate wins
    report = analyze(Material(certificates=(pki.leaf.cert, other.cert, *pki.chain)))
    assert report.identity == pki.leaf.cert
    assert report.key is None
    assert report.key_matches is None


def test_key_matching_no_certificate_is_reported(pki: Pki) -> None:
    stray = make_key("ec-p256", slot=5)
    report = analyze(Material(certificates=(pki.leaf.cert, *pki.chain), keys=(stray,)))
    assert report.key is stray
    assert report.key_matches is None
    assert report.identity == pki.leaf.cert


@pytest.mark.parametrize(
    ("cert_of", "role", "self_signed"),
    [
        (lambda p: p.root.cert, "root", True),
        (lambda p: p.intermediate.cert, "intermediate", False),
        (lambda p: p.leaf.cert, "identity", False),
        (lambda p: make_leaf(None, ["a.example.com"], ca=None).cert, "root", True),  # v1-like
        (lambda p: make_leaf(p.intermediate, ["a.example.com"], ca=None).cert, "identity", False),
        (lambda p: make_leaf(None, ["a.example.com"], ca=False).cert, "identity", True),
    ],
)
def test_classify(pki: Pki, cert_of, role: str, self_signed: bool) -> None:  # type: ignore[no-untyped-def]  # lambda table
    cert = cert_of(pki)
    assert classify(cert) == role
    assert is_self_signed(cert) is self_signed


def test_self_issued_but_signed_by_another_key_is_not_self_signed() -> None:
    own, other = make_key("ec-p256", slot=14), make_key("ec-p256", slot=15)
    forged = _signed("Twin CA", "Twin CA", own, other)
    assert forged.issuer == forged.subject
    assert not is_self_signed(forged)
    assert classify(forged) == "intermediate"
    # twin: signed by its own key it is self-signed, a root
    genuine = _signed("Twin CA", "Twin CA", own, own)
    assert is_self_signed(genuine)
    assert classify(genuine) == "root"


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_is_self_signed_every_key_type(key_type: KeyType) -> None:
    root = make_root(key_type=key_type)
    assert is_self_signed(root.cert)
    leaf = make_leaf(root, key_type=key_type)
    assert not is_self_signed(leaf.cert)


def _signed(subject: str, issuer: str, public: PrivateKey, signer: PrivateKey) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string(f"CN={subject}"))
        .issuer_name(x509.Name.from_rfc4514_string(f"CN={issuer}"))
        .public_key(public.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(signer, hashes.SHA256())
    )


def test_signature_loop_terminates() -> None:
    a_key, b_key = make_key("ec-p256", slot=10), make_key("ec-p256", slot=11)
    a = _signed("Loop A", "Loop B", a_key, b_key)  # B signs A
    b = _signed("Loop B", "Loop A", b_key, a_key)  # A signs B
    leaf = _signed("leaf", "Loop A", make_key("ec-p256"), a_key)
    chain, problems = build_chain(leaf, [a, b])
    assert chain == (a, b)
    assert problems == ("no certificate for issuer CN=Loop A",)
    assert classify(a) == "intermediate"


@settings(max_examples=25, deadline=None)
@given(order=st.permutations(range(4)))
def test_property_input_order_never_changes_the_verdict(order: list[int]) -> None:
    chain = _PROPERTY_PKI
    stray = _PROPERTY_STRAY
    certs = (chain.leaf.cert, chain.intermediate.cert, chain.root.cert, stray.cert)
    report = analyze(Material(certificates=tuple(certs[i] for i in order), keys=(chain.leaf.key,)))
    assert report.identity == chain.leaf.cert
    assert report.chain == chain.chain
    assert report.complete
    assert report.ordered[:3] == (chain.leaf.cert, *chain.chain)


_PROPERTY_PKI = make_chain("ec-p256")
_PROPERTY_STRAY = make_leaf(None, ["stray.example.com"], slot=8)


def _openssl(command: str) -> None:
    subprocess.run(["openssl", *command.split()], check=True, capture_output=True, timeout=60)


def test_real_v1_certificates_from_openssl(tmp_path: Path) -> None:
    """openssl x509 -req writes v1 (no extensions): self-signed -> root, CA-signed -> identity."""
    ca_key, leaf_key = make_key("ec-p256", slot=12), make_key("ec-p256", slot=13)
    (tmp_path / "ca.key").write_bytes(key_pem(ca_key))
    (tmp_path / "leaf.key").write_bytes(key_pem(leaf_key))
    d = tmp_path
    for name in ("ca", "leaf"):
        _openssl(f"req -new -key {d}/{name}.key -subj /CN=v1-{name} -out {d}/{name}.csr")
    _openssl(f"x509 -req -in {d}/ca.csr -signkey {d}/ca.key -days 9 -out {d}/ca.pem")
    _openssl(
        f"x509 -req -in {d}/leaf.csr -CA {d}/ca.pem -CAkey {d}/ca.key -set_serial 7 -days 9 "
        f"-out {d}/leaf.pem"
    )
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    leaf = x509.load_pem_x509_certificate((tmp_path / "leaf.pem").read_bytes())
    assert ca.version == x509.Version.v1
    assert (classify(ca), classify(leaf)) == ("root", "identity")
    report = analyze(Material(certificates=(ca, leaf), keys=(leaf_key,)))
    assert report.ordered == (leaf, ca)
    assert report.complete
    # twin: without its CA the v1 leaf's chain is incomplete
    assert not analyze(Material(certificates=(leaf,))).complete


# ---------------------------------------------------------------- toolkit cases (issue 11)


def _sha_chain(tmp_path: Path, digest: str) -> tuple[x509.Certificate, x509.Certificate]:
    """An RSA root and a leaf it signed, both signed with ``digest``, made by openssl."""
    d = tmp_path
    _openssl(
        f"req -x509 -{digest} -newkey rsa:2048 -nodes -keyout {d}/root.key -out {d}/root.pem "
        f"-days 9 -subj /CN={digest}-root -addext basicConstraints=critical,CA:TRUE"
    )
    _openssl(f"req -new -newkey rsa:2048 -nodes -keyout {d}/leaf.key -out {d}/leaf.csr "
             f"-subj /CN={digest}-leaf.example.com")
    (d / "ext").write_text("subjectAltName=DNS:leaf.example.com\nbasicConstraints=CA:FALSE\n")
    _openssl(
        f"x509 -req -{digest} -in {d}/leaf.csr -CA {d}/root.pem -CAkey {d}/root.key "
        f"-set_serial 5 -days 9 -extfile {d}/ext -out {d}/leaf.pem"
    )
    load = x509.load_pem_x509_certificate
    return load((d / "root.pem").read_bytes()), load((d / "leaf.pem").read_bytes())


@pytest.mark.parametrize("digest", ["sha1", "sha256"])
def test_legacy_signatures_verify_and_are_named_weak(tmp_path: Path, digest: str) -> None:
    root, leaf = _sha_chain(tmp_path, digest)
    assert is_self_signed(root) and classify(root) == "root"
    report = analyze(Material(certificates=(root, leaf)))
    assert report.identity == leaf and report.ordered == (leaf, root)
    assert report.roles == ("identity", "root")
    assert report.complete
    weak = [p for p in report.problems if "weak algorithm" in p]
    if digest == "sha1":  # both signatures on the chain are named
        assert len(weak) == 2 and all("SHA1" in p for p in weak)
    else:  # twin: a SHA-256 chain has no such problem
        assert report.problems == ()


def test_a_legacy_signature_by_the_wrong_key_still_does_not_verify(tmp_path: Path) -> None:
    """Negative twin of the SHA-1 path: the direct check is a real signature check."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    root, leaf = _sha_chain(tmp_path / "a", "sha1")
    other_root, _ = _sha_chain(tmp_path / "b", "sha1")  # same names, another key
    assert not analyze(Material(certificates=(leaf, other_root))).complete
    assert analyze(Material(certificates=(leaf, root))).complete


def test_v3_self_signed_without_basic_constraints_is_an_identity() -> None:
    alone = make_leaf(None, ["solo.example.com"], ca=None).cert
    assert alone.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    report = analyze(Material(certificates=(alone,)))
    assert report.roles == ("identity",) and report.identity == alone and report.complete
    assert classify(alone, [alone]) == "identity"


def test_self_signed_without_basic_constraints_that_signed_another_is_a_root() -> None:
    """Twin: the same kind of certificate is a root once it has signed something here."""
    issuer = make_leaf(None, ["issuer.example.com"], ca=None)
    leaf = make_leaf(issuer, ["signed.example.com"], ca=False, slot=1).cert
    assert classify(issuer.cert, [issuer.cert, leaf]) == "root"
    report = analyze(Material(certificates=(issuer.cert, leaf)))
    assert report.identity == leaf and report.roles == ("identity", "root") and report.complete
