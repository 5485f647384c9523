"""node.selection, the edges a mutation run found unguarded (deploy/mutation.sh
node/selection.py): the fast path's length limits, an unreadable IP SAN among good ones, and
the memo actually remembering (below its bound) what it answered.
"""

from __future__ import annotations

import datetime as dt

import pytest

from node.names import SanSet
from node.selection import Selection, SniEntry, SniIndex

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
WILD = SniEntry("wild", SanSet(dns_names=("*.example.com",)), T0)
SITE = SniEntry("site", SanSet(dns_names=("support.example.com",)), T0)


def _name_of_length(total: int, parent: str = "example.com") -> str:
    """A valid name of exactly ``total`` characters: labels of 63, under ``parent``."""
    labels: list[str] = []
    room = total - len(parent) - 1
    while room > 0:
        size = min(63, room) if room - min(63, room) != 1 else 62
        labels.append("a" * size)
        room -= size + 1
    name = ".".join([*labels, parent])
    assert len(name) == total
    return name


def test_a_253_character_child_of_a_wildcard_parent() -> None:
    parent = _name_of_length(253 - 64)  # the wildcard's parent: 189 characters
    name = "a" * 63 + "." + parent
    assert len(name) == 253
    index = SniIndex.build([SniEntry("deep", SanSet(dns_names=("*." + parent,)), T0)], "dflt")
    assert index.resolve(name) == Selection("deep", "wildcard")
    assert index.lookup(name) == Selection("deep", "wildcard")
    # twin: one character more is not a DNS name at all
    assert index.resolve("b" + name) == Selection("dflt", "default")


def test_an_unreadable_ip_san_does_not_hide_the_next_one() -> None:
    entry = SniEntry("ipcert", SanSet(ip_addresses=("[::1]", "10.0.0.1")), T0)  # refused first
    index = SniIndex.build([entry], default="dflt")
    assert index.lookup("10.0.0.1") == Selection("ipcert", "exact")
    assert index.lookup("10.0.0.2") == Selection("dflt", "default")  # twin


def test_the_memo_remembers_each_answer_below_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SniIndex, "MEMO_LIMIT", 8)
    index = SniIndex.build([SITE, WILD], default="dflt")
    names = ["a.example.com", "B.Example.COM", "x.example.org"]
    for name in names:
        answer = index.lookup(name)
        assert index._memo[name] == answer  # stored as answered, not recomputed later
    assert len(index._memo) == len(index._exact) + len(names)


def test_the_memo_is_consulted_first() -> None:
    """A planted memo entry is what lookup answers (the memo is read before resolving);
    resolve, the uncached twin, ignores it."""
    index = SniIndex.build([SITE, WILD], default="dflt")
    planted = Selection("planted", "exact")
    index._memo["a.example.com"] = planted
    assert index.lookup("a.example.com") is planted
    assert index.resolve("a.example.com") == Selection("wild", "wildcard")
