"""node.selection.SniBuilder: the index kept up to date over changes of the served set is
the one SniIndex.build makes of that set from scratch."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from node.names import SanSet
from node.selection import SniBuilder, SniEntry, SniIndex

T0 = dt.datetime(2026, 12, 3, tzinfo=dt.UTC)
DNS = ("a.example.com", "A.Example.com", "*.example.com", "b.example.com", "*.b.example.com",
       "*.com", "bad..name", "c.example.org")
IPS = ("192.0.2.1", "2001:db8::1", "not-an-ip")
#: names a client may send: every SAN's host, names under the wildcards, misses
ASKED = (None, "a.example.com", "A.EXAMPLE.COM.", "x.example.com", "b.example.com",
         "y.b.example.com", "c.example.org", "192.0.2.1", "2001:db8::1", "zz.example.net", "")

_ENTRY = st.builds(
    lambda key, dns, ips, days: SniEntry(key, SanSet(tuple(dns), tuple(ips)),
                                         T0 + dt.timedelta(days=days)),
    st.sampled_from("pqrstu"), st.lists(st.sampled_from(DNS), max_size=3),
    st.lists(st.sampled_from(IPS), max_size=2), st.integers(0, 3))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.dictionaries(st.sampled_from("pqrstu"), _ENTRY, max_size=6),
                          st.sampled_from([None, "p", "q", "zz"]), st.booleans()),
                min_size=1, max_size=8))
def test_builder_answers_as_build(steps: list[tuple[dict[str, SniEntry], str | None, bool]]
                                  ) -> None:
    builder = SniBuilder()
    served: dict[str, SniEntry] = {}
    for entries, default, keep in steps:
        # the same objects for keys that stay (what the endpoint hands over), or new ones
        served = {k: (served[k] if keep and k in served else SniEntry(k, e.sans, e.not_after))
                  for k, e in entries.items()}
        builder.update(served)
        got, want = builder.index(default), SniIndex.build(served.values(), default)
        for table in ("_exact", "_wild", "_ip"):
            assert getattr(got, table) == getattr(want, table)
        for name in ASKED:
            assert got.lookup(name) == want.lookup(name)


def test_a_name_goes_with_its_last_certificate() -> None:
    """A positive case and its twin: the name answers while one certificate has it."""
    one = SniEntry("p", SanSet(("a.example.com",)), T0)
    two = SniEntry("q", SanSet(("a.example.com",)), T0 + dt.timedelta(days=1))
    builder = SniBuilder()
    builder.update({"p": one, "q": two})
    assert builder.index(None).lookup("a.example.com").key == "q"
    builder.update({"p": one})
    assert builder.index(None).lookup("a.example.com").key == "p"
    builder.update({})
    assert builder.index("d").lookup("a.example.com").reason == "default"
