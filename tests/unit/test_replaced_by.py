"""``node.renewal.replaced_by``: which stored certificates a renewal supersedes.

It compares within groups of same-named certificates (O(N)); the property test checks it
against the rule applied to every pair (O(N^2)), which is the definition.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from node.linking import IssuerId, takes_over
from node.renewal_plan import Replacements, replaced_by
from node.store_view import StoredCert

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SameCa = Callable[[StoredCert, StoredCert], bool]
NAME_SETS = (("a.example.com",), ("A.example.com.",), ("a.example.com", "b.example.com"), ())
#: issuers by certificate number (issue 11: a renewal comes from the same issuing CA)
ISSUERS = (IssuerId("CN=CA 1", b"k1"), IssuerId("CN=CA 1", None), IssuerId("CN=CA 2", b"k2"),
           IssuerId("CN=CA 1", b"k3"))


def _issuer(c: StoredCert) -> IssuerId:
    return ISSUERS[int(c.sha256, 16) % len(ISSUERS)] if c.name.startswith("x") else ISSUERS[0]


def _cert(i: int, names: tuple[str, ...], days: int, has_key: bool,
          prefix: str = "c") -> StoredCert:
    return StoredCert(sha256=f"{i:064x}", name=f"{prefix}{i}", der=b"", role="identity",
                      has_key=has_key, is_default=False, dns_names=names, ip_addresses=(),
                      not_after=T0 + timedelta(days=days), added_at=T0)


def _any_ca(_new: StoredCert, _old: StoredCert) -> bool:
    return True


def _pairwise(certs: list[StoredCert], same_ca: SameCa = _any_ca) -> dict[str, str]:
    keyed = [c for c in certs if c.has_key and c.dns_names]
    out = {}
    for old in keyed:
        newer = [c for c in keyed
                 if takes_over(c.dns_names, c.not_after, _issuer(c),
                               old.dns_names, old.not_after, _issuer(old))]
        if newer:
            out[old.sha256] = max(newer, key=lambda c: c.not_after).sha256
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(NAME_SETS), st.integers(0, 5), st.booleans()),
                max_size=12))
def test_replaced_by_is_the_pairwise_rule(spec: list[tuple[tuple[str, ...], int, bool]]) -> None:
    certs = [_cert(i, names, days, key) for i, (names, days, key) in enumerate(spec)]
    assert replaced_by(certs, _issuer) == _pairwise(certs)


def test_replaced_by_examples() -> None:
    old = _cert(1, ("a.example.com",), 1, True)
    new = _cert(2, ("A.EXAMPLE.COM",), 2, True)
    same_day = _cert(3, ("a.example.com",), 1, True)
    other_names = _cert(4, ("b.example.com",), 9, True)
    keyless = _cert(5, ("a.example.com",), 9, False)
    assert replaced_by([old, new, same_day, other_names, keyless], _issuer) == {
        old.sha256: new.sha256, same_day.sha256: new.sha256}
    # negative twin: nothing later with the same names, nothing replaced
    assert replaced_by([old, same_day, other_names, keyless], _issuer) == {}


def test_a_later_certificate_from_another_issuing_ca_replaces_nothing() -> None:
    # numbers 1..3 of prefix "x" are CA 1 without key id, CA 2, CA 1 with key k3
    old = _cert(4, ("a.example.com",), 1, True, prefix="x")  # CA 1, k1
    other_ca = _cert(2, ("a.example.com",), 9, True, prefix="x")  # CA 2
    other_key = _cert(3, ("a.example.com",), 9, True, prefix="x")  # CA 1, key k3
    unknown_key = _cert(1, ("a.example.com",), 9, True, prefix="x")  # CA 1, no key id
    assert replaced_by([old, other_ca], _issuer) == {}
    assert replaced_by([old, other_key], _issuer) == {}
    # the twin: the same issuer name when one side does not say its key is the same CA
    assert replaced_by([old, unknown_key], _issuer) == {old.sha256: unknown_key.sha256}


_CHANGE = st.tuples(st.integers(min_value=0, max_value=7),  # which certificate
                    st.one_of(st.none(),  # gone
                              st.tuples(st.sampled_from(NAME_SETS), st.integers(0, 40),
                                        st.booleans(), st.integers(0, 3))))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_CHANGE, min_size=1, max_size=4), min_size=1, max_size=8))
def test_replacements_carried_over_equal_replaced_by(steps: list[list[Any]]) -> None:
    """After every change, the answer updated from the last one is replaced_by's answer over
    the certificates now stored (in the store's order: added_at, then sha256)."""
    stored: dict[str, StoredCert] = {}
    kept = Replacements.of([], _issuer)
    for step in steps:
        changed = set()
        for i, spec in step:
            sha = f"{i:064x}"
            changed.add(sha)
            if spec is None:
                stored.pop(sha, None)
                continue
            names, days, has_key, at = spec
            stored[sha] = dataclasses.replace(
                _cert(i, names, days, has_key, prefix="x" if i % 2 else "c"),
                added_at=T0 + timedelta(hours=at))
        kept = kept.updated(changed, stored.get)
        ordered = sorted(stored.values(), key=lambda c: (c.added_at, c.sha256))
        assert kept.replaced == replaced_by(ordered, _issuer)
        assert Replacements.of(ordered, _issuer).replaced == kept.replaced
