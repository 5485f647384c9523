"""The SNI selection index (node.selection): table tests and a brute-force reference."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.errors import HostnameError
from node.names import SanSet, check_coverage, parse_hostname
from node.selection import Selection, SniEntry, SniIndex

T0 = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


def entry(key: str, *dns: str, ips: tuple[str, ...] = (), days: int = 0) -> SniEntry:
    return SniEntry(key, SanSet(dns_names=dns, ip_addresses=ips), T0 + dt.timedelta(days=days))


SITE = entry("site", "support.example.com", "www.example.com", days=10)
WILD = entry("wild", "*.example.com", days=400)  # expires later, still loses to exact
ATLAS = entry("atlas", "*.atlas.example.com", "atlas.example.com")
IDN = entry("idn", "bücher.example", "*.xn--bcher-kva.example")
IPS = entry("ips", "10.0.0.1", ips=("10.0.0.2", "2001:db8::1"))  # DNS SAN "10.0.0.1": ignored
PSL = entry("psl", "*.co.uk", "*.com", "example.org.")  # SANs that cover nothing
INDEX = SniIndex.build([SITE, WILD, ATLAS, IDN, IPS, PSL], default="dflt")


@pytest.mark.parametrize(
    ("server_name", "key", "reason"),
    [
        ("support.example.com", "site", "exact"),
        ("SUPPORT.Example.COM", "site", "exact"),
        ("support.example.com.", "site", "exact"),
        ("www.example.com", "site", "exact"),  # exact beats a later-expiring wildcard
        ("other.example.com", "wild", "wildcard"),
        ("Other.Example.com.", "wild", "wildcard"),
        ("a-b.example.com", "wild", "wildcard"),
        ("xn--bcher-kva.example.com", "wild", "wildcard"),  # A-label under a wildcard
        ("bücher.example.com", "wild", "wildcard"),  # U-label under a wildcard
        ("atlas.example.com", "atlas", "exact"),  # the apex by its own exact SAN
        ("t1.atlas.example.com", "atlas", "wildcard"),  # the closest parent only
        ("bücher.example", "idn", "exact"),
        ("xn--bcher-kva.example", "idn", "exact"),
        ("XN--BCHER-KVA.EXAMPLE.", "idn", "exact"),
        ("www.bücher.example", "idn", "wildcard"),
        ("10.0.0.2", "ips", "exact"),  # an IP literal by its iPAddress SAN
        ("2001:DB8::0:1", "ips", "exact"),
        # the default: no SNI, no match, or not a hostname
        (None, "dflt", "default"),
        ("", "dflt", "default"),
        ("example.com", "dflt", "default"),  # a wildcard never covers the apex
        ("a.b.example.com", "dflt", "default"),  # one label only
        ("x.atlas.example.org", "dflt", "default"),
        ("10.0.0.1", "dflt", "default"),  # a DNS SAN never covers an IP
        ("10.0.0.2.", "dflt", "default"),
        ("foo.co.uk", "dflt", "default"),  # wildcard over a public suffix
        ("foo.com", "dflt", "default"),
        ("example.org", "dflt", "default"),  # SAN ending in a dot
        ("*.example.com", "dflt", "default"),
        ("-x.example.com", "dflt", "default"),
        ("ab--cd.example.com", "dflt", "default"),
        ("xn--a.example.com", "dflt", "default"),  # bad Punycode under a wildcard
        ("a..example.com", "dflt", "default"),
        (".example.com", "dflt", "default"),
        ("support.example.com..", "dflt", "default"),
        ("foo_bar.example.com", "dflt", "default"),
        ("x" * 64 + ".example.com", "dflt", "default"),
        (("a" * 60 + ".") * 4 + "example.com", "dflt", "default"),  # over 253 octets
        ("[::1]", "dflt", "default"),
        ("foo:bar", "dflt", "default"),
        ("\x00", "dflt", "default"),
        ("\udcff.example.com", "dflt", "default"),
    ],
)
def test_lookup(server_name: str | None, key: str, reason: str) -> None:
    want = Selection(key, reason)  # type: ignore[arg-type]  # literal from the table
    assert INDEX.resolve(server_name) == want
    assert INDEX.lookup(server_name) == want
    assert INDEX.lookup(server_name) == want  # again, from the memo


def test_no_default_gives_none() -> None:
    index = SniIndex.build([SITE], default=None)
    assert index.lookup("nothing.example.net") == Selection(None, "default")
    assert index.lookup(None) == Selection(None, "default")
    assert index.lookup("support.example.com") == Selection("site", "exact")  # twin


def test_empty_index() -> None:
    index = SniIndex.build([], default="d")
    assert index.lookup("support.example.com") == Selection("d", "default")
    assert index.default == Selection("d", "default")


@pytest.mark.parametrize("kind", ["exact", "wildcard"])
def test_later_not_after_wins_then_smallest_key(kind: str) -> None:
    san = "support.example.com" if kind == "exact" else "*.example.com"
    entries = [
        entry("bbb", san, days=5),
        entry("ccc", san, days=30),
        entry("aaa", san, days=1),
        entry("ddd", san, days=30),  # tie with ccc on not_after: ccc (smaller key) wins
    ]
    for order in itertools.permutations(entries):
        index = SniIndex.build(order, default=None)
        assert index.lookup("support.example.com") == Selection("ccc", kind)  # type: ignore[arg-type]  # parametrized literal
    # negative twin: without the later ones, the next best wins
    index = SniIndex.build(entries[:1] + entries[2:3], default=None)
    assert index.lookup("support.example.com") == Selection("bbb", kind)  # type: ignore[arg-type]  # parametrized literal


def test_exact_beats_wildcard_whatever_the_dates() -> None:
    entries = [entry("w", "*.example.com", days=999), entry("e", "a.example.com")]
    index = SniIndex.build(entries, None)
    assert index.lookup("a.example.com") == Selection("e", "exact")
    assert index.lookup("b.example.com") == Selection("w", "wildcard")


def test_lookup_on_server_built_with_real_certificate_sans() -> None:
    """The same SAN in two spellings lands on one key."""
    index = SniIndex.build(
        [entry("one", "Support.Example.COM", days=1), entry("two", "support.example.com", days=2)],
        default=None,
    )
    assert index.lookup("support.example.com") == Selection("two", "exact")


# --------------------------------------------------------------------------- properties


def reference(entries: list[SniEntry], default: str | None, name: str | None) -> Selection:
    """Brute force: check_coverage on every certificate, then the same preference order."""
    if not name:
        return Selection(default, "default")
    try:
        host = parse_hostname(name)
    except HostnameError:
        return Selection(default, "default")
    exact: list[SniEntry] = []
    wild: list[SniEntry] = []
    for e in entries:
        c = check_coverage(e.sans, host)
        if c.covered:
            (wild if c.kind == "wildcard" else exact).append(e)
    for group, reason in ((exact, "exact"), (wild, "wildcard")):
        if group:
            latest = max(e.not_after for e in group)
            best = min(e.key for e in group if e.not_after == latest)
            return Selection(best, reason)  # type: ignore[arg-type]  # one of two literals
    return Selection(default, "default")


LABELS = ["a", "www", "t1", "xn--bcher-kva", "bücher", "Mixed", "ab-c", "1"]
PARENTS = ["example.com", "atlas.example.com", "co.uk", "example.co.uk", "github.io", "com"]


@st.composite
def dns_san(draw: st.DrawFn) -> str:
    parent = draw(st.sampled_from(PARENTS))
    form = draw(st.sampled_from(["exact", "wild", "apex", "dot", "partial", "upper"]))
    label = draw(st.sampled_from(LABELS))
    return {
        "exact": f"{label}.{parent}",
        "wild": f"*.{parent}",
        "apex": parent,
        "dot": f"{label}.{parent}.",
        "partial": f"{label}*.{parent}",
        "upper": f"{label}.{parent}".upper(),
    }[form]


IPS_POOL = ["10.0.0.1", "10.0.0.2", "2001:db8::1", "::1"]

entries_st = st.lists(
    st.builds(
        SniEntry,
        key=st.sampled_from(["k0", "k1", "k2", "k3", "k4", "k5"]),
        sans=st.builds(
            SanSet,
            dns_names=st.lists(dns_san(), max_size=4).map(tuple),
            ip_addresses=st.lists(st.sampled_from(IPS_POOL), max_size=2).map(tuple),
        ),
        not_after=st.sampled_from([T0, T0 + dt.timedelta(days=1), T0 + dt.timedelta(days=2)]),
    ),
    max_size=6,
)


@st.composite
def server_name(draw: st.DrawFn) -> str | None:
    kind = draw(st.sampled_from(["name", "name", "name", "ip", "garbage", "none"]))
    if kind == "none":
        return None
    if kind == "ip":
        return draw(st.sampled_from([*IPS_POOL, "2001:DB8:0::1", "10.0.0.1.", "010.0.0.1"]))
    if kind == "garbage":
        return draw(st.text(max_size=30))
    odd = ["*", "", "-x", "a_b", "ab--x", "xn--a"]
    labels = draw(st.lists(st.sampled_from([*LABELS, *odd]), max_size=2))
    name = ".".join([*labels, draw(st.sampled_from(PARENTS))])
    name = draw(st.sampled_from([name, name.upper(), name + ".", name + ".."]))
    return name


@settings(max_examples=400, deadline=None)
@given(entries_st, st.sampled_from([None, "dflt"]), server_name())
def test_lookup_equals_brute_force_reference(
    entries: list[SniEntry], default: str | None, name: str | None
) -> None:
    index = SniIndex.build(entries, default)
    assert index.lookup(name) == reference(entries, default, name)


@settings(max_examples=300)
@given(st.one_of(st.none(), st.text(max_size=300), st.from_regex(r"[a-zA-Z0-9.\-_*:]{0,270}")))
def test_lookup_never_raises(name: str | None) -> None:
    sel = INDEX.lookup(name)
    assert sel.reason in ("exact", "wildcard", "default")
    assert sel == reference([SITE, WILD, ATLAS, IDN, IPS, PSL], "dflt", name)


@settings(max_examples=200, deadline=None)
@given(entries_st, st.lists(server_name(), min_size=1, max_size=8))
def test_memo_never_changes_an_answer(entries: list[SniEntry], names: list[str | None]) -> None:
    index = SniIndex.build(entries, "dflt")
    for name in [*names, *names]:  # second round answers from the memo
        assert index.lookup(name) == index.resolve(name) == reference(entries, "dflt", name)


def test_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SniIndex, "MEMO_LIMIT", 4)
    index = SniIndex.build([SITE, WILD], default="dflt")
    for i in range(50):  # a flood of names nothing covers
        assert index.lookup(f"flood{i}.example.org") == Selection("dflt", "default")
        assert len(index._memo) <= len(index._exact) + 4  # the bound itself
    # twin: after the flood, exact and wildcard answers are unchanged
    assert index.lookup("support.example.com") == Selection("site", "exact")
    assert index.lookup("flood0.example.com") == Selection("wild", "wildcard")
