"""Alert delivery to real local peers: an aiosmtpd SMTP sink and a tiny HTTP webhook."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from cryptography import x509
from structlog.testing import capture_logs

from node.alerts import AlertConfig, ExpiryAlert, SmtpConfig, deliver_alert
from node.errors import ConfigError

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class _Inbox:
    """aiosmtpd handler keeping every message it receives."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], EmailMessage]] = []
        self.received = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        self.received.set()
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_sink() -> Iterator[tuple[_Inbox, int]]:
    inbox = _Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


class _Hook:
    def __init__(self, status: int) -> None:
        self.status = status
        self.bodies: list[tuple[str, bytes]] = []
        self.received = threading.Event()


@pytest.fixture(params=[204])
def webhook(request: pytest.FixtureRequest) -> Iterator[tuple[_Hook, str]]:
    hook = _Hook(request.param)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = min(int(self.headers.get("Content-Length", "0")), 64 * 1024)
            hook.bodies.append((self.headers.get("Content-Type", ""), self.rfile.read(length)))
            hook.received.set()
            self.send_response(hook.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield hook, f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def certificate() -> x509.Certificate:
    ca = trustme.CA()
    leaf = ca.issue_cert("www.example.com", "example.com", not_after=NOW + timedelta(days=24))
    return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())


@pytest.fixture
def alert(certificate: x509.Certificate) -> ExpiryAlert:
    return ExpiryAlert.for_certificate(certificate, NOW, node="primary")


async def test_log_event_always(alert: ExpiryAlert) -> None:
    with capture_logs() as events:
        delivery = await deliver_alert(alert, AlertConfig())
    [event] = [e for e in events if e["event"] == "expiry_alert"]
    assert event["sha256"] == alert.sha256 and len(alert.sha256) == 64
    assert event["names"] == ["www.example.com", "example.com"]
    assert event["days_left"] == 24
    assert (delivery.logged, delivery.email, delivery.webhook, delivery.ok) == (
        True, None, None, True
    )


async def test_email_reaches_the_smtp_sink(
    alert: ExpiryAlert, smtp_sink: tuple[_Inbox, int]
) -> None:
    inbox, port = smtp_sink
    smtp = SmtpConfig("127.0.0.1", port, "certsync@example.com", ("ops@example.com", "b@x.org"))
    delivery = await deliver_alert(alert, AlertConfig(smtp=smtp))
    assert delivery.email is True and delivery.ok
    assert inbox.received.wait(5)
    [(sender, rcpts, message)] = inbox.messages
    assert sender == "certsync@example.com"
    assert rcpts == ["ops@example.com", "b@x.org"]
    assert str(message["Subject"]).strip() == (  # a long subject is folded onto its own line
        "certsync: the certificate for www.example.com, example.com expires in 24 days"
    )
    body = message.get_content()
    assert alert.sha256 in body and "days left: 24" in body and "node:      primary" in body


async def test_email_to_a_dead_smtp_server_is_reported_not_raised(alert: ExpiryAlert) -> None:
    port = _free_port()  # nothing listens there
    smtp = SmtpConfig("127.0.0.1", port, "certsync@example.com", ("ops@example.com",), timeout=2)
    with capture_logs() as events:
        delivery = await deliver_alert(alert, AlertConfig(smtp=smtp))
    assert delivery.email is False and not delivery.ok
    assert f"port {port!r}" in delivery.errors[0]
    assert [e["channel"] for e in events if e["event"] == "alert_delivery_failed"] == ["email"]
    assert any(e["event"] == "expiry_alert" for e in events)  # the log event still went out


async def test_webhook_receives_json(alert: ExpiryAlert, webhook: tuple[_Hook, str]) -> None:
    hook, url = webhook
    delivery = await deliver_alert(alert, AlertConfig(webhook_url=url))
    assert delivery.webhook is True
    assert hook.received.wait(5)
    [(content_type, body)] = hook.bodies
    assert content_type == "application/json"
    assert json.loads(body) == {
        "event": "expiry_alert",
        "sha256": alert.sha256,
        "names": ["www.example.com", "example.com"],
        "not_after": alert.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "days_left": 24,
        "node": "primary",
    }


@pytest.mark.parametrize("webhook", [500], indirect=True)
async def test_webhook_error_status_is_a_failed_delivery(
    alert: ExpiryAlert, webhook: tuple[_Hook, str]
) -> None:
    hook, url = webhook
    delivery = await deliver_alert(alert, AlertConfig(webhook_url=url))
    assert delivery.webhook is False and "500" in delivery.errors[0]
    assert hook.received.is_set()


async def test_one_broken_channel_does_not_hide_the_other(
    alert: ExpiryAlert, webhook: tuple[_Hook, str]
) -> None:
    hook, url = webhook
    dead = SmtpConfig("127.0.0.1", _free_port(), "c@example.com", ("o@example.com",), timeout=2)
    delivery = await deliver_alert(alert, AlertConfig(smtp=dead, webhook_url=url))
    assert (delivery.email, delivery.webhook) == (False, True)
    assert hook.received.is_set()


async def test_both_channels(
    alert: ExpiryAlert, smtp_sink: tuple[_Inbox, int], webhook: tuple[_Hook, str]
) -> None:
    inbox, port = smtp_sink
    hook, url = webhook
    smtp = SmtpConfig("127.0.0.1", port, "certsync@example.com", ("ops@example.com",))
    delivery = await deliver_alert(alert, AlertConfig(smtp=smtp, webhook_url=url))
    assert (delivery.email, delivery.webhook, delivery.errors) == (True, True, ())
    assert inbox.received.wait(5) and hook.received.wait(5)


@pytest.mark.parametrize(
    ("left", "subject"),
    [
        (timedelta(days=3), "expires in 3 days"),
        (timedelta(hours=-1), "has expired"),
    ],
)
def test_subject_line(left: timedelta, subject: str) -> None:
    a = ExpiryAlert("ab" * 32, ("a.example",), NOW + left, (left // timedelta(days=1)))
    assert a.subject_line().endswith(subject)


@pytest.mark.parametrize(
    "make",
    [
        lambda: SmtpConfig("mail.example.com", 25, "c@example.com", ()),
        lambda: SmtpConfig("mail.example.com", 0, "c@example.com", ("o@example.com",)),
        lambda: SmtpConfig("mail.example.com", 70000, "c@example.com", ("o@example.com",)),
        lambda: AlertConfig(webhook_url="ftp://hooks.example.com/x"),
        lambda: AlertConfig(webhook_url="file:///etc/passwd"),
        lambda: AlertConfig(webhook_url="https://"),
    ],
)
def test_bad_alert_config_is_refused(make: Any) -> None:
    with pytest.raises(ConfigError):
        make()


def test_good_alert_config_is_accepted() -> None:
    """Negative twin of the refusals above."""
    AlertConfig(
        smtp=SmtpConfig("mail.example.com", 25, "c@example.com", ("o@example.com",)),
        webhook_url="https://hooks.example.com/certsync",
    )
