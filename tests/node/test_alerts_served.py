"""Alerts follow what is served (issue 11): the default, and any certificate SNI selects, is
alerted on until something actually selected in its place exists; a "replacement" must come
from the same CA (a self-signed certificate with the same names is none).

A real in-process node (see tests/node/test_lifecycle_node.py); time is a parameter.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sync.cli import main as cli_main
from tests.node.test_lifecycle_node import HOST, NOW, Node, _import, _start
from tests.pki import make_chain, make_leaf, pem_bundle

#: the tick: 9 days before the old certificate's expiry (inside the 25-day alert window)
OLD_DAYS = 20
TICK = NOW + dt.timedelta(days=OLD_DAYS - 9)


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cluster") / "c"
    assert cli_main(["cluster", "init", str(d), "--site", HOST,
                     "--primary", "p1=p1.example.com"]) == 0
    return d


@pytest.fixture
async def node(cluster_dir: Path, tmp_path: Path) -> AsyncIterator[Node]:
    async for n in _start(cluster_dir, tmp_path, "p1"):
        yield n


async def test_a_self_signed_lookalike_does_not_silence_the_default(node: Node) -> None:
    old = make_chain(sans=[HOST], not_after=NOW + dt.timedelta(days=OLD_DAYS))
    a = await _import(node, old, default=True)
    lookalike = make_leaf(None, [HOST], not_after=NOW + dt.timedelta(days=400), slot=3)
    await node.client.import_files([("self.pem", pem_bundle(lookalike.cert,
                                                            key=lookalike.key))])
    assert node.app.served_for(None).key == a  # clients without SNI still get the old one
    certs = await node.list()
    assert not certs[a].replaceable and certs[a].renewal_state == "expiring"
    report = await node.app.lifecycle.tick(TICK)
    assert a in report.alerted


async def test_a_same_ca_renewal_that_is_served_silences_the_old_one(node: Node) -> None:
    """Twin: the renewal from the same CA becomes the default: the old one is replaced."""
    old = make_chain(sans=[HOST], not_after=NOW + dt.timedelta(days=OLD_DAYS))
    a = await _import(node, old, default=True)
    renewed = make_leaf(old.intermediate, [HOST], not_after=NOW + dt.timedelta(days=400),
                        slot=3)
    await node.client.import_files([("renewed.pem", pem_bundle(renewed.cert, *old.chain,
                                                               key=renewed.key))])
    assert node.app.served_for(None).key != a
    certs = await node.list()
    assert certs[a].replaceable and certs[a].renewal_state == "replaced"
    assert a not in (await node.app.lifecycle.tick(TICK)).alerted


async def test_the_default_is_alerted_until_the_default_moves(node: Node) -> None:
    """A same-CA renewal is stored, but the default is still the old one: it is what
    clients without SNI get, so it is alerted on; once the default moves, it is not."""
    old = make_chain(sans=[HOST], not_after=NOW + dt.timedelta(days=OLD_DAYS))
    a = await _import(node, old)
    renewed = make_leaf(old.intermediate, [HOST], not_after=NOW + dt.timedelta(days=400),
                        slot=3)
    resp = await node.client.import_files([("renewed.pem", pem_bundle(
        renewed.cert, *old.chain, key=renewed.key))])
    b = resp.identity_sha256
    await node.client.set_default(a)
    certs = await node.list()
    assert not certs[a].replaceable and certs[a].renewal_state == "expiring"
    assert a in (await node.app.lifecycle.tick(TICK)).alerted
    await node.client.set_default(b)
    certs = await node.list()
    assert certs[a].replaceable and certs[a].renewal_state == "replaced"
    assert a not in (await node.app.lifecycle.tick(TICK + dt.timedelta(days=2))).alerted
