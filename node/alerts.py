"""[shell] Deliver an expiry alert: a structlog event always, e-mail and a webhook when set.

:func:`node.lifecycle.renewal_decision` decides *whether* to alert (once within 25 days of
``not_after``, at most once a day); this module only delivers. Channels:

* a structlog event ``expiry_alert`` with ``sha256``, ``names``, ``days_left``, ``not_after``
  (always);
* an e-mail through SMTP (stdlib ``smtplib``) when :class:`SmtpConfig` is set;
* a JSON ``POST`` (stdlib ``urllib``) when a webhook URL is set.

Delivery never raises for a channel that fails: the failure is logged
(``alert_delivery_failed``) and reported in :class:`AlertDelivery`, so the monitor records
the alert as sent only when it wants to, and one broken channel does not hide the others.
The blocking SMTP and HTTP calls run in ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Any

import structlog
from cryptography import x509

from node.errors import ConfigError
from node.formats import cert_sha256
from node.lifecycle import days_left
from node.text import rfc3339

__all__ = [
    "AlertConfig",
    "AlertDelivery",
    "ExpiryAlert",
    "SmtpConfig",
    "deliver_alert",
]

_log = structlog.get_logger("certnode.alerts")


@dataclass(frozen=True)
class SmtpConfig:
    """Where alert mails go. ``starttls`` upgrades the connection before sending."""

    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    starttls: bool = False
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.recipients:
            raise ConfigError(
                f"SMTP alerts to {self.host!r} have no recipient; set at least one 'to' address"
            )
        if not 0 < self.port < 65536:
            raise ConfigError(f"SMTP port {self.port!r} is not a port; use 1-65535 (often 25)")


@dataclass(frozen=True)
class AlertConfig:
    """The optional alert channels; the log event is always sent."""

    smtp: SmtpConfig | None = None
    webhook_url: str | None = None
    webhook_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.webhook_url is not None:
            parsed = urllib.parse.urlsplit(self.webhook_url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ConfigError(
                    f"alert webhook {self.webhook_url!r} is not an http(s) URL; "
                    "give e.g. 'https://hooks.example.com/certsync'"
                )


@dataclass(frozen=True)
class ExpiryAlert:
    """One certificate close to (or past) expiry and not renewed."""

    sha256: str
    names: tuple[str, ...]
    not_after: datetime
    days_left: int
    node: str | None = None

    @classmethod
    def for_certificate(
        cls, cert: x509.Certificate, now: datetime, node: str | None = None
    ) -> ExpiryAlert:
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = tuple(san.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            names = ()
        not_after = cert.not_valid_after_utc
        return cls(
            sha256=cert_sha256(cert),
            names=names,
            not_after=not_after,
            days_left=days_left(not_after, now),
            node=node,
        )

    def subject_line(self) -> str:
        what = ", ".join(self.names[:3]) or self.sha256[:16]
        if self.days_left < 0:
            return f"certsync: the certificate for {what} has expired"
        return f"certsync: the certificate for {what} expires in {self.days_left} days"

    def as_json(self) -> dict[str, Any]:
        return {
            "event": "expiry_alert",
            "sha256": self.sha256,
            "names": list(self.names),
            "not_after": rfc3339(self.not_after),
            "days_left": self.days_left,
            "node": self.node,
        }


@dataclass(frozen=True)
class AlertDelivery:
    """Which channels took the alert: ``None`` for a channel not configured."""

    logged: bool
    email: bool | None
    webhook: bool | None
    errors: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.email is not False and self.webhook is not False


def _mail(alert: ExpiryAlert, smtp: SmtpConfig) -> None:
    message = EmailMessage()
    message["Subject"] = alert.subject_line()
    message["From"] = smtp.sender
    message["To"] = ", ".join(smtp.recipients)
    lines = [
        f"{alert.subject_line().removeprefix('certsync: ').capitalize()} "
        f"({alert.not_after:%Y-%m-%d %H:%M} UTC) and has not been renewed.",
        "",
        f"names:     {', '.join(alert.names) or '(no DNS names)'}",
        f"sha256:    {alert.sha256}",
        f"not after: {alert.not_after:%Y-%m-%dT%H:%M:%SZ}",
        f"days left: {alert.days_left}",
    ]
    if alert.node:
        lines.append(f"node:      {alert.node}")
    lines += ["", "Renew or replace it; certsync repeats this alert once a day."]
    message.set_content("\n".join(lines) + "\n")
    with smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout) as conn:
        if smtp.starttls:
            conn.starttls()
        conn.send_message(message)


def _post(alert: ExpiryAlert, url: str, timeout: float) -> None:
    request = urllib.request.Request(  # noqa: S310  (scheme checked in AlertConfig: http(s) only)
        url,
        data=json.dumps(alert.as_json()).encode("utf-8"),
        headers={"Content-Type": "application/json", "User-Agent": "certsync"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310  (as above)
        status: int = response.status
    if not 200 <= status < 300:
        raise OSError(f"webhook answered HTTP {status}")


async def deliver_alert(alert: ExpiryAlert, config: AlertConfig) -> AlertDelivery:
    """Send ``alert`` to the log and every configured channel; report which worked."""
    _log.warning(
        "expiry_alert",
        sha256=alert.sha256,
        names=list(alert.names),
        days_left=alert.days_left,
        not_after=alert.not_after.isoformat(),
        node=alert.node,
    )
    errors: list[str] = []
    email: bool | None = None
    webhook: bool | None = None
    if config.smtp is not None:
        try:
            await asyncio.to_thread(_mail, alert, config.smtp)
            email = True
        except (OSError, smtplib.SMTPException) as err:
            email = False
            errors.append(
                f"e-mail to {config.smtp.host!r} port {config.smtp.port!r} failed: {err}"
            )
            _log.error(
                "alert_delivery_failed", channel="email", sha256=alert.sha256, error=str(err)
            )
    if config.webhook_url is not None:
        try:
            await asyncio.to_thread(_post, alert, config.webhook_url, config.webhook_timeout)
            webhook = True
        except (OSError, ValueError) as err:  # URLError and HTTPError are OSErrors
            webhook = False
            errors.append(f"webhook {config.webhook_url!r} failed: {err}")
            _log.error(
                "alert_delivery_failed", channel="webhook", sha256=alert.sha256, error=str(err)
            )
    return AlertDelivery(logged=True, email=email, webhook=webhook, errors=tuple(errors))
