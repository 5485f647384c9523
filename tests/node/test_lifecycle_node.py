"""The lifecycle wired into a real in-process node: tick(now) with a fixed clock, the CA change
guard over gRPC, a staged CA change and its trust bundle over real TLS, renewed certificates.

Nodes are real (store, TLS endpoint, grpc.aio over mTLS from ``certsync cluster init``);
time is a parameter: the node's clock and ``tick(now)`` are set by the test, nothing sleeps.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from structlog.testing import capture_logs

from node.acme_client import start_http01_responder
from node.api import certsync_pb2
from node.app import NodeApp
from node.errors import BadInput, ConfigError, Conflict, NotFound
from node.formats import cert_sha256
from node.renewal_plan import state_key
from node.store import Store
from node.store_view import SetEntry
from node.tls import TRUST_BUNDLE_PATH, TlsEndpoint
from sync.cli import main as cli_main
from sync.client import NodeClient, NodeTarget
from sync.config import AcmeSettings, load_node_config, load_store_key
from sync.daemon import cluster_of
from tests.node.helpers import serve_store_api
from tests.pki import Pki, make_chain, make_leaf, pem_bundle

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
HOST = "support.example.com"


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cluster") / "c"
    rc = cli_main(
        [
            "cluster", "init", str(d), "--site", HOST,
            "--primary", "p1=p1.example.com", "--traffic", "t1=t1.example.com",
        ]
    )
    assert rc == 0
    return d


@dataclass
class Clock:
    now: dt.datetime


@dataclass
class Node:
    app: NodeApp
    client: NodeClient
    tls_port: int
    clock: Clock

    async def list(self) -> dict[str, certsync_pb2.CertificateInfo]:
        return {c.sha256: c for c in await self.client.list_certificates()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def _start(cluster_dir: Path, tmp_path: Path, name: str) -> AsyncIterator[Node]:
    config = load_node_config(cluster_dir / name / "node.toml")
    store = await Store.open(tmp_path / f"{name}.sqlite3", load_store_key(config.store_key_path))
    endpoint = TlsEndpoint(node_name=name, workers=2)
    tls_port = endpoint.start("127.0.0.1", 0)
    responder, _ = await start_http01_responder("127.0.0.1", 0)
    clock = Clock(NOW)
    # an ACME directory nobody listens on: every order fails for real, quickly
    acme = AcmeSettings(directory_url=f"http://127.0.0.1:{_free_port()}/dir")
    app = NodeApp(
        # one hostname per certificate here: the coverage gate (tests/node/test_guard.py) is
        # not what these tests are about
        name=name, cluster=replace(cluster_of(config.topology, name), required=()),
        store=store, endpoint=endpoint,
        clock=lambda: clock.now, acme=acme, responder=responder,
        account_key_path=tmp_path / f"{name}-acme.pem",
    )
    await app.refresh()
    server, port = await serve_store_api(app, config)
    target = NodeTarget.from_files(
        name=name, address=f"127.0.0.1:{port}", ca_cert=cluster_dir / "ca.pem",
        cert=cluster_dir / "admin.pem", key=cluster_dir / "admin-key.pem",
    )
    client = NodeClient(target, timeout=10)
    try:
        yield Node(app, client, tls_port, clock)
    finally:
        await client.close()
        await server.stop(None)
        await responder.close()
        endpoint.stop()
        await store.close()


@pytest.fixture
async def node(cluster_dir: Path, tmp_path: Path) -> AsyncIterator[Node]:
    async for n in _start(cluster_dir, tmp_path, "p1"):
        yield n


@pytest.fixture
async def traffic(cluster_dir: Path, tmp_path: Path) -> AsyncIterator[Node]:
    async for n in _start(cluster_dir, tmp_path, "t1"):
        yield n


async def _import(node: Node, pki: Pki, *, default: bool = False, confirm: bool = False) -> str:
    if node.app.role != "primary":  # only the primary takes changes; the others replicate
        sha = cert_sha256(pki.leaf.cert)
        entries = [SetEntry(cert=pki.leaf.cert, key=pki.leaf.key, name=HOST),
                   *(SetEntry(cert=c, key=None, name=c.subject.rfc4514_string())
                     for c in pki.chain)]
        await node.app.store.add(entries, make_default=sha if default else None,
                                 actor="node:p1", now=NOW)
        await node.app.refresh()
        return sha
    data = pem_bundle(pki.leaf.cert, *pki.chain, key=pki.leaf.key)
    resp = await node.client.import_files(
        [("bundle.pem", data)], make_default=default, confirm_ca_change=confirm
    )
    return resp.identity_sha256


def _fetch_bundle(port: int, path: bytes = TRUST_BUNDLE_PATH) -> tuple[int, bytes]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # we read the page, not judge the served certificate
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        tls.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


# --------------------------------------------------------------------------- renewal


async def _acme_cert(node: Node, days: int) -> str:
    pki = make_chain(sans=[HOST], not_after=NOW + dt.timedelta(days=days))
    sha = await _import(node, pki, default=True)
    # what RequestAcmeCertificate records for a certificate it ordered (module docstring)
    record = {"acme": True, "hostname": HOST, "key_type": "ec-p256"}
    await node.app.store.set_meta({state_key(sha): json.dumps(record)})
    return sha


@pytest.mark.parametrize(
    ("days_before", "attempted", "state"),
    [(31, False, "valid"), (30, True, "backoff"), (10, True, "backoff")],
)
async def test_acme_renewal_starts_30_days_before_expiry(
    node: Node, days_before: int, attempted: bool, state: str
) -> None:
    sha = await _acme_cert(node, 100)
    not_after = NOW + dt.timedelta(days=100)
    now = not_after - dt.timedelta(days=days_before)
    node.clock.now = now
    with capture_logs() as events:
        report = await node.app.lifecycle.tick(now)
    assert (sha in report.failed) is attempted
    assert any(e["event"] == "lifecycle.renewal_failed" for e in events) is attempted
    info = (await node.list())[sha]
    assert info.renewal_state == state
    expected_next = now + dt.timedelta(hours=1) if attempted else not_after - dt.timedelta(days=30)
    assert info.next_attempt == expected_next.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_failed_renewal_backs_off_then_retries(node: Node) -> None:
    sha = await _acme_cert(node, 100)
    start = NOW + dt.timedelta(days=75)
    assert sha in (await node.app.lifecycle.tick(start)).failed
    # inside the 1 h back-off: no attempt; at 1 h: the second, then 2 h
    assert (await node.app.lifecycle.tick(start + dt.timedelta(minutes=59))).failed == ()
    assert sha in (await node.app.lifecycle.tick(start + dt.timedelta(hours=1))).failed
    assert (await node.app.lifecycle.tick(start + dt.timedelta(hours=2, minutes=59))).failed == ()
    assert sha in (await node.app.lifecycle.tick(start + dt.timedelta(hours=3))).failed


async def test_non_primary_never_renews(traffic: Node) -> None:
    sha = await _acme_cert(traffic, 100)
    report = await traffic.app.lifecycle.tick(NOW + dt.timedelta(days=80))
    assert report.failed == () and report.renewed == {}
    assert sha in {s for s in await traffic.list()}


# --------------------------------------------------------------------------- alerts


@pytest.mark.parametrize("which", ["node", "traffic"])
async def test_alerts_from_25_days_once_a_day_on_every_node(
    node: Node, traffic: Node, which: str
) -> None:
    n = node if which == "node" else traffic
    pki = make_chain(sans=[HOST], not_after=NOW + dt.timedelta(days=60))
    sha = await _import(n, pki, default=True)
    expiry = NOW + dt.timedelta(days=60)
    timeline = [
        (expiry - dt.timedelta(days=26), False),
        (expiry - dt.timedelta(days=25), True),
        (expiry - dt.timedelta(days=25) + dt.timedelta(hours=23), False),
        (expiry - dt.timedelta(days=24), True),
        (expiry - dt.timedelta(days=24) + dt.timedelta(hours=1), False),
        (expiry + dt.timedelta(days=1), True),  # expired: still alerts daily
    ]
    for when, alerted in timeline:
        with capture_logs() as events:
            report = await n.app.lifecycle.tick(when)
        alerts = [e for e in events if e["event"] == "expiry_alert"]
        assert (sha in report.alerted) is alerted, when
        assert bool(alerts) is alerted, when
        if alerted:
            assert alerts[0]["sha256"] == sha and alerts[0]["node"] == n.app.name


# --------------------------------------------------------------------------- CA change guard


@pytest.fixture
def two_cas() -> tuple[Pki, Pki, Pki]:
    """Two leaves from one CA and one from another (same names, later expiry)."""
    first = make_chain(sans=[HOST], not_after=NOW + dt.timedelta(days=200))
    same_ca = make_chain(sans=[HOST, "www.example.com"], not_after=NOW + dt.timedelta(days=300))
    other = make_chain(
        sans=[HOST, "www.example.com"], not_after=NOW + dt.timedelta(days=300),
        root_cn="Other Root CA", intermediate_cn="Other Intermediate",
    )
    return first, same_ca, other


async def test_set_default_to_another_ca_needs_confirmation(
    node: Node, two_cas: tuple[Pki, Pki, Pki]
) -> None:
    first, same_ca, other = two_cas
    a = await _import(node, first, default=True)
    b = await _import(node, same_ca)
    c = await _import(node, other)
    await node.client.set_default(b)  # same root: no confirmation needed
    with pytest.raises(Conflict) as refused:
        await node.client.set_default(c)
    assert "Other Root CA" in str(refused.value) and "pin" in str(refused.value)
    assert "--confirm-ca-change" in str(refused.value)
    assert node.app.served_for(None).key == b
    await node.client.set_default(c, confirm_ca_change=True)
    assert node.app.served_for(None).key == c
    assert a


async def test_import_default_from_another_ca_needs_confirmation(
    node: Node, two_cas: tuple[Pki, Pki, Pki]
) -> None:
    first, _same_ca, other = two_cas
    a = await _import(node, first, default=True)
    with pytest.raises(Conflict):
        await _import(node, other, default=True)
    assert node.app.served_for(None).key == a
    assert other.leaf.cert.fingerprint(hashes.SHA256()).hex() not in (
        await node.list()
    )
    c = await _import(node, other, default=True, confirm=True)
    assert node.app.served_for(None).key == c


# --------------------------------------------------------------------------- staged CA change


async def test_staged_ca_change_publishes_bundle_at_once_and_switches_after_wait(
    node: Node, two_cas: tuple[Pki, Pki, Pki]
) -> None:
    first, _same_ca, other = two_cas
    a = await _import(node, first, default=True)
    c = await _import(node, other)
    status, before = _fetch_bundle(node.tls_port)
    assert status == 200
    current = x509.load_pem_x509_certificates(before)
    assert first.root.cert in current and other.root.cert not in current

    pending = await node.client.stage_ca_change(c, "48h")
    assert pending.switch_at == "2026-01-03T00:00:00Z"
    status, after = _fetch_bundle(node.tls_port)
    published = x509.load_pem_x509_certificates(after)
    assert status == 200 and b"PRIVATE KEY" not in after
    assert {first.root.cert, other.root.cert, other.leaf.cert} <= set(published)
    state = await node.client.get_state()
    assert state.HasField("pending_ca_change") and state.pending_ca_change.sha256 == c

    for hours, expected in [(0, a), (47, a), (48, c)]:
        report = await node.app.lifecycle.tick(NOW + dt.timedelta(hours=hours))
        assert node.app.served_for(None).key == expected, hours
        assert (report.switched == c) is (expected == c)
    state = await node.client.get_state()
    assert not state.HasField("pending_ca_change")
    assert (await node.app.lifecycle.tick(NOW + dt.timedelta(hours=49))).switched is None


async def test_stage_refuses_bad_wait_and_unknown_certificate(
    node: Node, two_cas: tuple[Pki, Pki, Pki]
) -> None:
    first, _same_ca, other = two_cas
    await _import(node, first, default=True)
    c = await _import(node, other)
    with pytest.raises(BadInput, match="not a duration"):
        await node.client.stage_ca_change(c, "soon")
    with pytest.raises(NotFound):
        await node.client.stage_ca_change("ab" * 32, "48h")
    assert not (await node.client.get_state()).HasField("pending_ca_change")


# --------------------------------------------------------------------------- renewed certificates


async def test_renewal_import_becomes_default_and_old_is_replaceable(node: Node) -> None:
    old = make_chain(sans=[HOST], not_after=NOW + dt.timedelta(days=20))
    a = await _import(node, old, default=True)
    renewed = make_leaf(
        old.intermediate, [HOST], not_after=NOW + dt.timedelta(days=400), slot=3
    )
    resp = await node.client.import_files(
        [("renewed.pem", pem_bundle(renewed.cert, *old.chain, key=renewed.key))]
    )
    b = resp.identity_sha256
    assert any("renews the default" in w for w in resp.notices)  # issue 11: a notice
    assert node.app.served_for(None).key == b
    assert node.app.served_for(HOST).key == b
    certs = await node.list()
    assert certs[a].replaceable and certs[a].renewal_state == "replaced"
    assert not certs[b].replaceable
    # replaced: no alert for the old one even inside 25 days
    report = await node.app.lifecycle.tick(NOW + dt.timedelta(days=10))
    assert a not in report.alerted
    await node.client.delete(a)
    assert a not in await node.list()


@pytest.mark.parametrize(
    ("sans", "days"),
    [(["other.example.com"], 400), ([HOST], 10)],
    ids=["other-names", "earlier-expiry"],
)
async def test_non_renewal_import_does_not_change_default(
    node: Node, sans: list[str], days: int
) -> None:
    old = make_chain(sans=[HOST], not_after=NOW + dt.timedelta(days=20))
    a = await _import(node, old, default=True)
    leaf = make_leaf(old.intermediate, sans, not_after=NOW + dt.timedelta(days=days), slot=3)
    resp = await node.client.import_files(
        [("leaf.pem", pem_bundle(leaf.cert, *old.chain, key=leaf.key))]
    )
    assert node.app.served_for(None).key == a
    certs = await node.list()
    assert not certs[a].replaceable
    # an older copy of the same names is itself superseded by the default
    assert certs[resp.identity_sha256].replaceable is (sans == [HOST])
    assert not any("renews" in w for w in [*resp.warnings, *resp.notices])


async def test_renewal_from_another_ca_is_not_made_default(
    node: Node, two_cas: tuple[Pki, Pki, Pki]
) -> None:
    first, _same_ca, _other = two_cas
    a = await _import(node, first, default=True)
    other = make_chain(
        sans=[HOST], not_after=NOW + dt.timedelta(days=400),
        root_cn="Other Root CA", intermediate_cn="Other Intermediate",
    )
    resp = await node.client.import_files(
        [("o.pem", pem_bundle(other.leaf.cert, *other.chain, key=other.leaf.key))]
    )
    assert node.app.served_for(None).key == a
    assert any("another root CA" in w for w in resp.warnings)


# --------------------------------------------------------------------------- status fields


async def test_state_reports_days_left_and_renewal_state(node: Node) -> None:
    pki = make_chain(sans=[HOST], not_after=NOW + dt.timedelta(days=27, hours=12))
    sha = await _import(node, pki, default=True)
    node.clock.now = NOW
    state = await node.client.get_state()
    rows = {c.sha256: c for c in state.certificates}
    assert rows[sha].days_left == 27 and rows[sha].renewal_state == "expiring"
    node.clock.now = NOW + dt.timedelta(days=40)
    rows = {c.sha256: c for c in (await node.client.get_state()).certificates}
    assert rows[sha].days_left < 0 and rows[sha].renewal_state == "expired"


# --------------------------------------------------------------------------- config


def _node_toml(cluster_dir: Path, extra: str) -> Path:
    base = (cluster_dir / "p1" / "node.toml").read_text()
    path = cluster_dir / "p1" / "node-lifecycle.toml"
    path.write_text(base + "\n" + extra)
    return path


def test_config_reads_acme_and_alerts(cluster_dir: Path) -> None:
    path = _node_toml(
        cluster_dir,
        'monitor_interval = 600\n[acme]\nemail = "admin@example.com"\n'
        'http_listen = "127.0.0.1:8080"\nca_bundle = "ca.pem"\n'
        '[alerts]\nsmtp_host = "127.0.0.1"\nsmtp_port = 2525\nsmtp_from = "certsync@x.test"\n'
        'smtp_to = ["ops@x.test"]\nwebhook_url = "https://hooks.x.test/c"\n',
    )
    config = load_node_config(path)
    assert config.acme is not None and config.acme.email == "admin@example.com"
    assert config.acme.directory_url.startswith("https://acme-v02.api.letsencrypt.org")
    assert config.acme.ca_bundle == cluster_dir / "p1" / "ca.pem"
    assert config.alerts.smtp is not None and config.alerts.smtp.recipients == ("ops@x.test",)
    assert config.alerts.webhook_url == "https://hooks.x.test/c"
    assert config.monitor_interval == 600
    assert load_node_config(cluster_dir / "p1" / "node.toml").acme is None


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ('[acme]\nhttp_listen = "nope"\n', "http_listen"),
        ('[acme]\ndirectory_url = "ftp://x"\n', "directory_url"),
        ('[acme]\nemial = "a@b"\n', "unknown key 'acme.emial'"),
        ('[alerts]\nsmtp_host = "h"\nsmtp_from = "a@b"\nsmtp_to = []\n', "smtp_to"),
        ('[alerts]\nsmtp_port = 25\n', "smtp_host"),
        ('[alerts]\nwebhook_url = "file:///etc/passwd"\n', "webhook"),
        ("acme = 3\n", "must be a table"),
        ("monitor_interval = 0\n", "monitor_interval"),
    ],
)
def test_config_errors_are_one_line(cluster_dir: Path, extra: str, match: str) -> None:
    # a top-level key must come before the node's own tables: prepend it when it has no table
    path = _node_toml(cluster_dir, extra)
    with pytest.raises(ConfigError, match=match) as err:
        load_node_config(path)
    assert "\n" not in str(err.value)
