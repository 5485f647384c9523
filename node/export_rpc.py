"""[shell] The Export RPC's work: a stored certificate as PEM, DER or PKCS#7, or with its key
as PKCS#12 (admin identities only; a refusal is audited, a key export too)."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections.abc import Awaitable, Callable
from typing import Final

from cryptography import x509

from node import chain as chain_mod
from node import formats
from node.api import certsync_pb2
from node.errors import BadInput, Conflict, PermissionDenied
from node.refusals import record_refusal
from node.store import Store
from node.store_view import StoredCert

__all__ = ["export"]

_EXPORT_FORMATS: Final = {
    certsync_pb2.EXPORT_FORMAT_UNSPECIFIED: "pem",
    certsync_pb2.EXPORT_FORMAT_PEM: "pem",
    certsync_pb2.EXPORT_FORMAT_DER: "der",
    certsync_pb2.EXPORT_FORMAT_P7B: "p7b",
    certsync_pb2.EXPORT_FORMAT_P12: "p12",
}


async def export(
    store: Store,
    request: certsync_pb2.ExportRequest,
    *,
    lookup: Callable[[str], Awaitable[StoredCert]],
    pool: Callable[[], Awaitable[list[x509.Certificate]]],
    actor: str,
    admin: bool,
    now: dt.datetime,
) -> certsync_pb2.ExportResponse:
    """What ``request`` asks for; ``lookup`` finds the stored certificate by its id."""
    fmt = _EXPORT_FORMATS.get(request.format)
    if fmt is None:
        raise BadInput(f"export format {request.format!r} is unknown; use pem, der, p7b or p12")
    stored = await lookup(request.sha256)
    cert = x509.load_der_x509_certificate(stored.der)
    chain, _problems = await asyncio.to_thread(chain_mod.build_chain, cert, await pool())
    chain = tuple(c for c in chain if c != cert)
    if fmt != "p12":
        if request.HasField("passphrase"):
            raise BadInput(
                f"a {fmt} export holds certificates only and takes no passphrase; "
                "drop --passphrase-file or use --format p12"
            )
        certs = [cert] if fmt == "der" else [cert, *chain]
        data = formats.export_certificates(certs, "der" if fmt == "der" else
                                           "p7b" if fmt == "p7b" else "pem")
        return certsync_pb2.ExportResponse(data=data)
    kind, _, name = actor.partition(":")
    if not admin:
        await record_refusal(store, actor=actor, method="Export",
                             why="only an admin may export a key", now=now,
                             sha256=stored.sha256, format="p12")
        raise PermissionDenied(
            f"{kind} {name!r} may not export a private key; "
            "use the admin configuration (admin.toml)"
        )
    if not request.HasField("passphrase") or not request.passphrase:
        raise BadInput(
            "a p12 export carries the private key and needs a passphrase; "
            "give --passphrase-file with a non-empty passphrase"
        )
    key = await store.get_key(stored.sha256)
    if key is None:
        raise Conflict(
            f"certificate {stored.sha256!r} has no private key, so no p12 can be made; "
            "export it as pem, der or p7b"
        )
    data = await asyncio.to_thread(functools.partial(
        formats.export_pkcs12, name=stored.name, key=key, cert=cert, chain=chain,
        passphrase=request.passphrase,
    ))
    await store.record_audit(actor=actor, action="cert.export_p12",
                             detail={"sha256": stored.sha256}, now=now)
    return certsync_pb2.ExportResponse(data=data)
