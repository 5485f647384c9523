"""``sync.metrics.NodeMetrics`` on one store: live series, the handshake hook, the counters."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from node.renewal_plan import TickReport
from node.store import Store
from node.store_view import SetEntry
from sync.metrics import NodeMetrics, handshake_counts
from tests.pki import make_leaf

KEY = bytes(range(32))
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
Samples = dict[str, list[tuple[dict[str, str], float]]]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "store.db", KEY)
    try:
        yield s
    finally:
        await s.close()


async def scrape(metrics: NodeMetrics) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families((await metrics.render()).decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


class CountingEndpoint:
    def __init__(self) -> None:
        self.handshakes = {"exact": 3, "wildcard": 1, "failed": 2}


async def test_not_after_series_follow_the_store(store: Store) -> None:
    metrics = NodeMetrics(store=store)
    assert (await scrape(metrics)).get("certsync_certificate_not_after_seconds") is None
    a = make_leaf(None, ("a.example.com",), slot=1)
    b = make_leaf(None, ("b.example.com",), slot=2,
                  not_after=dt.datetime(2031, 1, 2, tzinfo=dt.UTC))
    await store.add([SetEntry(a.cert, a.key, "alpha"), SetEntry(b.cert, b.key, "beta")],
                    make_default=None, actor="admin:test", now=NOW)
    view = await store.view()
    series = {labels["name"]: (labels["default"], value) for labels, value in
              (await scrape(metrics))["certsync_certificate_not_after_seconds"]}
    default = view.default_sha256
    assert default is not None
    assert series == {
        c.name: ("true" if c.sha256 == default else "false", c.not_after.timestamp())
        for c in view.certs}
    assert series["beta"][1] == dt.datetime(2031, 1, 2, tzinfo=dt.UTC).timestamp()
    # no replicator: a node without replication reports no per-node series
    assert "certsync_node_in_sync" not in await scrape(metrics)


async def test_handshakes_are_read_from_the_endpoint(store: Store) -> None:
    counting = await scrape(NodeMetrics(store=store, endpoint=CountingEndpoint()))
    assert {labels["outcome"]: v for labels, v in counting["certsync_tls_handshakes_total"]} \
        == {"exact": 3.0, "wildcard": 1.0, "default": 0.0, "failed": 2.0}
    # twin: an endpoint that does not count yields the family without samples
    assert handshake_counts(object()) is None
    assert "certsync_tls_handshakes_total" not in await scrape(NodeMetrics(store=store,
                                                                           endpoint=object()))


async def test_monitor_rounds_are_counted(store: Store) -> None:
    metrics = NodeMetrics(store=store)
    metrics.tick(TickReport())
    assert (await scrape(metrics))["certsync_acme_renewal_attempts_total"] == [({}, 0.0)]
    metrics.tick(TickReport(renewed={"a" * 64: "b" * 64}, failed=("c" * 64,),
                            alerted=("c" * 64, "d" * 64)))
    m = await scrape(metrics)
    assert m["certsync_acme_renewal_attempts_total"] == [({}, 2.0)]
    assert m["certsync_acme_renewal_failures_total"] == [({}, 1.0)]
    assert m["certsync_alerts_sent_total"] == [({}, 2.0)]
