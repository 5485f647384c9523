"""[shell] Let's Encrypt through ACME: one order with HTTP-01, and the challenge responder.

The protocol (JWS, account, order, challenge, finalisation, download) is certbot's ``acme``
library; this module only wires it to certsync's key types, errors and event loop. The
``acme`` client blocks (``requests``, ``time.sleep`` while polling), so each request runs in
``asyncio.to_thread``; the :class:`Http01Responder` is an asyncio server on the node's loop.

Typical use on the primary::

    responder, port = await start_http01_responder("0.0.0.0", 80)
    try:
        result = await request_certificate(
            directory_url=LETS_ENCRYPT_DIRECTORY, email="admin@example.com",
            hostname="support.example.com", key_type="ec-p256", responder=responder,
            account_key=stored_account_key, ca_bundle=None, now=clock(),
        )
    finally:
        await responder.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from node import keygen
from node.errors import AcmeError, BadInput, Conflict
from node.formats import cert_sha256
from node.lifecycle import LETS_ENCRYPT_DIRECTORY
from node.model import KeyType, PrivateKey
from node.names import parse_hostname

__all__ = [
    "ACME_KEY_TYPES",
    "LETS_ENCRYPT_DIRECTORY",
    "AcmeResult",
    "AcmeSettings",
    "Http01Responder",
    "generate_key",
    "load_account_key",
    "request_certificate",
    "save_account_key",
    "start_http01_responder",
]

#: key types public ACME CAs issue for (no Ed25519)
ACME_KEY_TYPES: tuple[KeyType, ...] = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")
CHALLENGE_PREFIX = "/.well-known/acme-challenge/"

@dataclass(frozen=True)
class AcmeSettings:
    """The node's optional ``[acme]`` table: where to order certificates and where the
    HTTP-01 responder listens. ``ca_bundle`` replaces the system trust store for the
    directory's TLS (a private ACME CA, or Pebble in tests)."""

    directory_url: str = LETS_ENCRYPT_DIRECTORY
    email: str | None = None
    http_listen: str = "0.0.0.0:80"
    ca_bundle: Path | None = None



_log = structlog.get_logger("certsync.acme")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
#: a challenge request is one short line and a few headers; anything bigger is not one
_MAX_LINE = 4096
_MAX_HEADERS = 64
_READ_TIMEOUT = 10.0


# --- HTTP-01 responder --------------------------------------------------------------------


class Http01Responder:
    """A tiny HTTP server answering ``GET /.well-known/acme-challenge/<token>``.

    It serves the key authorisations registered with :meth:`add` and answers 404 to
    anything else; reads are bounded (request line and headers at most 4 KiB each, 64
    headers, 10 s). :meth:`add` and :meth:`discard` are plain dict updates, safe to call
    from any thread (:func:`request_certificate` calls them from its worker thread).
    Key authorisations are not secrets: they are what the CA fetches over plain HTTP.
    """

    def __init__(self, server: asyncio.Server) -> None:
        self._server = server
        self._answers: dict[str, str] = {}

    @property
    def port(self) -> int:
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def add(self, token: str, key_authorization: str) -> None:
        self._answers[token] = key_authorization

    def discard(self, token: str) -> None:
        self._answers.pop(token, None)

    @property
    def serving(self) -> bool:
        return self._server.is_serving()

    async def close(self) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            status, body = await asyncio.wait_for(self._answer(reader), _READ_TIMEOUT)
        except (TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            status, body = 400, b"bad request\n"
        except ConnectionError:
            writer.close()
            return
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
        head = (
            f"HTTP/1.1 {status} {reason[status]}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode("ascii")
        with contextlib.suppress(ConnectionError):
            writer.write(head + body)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        _log.debug("acme_challenge_request", status=status, peer=str(peer))

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        line = await reader.readuntil(b"\n")
        for _ in range(_MAX_HEADERS + 1):
            if (await reader.readuntil(b"\n")).strip() == b"":
                break
        else:
            return 400, b"too many headers\n"
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return 400, b"bad request\n"
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            return 405, b"method not allowed\n"
        token = target.removeprefix(CHALLENGE_PREFIX) if target.startswith(CHALLENGE_PREFIX) else ""
        answer = self._answers.get(token) if _TOKEN.fullmatch(token) else None
        if answer is None:
            return 404, b"not found\n"
        _log.info("acme_challenge_served", token=token)
        return 200, answer.encode("ascii") if method == "GET" else b""


async def start_http01_responder(host: str, port: int = 80) -> tuple[Http01Responder, int]:
    """Start the HTTP-01 responder on ``host:port`` (0: any free port); return it and its port."""
    holder: list[Http01Responder] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await holder[0]._handle(reader, writer)

    try:
        server = await asyncio.start_server(handle, host, port, limit=_MAX_LINE)
    except OSError as err:
        raise BadInput(
            f"cannot listen for ACME HTTP-01 challenges on {host!r} port {port!r}: "
            f"{err.strerror}; free the port or set another one in the node config"
        ) from err
    responder = Http01Responder(server)
    holder.append(responder)
    return responder, responder.port


# --- the order ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AcmeResult:
    """An issued certificate: ``chain`` is the issuer chain (identity not included),
    ``key`` the certificate's new key, ``account_key`` the ACME account key to keep."""

    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    key: PrivateKey
    account_key: PrivateKey
    requested_at: dt.datetime


def generate_key(key_type: KeyType) -> PrivateKey:
    """A new private key of ``key_type`` (blocking for RSA: call it in a thread)."""
    if key_type not in ACME_KEY_TYPES:
        raise BadInput(
            f"key type {key_type!r} cannot be requested through ACME; "
            f"use one of {', '.join(ACME_KEY_TYPES)}"
        )
    return keygen.generate_key(key_type)


async def request_certificate(
    *,
    directory_url: str,
    email: str | None,
    hostname: str,
    key_type: KeyType,
    responder: Http01Responder,
    account_key: PrivateKey | None,
    ca_bundle: Path | None,
    now: dt.datetime,
    poll_for: dt.timedelta = dt.timedelta(seconds=90),
) -> AcmeResult:
    """Request a certificate for ``hostname`` with a new ``key_type`` key, over HTTP-01.

    Registers (or finds) the ACME account of ``account_key`` (a new EC P-256 key when
    ``None``; keep ``AcmeResult.account_key``), orders, answers the HTTP-01 challenge
    through ``responder``, finalises and downloads the chain. ``ca_bundle`` replaces the
    system trust store for the directory's TLS (tests: Pebble's CA); ``now`` is recorded
    as ``requested_at``; polling stops after ``poll_for``. Raises :class:`AcmeError` when
    the CA cannot be reached or refuses, :class:`BadInput` for a bad hostname or key type.
    """
    name = parse_hostname(hostname)
    if name.kind != "dns":
        raise BadInput(
            f"hostname {hostname!r} is an IP address; HTTP-01 certificates are for DNS names"
        )
    if not responder.serving:
        raise AcmeError(
            f"the HTTP-01 responder for {hostname!r} is not running; start it before requesting",
            hostname=hostname,
        )
    key = await asyncio.to_thread(generate_key, key_type)
    if account_key is None:
        account_key = await asyncio.to_thread(generate_key, "ec-p256")
    _log.info("acme_request_started", hostname=name.value, key_type=key_type, url=directory_url)
    from node import _acme_order  # heavy (acme, josepy, requests): loaded on first use

    cert, chain = await asyncio.to_thread(
        _acme_order.run_order,
        directory_url=directory_url,
        email=email,
        hostname=name.value,
        given=hostname,
        key=key,
        account_key=account_key,
        responder=responder,
        ca_bundle=ca_bundle,
        poll_for=poll_for,
    )
    _acme_order.check_issued(cert, key, name.value, directory_url)
    _log.info(
        "acme_certificate_issued",
        hostname=name.value,
        sha256=cert_sha256(cert),
        not_after=cert.not_valid_after_utc.isoformat(),
    )
    return AcmeResult(cert, chain, key, account_key, now)



def load_account_key(path: Path | None) -> PrivateKey | None:
    """The ACME account key kept at ``path`` (None: none kept yet, or no path)."""
    if path is None or not path.exists():
        return None
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise Conflict(
            f"the ACME account key {str(path)!r} is not an RSA or EC key; remove it and "
            "certsync makes a new account"
        )
    return key


def save_account_key(path: Path | None, key: PrivateKey) -> None:
    """Keep a new account key at ``path`` (mode 0600); an existing file is left alone."""
    if path is None or path.exists():
        return
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
