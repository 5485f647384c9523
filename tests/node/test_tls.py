"""The TLS endpoint, by real handshakes over loopback: Python ssl, openssl s_client, curl."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import structlog
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.errors import BadInput, NotFound
from node.model import PrivateKey
from node.tls import ServedCert, TlsEndpoint, _write_encrypted_key
from tests._ci import has_ipv6_loopback, require

NODE = "node-a <&>"
WWW = "www.example.test"


def _served(
    ca: trustme.CA, *names: str, key_type: trustme.KeyType = trustme.KeyType.ECDSA
) -> ServedCert:
    leaf = ca.issue_cert(*names, key_type=key_type)
    pems = [b.bytes() for b in leaf.cert_chain_pems]
    cert = x509.load_pem_x509_certificate(pems[0])
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    return ServedCert(
        sha256=cert.fingerprint(hashes.SHA256()).hex(),
        cert=cert,
        chain=tuple(x509.load_pem_x509_certificate(p) for p in pems[1:]),
        key=key,
    )


def _self_signed(key: PrivateKey, name: str) -> ServedCert:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return ServedCert(cert.fingerprint(hashes.SHA256()).hex(), cert, (), key)


class Certs:
    def __init__(self) -> None:
        self.ca = trustme.CA()
        self.other_ca = trustme.CA()
        self.exact = _served(self.ca, WWW)
        self.wildcard = _served(self.ca, "*.example.test", key_type=trustme.KeyType.RSA)
        self.default = _served(self.ca, "default.example.test")
        self.ip = _served(self.ca, "127.0.0.1")
        self.all = [self.exact, self.wildcard, self.default, self.ip]


@pytest.fixture(scope="module")
def certs() -> Certs:
    return Certs()


@pytest.fixture
def endpoint(certs: Certs, tmp_path: Path) -> Iterator[TlsEndpoint]:
    ep = TlsEndpoint(node_name=NODE, workers=4, io_timeout=5.0, scratch_dir=tmp_path)
    ep.update(certs.all, certs.default.sha256)
    ep.start("127.0.0.1", 0)
    yield ep
    ep.stop()


def _sha(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def _client_ctx(ca: trustme.CA | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ca.configure_trust(ctx)
    return ctx


def _handshake(
    port: int, sni: str | None, ctx: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> str:
    """Full handshake; the sha256 of the certificate the server sent."""
    with (
        socket.create_connection((host, port), timeout=10) as raw,
        (ctx or _client_ctx()).wrap_socket(raw, server_hostname=sni) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return _sha(der)


def _s_client(port: int, sni: str | None) -> str:
    """sha256 of the certificate ``openssl s_client`` was served."""
    name_args = ["-servername", sni] if sni is not None else ["-noservername"]
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *name_args],
        input=b"",
        capture_output=True,
        timeout=30,
        check=False,
    ).stdout
    m = re.search(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", out, re.DOTALL)
    assert m is not None, out.decode(errors="replace")
    return x509.load_pem_x509_certificate(m.group(0)).fingerprint(hashes.SHA256()).hex()


# (server name sent, which certificate it gets, reason)
SNI_TABLE = [
    pytest.param(WWW, "exact", "exact", id="exact-beats-wildcard"),
    pytest.param("WWW.Example.TEST", "exact", "exact", id="case-insensitive"),
    pytest.param("api.example.test", "wildcard", "wildcard", id="wildcard"),
    pytest.param(None, "default", "default", id="no-sni"),
    pytest.param("unknown.other.test", "default", "default", id="unknown-name"),
    pytest.param("a.b.example.test", "default", "default", id="wildcard-one-label-only"),
]


@pytest.mark.parametrize(("sni", "which", "reason"), SNI_TABLE)
def test_python_client_gets_cert_by_sni(
    endpoint: TlsEndpoint, certs: Certs, sni: str | None, which: str, reason: str
) -> None:
    expected: ServedCert = getattr(certs, which)
    assert _handshake(endpoint.address[1], sni) == expected.sha256
    selection = endpoint.served_for(sni)
    assert (selection.key, selection.reason) == (expected.sha256, reason)


@pytest.mark.parametrize(
    ("sni", "which"),
    [
        *[pytest.param(p.values[0], p.values[1], id=p.id) for p in SNI_TABLE],
        pytest.param("127.0.0.1", "ip", id="ip-literal-sni"),
    ],
)
def test_openssl_s_client_gets_cert_by_sni(
    endpoint: TlsEndpoint, certs: Certs, sni: str | None, which: str
) -> None:
    expected: ServedCert = getattr(certs, which)
    assert _s_client(endpoint.address[1], sni) == expected.sha256


def test_verifies_for_the_right_hostname(endpoint: TlsEndpoint, certs: Certs) -> None:
    assert _handshake(endpoint.address[1], WWW, _client_ctx(certs.ca)) == certs.exact.sha256


def test_wrong_hostname_fails_verification(endpoint: TlsEndpoint, certs: Certs) -> None:
    # nothing covers it, so the default is served, and it does not cover that name either
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        _handshake(endpoint.address[1], "unknown.other.test", _client_ctx(certs.ca))


def test_client_trusting_another_ca_fails(endpoint: TlsEndpoint, certs: Certs) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        _handshake(endpoint.address[1], WWW, _client_ctx(certs.other_ca))


@pytest.mark.parametrize(("default", "verifies"), [("ip", True), ("default", False)])
def test_ip_san_verifies_only_when_served(
    certs: Certs, tmp_path: Path, default: str, verifies: bool
) -> None:
    # a client connecting by IP sends no SNI, so it gets the default certificate
    ep = TlsEndpoint(node_name=NODE, workers=2, scratch_dir=tmp_path)
    ep.update(certs.all, getattr(certs, default).sha256)
    port = ep.start("127.0.0.1", 0)
    try:
        if verifies:
            assert _handshake(port, "127.0.0.1", _client_ctx(certs.ca)) == certs.ip.sha256
        else:
            with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
                _handshake(port, "127.0.0.1", _client_ctx(certs.ca))
    finally:
        ep.stop()


def _https(port: int, request: bytes, sni: str | None = WWW) -> tuple[int, dict[str, str], bytes]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        _client_ctx().wrap_socket(raw, server_hostname=sni) as tls,
    ):
        tls.sendall(request)
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    return _parse_response(data)


def _parse_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("ascii").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split(" ")[1]), headers, body


def test_https_get_returns_page_naming_the_node(endpoint: TlsEndpoint) -> None:
    status, headers, body = _https(
        endpoint.address[1], b"GET / HTTP/1.1\r\nHost: www.example.test\r\n\r\n"
    )
    assert status == 200
    assert int(headers["content-length"]) == len(body)
    assert headers["connection"] == "close"
    assert headers["content-type"].startswith("text/html")
    assert b"node-a &lt;&amp;&gt;" in body  # the node name, escaped


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", id="post"),
        pytest.param(b"GET / HTTP/2.0\r\n\r\n", id="bad-version"),
        pytest.param(b"GET nopath HTTP/1.1\r\n\r\n", id="bad-target"),
        pytest.param(b"hello\r\n\r\n", id="garbage"),
        pytest.param(b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", id="oversize-head"),
    ],
)
def test_anything_but_get_gets_400(endpoint: TlsEndpoint, request_bytes: bytes) -> None:
    status, headers, body = _https(endpoint.address[1], request_bytes)
    assert status == 400
    assert int(headers["content-length"]) == len(body)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=300).map(lambda b: b + b"\r\n\r\n"))
def test_any_request_head_gets_an_answer_and_server_lives(
    endpoint: TlsEndpoint, request_bytes: bytes
) -> None:
    status, _, _ = _https(endpoint.address[1], request_bytes)
    assert status in (200, 400)
    assert status == 200 or not request_bytes.startswith(b"GET / HTTP/1.1\r\n")


@pytest.mark.parametrize(("name", "ok"), [(WWW, True), ("unknown.other.test", False)])
def test_curl_verifies_and_fetches_page(
    endpoint: TlsEndpoint, certs: Certs, tmp_path: Path, name: str, ok: bool
) -> None:
    ca_file = tmp_path / "ca.pem"
    certs.ca.cert_pem.write_to_path(str(ca_file))
    port = endpoint.address[1]
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "20",
            "--cacert",
            str(ca_file),
            "--resolve",
            f"{name}:{port}:127.0.0.1",
            f"https://{name}:{port}/",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if ok:
        assert result.returncode == 0, result.stderr
        assert b"certsync node node-a" in result.stdout
    else:
        assert result.returncode == 60, result.stderr  # peer certificate cannot be verified


def test_update_swaps_cert_for_next_handshake_and_keeps_open_connection(
    endpoint: TlsEndpoint, certs: Certs
) -> None:
    port = endpoint.address[1]
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        _client_ctx().wrap_socket(raw, server_hostname=WWW) as old_conn,
    ):
        old_der = old_conn.getpeercert(binary_form=True)
        assert old_der is not None and _sha(old_der) == certs.exact.sha256

        replacement = _served(certs.ca, WWW)
        endpoint.update([replacement, certs.wildcard, certs.default], certs.default.sha256)

        assert _handshake(port, WWW) == replacement.sha256
        assert _s_client(port, "127.0.0.1") == certs.default.sha256  # the IP cert is gone
        # the connection opened before the update still works
        old_conn.sendall(b"GET / HTTP/1.1\r\nHost: www.example.test\r\n\r\n")
        data = b""
        while chunk := old_conn.recv(65536):
            data += chunk
    assert _parse_response(data)[0] == 200


def test_no_certificate_fails_handshake_and_server_survives(certs: Certs, tmp_path: Path) -> None:
    ep = TlsEndpoint(node_name=NODE, workers=2, scratch_dir=tmp_path)
    port = ep.start("127.0.0.1", 0)
    try:
        assert ep.served_for(WWW).key is None
        for sni in (WWW, None):
            with pytest.raises(ssl.SSLError, match=r"UNRECOGNIZED_NAME|HANDSHAKE_FAILURE"):
                _handshake(port, sni)
        ep.update([certs.exact], None)
        assert _handshake(port, WWW) == certs.exact.sha256
        # no default: a name nothing covers still fails, and the server still lives
        with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
            _handshake(port, "unknown.other.test")
        assert _handshake(port, WWW) == certs.exact.sha256
    finally:
        ep.stop()


def test_update_with_wrong_key_is_refused_and_old_set_kept(
    endpoint: TlsEndpoint, certs: Certs, tmp_path: Path
) -> None:
    other_key = ec.generate_private_key(ec.SECP256R1())
    bad = ServedCert(certs.exact.sha256, certs.exact.cert, (), other_key)
    with pytest.raises(BadInput, match=certs.exact.sha256):
        endpoint.update([bad, certs.default], certs.default.sha256)
    assert list(tmp_path.iterdir()) == []
    assert _s_client(endpoint.address[1], "127.0.0.1") == certs.ip.sha256
    assert _handshake(endpoint.address[1], WWW) == certs.exact.sha256


def test_update_with_unknown_default_is_refused(endpoint: TlsEndpoint, certs: Certs) -> None:
    with pytest.raises(NotFound, match="0" * 64):
        endpoint.update([certs.exact], "0" * 64)
    assert endpoint.served_for(None).key == certs.default.sha256


def _canary_forms(key: PrivateKey) -> list[bytes]:
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    trad = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    body = b"".join(pem.splitlines()[1:-1])
    return [
        der,
        scalar,
        body[:40],
        body[40:80],
        b"".join(trad.splitlines()[1:-1])[:40],
        scalar.hex().encode(),
    ]


def test_canary_key_never_left_on_disk_or_in_logs(tmp_path: Path) -> None:
    canary = ec.generate_private_key(ec.SECP256R1())
    served = _self_signed(canary, "canary.example.test")
    ep = TlsEndpoint(node_name=NODE, workers=2, scratch_dir=tmp_path)
    with structlog.testing.capture_logs() as logs:
        ep.update([served], served.sha256)
        port = ep.start("127.0.0.1", 0)
        try:
            assert _https(port, b"GET / HTTP/1.1\r\n\r\n", "canary.example.test")[0] == 200
        finally:
            ep.stop()
    assert list(tmp_path.iterdir()) == []  # temp files and their directory are gone
    text = repr(logs).encode()
    assert b"tls.updated" in text
    for form in _canary_forms(canary):
        assert form not in text


def test_key_file_is_encrypted_and_private(tmp_path: Path) -> None:
    canary = ec.generate_private_key(ec.SECP256R1())
    path, password = _write_encrypted_key(tmp_path, "k", canary)
    data = path.read_bytes()
    assert path.stat().st_mode & 0o777 == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in data
    for form in _canary_forms(canary):
        assert form not in data
    # and it is the key: the one-time password opens it; a wrong one does not
    opened = serialization.load_pem_private_key(data, password)
    assert isinstance(opened, ec.EllipticCurvePrivateKey)
    assert opened.private_numbers() == canary.private_numbers()
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(data, b"wrong" + password)


def test_access_log_records_the_choice_per_request(certs: Certs, tmp_path: Path) -> None:
    ep = TlsEndpoint(node_name=NODE, io_timeout=5.0, access_log=True, scratch_dir=tmp_path)
    ep.update(certs.all, certs.default.sha256)
    port = ep.start("127.0.0.1", 0)
    try:
        with structlog.testing.capture_logs() as logs:
            _https(port, b"GET / HTTP/1.1\r\n\r\n", "api.example.test")
            _https(port, b"GET / HTTP/1.1\r\n\r\n", None)
    finally:
        ep.stop()
    requests = [e for e in logs if e["event"] == "tls.request"]
    assert [(e["server_name"], e["sha256"], e["reason"], e["status"], e["log_level"])
            for e in requests] == [
        ("api.example.test", certs.wildcard.sha256, "wildcard", 200, "info"),
        (None, certs.default.sha256, "default", 200, "info"),
    ]
    assert all(e["node_name"] == NODE for e in requests)


def test_without_the_access_log_requests_are_only_counted(
    endpoint: TlsEndpoint, certs: Certs
) -> None:
    before = endpoint.handshakes["wildcard"]
    with structlog.testing.capture_logs() as logs:
        assert _https(endpoint.address[1], b"GET / HTTP/1.1\r\n\r\n", "api.example.test")[0] == 200
    assert [e for e in logs if e["event"] == "tls.request"] == []
    assert endpoint.handshakes["wildcard"] == before + 1


def test_slow_client_cannot_hold_the_only_worker(certs: Certs, tmp_path: Path) -> None:
    ep = TlsEndpoint(node_name=NODE, workers=1, io_timeout=0.5, scratch_dir=tmp_path)
    ep.update(certs.all, certs.default.sha256)
    port = ep.start("127.0.0.1", 0)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            # the only worker is now waiting for this silent client's ClientHello
            start = time.monotonic()
            assert _handshake(port, WWW) == certs.exact.sha256
            assert time.monotonic() - start < 5
            assert slow.recv(1024) == b""  # the server gave up on the silent client
    finally:
        ep.stop()


def test_concurrent_handshakes_each_get_their_cert(endpoint: TlsEndpoint, certs: Certs) -> None:
    names = [WWW, "x.example.test", None, "127.0.0.1"] * 10
    expected = [certs.exact, certs.wildcard, certs.default, certs.default] * 10
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda n: _handshake(endpoint.address[1], n), names))
    assert got == [c.sha256 for c in expected]


def test_ipv6_listener(certs: Certs, tmp_path: Path) -> None:
    require(has_ipv6_loopback(), "an IPv6 loopback (::1) on this machine")
    ep = TlsEndpoint(node_name=NODE, workers=2, scratch_dir=tmp_path)
    ep.update(certs.all, certs.default.sha256)
    port = ep.start("::1", 0)
    try:
        assert ep.address == ("::1", port)
        assert _handshake(port, WWW, host="::1") == certs.exact.sha256
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        ep.stop()


def test_stop_closes_listener_and_ends_workers(certs: Certs, tmp_path: Path) -> None:
    ep = TlsEndpoint(node_name=NODE, workers=3, scratch_dir=tmp_path)
    ep.update(certs.all, certs.default.sha256)
    port = ep.start("127.0.0.1", 0)
    assert _handshake(port, WWW) == certs.exact.sha256
    before = {t.name for t in threading.enumerate()}
    assert {"tls-worker-0", "tls-worker-1", "tls-worker-2"} <= before
    ep.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert not any(t.name.startswith("tls-worker-") and t.is_alive() for t in threading.enumerate())


def test_start_on_busy_port_is_bad_input(endpoint: TlsEndpoint, tmp_path: Path) -> None:
    other = TlsEndpoint(node_name=NODE, scratch_dir=tmp_path)
    with pytest.raises(BadInput, match=str(endpoint.address[1])):
        other.start("127.0.0.1", endpoint.address[1])


@pytest.mark.parametrize("in_memory", [True, False], ids=["memfd", "encrypted-file"])
def test_both_ways_to_hand_keys_to_openssl(tmp_path: Path, in_memory: bool) -> None:
    """Keys reach OpenSSL through memfds (Linux) or, elsewhere, a one-time encrypted file:
    both serve, both leave no file and no open descriptor, both refuse a mismatched key."""
    key = ec.generate_private_key(ec.SECP256R1())
    served = _self_signed(key, "keys.example.test")
    ep = TlsEndpoint(node_name=NODE, workers=2, scratch_dir=tmp_path)
    ep._in_memory = in_memory
    fds = set(Path("/proc/self/fd").iterdir())
    ep.update([served], served.sha256)
    assert set(Path("/proc/self/fd").iterdir()) <= fds  # every descriptor closed again
    assert list(tmp_path.iterdir()) == []
    port = ep.start("127.0.0.1", 0)
    try:
        assert _https(port, b"GET / HTTP/1.1\r\n\r\n", "keys.example.test")[0] == 200
        wrong = ServedCert(sha256=served.sha256, cert=served.cert, chain=(),
                           key=ec.generate_private_key(ec.SECP256R1()))
        other = _self_signed(ec.generate_private_key(ec.SECP256R1()), "other.example.test")
        with pytest.raises(BadInput, match="cannot be served with its key"):
            ep.update([other, ServedCert(sha256="0" * 64, cert=wrong.cert, chain=(),
                                         key=wrong.key)], other.sha256)
        # the refused update changed nothing: the old set is still served
        assert _https(port, b"GET / HTTP/1.1\r\n\r\n", "keys.example.test")[0] == 200
    finally:
        ep.stop()
    assert list(tmp_path.iterdir()) == []
