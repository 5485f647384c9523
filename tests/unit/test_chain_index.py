"""node.chain.ChainIndex gives exactly build_chain's answer, for any pool and order."""

from __future__ import annotations

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from node.chain import ChainIndex, build_chain
from tests.pki import Issued, make_intermediate, make_key, make_leaf, make_root

#: a walk that loops forever fails within seconds instead of hanging (a mutation run would
#: count a run into its CPU limit as a survivor); "thread": Hypothesis catches and retries
#: the signal method's exception, so only ending the process stops a loop inside a property
pytestmark = pytest.mark.timeout(20, method="thread")


def _material() -> list[x509.Certificate]:
    root_a = make_root("Index Root A", slot=1)
    root_b = make_root("Index Root B", slot=3)
    inter = make_intermediate(root_a, "Index Intermediate", slot=2)
    # the same intermediate (subject and key) cross-signed by root B: two candidate issuers
    cross = Issued(make_intermediate(root_b, "Index Intermediate", slot=2).cert, inter.key)
    deep = make_intermediate(inter, "Index Deep", slot=4)
    absent = make_root("Index Absent Root", slot=9)
    leaves = [
        make_leaf(inter, ["a.index.example"], key=make_key(slot=5)),
        make_leaf(deep, ["b.index.example"], key=make_key(slot=6)),
        make_leaf(cross, ["c.index.example"], key=make_key(slot=7)),
        make_leaf(None, ["self.index.example"], key=make_key(slot=8)),
        # names an issuer that is not in any pool
        make_leaf(absent, ["d.index.example"], key=make_key(slot=10)),
    ]
    return [root_a.cert, root_b.cert, inter.cert, cross.cert, deep.cert, *(x.cert for x in leaves)]


MATERIAL = _material()


@settings(max_examples=60, deadline=None)
@given(st.permutations(MATERIAL), st.integers(min_value=1, max_value=len(MATERIAL)))
def test_index_answers_as_build_chain(order: list[x509.Certificate], size: int) -> None:
    pool = order[:size]
    index = ChainIndex(pool)
    for cert in MATERIAL:  # members of the pool and certificates outside it
        assert index.build(cert) == build_chain(cert, pool)


def test_index_finds_a_chain_and_misses_without_its_issuers() -> None:
    """A positive case and its negative twin, checked against fixed expectations."""
    root_a, _root_b, inter, _cross, deep, _a, leaf_b, *_ = MATERIAL
    chain, problems = ChainIndex(MATERIAL).build(leaf_b)
    assert chain == (deep, inter, root_a) and problems == ()
    chain, problems = ChainIndex([root_a, leaf_b]).build(leaf_b)
    assert chain == () and problems and "no certificate for issuer" in problems[0]
