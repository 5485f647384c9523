"""The gRPC API of one in-process node: every RPC, role checks, error mapping, canaries.

A real node (store, TLS endpoint, grpc.aio server on port 0) with real mTLS material from
``certsync cluster init``; clients are :class:`sync.client.NodeClient` over mutual TLS.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from node.api import certsync_pb2
from node.app import NodeApp
from node.errors import (
    BadInput,
    CertsyncError,
    CheckFailed,
    Conflict,
    FormatError,
    HostnameError,
    NodeUnreachable,
    NotFound,
    PassphraseError,
    PermissionDenied,
)
from node.store import Store
from node.tls import TlsEndpoint
from sync.cli import main as cli_main
from sync.client import NodeClient, NodeTarget
from sync.config import load_node_config, load_store_key
from sync.daemon import cluster_of
from tests.node.helpers import serve_store_api

CANARY_PASSPHRASE = b"canary-pass-9d41e7"
NOW = dt.datetime.now(dt.UTC)


def _init_cluster(directory: Path) -> None:
    rc = cli_main(
        [
            "cluster", "init", str(directory), "--site", "support.example.com",
            "--primary", "p1=p1.example.com", "--backup", "b1=b1.example.com",
        ]
    )
    assert rc == 0


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cluster") / "c"
    _init_cluster(d)
    return d


@pytest.fixture(scope="module")
def foreign_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("foreign") / "c"
    _init_cluster(d)
    return d


@dataclass
class Node:
    app: NodeApp
    port: int
    tls_port: int
    store_path: Path
    cluster_dir: Path

    def target(self, who: str = "admin", directory: Path | None = None) -> NodeTarget:
        d = directory or self.cluster_dir
        cert, key = (
            (d / f"{who}.pem", d / f"{who}-key.pem")
            if who in ("admin", "monitor")
            else (d / who / "node.pem", d / who / "node-key.pem")
        )
        return NodeTarget.from_files(
            name="p1", address=f"127.0.0.1:{self.port}", ca_cert=d / "ca.pem", cert=cert, key=key
        )

    def client(self, who: str = "admin", directory: Path | None = None) -> NodeClient:
        return NodeClient(self.target(who, directory), timeout=10)

    def store_bytes(self) -> dict[str, bytes]:
        return {
            p.name: p.read_bytes()
            for p in self.store_path.parent.iterdir()
            if p.name.startswith(self.store_path.name)
        }


@pytest.fixture
async def node(cluster_dir: Path, tmp_path: Path) -> AsyncIterator[Node]:
    config = load_node_config(cluster_dir / "p1" / "node.toml")
    store_path = tmp_path / "store.sqlite3"
    store = await Store.open(store_path, load_store_key(config.store_key_path))
    endpoint = TlsEndpoint(node_name="p1", workers=2)
    tls_port = endpoint.start("127.0.0.1", 0)
    app = NodeApp(name="p1", cluster=cluster_of(config.topology, "p1"), store=store,
                  endpoint=endpoint)
    await app.refresh()
    server, port = await serve_store_api(app, config)
    try:
        yield Node(app, port, tls_port, store_path, cluster_dir)
    finally:
        await server.stop(None)
        endpoint.stop()
        await store.close()


# --------------------------------------------------------------------------- material


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    key: ec.EllipticCurvePrivateKey,
    names: list[str],
    *,
    days: int = 90,
    start: dt.datetime | None = None,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None,
    ca: bool = False,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    issuer_name, issuer_key = issuer or (subject, key)
    begin = start or NOW - dt.timedelta(days=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(begin)
        .not_valid_after(begin + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(*items: x509.Certificate | ec.EllipticCurvePrivateKey) -> bytes:
    out = b""
    for item in items:
        if isinstance(item, x509.Certificate):
            out += item.public_bytes(serialization.Encoding.PEM)
        else:
            out += item.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
    return out


def _sha(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _served_sha(port: int, server_name: str | None) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        ctx.wrap_socket(sock, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


@pytest.fixture
def canary_logs() -> Iterator[list[structlog.typing.EventDict]]:
    with structlog.testing.capture_logs() as logs:
        yield logs


def _assert_no_canary(text: str | bytes, *canaries: bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    for canary in canaries:
        assert canary not in data


# --------------------------------------------------------------------------- tests


async def test_create_self_signed_is_listed_default_and_served(node: Node) -> None:
    async with node.client() as c:
        resp = await c.create_self_signed(
            certsync_pb2.CreateSelfSignedRequest(
                name="web", key_type="ec-p256",
                subject=certsync_pb2.Subject(common_name="support.example.com"),
                sans=["support.example.com", "*.atlas.example.com"],
            )
        )
        sha = resp.certificate.sha256
        certs = await c.list_certificates()
        exact = await c.sni_lookup("support.example.com")
        wild = await c.sni_lookup("t1.atlas.example.com")
        nothing = await c.sni_lookup("other.example.org")
        no_sni = await c.sni_lookup(None)
    assert [(x.sha256, x.name, x.has_key, x.is_default, x.role) for x in certs] == [
        (sha, "web", True, True, "identity")
    ]
    assert (exact.sha256, exact.reason) == (sha, "exact")
    assert (wild.sha256, wild.reason) == (sha, "wildcard")
    assert (nothing.sha256, nothing.reason) == (sha, "default")
    assert (no_sni.sha256, no_sni.reason) == (sha, "default")
    assert _served_sha(node.tls_port, "support.example.com") == sha


async def test_sni_picks_the_covering_certificate_not_the_default(node: Node) -> None:
    k1, k2 = _key(), _key()
    c1, c2 = _cert(k1, ["a.example.com"]), _cert(k2, ["b.example.com"])
    async with node.client() as c:
        s1 = (await c.import_files([("a.pem", _pem(c1, k1))])).identity_sha256
        s2 = (await c.import_files([("b.pem", _pem(c2, k2))])).identity_sha256
        hit = await c.sni_lookup("b.example.com")
        miss = await c.sni_lookup("c.example.com")
    assert (s1, s2) == (_sha(c1), _sha(c2))
    assert (hit.sha256, hit.reason) == (s2, "exact")
    assert (miss.sha256, miss.reason) == (s1, "default")
    assert _served_sha(node.tls_port, "b.example.com") == s2
    assert _served_sha(node.tls_port, "c.example.com") == s1


async def test_import_with_chain_stores_roles_and_exports(node: Node) -> None:
    ca_key, leaf_key = _key(), _key()
    ca = _cert(ca_key, ["Test Root"], ca=True)
    leaf = _cert(leaf_key, ["support.example.com"], issuer=(ca.subject, ca_key))
    async with node.client() as c:
        resp = await c.import_files(
            [("chain.pem", _pem(leaf, ca)), ("key.pem", _pem(leaf_key))], name="site"
        )
        roles = {x.sha256: (x.role, x.has_key, x.name) for x in await c.list_certificates()}
        pem = await c.export(resp.identity_sha256, certsync_pb2.EXPORT_FORMAT_PEM)
        der = await c.export(resp.identity_sha256, certsync_pb2.EXPORT_FORMAT_DER)
        p12 = await c.export(
            resp.identity_sha256, certsync_pb2.EXPORT_FORMAT_P12, passphrase=CANARY_PASSPHRASE
        )
    assert roles[_sha(leaf)] == ("identity", True, "site")
    assert roles[_sha(ca)][:2] == ("root", False)
    assert x509.load_pem_x509_certificates(pem) == [leaf, ca]
    assert b"PRIVATE KEY" not in pem
    assert x509.load_der_x509_certificate(der) == leaf
    key, cert, extra = pkcs12.load_key_and_certificates(p12, CANARY_PASSPHRASE)
    assert cert == leaf and extra == [ca]
    assert key is not None and key.private_numbers() == leaf_key.private_numbers()  # type: ignore[union-attr]


async def test_import_p12_with_passphrase(node: Node) -> None:
    key = _key()
    cert = _cert(key, ["p12.example.com"])
    blob = pkcs12.serialize_key_and_certificates(
        b"x", key, cert, None, serialization.BestAvailableEncryption(CANARY_PASSPHRASE)
    )
    async with node.client() as c:
        resp = await c.import_files([("x.p12", blob)], passphrase=CANARY_PASSPHRASE)
    assert resp.identity_sha256 == _sha(cert)


def _expired() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    return key, _cert(key, ["old.example.com"], start=NOW - dt.timedelta(days=30), days=10)


async def _bad_import(c: NodeClient, case: str) -> None:
    key = _key()
    if case == "garbage":
        await c.import_files([("junk.bin", b"\x00\x01 not a certificate")])
    elif case == "key-only":
        await c.import_files([("key.pem", _pem(key))])
    elif case == "wrong-key":
        await c.import_files([("c.pem", _pem(_cert(key, ["w.example.com"]), _key()))])
    elif case == "wrong-passphrase":
        cert = _cert(key, ["p.example.com"])
        blob = pkcs12.serialize_key_and_certificates(
            b"x", key, cert, None, serialization.BestAvailableEncryption(CANARY_PASSPHRASE)
        )
        await c.import_files([("x.p12", blob)], passphrase=b"not-it")
    elif case == "expired-default":
        k, cert = _expired()
        await c.import_files([("old.pem", _pem(cert, k))], make_default=True)
    elif case == "nothing":
        await c.import_files([])


@pytest.mark.parametrize(
    ("case", "error", "says"),
    [
        ("garbage", FormatError, "junk.bin"),
        ("key-only", BadInput, "a private key but no certificate"),
        # the service's own check, by its message (the store would refuse later, otherwise)
        ("wrong-key", BadInput, "private key in the input does not belong to its identity"),
        ("wrong-passphrase", PassphraseError, "x.p12"),
        ("expired-default", Conflict, "expired on"),
        ("nothing", BadInput, "nothing to import"),
    ],
)
async def test_bad_import_changes_nothing(
    node: Node, case: str, error: type[CertsyncError], says: str,
    canary_logs: list[structlog.typing.EventDict],
) -> None:
    async with node.client() as c:
        await c.create_self_signed(
            certsync_pb2.CreateSelfSignedRequest(
                name="base", key_type="ec-p256",
                subject=certsync_pb2.Subject(common_name="base.example.com"),
            )
        )
        before = node.store_bytes()
        with pytest.raises(error) as info:
            await _bad_import(c, case)
    assert type(info.value) is error
    assert says in str(info.value)
    assert node.store_bytes() == before
    _assert_no_canary(str(info.value), CANARY_PASSPHRASE)
    _assert_no_canary(repr(canary_logs), CANARY_PASSPHRASE)


async def test_matching_key_and_certificate_import_with_the_key(node: Node) -> None:
    """Positive twin of ``wrong-key``: the same shape of input with the certificate's own key
    is stored with its key."""
    key = _key()
    cert = _cert(key, ["w.example.com"])
    async with node.client() as c:
        resp = await c.import_files([("c.pem", _pem(cert, key))])
        certs = await c.list_certificates()
    assert resp.identity_sha256 == _sha(cert)
    assert [x.has_key for x in certs if x.sha256 == _sha(cert)] == [True]


async def test_expired_default_is_allowed_when_forced_with_a_warning(node: Node) -> None:
    """Positive twin of the expired-default refusal."""
    k, cert = _expired()
    async with node.client() as c:
        resp = await c.import_files([("old.pem", _pem(cert, k))], make_default=True, force=True)
        certs = await c.list_certificates()
    assert any("expired" in w for w in resp.warnings)
    assert [x.sha256 for x in certs if x.is_default] == [_sha(cert)]


@pytest.mark.parametrize("force", [False, True])
async def test_set_default_expired(node: Node, force: bool) -> None:
    k, old = _expired()
    async with node.client() as c:
        await c.create_self_signed(
            certsync_pb2.CreateSelfSignedRequest(
                name="cur", key_type="ec-p256",
                subject=certsync_pb2.Subject(common_name="cur.example.com"),
            )
        )
        await c.import_files([("old.pem", _pem(old, k))])
        before = node.store_bytes()
        if force:
            warnings = await c.set_default(_sha(old), force=True, confirm_ca_change=True)
            assert warnings and "expired" in warnings[0]
            assert (await c.sni_lookup(None)).sha256 == _sha(old)
        else:
            with pytest.raises(Conflict, match="expired"):
                await c.set_default(_sha(old))
            assert node.store_bytes() == before


async def test_delete_default_refused_while_others_exist(node: Node) -> None:
    async with node.client() as c:
        first = await c.create_self_signed(
            certsync_pb2.CreateSelfSignedRequest(
                name="a", key_type="ec-p256", subject=certsync_pb2.Subject(common_name="a.test")
            )
        )
        second = await c.create_self_signed(
            certsync_pb2.CreateSelfSignedRequest(
                name="b", key_type="ec-p256", subject=certsync_pb2.Subject(common_name="b.test")
            )
        )
        before = node.store_bytes()
        with pytest.raises(CheckFailed, match="is the default"):  # issue 11: exit 1
            await c.delete(first.certificate.sha256)
        assert node.store_bytes() == before
        await c.delete(second.certificate.sha256)  # negative twin: a non-default goes
        remaining = [x.sha256 for x in await c.list_certificates()]
    assert remaining == [first.certificate.sha256]


@pytest.mark.parametrize(
    ("sha", "error"),
    [("0" * 64, NotFound), ("xyz", BadInput), ("", BadInput)],
)
async def test_unknown_or_malformed_sha(node: Node, sha: str, error: type[CertsyncError]) -> None:
    async with node.client() as c:
        for call in (c.delete, c.set_default):
            with pytest.raises(error):
                await call(sha)


@pytest.mark.parametrize(
    ("fmt", "passphrase", "error"),
    [
        (certsync_pb2.EXPORT_FORMAT_P12, None, BadInput),
        (certsync_pb2.EXPORT_FORMAT_P12, b"", BadInput),
        (certsync_pb2.EXPORT_FORMAT_PEM, b"pw", BadInput),
    ],
)
async def test_export_passphrase_rules(
    node: Node, fmt: certsync_pb2.ExportFormat.ValueType, passphrase: bytes | None,
    error: type[CertsyncError],
) -> None:
    async with node.client() as c:
        created = await c.create_self_signed(
            certsync_pb2.CreateSelfSignedRequest(
                name="e", key_type="ec-p256", subject=certsync_pb2.Subject(common_name="e.test")
            )
        )
        with pytest.raises(error):
            await c.export(created.certificate.sha256, fmt, passphrase=passphrase)


async def test_p12_export_of_a_certificate_without_key_is_refused(node: Node) -> None:
    cert = _cert(_key(), ["nokey.example.com"])
    async with node.client() as c:
        sha = (await c.import_files([("c.pem", _pem(cert))])).identity_sha256
        with pytest.raises(Conflict, match="no private key"):
            await c.export(sha, certsync_pb2.EXPORT_FORMAT_P12, passphrase=b"pw")
        p7b = await c.export(sha, certsync_pb2.EXPORT_FORMAT_P7B)
    assert b"PRIVATE" not in p7b


@pytest.mark.parametrize("bad", ["http://x.example.com/", "a..b", "[::1]", "foo:bar"])
async def test_bad_hostnames_are_bad_input(node: Node, bad: str) -> None:
    async with node.client() as c:
        with pytest.raises(HostnameError):
            await c.sni_lookup(bad)
        with pytest.raises(BadInput):
            await c.create_self_signed(
                certsync_pb2.CreateSelfSignedRequest(
                    name="h", key_type="ec-p256",
                    subject=certsync_pb2.Subject(common_name="h"), sans=[bad],
                )
            )


async def test_csr_create_list_show(node: Node) -> None:
    async with node.client() as c:
        made = await c.create_request(
            certsync_pb2.CreateRequestRequest(
                name="req", key_type="rsa-2048",
                subject=certsync_pb2.Subject(common_name="csr.example.com", org="Example"),
                sans=["csr.example.com"],
            )
        )
        listed = await c.list_requests()
        shown = await c.show_request(made.id)
        with pytest.raises(NotFound):
            await c.show_request("0000000000000000")
    csr = x509.load_pem_x509_csr(shown.pem.encode())
    assert csr.is_signature_valid
    assert [r.id for r in listed] == [made.id]
    assert "PRIVATE" not in shown.pem


async def test_node_identity_may_read_but_not_change(node: Node) -> None:
    async with node.client("b1") as c:
        assert await c.list_certificates() == []
        state = await c.get_state()
        with pytest.raises(PermissionDenied, match="admin"):
            await c.import_files([("a.pem", _pem(_cert(_key(), ["x.test"])))])
        with pytest.raises(PermissionDenied):
            await c.delete("0" * 64)
    assert (state.name, state.role) == ("p1", "primary")
    audit = await node.app.store.audit_log()
    refused = [e for e in audit if e.action == "rpc.refused"]
    assert [e.actor for e in refused] == ["node:b1", "node:b1"]
    assert {e.detail["method"] for e in refused} == {"Import", "Delete"}


async def test_monitor_identity_may_not_even_read(node: Node) -> None:
    async with node.client("monitor") as c:
        with pytest.raises(PermissionDenied, match="monitor identity may only read /metrics"):
            await c.list_certificates()
        with pytest.raises(PermissionDenied, match="monitor"):
            await c.get_state()
    refused = [e for e in await node.app.store.audit_log() if e.action == "rpc.refused"]
    assert {e.actor for e in refused} == {"monitor:monitor"}


async def test_certificate_from_another_ca_is_refused_at_the_handshake(
    node: Node, foreign_dir: Path
) -> None:
    async with node.client("admin", foreign_dir) as c:
        with pytest.raises(PermissionDenied, match="is not from the CA in this config"):
            await c.list_certificates()


async def test_unreachable_node_says_so() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = NodeTarget(name="p1", address=f"127.0.0.1:{port}", ca_pem=b"", cert_pem=b"",
                        key_pem=b"")
    async with NodeClient(target, timeout=3) as c:
        with pytest.raises(NodeUnreachable, match=r"node 'p1' at 127\.0\.0\.1:\d+ is unreachable"):
            await c.get_state()


async def test_get_state_reports_digest_and_default(node: Node) -> None:
    async with node.client() as c:
        empty = await c.get_state()
        created = await c.create_self_signed(
            certsync_pb2.CreateSelfSignedRequest(
                name="s", key_type="ec-p256", subject=certsync_pb2.Subject(common_name="s.test")
            )
        )
        after = await c.get_state()
    assert empty.default_sha256 == ""
    assert after.default_sha256 == created.certificate.sha256
    assert after.set_digest != empty.set_digest and len(after.set_digest) == 64
    assert after.revision > empty.revision


async def test_health_and_reflection(node: Node) -> None:
    target = node.target()
    creds = grpc.ssl_channel_credentials(target.ca_pem, target.key_pem, target.cert_pem)
    async with grpc.aio.secure_channel(
        target.address, creds, options=(("grpc.ssl_target_name_override", target.server_name),)
    ) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(service="certsync.v1.CertStore"))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        names: list[str] = []
        async for resp in refl.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        ):
            names = [s.name for s in resp.list_services_response.service]
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "certsync.v1.CertStore" in names


async def test_canaries_never_leave_the_node(
    node: Node, canary_logs: list[structlog.typing.EventDict]
) -> None:
    key = _key()
    key_body = _pem(key).splitlines()[1]
    cert = _cert(key, ["canary.example.com"])
    blob = pkcs12.serialize_key_and_certificates(
        b"x", key, cert, None, serialization.BestAvailableEncryption(CANARY_PASSPHRASE)
    )
    async with node.client() as c:
        imported = await c.import_files([("c.p12", blob)], passphrase=CANARY_PASSPHRASE)
        sha = imported.identity_sha256
        exports = [
            await c.export(sha, fmt)
            for fmt in (
                certsync_pb2.EXPORT_FORMAT_PEM,
                certsync_pb2.EXPORT_FORMAT_DER,
                certsync_pb2.EXPORT_FORMAT_P7B,
            )
        ]
        with pytest.raises(PassphraseError) as info:
            await c.import_files([("c.p12", blob)], passphrase=CANARY_PASSPHRASE + b"x")
    raw_der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    secret_scalar = key.private_numbers().private_value.to_bytes(32, "big")
    for data in [*exports, *node.store_bytes().values()]:
        _assert_no_canary(data, CANARY_PASSPHRASE, key_body, raw_der, secret_scalar)
    _assert_no_canary(str(info.value), CANARY_PASSPHRASE, CANARY_PASSPHRASE + b"x")
    _assert_no_canary(repr(canary_logs), CANARY_PASSPHRASE, key_body)
    audit = await node.app.store.audit_log()
    _assert_no_canary(repr(audit), CANARY_PASSPHRASE, key_body)
