"""[shell] What a node's TLS endpoint actually serves: one real handshake per question.

"In sync" means *served*, not merely stored (DESIGN.md): the replicator compares the
SHA-256 of the leaf certificate a node presents for each required name (and without SNI)
with what the primary itself selects. No verification is done here on purpose -- we compare
fingerprints, and the certificate may well be self-signed or not cover the name asked for.

:func:`served_chain` also records the chain the node sent after the leaf (the sha256 of every
certificate of its Certificate message, in order), so ``status`` can tell a node that serves
the right leaf without its intermediates (issue 11).
"""

from __future__ import annotations

import _ssl
import asyncio
import concurrent.futures
import functools
import hashlib
import socket
import ssl
from typing import Any, Final

from node.errors import NodeUnreachable
from sync.topology import split_address

__all__ = ["served_chain", "served_sha256"]


@functools.cache
def _context() -> ssl.SSLContext:
    """One client context for every probe (no CA store to load, no session reuse needed:
    every probe is a full handshake, so the server proves it holds the key it serves)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # we compare fingerprints; trust is not the question
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_TICKET  # nothing to resume: never ask for a ticket
    return ctx


# the timeout bounds the connect and each read of the handshake separately; callers fan out
# many probes and want one number per probe, not a scope around all of them
async def served_sha256(address: str, server_name: str | None, *, timeout: float) -> str:  # noqa: ASYNC109
    """The sha256 (hex) of the leaf certificate ``address`` presents for ``server_name``
    (``None``: a handshake without SNI). :class:`NodeUnreachable` when the connection fails
    or the connect or a read of the handshake takes longer than ``timeout`` seconds."""
    return (await served_chain(address, server_name, timeout=timeout))[0]


def _sent_ders(ssl_object: Any) -> list[bytes]:
    """The DER of every certificate the peer sent, leaf first (Python 3.13's public
    ``get_unverified_chain``, or the same call of the ``_ssl`` object before it)."""
    getter = getattr(ssl_object, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if getter is None:
        return []
    return [c if isinstance(c, bytes) else c.public_bytes(_ssl.ENCODING_DER)
            for c in getter() or ()]


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    """The probes' threads: a handshake is mostly OpenSSL work that releases the GIL, so on
    a thread it runs beside the event loop (the primary's loop drives every push) and costs
    less than through asyncio's SSL transport."""
    global _PROBES
    if _PROBES is None:
        _PROBES = concurrent.futures.ThreadPoolExecutor(
            max_workers=PROBE_THREADS, thread_name_prefix="certsync-probe")
    return _PROBES


#: handshakes at once (more wait in line, their timeout not yet running); a node that
#: accepts but does not answer holds one until its socket timeout
PROBE_THREADS: Final = 32
_PROBES: concurrent.futures.ThreadPoolExecutor | None = None


def _handshake(host: str, port: int, server_name: str | None,
               timeout: float) -> tuple[bytes | None, list[bytes]]:
    """One blocking handshake (on a probe thread): the leaf's DER and every DER sent."""
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        _context().wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        return der, _sent_ders(tls) if der else []


# as served_sha256: one timeout per probe
async def served_chain(address: str, server_name: str | None, *, timeout: float  # noqa: ASYNC109
                       ) -> tuple[str, ...]:
    """The sha256 (hex) of every certificate ``address`` sends for ``server_name``: the leaf
    first, then the chain as sent. :class:`NodeUnreachable` as :func:`served_sha256`."""
    host, port = split_address(address)
    loop = asyncio.get_running_loop()
    try:
        # the socket's timeout bounds the connect and each read of the handshake, counted
        # from when a probe thread takes it (a wait in line for a thread is no node's fault)
        der, sent = await loop.run_in_executor(
            _executor(), _handshake, host, port, server_name, timeout)
    except (OSError, TimeoutError, ssl.SSLError) as err:
        raise NodeUnreachable(
            f"no TLS handshake with {address} for server name {server_name!r} "
            f"({type(err).__name__}); is the node running?"
        ) from err
    if not der:
        raise NodeUnreachable(f"the TLS endpoint {address} presented no certificate for "
                              f"server name {server_name!r}; does its store hold one?")
    leaf = hashlib.sha256(der).hexdigest()
    rest = [hashlib.sha256(d).hexdigest() for d in sent]
    if rest and rest[0] == leaf:
        rest = rest[1:]
    return (leaf, *rest)
