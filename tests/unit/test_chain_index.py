"""node.chain.ChainIndex gives exactly build_chain's answer, for any pool and order."""

from __future__ import annotations

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from node.chain import ChainIndex, build_chain
from tests.pki import make_cross_signed_pool

#: a walk that loops forever fails within seconds instead of hanging (a mutation run would
#: count a run into its CPU limit as a survivor); "thread": Hypothesis catches and retries
#: the signal method's exception, so only ending the process stops a loop inside a property
pytestmark = pytest.mark.timeout(20, method="thread")


MATERIAL = [m.cert for m in make_cross_signed_pool("Index", "index.example")]


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
