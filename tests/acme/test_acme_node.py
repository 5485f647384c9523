"""ACME wired into a real in-process node, against a real Pebble: ``RequestAcmeCertificate``
issues, stores and serves (TLS probe with SNI); the failover-pair refusal; renewal by the
monitor; a responder Pebble cannot reach -> retries with back-off and, 24 days before
expiry, an alert. The clock is a parameter: nothing sleeps.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from structlog.testing import capture_logs

from node.acme_client import Http01Responder, start_http01_responder
from node.api import certsync_pb2
from node.app import NodeApp
from node.errors import Conflict, CoverageError
from node.store import Store
from node.tls import TlsEndpoint
from sync.cli import main as cli_main
from sync.client import NodeClient, NodeTarget
from sync.config import AcmeSettings, load_node_config, load_store_key
from sync.daemon import cluster_of
from tests.node.helpers import serve_store_api

from .conftest import Pebble

HOST = "support.certsync.test"


def _init(directory: Path, *, backup: bool) -> Path:
    args = ["cluster", "init", str(directory), "--site", HOST, "--primary", "p1=p1.certsync.test"]
    if backup:
        args += ["--backup", "b1=b1.certsync.test"]
    assert cli_main(args) == 0
    return directory


@pytest.fixture(scope="module")
def single_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _init(tmp_path_factory.mktemp("single") / "c", backup=False)


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _init(tmp_path_factory.mktemp("pair") / "c", backup=True)


@dataclass
class Node:
    app: NodeApp
    client: NodeClient
    tls_port: int
    clock: list[dt.datetime]  # the node's clock; empty: real time


async def _node(
    cluster_dir: Path, tmp_path: Path, pebble: Pebble, responder: Http01Responder
) -> AsyncIterator[Node]:
    config = load_node_config(cluster_dir / "p1" / "node.toml")
    store = await Store.open(tmp_path / "p1.sqlite3", load_store_key(config.store_key_path))
    endpoint = TlsEndpoint(node_name="p1", workers=2)
    tls_port = endpoint.start("127.0.0.1", 0)
    clock: list[dt.datetime] = []
    app = NodeApp(
        name="p1", cluster=cluster_of(config.topology, "p1"), store=store, endpoint=endpoint,
        clock=lambda: clock[0] if clock else dt.datetime.now(dt.UTC),
        acme=AcmeSettings(
            directory_url=pebble.directory_url, email="admin@example.com",
            ca_bundle=pebble.ca_bundle,
        ),
        responder=responder, account_key_path=tmp_path / "acme-account.pem",
    )
    await app.refresh()
    server, port = await serve_store_api(app, config)
    client = NodeClient(
        NodeTarget.from_files(
            name="p1", address=f"127.0.0.1:{port}", ca_cert=cluster_dir / "ca.pem",
            cert=cluster_dir / "admin.pem", key=cluster_dir / "admin-key.pem",
        ),
        timeout=120,
    )
    try:
        yield Node(app, client, tls_port, clock)
    finally:
        await client.close()
        await server.stop(None)
        endpoint.stop()
        await store.close()


@pytest.fixture
async def node(
    single_dir: Path, tmp_path: Path, pebble: Pebble, responder: Http01Responder
) -> AsyncIterator[Node]:
    async for n in _node(single_dir, tmp_path, pebble, responder):
        yield n


@pytest.fixture
async def pair_node(
    pair_dir: Path, tmp_path: Path, pebble: Pebble, responder: Http01Responder
) -> AsyncIterator[Node]:
    async for n in _node(pair_dir, tmp_path, pebble, responder):
        yield n


def _served(port: int, server_name: str | None) -> x509.Certificate:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # we compare fingerprints, not trust
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def _sha(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


async def _request(
    node: Node, hostname: str = HOST, *, accept_failover_risk: bool = False,
    force: bool = True,
) -> certsync_pb2.AcmeResponse:
    # force: one ACME name cannot cover the site and the node's own hostname, so the
    # coverage gate would refuse it as the default (see the test just below)
    return await node.client.request_acme(
        certsync_pb2.AcmeRequest(
            hostname=hostname, key_type="ec-p256", make_default=True,
            accept_failover_risk=accept_failover_risk, force=force,
        )
    )


async def test_an_uncovering_acme_default_is_refused_before_ordering(node: Node) -> None:
    """Without --force the gate refuses before anything is ordered; nothing is stored."""
    with pytest.raises(CoverageError, match=r"p1\.certsync\.test \(node p1\)"):
        await _request(node, force=False)
    assert await node.client.list_certificates() == []
    forced = await _request(node)
    assert forced.certificate.is_default
    assert any("overrode the coverage check" in w for w in forced.warnings)


async def test_acme_request_issues_stores_and_serves(node: Node, pebble: Pebble) -> None:
    resp = await _request(node)
    sha = resp.certificate.sha256
    assert resp.certificate.acme and resp.certificate.is_default
    assert list(resp.certificate.dns_names) == [HOST]
    assert _sha(_served(node.tls_port, HOST)) == sha
    assert _sha(_served(node.tls_port, None)) == sha  # the default too
    # the chain is stored: Pebble's intermediate is in the list, without a key
    listed = {c.sha256: c for c in await node.client.list_certificates()}
    assert _sha(pebble.intermediate()) in listed
    assert not listed[_sha(pebble.intermediate())].has_key


async def test_failover_pair_is_refused_without_accepting_the_risk(pair_node: Node) -> None:
    with pytest.raises(Conflict, match="failover pair") as refused:
        await _request(pair_node, hostname="pair.certsync.test")
    assert "--accept-failover-risk" in str(refused.value)
    assert await pair_node.client.list_certificates() == []
    resp = await _request(pair_node, hostname="pair.certsync.test", accept_failover_risk=True)
    assert any("failover pair" in w for w in resp.warnings)
    assert resp.certificate.acme


async def test_monitor_renews_30_days_before_expiry(node: Node) -> None:
    old = (await _request(node, hostname="renew.certsync.test")).certificate
    not_after = dt.datetime.strptime(old.not_after, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    assert (await node.app.lifecycle.tick(not_after - dt.timedelta(days=31))).renewed == {}
    report = await node.app.lifecycle.tick(not_after - dt.timedelta(days=29))
    new = report.renewed[old.sha256]
    assert node.app.served_for(None).key == new
    assert _sha(_served(node.tls_port, "renew.certsync.test")) == new
    listed = {c.sha256: c for c in await node.client.list_certificates()}
    assert listed[old.sha256].replaceable and listed[old.sha256].renewal_state == "replaced"
    assert listed[new].acme and listed[new].renewal_state == "valid"


async def test_unreachable_responder_retries_then_alerts(node: Node) -> None:
    old = (await _request(node, hostname="down.certsync.test")).certificate
    not_after = dt.datetime.strptime(old.not_after, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    # a responder Pebble does not validate against: HTTP-01 fails for real
    elsewhere, _ = await start_http01_responder("127.0.0.1", 0)
    node.app.lifecycle.responder = elsewhere
    try:
        first = not_after - dt.timedelta(days=29)
        with capture_logs() as events:
            report = await node.app.lifecycle.tick(first)
        node.clock.append(first)
        assert report.failed == (old.sha256,) and report.alerted == ()
        failed = [e for e in events if e["event"] == "lifecycle.renewal_failed"]
        assert failed and "validate" in failed[0]["error"]
        state = {c.sha256: c for c in (await node.client.get_state()).certificates}
        assert state[old.sha256].renewal_state == "backoff"
        assert state[old.sha256].next_attempt == (first + dt.timedelta(hours=1)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        # the clock moves to 24 days before expiry: a retry (fails again) and an alert
        late = not_after - dt.timedelta(days=24)
        with capture_logs() as events:
            report = await node.app.lifecycle.tick(late)
        assert report.failed == (old.sha256,)
        assert report.alerted == (old.sha256,)
        alerts = [e for e in events if e["event"] == "expiry_alert"]
        assert alerts and alerts[0]["days_left"] == 24 and alerts[0]["sha256"] == old.sha256
        # once a day: an hour later (in back-off) there is no second alert
        report = await node.app.lifecycle.tick(late + dt.timedelta(minutes=30))
        assert report.alerted == () and report.failed == ()
    finally:
        await elsewhere.close()
