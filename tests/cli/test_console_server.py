"""The console's listener in-process (sync.console.server): who gets what over real mutual
TLS, the headers on every answer, and an injected ``/metrics`` renderer."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from node.api import certsync_pb2
from node.renewal_plan import CertStatus
from node.store import Store
from sync.cli import main
from sync.config import load_node_config, load_store_key
from sync.console.server import HEADERS, ConsoleSources, console_ssl_context, start_console
from sync.report import Observed

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
METRICS = b"# TYPE certsync_epoch gauge\ncertsync_epoch 7.0\n"


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("console") / "c"
    assert main(["cluster", "init", str(d), "--site", "support.example.com",
                 "--primary", "p1=p1.example.com", "--backup", "b1=b1.example.com"]) == 0
    return d


@dataclass
class Running:
    url: str
    directory: Path
    store: Store

    def client_ssl(self, who: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.directory / "ca.pem"))
        ctx.check_hostname = False  # we dial 127.0.0.1; the name is checked in the browser suite
        d = self.directory
        cert, key = ((d / f"{who}.pem", d / f"{who}-key.pem") if who in ("admin", "monitor")
                     else (d / who / "node.pem", d / who / "node-key.pem"))
        ctx.load_cert_chain(str(cert), str(key))
        return ctx


async def _statuses(now: dt.datetime) -> Mapping[str, CertStatus]:
    return {}


async def _state(*, lifecycle: bool = True) -> certsync_pb2.NodeState:
    return certsync_pb2.NodeState(name="p1", epoch=3, revision=9)


async def _cluster() -> tuple[list[Observed], dict[str | None, str] | None]:
    return [Observed(name="p1", reachable=False, error="down"),
            Observed(name="b1", reachable=False, error="down")], None


async def _running(cluster_dir: Path, tmp_path: Path, metrics: bytes | None
                   ) -> AsyncIterator[Running]:
    config = load_node_config(cluster_dir / "p1" / "node.toml")

    async def injected() -> bytes:
        assert metrics is not None
        return metrics

    store = await Store.open(tmp_path / "s.sqlite3", load_store_key(config.store_key_path))
    sources = ConsoleSources(
        node_name="p1", topology=config.topology, store=store, statuses=_statuses,
        node_state=_state, cluster=_cluster, now=lambda: NOW,
        metrics=None if metrics is None else injected)
    ctx = console_ssl_context(ca_cert=config.ca_cert_path, cert=config.cert_path,
                              key=config.key_path)
    runner, port = await start_console(sources, host="127.0.0.1", port=0, ssl_context=ctx)
    try:
        yield Running(f"https://127.0.0.1:{port}", cluster_dir, store)
    finally:
        await runner.cleanup()
        await store.close()


@pytest.fixture
async def console(cluster_dir: Path, tmp_path: Path) -> AsyncIterator[Running]:
    async for running in _running(cluster_dir, tmp_path, METRICS):
        yield running


@pytest.fixture
async def own_metrics(cluster_dir: Path, tmp_path: Path) -> AsyncIterator[Running]:
    async for running in _running(cluster_dir, tmp_path, None):
        yield running


async def _get(running: Running, who: str, path: str) -> tuple[int, Mapping[str, str], str]:
    async with aiohttp.ClientSession() as session, session.get(
            running.url + path, ssl=running.client_ssl(who)) as response:
        return response.status, dict(response.headers), await response.text()


@pytest.mark.parametrize("path", ["/", "/requests", "/coverage", "/nodes", "/timeline",
                                  "/audit"])
async def test_every_page_answers_the_admin_with_strict_headers(console: Running,
                                                                path: str) -> None:
    status, headers, body = await _get(console, "admin", path)
    assert status == 200, body
    for name, value in HEADERS.items():
        assert headers[name] == value
    assert "<script" not in body


@pytest.mark.parametrize("path", ["/", "/nodes", "/metrics"])
async def test_a_node_identity_is_refused_everywhere_and_audited(console: Running,
                                                                 path: str) -> None:
    status, headers, body = await _get(console, "b1", path)
    assert status == 403 and "Only an admin identity may see the console." in body
    assert headers["Content-Security-Policy"] == HEADERS["Content-Security-Policy"]
    [event] = await console.store.audit_log(5, action="console.refused")
    assert (event.actor, event.detail["path"]) == ("node:b1", path)


async def test_the_injected_metrics_are_what_monitor_and_admin_read(console: Running) -> None:
    for who in ("monitor", "admin"):
        status, headers, body = await _get(console, who, "/metrics")
        assert status == 200 and body.encode() == METRICS
        assert headers["Content-Type"].startswith("text/plain; version=")
    status, _, _ = await _get(console, "monitor", "/")
    assert status == 403  # the twin: not a page


async def test_without_a_renderer_the_console_serves_the_stores_metrics(
    own_metrics: Running,
) -> None:
    status, _, body = await _get(own_metrics, "monitor", "/metrics")
    assert status == 200
    # a NodeMetrics over the store alone: a fresh store is at epoch 0, revision 0
    assert "\ncertsync_epoch 0.0\n" in body and "\ncertsync_revision 0.0\n" in body
    assert "certsync_epoch 3.0" not in body  # not the (injected) GetState answer


async def test_no_route_serves_a_key_or_a_pkcs12(console: Running) -> None:
    sha = "0" * 64
    for path in (f"/certificates/{sha}/download/p12", f"/certificates/{sha}/download/key",
                 "/certificates/not-a-sha"):
        status, _, _ = await _get(console, "admin", path)
        assert status == 404, path
    status, _, body = await _get(console, "admin", "/audit?page=x")
    assert status == 400 and "not a page number" in body


async def test_audit_is_newest_first_and_paged(console: Running) -> None:
    for i in range(52):
        await console.store.record_audit(actor="admin:ops", action="test.event",
                                         detail={"target": f"t{i:02}"}, now=NOW)
    status, _, first = await _get(console, "admin", "/audit?action=test.event")
    assert status == 200
    assert first.index(">t51<") < first.index(">t50<")  # newest first
    assert ">t01<" not in first and 'rel="next"' in first and 'rel="prev"' not in first
    _, _, second = await _get(console, "admin", "/audit?action=test.event&page=2")
    assert ">t01<" in second and ">t00<" in second and ">t51<" not in second
    assert 'rel="next"' not in second and 'rel="prev"' in second
    _, _, other = await _get(console, "admin", "/audit?actor=admin:nobody")
    assert "test.event" not in other.split("<tbody>")[1]  # the filter's twin
