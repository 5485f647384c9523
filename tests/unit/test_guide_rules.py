"""The guide's rules that need no store (issue 11): subject notices, and what an import
of a certificate alone decides when the store holds its key (``linkable``) and when no
``--name`` is given."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography import x509

from node.create import Subject, create_csr, subject_notices
from node.errors import Conflict
from node.importing import plan_import
from node.model import Material
from node.sealing import spki
from tests.pki import make_chain, make_key

NOW = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cn", "sans", "moved", "advised"),
    [
        ("support.example.com", ["support.example.com", "b.example.com"], False, True),
        ("support.example.com", ["b.example.com", "support.example.com"], True, True),
        ("support.example.com", [], True, True),  # no SANs: the CN becomes the first
        ("Support Portal", ["support.example.com"], False, False),  # a title, no hostname
        ("10.0.0.1", ["10.0.0.1"], False, False),  # an IP literal is not a DNS name
    ],
)
def test_subject_notices(cn: str, sans: list[str], moved: bool, advised: bool) -> None:
    notes = subject_notices(Subject(common_name=cn), sans)
    assert any("put first" in n for n in notes) is moved
    assert any("clients ignore the CN" in n for n in notes) is advised
    assert all("\n" not in n for n in notes)


def test_the_cn_is_indeed_the_first_san_of_the_csr() -> None:
    key = make_key(fresh=True)
    csr = create_csr(key, Subject(common_name="support.example.com"), ["b.example.com"])
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["support.example.com", "b.example.com"]


def test_a_certificate_alone_can_be_default_when_the_store_holds_its_key() -> None:
    leaf = make_chain().leaf
    material = Material(certificates=(leaf.cert,))
    entries, sha, _ = plan_import(material, "", NOW, True, False,
                                  frozenset({spki(leaf.key.public_key())}))
    assert sha is not None and entries[0].key is None  # the store links it
    # twin: its key is nowhere, so it cannot be the default
    with pytest.raises(Conflict, match="without its private key"):
        plan_import(material, "", NOW, True, False, frozenset({b"another key"}))


def test_names_are_defaults_unless_asked_for() -> None:
    chain = make_chain()
    material = Material(certificates=(chain.leaf.cert, *chain.chain), keys=(chain.leaf.key,))
    entries, _, _ = plan_import(material, "", NOW, False, False)
    assert all(e.name_is_default for e in entries)
    entries, _, _ = plan_import(material, "Front door", NOW, False, False)
    assert [e.name_is_default for e in entries] == [False] + [True] * len(chain.chain)
    assert entries[0].name == "Front door"
