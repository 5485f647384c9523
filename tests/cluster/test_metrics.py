"""A node's Prometheus metrics on a loopback cluster, checked against ``status --json``.

The nodes run in this test's event loop (``sync.daemon.run_node``, the same composition
``certsync node serve`` runs), so each node's :class:`~sync.metrics.NodeMetrics` is at hand;
the CLI runs as a real ``certsync`` process in a thread. Convergence is awaited on the
primary's ``on_converge`` hook (a queue), never slept for.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from node.app import NodeApp
from sync.config import load_node_config
from sync.daemon import run_node
from sync.localcluster import LocalCluster
from sync.metrics import NodeMetrics, handshake_counts
from tests.pki import make_leaf, pem_bundle

SITE = "support.example.com"
NAMES = ("support.example.com", "*.example.com", "*.atlas.example.com")
CONVERGE = 60.0


@dataclass
class Running:
    cluster: LocalCluster
    metrics: dict[str, NodeMetrics]
    stops: dict[str, asyncio.Event]
    tasks: dict[str, asyncio.Task[None]]
    converged: asyncio.Queue[float]

    async def cli(self, *args: str) -> Any:
        proc = await asyncio.to_thread(self.cluster.cli, *args)
        assert proc.returncode in (0, 1), proc.stderr
        return proc

    async def status(self) -> dict[str, Any]:
        proc = await self.cli("status", "--json")
        status: dict[str, Any] = json.loads(proc.stdout)
        return status

    async def scrape(self, node: str) -> dict[str, list[tuple[dict[str, str], float]]]:
        """Every sample of ``node``'s metrics: name -> [(labels, value)]."""
        text = (await self.metrics[node].render()).decode()
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples.setdefault(s.name, []).append((dict(s.labels), s.value))
        return samples

    async def stop(self, node: str) -> None:
        self.stops[node].set()
        await self.tasks[node]


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    cluster = LocalCluster.create(tmp_path / "c", site=SITE, primary=("p1", "p1.example.com"),
                                  traffic=[("t1", "t1.atlas.example.com")], sync_interval=3600)
    metrics: dict[str, NodeMetrics] = {}
    stops: dict[str, asyncio.Event] = {}
    tasks: dict[str, asyncio.Task[None]] = {}
    converged: asyncio.Queue[float] = asyncio.Queue()
    ready: dict[str, asyncio.Event] = {}
    for name in cluster.names:
        config = load_node_config(cluster.node_toml(name))
        stops[name], ready[name] = asyncio.Event(), asyncio.Event()

        def keep(m: NodeMetrics, name: str = name) -> None:
            metrics[name] = m
            if name == "p1":
                assert m.replicator is not None
                m.replicator.on_converge.append(converged.put_nowait)

        def up(_app: NodeApp, _grpc: int, _tls: int, event: asyncio.Event = ready[name]) -> None:
            event.set()

        tasks[name] = asyncio.create_task(run_node(
            config, stop=stops[name], on_metrics=keep, started=up))
    async with asyncio.timeout(CONVERGE):
        await asyncio.wait([asyncio.create_task(e.wait()) for e in ready.values()])
    try:
        yield Running(cluster, metrics, stops, tasks, converged)
    finally:
        for name, task in tasks.items():
            stops[name].set()
            await task


async def _converge(run: Running) -> float:
    async with asyncio.timeout(CONVERGE):
        return await run.converged.get()


def _one(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    (only,) = samples[name]
    return only[1]


async def test_metrics_match_status_and_a_new_import_appears(running: Running,
                                                            tmp_path: Path) -> None:
    await running.cli("cert", "create-self-signed", "--name", "site", "--key", "ec-p256",
                      "--cn", SITE, *(a for n in NAMES for a in ("--san", n)), "--default")
    assert await _converge(running) > 0
    status = await running.status()
    assert all(n["in_sync"] for n in status["nodes"]), status
    m = await running.scrape("p1")

    assert _one(m, "certsync_epoch") == status["epoch"]
    primary = next(n for n in status["nodes"] if n["name"] == "p1")
    assert _one(m, "certsync_revision") == primary["revision"]
    in_sync = {labels["node"]: value for labels, value in m["certsync_node_in_sync"]}
    assert in_sync == {n["name"]: float(n["in_sync"]) for n in status["nodes"]}
    last = {labels["node"]: value for labels, value in
            m["certsync_node_last_sync_timestamp_seconds"]}
    for node in status["nodes"]:
        reported = dt_seconds(node["last_sync"])
        assert abs(last[node["name"]] - reported) <= 2.0, (node, last)

    listed = json.loads((await running.cli("cert", "list", "--json")).stdout)
    series = {labels["sha256"]: (labels["name"], labels["default"], value)
              for labels, value in m["certsync_certificate_not_after_seconds"]}
    assert series == {c["sha256"]: (c["name"], "true" if c["default"] else "false",
                                    dt_seconds(c["not_after"])) for c in listed}
    assert _one(m, "certsync_push_seconds_count") >= 1
    assert _one(m, "certsync_converge_seconds_count") >= 1

    # twin: a certificate imported now was not there before, and is after
    leaf = make_leaf(None, ("extra.example.com",), slot=3)
    pem = tmp_path / "extra.pem"
    pem.write_bytes(pem_bundle(leaf.cert, key=leaf.key))
    before = {labels["sha256"] for labels, _ in m["certsync_certificate_not_after_seconds"]}
    imported = (await running.cli("cert", "import", str(pem), "--name", "extra")).stdout
    sha = imported.split()[0]
    assert sha not in before
    await _converge(running)
    after = await running.scrape("p1")
    names = {labels["sha256"]: labels for labels, _ in
             after["certsync_certificate_not_after_seconds"]}
    assert names[sha]["name"] == "extra" and names[sha]["default"] == "false"
    assert _one(after, "certsync_revision") == _one(m, "certsync_revision") + 1


async def test_only_the_primary_reports_nodes_and_a_down_node_is_out_of_sync(
        running: Running) -> None:
    await running.cli("cert", "create-self-signed", "--name", "site", "--key", "ec-p256",
                      "--cn", SITE, *(a for n in NAMES for a in ("--san", n)), "--default")
    await _converge(running)
    traffic = await running.scrape("t1")
    assert "certsync_node_in_sync" not in traffic  # a traffic node is not the primary
    assert _one(traffic, "certsync_revision") == _one(await running.scrape("p1"),
                                                      "certsync_revision")

    await running.stop("t1")
    await running.cli("cert", "create-self-signed", "--name", "two", "--key", "ec-p256",
                      "--cn", SITE, "--san", SITE)
    deadline = time.monotonic() + CONVERGE
    while True:  # the primary's next push to t1 fails: poll its own state, bounded
        m = await running.scrape("p1")
        in_sync = {labels["node"]: v for labels, v in m["certsync_node_in_sync"]}
        if in_sync.get("t1") == 0.0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert in_sync == {"p1": 1.0, "t1": 0.0}
    status = await running.status()
    assert {n["name"]: n["in_sync"] for n in status["nodes"]} == {"p1": True, "t1": False}


async def test_handshakes_by_outcome(running: Running) -> None:
    await running.cli("cert", "create-self-signed", "--name", "site", "--key", "ec-p256",
                      "--cn", SITE, *(a for n in NAMES for a in ("--san", n)), "--default")
    await _converge(running)
    endpoint = running.metrics["p1"].endpoint
    before = handshake_counts(endpoint)
    host, _, port = running.cluster.spec("p1").tls_address.rpartition(":")
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    await asyncio.to_thread(_handshake, ctx, host, int(port), SITE)
    m = await running.scrape("p1")
    counts = {labels["outcome"]: v for labels, v in m.get("certsync_tls_handshakes_total", [])}
    if before is None:  # this endpoint does not count handshakes: the family has no samples
        assert counts == {}
    else:
        assert counts["exact"] == before["exact"] + 1
        assert counts["wildcard"] == before["wildcard"]


def _handshake(ctx: ssl.SSLContext, host: str, port: int, server_name: str) -> None:
    with socket.create_connection((host, port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=server_name):
        pass


def dt_seconds(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()
