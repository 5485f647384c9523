"""``node.renewal.replaced_by``: which stored certificates a renewal supersedes.

It compares within groups of same-named certificates (O(N)); the property test checks it
against the rule applied to every pair (O(N^2)), which is the definition.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from node.lifecycle import supersedes
from node.renewal_plan import replaced_by, same_ca_in
from node.store_view import StoredCert

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SameCa = Callable[[StoredCert, StoredCert], bool]
NAME_SETS = (("a.example.com",), ("A.example.com.",), ("a.example.com", "b.example.com"), ())


def _cert(i: int, names: tuple[str, ...], days: int, has_key: bool) -> StoredCert:
    return StoredCert(sha256=f"{i:064x}", name=f"c{i}", der=b"", role="identity",
                      has_key=has_key, is_default=False, dns_names=names, ip_addresses=(),
                      not_after=T0 + timedelta(days=days), added_at=T0)


def _any_ca(_new: StoredCert, _old: StoredCert) -> bool:
    return True


def _pairwise(certs: list[StoredCert], same_ca: SameCa = _any_ca) -> dict[str, str]:
    keyed = [c for c in certs if c.has_key and c.dns_names]
    out = {}
    for old in keyed:
        newer = [c for c in keyed
                 if supersedes(c.dns_names, c.not_after, old.dns_names, old.not_after)
                 and same_ca(c, old)]
        if newer:
            out[old.sha256] = max(newer, key=lambda c: c.not_after).sha256
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(NAME_SETS), st.integers(0, 5), st.booleans(),
                          st.integers(0, 1)), max_size=12))
def test_replaced_by_is_the_pairwise_rule(
    spec: list[tuple[tuple[str, ...], int, bool, int]]
) -> None:
    certs = [_cert(i, names, days, key) for i, (names, days, key, _ca) in enumerate(spec)]
    ca_of = {c.sha256: ca for c, (*_rest, ca) in zip(certs, spec, strict=True)}

    def same_ca(new: StoredCert, old: StoredCert) -> bool:
        return ca_of[new.sha256] == ca_of[old.sha256]

    assert replaced_by(certs, same_ca=same_ca) == _pairwise(certs, same_ca)


def test_replaced_by_examples() -> None:
    old = _cert(1, ("a.example.com",), 1, True)
    new = _cert(2, ("A.EXAMPLE.COM",), 2, True)
    same_day = _cert(3, ("a.example.com",), 1, True)
    other_names = _cert(4, ("b.example.com",), 9, True)
    keyless = _cert(5, ("a.example.com",), 9, False)
    assert replaced_by([old, new, same_day, other_names, keyless], same_ca=_any_ca) == {
        old.sha256: new.sha256, same_day.sha256: new.sha256}
    # negative twin: nothing later with the same names, nothing replaced
    assert replaced_by([old, same_day, other_names, keyless], same_ca=_any_ca) == {}
    # negative twin: the later one is from another CA
    assert replaced_by([old, new], same_ca=lambda n, o: n is not new) == {}


def test_same_ca_in_reads_the_stored_chains() -> None:
    """A renewal from the same CA replaces; a self-signed look-alike and another CA's leaf
    with the same names and a later expiry do not (their chains end in other roots)."""
    from tests.pki import make_chain, make_leaf
    from tests.unit.test_store_chain import view_of

    old = make_chain(sans=["a.example.com"], not_after=T0 + timedelta(days=20))
    renewal = make_leaf(old.intermediate, ["a.example.com"], not_after=T0 + timedelta(days=90),
                        slot=3).cert
    lookalike = make_leaf(None, ["a.example.com"], not_after=T0 + timedelta(days=90),
                          slot=4).cert
    other = make_chain(sans=["a.example.com"], not_after=T0 + timedelta(days=90),
                       root_cn="Other Root CA", intermediate_cn="Other Intermediate").leaf.cert
    ca = [old.root.cert, old.intermediate.cert]

    def replaced(new: x509.Certificate, *extra: x509.Certificate) -> bool:
        certs = [old.leaf.cert, new, *ca, *extra]
        view = view_of(certs, keyed=[old.leaf.cert, new])
        found = replaced_by(list(view.certs), same_ca=same_ca_in(view))
        return bool(found)

    assert replaced(renewal)
    assert not replaced(lookalike)
    other_chain = make_chain(root_cn="Other Root CA", intermediate_cn="Other Intermediate")
    assert not replaced(other, other_chain.root.cert, other_chain.intermediate.cert)
