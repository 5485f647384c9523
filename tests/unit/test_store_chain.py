"""node.store_chain: each stored certificate's chain over the whole store, with twins."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from node.store_chain import chain_state, chain_states
from node.store_view import CertRows, StoreView, role_of, row_to_cert
from node.text import stored_time
from tests.pki import NOW, make_chain, make_intermediate, make_leaf, make_root
from tests.unit.test_chain import _sha_chain


def _sha(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def view_of(certs: Sequence[x509.Certificate], keyed: Sequence[x509.Certificate] = (),
            default: x509.Certificate | None = None) -> StoreView:
    """A store view over ``certs`` (those in ``keyed`` with a key), as the store builds it."""
    rows = []
    for c in certs:
        der = c.public_bytes(serialization.Encoding.DER)
        has_key = c in keyed
        rows.append((_sha(c), der, "n", role_of(c, has_key), stored_time(c.not_valid_after_utc),
                     stored_time(NOW), has_key))
    meta = {"default_sha256": _sha(default) if default is not None else ""}
    return StoreView(meta=meta, cert_rows=CertRows(rows=tuple(rows),
                                                   load=lambda r: row_to_cert(r, None)[1]))


def test_the_chain_is_built_from_every_stored_certificate_in_any_order() -> None:
    pki = make_chain()
    leaf = pki.leaf.cert
    # stored one by one, the leaf first: the chain does not depend on one import's files
    view = view_of([leaf, pki.root.cert, pki.intermediate.cert], keyed=[leaf])
    state = chain_state(view, _sha(leaf))
    assert state.complete and state.problems == () and not state.missing_root
    assert [link.sha256 for link in state.links] == [
        _sha(leaf), _sha(pki.intermediate.cert), _sha(pki.root.cert)]
    assert [link.role for link in state.links] == ["identity", "intermediate", "root"]
    assert state.links[1].subject == pki.intermediate.cert.subject.rfc4514_string()
    assert state.sent == (_sha(pki.intermediate.cert),)  # the root is not sent
    assert state.root_sha256 == _sha(pki.root.cert)


def test_without_the_intermediate_the_issuer_is_missing() -> None:
    """Twin: the intermediate goes, the leaf's chain is incomplete (not a missing root)."""
    pki = make_chain(intermediate_cn="Example Intermediate CA")
    view = view_of([pki.leaf.cert, pki.root.cert], keyed=[pki.leaf.cert])
    state = chain_state(view, _sha(pki.leaf.cert))
    assert not state.complete and not state.missing_root
    assert len(state.problems) == 1
    assert "no certificate for issuer CN=Example Intermediate CA" in state.problems[0]
    assert state.sent == () and state.root_sha256 is None
    assert [link.sha256 for link in state.links] == [_sha(pki.leaf.cert)]


def test_a_missing_root_is_its_own_kind() -> None:
    pki = make_chain(root_cn="Example Root CA")
    view = view_of([pki.leaf.cert, pki.intermediate.cert], keyed=[pki.leaf.cert])
    state = chain_state(view, _sha(pki.leaf.cert))
    assert not state.complete and state.missing_root
    assert len(state.problems) == 1 and "root CA" in state.problems[0]
    assert "Example Root CA" in state.problems[0]
    assert state.sent == (_sha(pki.intermediate.cert),)  # what the endpoint has, it sends


def test_an_issuer_that_does_not_verify_is_named() -> None:
    pki = make_chain()
    # same subject as the intermediate, another key: the name matches, the signature not
    impostor = make_intermediate(pki.root, "Example Intermediate", slot=5).cert
    view = view_of([pki.leaf.cert, impostor, pki.root.cert], keyed=[pki.leaf.cert])
    state = chain_state(view, _sha(pki.leaf.cert))
    assert not state.complete and not state.missing_root
    assert "does not verify the signature" in state.problems[0]


def test_a_self_signed_identity_is_its_own_complete_chain() -> None:
    alone = make_leaf(None, ["solo.example.com"]).cert
    state = chain_state(view_of([alone], keyed=[alone]), _sha(alone))
    assert state.complete and state.problems == () and state.sent == ()
    assert [link.role for link in state.links] == ["identity"]


def test_state_follows_the_store_when_an_issuer_comes_or_goes() -> None:
    pki = make_chain()
    leaf = pki.leaf.cert
    before = chain_states(view_of([leaf, pki.root.cert], keyed=[leaf]))
    after = chain_states(view_of([leaf, pki.root.cert, pki.intermediate.cert], keyed=[leaf]))
    gone = chain_states(view_of([leaf, pki.intermediate.cert], keyed=[leaf]))
    assert not before[_sha(leaf)].complete
    assert after[_sha(leaf)].complete
    assert gone[_sha(leaf)].missing_root
    # every stored certificate has a state: the intermediate's chain ends at the root
    assert after[_sha(pki.intermediate.cert)].complete
    assert gone[_sha(pki.intermediate.cert)].missing_root
    assert after[_sha(pki.root.cert)].complete


def test_an_intermediate_alone_misses_its_root() -> None:
    root = make_root("Lonely Root")
    inter = make_intermediate(root, "Lonely Intermediate")
    state = chain_state(view_of([inter.cert]), _sha(inter.cert))
    assert state.missing_root and "Lonely Root" in state.problems[0]


@pytest.mark.parametrize("digest", ["sha1", "sha256"])
def test_a_sha1_chain_is_complete_and_names_the_weak_algorithm(tmp_path: Path,
                                                                digest: str) -> None:
    root, leaf = _sha_chain(tmp_path, digest)
    state = chain_state(view_of([leaf, root], keyed=[leaf]), _sha(leaf))
    assert state.complete and not state.missing_root
    weak = [p for p in state.problems if "weak algorithm" in p]
    if digest == "sha1":
        assert len(weak) == 2 and all("SHA1" in p for p in weak)
    else:  # twin: no problem at all
        assert state.problems == ()


def test_over_the_store_replaces_the_files_problems_by_the_stored_ones() -> None:
    from node.store_chain import over_the_store

    warnings = ["no certificate for issuer CN=I", "certificate X expired on ..."]
    assert over_the_store(warnings, ["no certificate for issuer CN=I"], []) == [
        "certificate X expired on ..."]
    assert over_the_store(warnings, ["no certificate for issuer CN=I"], ["root missing"]) == [
        "root missing", "certificate X expired on ..."]
    # twin: without an identity, the warnings stay as they are
    assert over_the_store(warnings, ["no certificate for issuer CN=I"], None) == warnings
