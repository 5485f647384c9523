"""node.coverage_gate: which required names a would-be default leaves uncovered, what a
background change would break, and the sentences the admin reads."""

from __future__ import annotations

import pytest
from cryptography import x509

from node.coverage_gate import (
    RequiredName,
    broken_by,
    describe,
    forced_notice,
    gate_refusal,
    uncovered,
)
from tests.pki import make_leaf

REQUIRED = (
    RequiredName("support.example.com", ("p1", "b1", "t1")),
    RequiredName("p1.example.com", ("p1",)),
    RequiredName("t1.atlas.example.com", ("t1",)),
)


def _cert(*sans: str) -> x509.Certificate:
    return make_leaf(None, sans=list(sans)).cert


@pytest.mark.parametrize(
    ("sans", "missing"),
    [
        (("support.example.com", "*.example.com", "*.atlas.example.com"), []),
        (("support.example.com", "*.example.com"), ["t1.atlas.example.com"]),
        (("*.atlas.example.com",), ["support.example.com", "p1.example.com"]),
        (("*.com",), ["support.example.com", "p1.example.com", "t1.atlas.example.com"]),
    ],
)
def test_uncovered_lists_the_names_the_default_leaves_out(sans: tuple[str, ...],
                                                         missing: list[str]) -> None:
    assert [r.hostname for r in uncovered(_cert(*sans), REQUIRED)] == missing


def test_no_default_leaves_every_name_and_no_names_need_nothing() -> None:
    assert uncovered(None, REQUIRED) == REQUIRED
    assert uncovered(None, ()) == ()
    assert uncovered(_cert("x.example.org"), ()) == ()


def test_broken_by_counts_only_names_the_current_default_covers() -> None:
    wide = _cert("support.example.com", "*.example.com", "*.atlas.example.com")
    site = _cert("support.example.com", "*.example.com")
    narrower = _cert("support.example.com")
    assert [r.hostname for r in broken_by(wide, site, REQUIRED)] == ["t1.atlas.example.com"]
    assert broken_by(site, site, REQUIRED) == ()  # a renewal of an uncovering default
    assert [r.hostname for r in broken_by(site, narrower, REQUIRED)] == ["p1.example.com"]
    assert broken_by(None, narrower, REQUIRED) == ()  # nothing was covered before


def test_sentences_name_every_name_with_its_nodes_and_every_check() -> None:
    assert describe(REQUIRED[:2]) == (
        "support.example.com (nodes p1, b1, t1), p1.example.com (node p1)")
    err = gate_refusal("making abc the default", REQUIRED[2:])
    assert err.exit_code == 1 and err.report == "t1.atlas.example.com"
    assert "t1.atlas.example.com (node t1)" in str(err) and "--force" in str(err)
    assert forced_notice(["expiry"], ()) == "--force overrode the expiry check"
    assert forced_notice(["expiry", "coverage"], REQUIRED[2:]) == (
        "--force overrode the expiry, coverage checks (uncovered: t1.atlas.example.com "
        "(node t1))")
