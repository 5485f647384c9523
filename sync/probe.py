"""[shell] What a node's TLS endpoint actually serves: one real handshake per question.

"In sync" means *served*, not merely stored (DESIGN.md): the replicator compares the
SHA-256 of the leaf certificate a node presents for each required name (and without SNI)
with what the primary itself selects. No verification is done here on purpose -- we compare
fingerprints, and the certificate may well be self-signed or not cover the name asked for.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import ssl

from node.errors import NodeUnreachable
from sync.topology import split_address

__all__ = ["served_sha256"]


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
    return hashlib.sha256(der).hexdigest()
