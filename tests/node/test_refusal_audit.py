"""Every refused call is audited, including those decided from the client certificate.

One in-process node (store, TLS endpoint, gRPC over mTLS) of a cluster with a primary and a
traffic node. Callers: the admin, the traffic node, and certificates the cluster CA signed
that name no identity of this cluster (no certsync URI; another cluster's id). Each refusal
leaves one ``rpc.refused`` row saying what the certificate says; each accepted call (the
twin) leaves none.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node.api import certsync_pb2
from node.app import NodeApp
from node.errors import PermissionDenied
from node.refusals import REFUSED
from node.store import Store
from node.store_view import AuditEvent
from node.tls import TlsEndpoint
from sync.cli import main as cli_main
from sync.client import NodeClient, NodeTarget
from sync.config import load_node_config, load_store_key
from sync.daemon import cluster_of
from sync.receiver import ReplicationService
from tests.node.helpers import serve_store_api

PASSPHRASE = b"refusal-canary-pass-51c0"


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cluster") / "c"
    assert cli_main(["cluster", "init", str(d), "--site", "support.example.com",
                     "--primary", "p1=p1.example.com", "--traffic", "t1=t1.example.com"]) == 0
    return d


@dataclass
class Node:
    app: NodeApp
    port: int
    directory: Path

    def client(self, who: str = "admin") -> NodeClient:
        d = self.directory
        cert, key = ((d / "admin.pem", d / "admin-key.pem") if who == "admin"
                     else (d / who / "node.pem", d / who / "node-key.pem"))
        return NodeClient(NodeTarget.from_files(
            name="p1", address=f"127.0.0.1:{self.port}", ca_cert=d / "ca.pem", cert=cert,
            key=key), timeout=10)

    def crafted_client(self, sans: list[x509.GeneralName], cn: str) -> NodeClient:
        """A client whose certificate this cluster's CA signed with ``sans``."""
        return NodeClient(self.crafted_target(sans, cn), timeout=10)

    def crafted_target(self, sans: list[x509.GeneralName], cn: str) -> NodeTarget:
        """A target whose client certificate this cluster's CA signed with ``sans``."""
        ca_cert = x509.load_pem_x509_certificate((self.directory / "ca.pem").read_bytes())
        ca_key = serialization.load_pem_private_key(
            (self.directory / "ca-key.pem").read_bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return NodeTarget(
            name="p1", address=f"127.0.0.1:{self.port}",
            ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))

    async def refusals(self) -> list[AuditEvent]:
        return [e for e in await self.app.store.audit_log(1000) if e.action == REFUSED]


@pytest.fixture
async def node(cluster_dir: Path, tmp_path: Path) -> AsyncIterator[Node]:
    config = load_node_config(cluster_dir / "p1" / "node.toml")
    store = await Store.open(tmp_path / "store.sqlite3", load_store_key(config.store_key_path))
    endpoint = TlsEndpoint(node_name="p1", workers=2)
    endpoint.start("127.0.0.1", 0)
    app = NodeApp(name="p1", cluster=cluster_of(config.topology, "p1"), store=store,
                  endpoint=endpoint)
    await app.refresh()
    server, port = await serve_store_api(app, config)
    try:
        yield Node(app, port, cluster_dir)
    finally:
        await server.stop(None)
        endpoint.stop()
        await store.close()


async def _a_keyed_certificate(node: Node) -> str:
    async with node.client() as c:
        resp = await c.create_self_signed(certsync_pb2.CreateSelfSignedRequest(
            name="web", key_type="ec-p256",
            subject=certsync_pb2.Subject(common_name="support.example.com"),
            sans=["support.example.com"]))
    return resp.certificate.sha256


def _cluster_id(node: Node) -> str:
    return node.app.cluster_id


# --------------------------------------------------------------------------- p12 export


async def test_a_p12_export_asked_by_a_traffic_node_is_refused_and_audited(node: Node) -> None:
    sha = await _a_keyed_certificate(node)
    async with node.client("t1") as c:
        with pytest.raises(PermissionDenied, match="may not export a private key"):
            await c.export(sha, certsync_pb2.EXPORT_FORMAT_P12, passphrase=PASSPHRASE)
    [row] = await node.refusals()
    assert row.actor == "node:t1"
    assert row.detail["outcome"] == "refused"
    assert (row.detail["method"], row.detail["sha256"], row.detail["format"]) == (
        "Export", sha, "p12")
    assert PASSPHRASE.decode() not in repr(await node.app.store.audit_log(1000))


async def test_a_p12_export_asked_by_the_admin_is_not_refused(node: Node) -> None:
    """The twin: the admin's export is made and audited as an export, not a refusal; the
    traffic node's certificate-only export is no refusal either."""
    sha = await _a_keyed_certificate(node)
    async with node.client() as c:
        assert await c.export(sha, certsync_pb2.EXPORT_FORMAT_P12, passphrase=PASSPHRASE)
    async with node.client("t1") as c:
        assert b"BEGIN CERTIFICATE" in await c.export(sha, certsync_pb2.EXPORT_FORMAT_PEM)
    assert await node.refusals() == []
    actions = [(e.actor, e.action) for e in await node.app.store.audit_log(1000)]
    assert ("admin:admin", "cert.export_p12") in actions


# --------------------------------------------------------------------------- roles


async def test_a_node_identity_calling_an_admin_rpc_is_audited(node: Node) -> None:
    async with node.client("t1") as c:
        assert await c.list_certificates() == []  # a read: allowed, not audited
        with pytest.raises(PermissionDenied, match="only an admin"):
            await c.delete("0" * 64)
    [row] = await node.refusals()
    assert (row.actor, row.detail["method"], row.detail["outcome"]) == (
        "node:t1", "Delete", "refused")


# --------------------------------------------------------------------------- certificates


@pytest.mark.parametrize("case", ["no certsync URI", "another cluster's id",
                                  "a malformed URI", "two URIs"])
async def test_a_certificate_naming_no_identity_of_this_cluster_is_audited(
    node: Node, case: str
) -> None:
    ours = _cluster_id(node)
    other = str(uuid.uuid4())
    by_case: dict[str, list[x509.GeneralName]] = {
        "no certsync URI": [x509.DNSName("intruder.example.com")],
        "another cluster's id": [x509.UniformResourceIdentifier(
            f"certsync://{other}/admin/ops")],
        "a malformed URI": [x509.UniformResourceIdentifier(f"certsync://{ours}/root/ops")],
        "two URIs": [x509.UniformResourceIdentifier(f"certsync://{ours}/admin/a"),
                     x509.UniformResourceIdentifier(f"certsync://{ours}/admin/b")],
    }
    sans = by_case[case]
    async with node.crafted_client(sans, cn="intruder") as c:
        with pytest.raises(PermissionDenied):
            await c.list_certificates()
        with pytest.raises(PermissionDenied):
            await c.delete("0" * 64)
    rows = await node.refusals()
    assert [r.detail["method"] for r in rows] == ["Delete", "List"]  # newest first
    row = rows[0]
    assert row.detail["outcome"] == "refused"
    assert row.detail["subject"] == "CN=intruder"
    assert len(row.detail["certificate_sha256"]) == 64
    assert row.detail["why"]
    if case == "another cluster's id":
        assert row.actor == "admin:ops"  # what the certificate says ...
        assert row.detail["claimed_cluster"] == other  # ... and which cluster it says
        assert other in row.detail["why"]
    else:
        assert row.actor == "cert:CN=intruder"
    assert await node.app.store.get_meta("revision") is None  # nothing else was written


async def test_a_certificate_naming_this_cluster_is_not_refused(node: Node) -> None:
    """The twin: the same crafted certificate with this cluster's admin URI is accepted."""
    sans: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(f"certsync://{_cluster_id(node)}/admin/ops")]
    async with node.crafted_client(sans, cn="intruder") as c:
        assert await c.list_certificates() == []
        with pytest.raises(Exception, match="no certificate"):
            await c.delete("0" * 64)  # authorised: refused by the store, not audited
    assert await node.refusals() == []


# --------------------------------------------------------------------------- replication


class _Context:
    """What :func:`node.refusals.authenticate` reads of a gRPC call: its peer certificate."""

    def __init__(self, pem: bytes) -> None:
        self._pem = pem

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self._pem]}


def _replication_service(node: Node) -> ReplicationService:
    replica = SimpleNamespace(topology=SimpleNamespace(cluster_id=_cluster_id(node)),
                              store=node.app.store, now=dt.datetime.now(dt.UTC))
    return ReplicationService(cast(Any, replica), cast(Any, None))


async def test_the_replication_service_audits_a_certificate_naming_no_identity(
    node: Node,
) -> None:
    crafted = node.crafted_target([x509.DNSName("intruder.example.com")], cn="intruder")
    service = _replication_service(node)
    with pytest.raises(PermissionDenied, match="certsync identity URIs"):
        await service._authenticate(cast(Any, _Context(crafted.cert_pem)), "Stage")
    [row] = await node.refusals()
    assert (row.actor, row.detail["method"], row.detail["outcome"]) == (
        "cert:CN=intruder", "Stage", "refused")


async def test_the_replication_service_accepts_a_node_of_this_cluster(node: Node) -> None:
    """The twin: t1's own certificate is an identity, and nothing is audited."""
    service = _replication_service(node)
    pem = (node.directory / "t1" / "node.pem").read_bytes()
    identity = await service._authenticate(cast(Any, _Context(pem)), "Stage")
    assert (identity.kind, identity.name) == ("node", "t1")
    assert await node.refusals() == []
