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
import functools
import hashlib
import ssl
from typing import Any

from node.errors import NodeUnreachable
from sync.topology import split_address

__all__ = ["served_chain", "served_sha256"]


@functools.cache
def _context() -> ssl.SSLContext:
    """One client context for every probe (no CA store to load, no session reuse needed)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # we compare fingerprints; trust is not the question
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


# the timeout bounds connect + handshake + close separately; callers fan out many probes and
# want one number per probe, not a scope around all of them
async def served_sha256(address: str, server_name: str | None, *, timeout: float) -> str:  # noqa: ASYNC109
    """The sha256 (hex) of the leaf certificate ``address`` presents for ``server_name``
    (``None``: a handshake without SNI). :class:`NodeUnreachable` when no handshake completes
    within ``timeout`` seconds."""
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


# as served_sha256: one timeout per probe
async def served_chain(address: str, server_name: str | None, *, timeout: float  # noqa: ASYNC109
                       ) -> tuple[str, ...]:
    """The sha256 (hex) of every certificate ``address`` sends for ``server_name``: the leaf
    first, then the chain as sent. :class:`NodeUnreachable` as :func:`served_sha256`."""
    host, port = split_address(address)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=_context(),
                server_hostname=server_name if server_name is not None else "",
            )
    except (OSError, TimeoutError, ssl.SSLError) as err:
        raise NodeUnreachable(
            f"no TLS handshake with {address} for server name {server_name!r} "
            f"({type(err).__name__}); is the node running?"
        ) from err
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        sent = _sent_ders(ssl_object) if der else []
    finally:
        writer.close()
        try:
            async with asyncio.timeout(timeout):
                await writer.wait_closed()
        except (OSError, TimeoutError, ssl.SSLError):
            pass  # the certificate is what we came for; a rough close changes nothing
        del reader
    if not der:
        raise NodeUnreachable(f"the TLS endpoint {address} presented no certificate for "
                              f"server name {server_name!r}; does its store hold one?")
    leaf = hashlib.sha256(der).hexdigest()
    rest = [hashlib.sha256(d).hexdigest() for d in sent]
    if rest and rest[0] == leaf:
        rest = rest[1:]
    return (leaf, *rest)
