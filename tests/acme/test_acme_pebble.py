"""ACME against a real Pebble: full orders, a failing validation, retries and the alert."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from structlog.testing import capture_logs

from node.acme_client import (
    CHALLENGE_PREFIX,
    Http01Responder,
    generate_key,
    request_certificate,
    start_http01_responder,
)
from node.alerts import AlertConfig, ExpiryAlert, deliver_alert
from node.errors import AcmeError, BadInput, HostnameError
from node.lifecycle import CertState, record_alert, record_failure, renewal_decision
from node.model import KeyType

from .conftest import Pebble

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def _dns_sans(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName)


@pytest.mark.parametrize(
    ("key_type", "key_class", "size"),
    [("ec-p256", ec.EllipticCurvePrivateKey, 256), ("rsa-2048", rsa.RSAPrivateKey, 2048)],
)
async def test_full_order(
    pebble: Pebble,
    responder: Http01Responder,
    key_type: KeyType,
    key_class: type,
    size: int,
) -> None:
    hostname = f"{key_type}.certsync.test"
    with capture_logs() as events:
        result = await request_certificate(
            directory_url=pebble.directory_url,
            email="admin@example.com",
            hostname=hostname,
            key_type=key_type,
            responder=responder,
            account_key=None,
            ca_bundle=pebble.ca_bundle,
            now=NOW,
        )
    assert _dns_sans(result.cert) == [hostname]
    assert isinstance(result.key, key_class)
    assert isinstance(result.key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    assert result.key.key_size == size
    assert result.cert.public_key() == result.key.public_key()
    intermediate = pebble.intermediate()
    assert result.chain[0] == intermediate
    result.cert.verify_directly_issued_by(intermediate)
    assert result.requested_at == NOW
    # our responder answered Pebble's validation request
    assert any(e["event"] == "acme_challenge_served" for e in events)
    issued = [e for e in events if e["event"] == "acme_certificate_issued"]
    assert issued and issued[0]["hostname"] == hostname


async def test_existing_account_key_is_reused(
    pebble: Pebble, responder: Http01Responder
) -> None:
    account_key = generate_key("ec-p256")
    results = [
        await request_certificate(
            directory_url=pebble.directory_url,
            email=None,
            hostname=f"reuse{i}.certsync.test",
            key_type="ec-p256",
            responder=responder,
            account_key=account_key,
            ca_bundle=pebble.ca_bundle,
            now=NOW,
        )
        for i in range(2)
    ]
    assert all(r.account_key is account_key for r in results)
    assert [_dns_sans(r.cert) for r in results] == [
        ["reuse0.certsync.test"],
        ["reuse1.certsync.test"],
    ]


async def test_pebble_tls_is_refused_without_its_ca(
    pebble: Pebble, responder: Http01Responder
) -> None:
    """Negative twin of the trusted bundle: another CA does not verify Pebble's TLS."""
    other = trustme.CA()
    with other.cert_pem.tempfile() as path, pytest.raises(AcmeError, match="TLS verification"):
        await request_certificate(
            directory_url=pebble.directory_url,
            email=None,
            hostname="tls.certsync.test",
            key_type="ec-p256",
            responder=responder,
            account_key=None,
            ca_bundle=Path(path),
            now=NOW,
        )


@pytest.mark.parametrize(
    ("hostname", "key_type", "error"),
    [
        ("https://x.certsync.test/", "ec-p256", HostnameError),
        ("*.certsync.test", "ec-p256", HostnameError),
        ("127.0.0.1", "ec-p256", BadInput),
        ("ok.certsync.test", "ed25519", BadInput),
    ],
)
async def test_bad_requests_are_refused_before_any_order(
    pebble: Pebble, responder: Http01Responder, hostname: str, key_type: KeyType, error: type
) -> None:
    with pytest.raises(error):
        await request_certificate(
            directory_url=pebble.directory_url,
            email=None,
            hostname=hostname,
            key_type=key_type,
            responder=responder,
            account_key=None,
            ca_bundle=pebble.ca_bundle,
            now=NOW,
        )


async def test_unreachable_directory(pebble: Pebble, responder: Http01Responder) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    url = f"https://127.0.0.1:{port}/dir"
    with pytest.raises(AcmeError, match="cannot reach the ACME directory") as info:
        await request_certificate(
            directory_url=url,
            email=None,
            hostname="down.certsync.test",
            key_type="ec-p256",
            responder=responder,
            account_key=None,
            ca_bundle=pebble.ca_bundle,
            now=NOW,
        )
    assert repr(url) in str(info.value)


async def test_stopped_responder_is_refused_at_once(pebble: Pebble) -> None:
    stopped, _ = await start_http01_responder("127.0.0.1", 0)
    await stopped.close()
    with pytest.raises(AcmeError, match=r"responder .* is not running"):
        await request_certificate(
            directory_url=pebble.directory_url,
            email=None,
            hostname="stopped.certsync.test",
            key_type="ec-p256",
            responder=stopped,
            account_key=None,
            ca_bundle=pebble.ca_bundle,
            now=NOW,
        )


async def test_validation_failure_retries_then_alerts(pebble: Pebble) -> None:
    """Pebble cannot reach a responder (it listens elsewhere): the order fails with a clear
    AcmeError, the lifecycle schedules a retry, and 24 days before expiry the alert goes out."""
    hostname = "unreachable.certsync.test"
    ca = trustme.CA()
    old_not_after = NOW + timedelta(days=29)
    old = x509.load_pem_x509_certificate(
        ca.issue_cert(hostname, not_after=old_not_after).cert_chain_pems[0].bytes()
    )
    state = CertState.from_certificate(old, acme=True)
    decision = renewal_decision(state, NOW)
    assert decision.action == "renew"

    elsewhere, port = await start_http01_responder("127.0.0.1", 0)
    assert port != pebble.http_port
    try:
        expected = r"could not validate 'unreachable\.certsync\.test'"
        with pytest.raises(AcmeError, match=expected) as info:
            await request_certificate(
                directory_url=pebble.directory_url,
                email=None,
                hostname=hostname,
                key_type="ec-p256",
                responder=elsewhere,
                account_key=None,
                ca_bundle=pebble.ca_bundle,
                now=NOW,
            )
    finally:
        await elsewhere.close()
    assert info.value.retryable and info.value.hostname == hostname
    assert "connection refused" in str(info.value).lower()

    state = record_failure(state, NOW)
    retry = renewal_decision(state, NOW)
    assert (retry.action, retry.state, retry.next_attempt) == (
        "wait", "backoff", NOW + timedelta(hours=1)
    )
    assert not retry.alert  # 29 days left: no alert yet

    later = old_not_after - timedelta(days=24)
    decision = renewal_decision(state, later)
    assert decision.alert and decision.days_left == 24 and decision.action == "renew"
    with capture_logs() as events:
        delivery = await deliver_alert(ExpiryAlert.for_certificate(old, later), AlertConfig())
    alerts = [e for e in events if e["event"] == "expiry_alert"]
    assert len(alerts) == 1
    assert alerts[0]["sha256"] == state.sha256 and alerts[0]["names"] == [hostname]
    assert alerts[0]["days_left"] == 24
    assert delivery.logged and delivery.ok
    # the same day, no second alert
    state = record_alert(state, later)
    assert not renewal_decision(state, later + timedelta(hours=3)).alert


# --- the responder on its own -------------------------------------------------------------


async def _http(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    return data


@pytest.mark.parametrize(
    ("request_line", "status", "body"),
    [
        (f"GET {CHALLENGE_PREFIX}tok-EN_1 HTTP/1.1", b"200", b"tok-EN_1.thumb"),
        (f"HEAD {CHALLENGE_PREFIX}tok-EN_1 HTTP/1.1", b"200", b""),
        (f"GET {CHALLENGE_PREFIX}other HTTP/1.1", b"404", b"not found\n"),
        (f"GET {CHALLENGE_PREFIX}../tok-EN_1 HTTP/1.1", b"404", b"not found\n"),
        ("GET /tok-EN_1 HTTP/1.1", b"404", b"not found\n"),
        (f"POST {CHALLENGE_PREFIX}tok-EN_1 HTTP/1.1", b"405", b"method not allowed\n"),
        ("GARBAGE", b"400", b"bad request\n"),
    ],
)
async def test_responder_answers_only_registered_tokens(
    request_line: str, status: bytes, body: bytes
) -> None:
    server, port = await start_http01_responder("127.0.0.1", 0)
    try:
        server.add("tok-EN_1", "tok-EN_1.thumb")
        raw = await _http(port, f"{request_line}\r\nHost: x\r\n\r\n".encode())
        head, _, payload = raw.partition(b"\r\n\r\n")
        assert head.split(b" ")[1] == status
        assert payload == body
        server.discard("tok-EN_1")
        after = await _http(port, f"GET {CHALLENGE_PREFIX}tok-EN_1 HTTP/1.1\r\n\r\n".encode())
        assert after.split(b" ")[1] == b"404"
    finally:
        await server.close()


async def test_responder_bounds_its_reads() -> None:
    server, port = await start_http01_responder("127.0.0.1", 0)
    try:
        long_line = b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n"
        assert (await _http(port, long_line)).split(b" ")[1] == b"400"
        many = b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 100 + b"\r\n"
        assert (await _http(port, many)).split(b" ")[1] == b"400"
    finally:
        await server.close()


async def test_responder_port_in_use_is_a_clear_error() -> None:
    server, port = await start_http01_responder("127.0.0.1", 0)
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            probe.listen()
            busy = probe.getsockname()[1]
            with pytest.raises(BadInput, match=f"port {busy}"):
                await start_http01_responder("127.0.0.1", busy)
    finally:
        await server.close()
    assert port > 0
