"""[shell] Every refused call leaves an audit row, including those decided from the certificate.

A call whose client certificate names no identity of this cluster (no ``certsync://`` URI,
a malformed one, another cluster's id, an unreadable certificate) is refused by
:func:`authenticate` before any role is looked at; the refusal is audited like a role
refusal: ``actor`` is what the certificate says (``kind:name`` from its URI when it has one
that reads as such, else ``cert:<subject>``), ``action`` ``rpc.refused``, and a ``detail``
with ``outcome: refused``, the method, why, and the certificate's sha256, subject, issuer and
identity URIs (public data, cut to a bounded length; never a key or a passphrase).

:func:`record_refusal` is the one way a refusal is written (roles, p12 exports, replication);
when the store cannot take the row (busy, full) the refusal stands and the node logs it.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final, Protocol

import grpc
import structlog
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from node.errors import CertsyncError, PermissionDenied
from node.identity import Identity, identity_from_certificate

__all__ = ["REFUSED", "AuditSink", "authenticate", "claimed_actor", "record_refusal"]

_log = structlog.get_logger("node.refusals")

#: the audit action of a refused call, and its detail's ``outcome``
REFUSED: Final = "rpc.refused"
_MAX_TEXT: Final = 200  # a subject or URI in an audit row, at most
_MAX_URIS: Final = 4


class AuditSink(Protocol):
    """Where refusals are written (:class:`node.store.Store`)."""

    async def record_audit(self, *, actor: str, action: str, detail: Mapping[str, Any],
                           now: datetime) -> None: ...


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "..."


def claimed_actor(pem: bytes | None) -> tuple[str, dict[str, Any]]:
    """Who the client certificate ``pem`` says its holder is, and what it shows of itself,
    for the audit row of a refusal (nothing here is trusted: the call was refused)."""
    if pem is None:
        return "unauthenticated", {"certificate": None}
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return "cert:unreadable", {"certificate_sha256": hashlib.sha256(pem).hexdigest()}
    try:
        subject = cert.subject.rfc4514_string()
        issuer = cert.issuer.rfc4514_string()
    except ValueError:
        subject = issuer = "(unreadable name)"
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = [str(u) for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
    except (x509.ExtensionNotFound, ValueError):
        uris = []
    ours = [u for u in uris if u.lower().startswith("certsync:")]
    detail: dict[str, Any] = {
        "certificate_sha256": hashlib.sha256(
            cert.public_bytes(Encoding.DER)).hexdigest(),
        "subject": _cut(subject),
        "issuer": _cut(issuer),
        "identity_uris": [_cut(u) for u in ours[:_MAX_URIS]],
    }
    actor = f"cert:{_cut(subject)}"
    if len(ours) == 1:
        parts = ours[0].split("/")  # certsync: '' cluster kind name
        if len(parts) == 5 and parts[3] in ("node", "admin") and parts[4]:
            actor = f"{parts[3]}:{_cut(parts[4])}"
            detail["claimed_cluster"] = _cut(parts[2])
    return actor, detail


async def record_refusal(
    sink: AuditSink, *, actor: str, method: str, why: str, now: datetime,
    **extra: Any,
) -> None:
    """Write the audit row of a refused call; a store that cannot take it (busy, full) does
    not turn the refusal into another error: the node logs that the row is missing."""
    detail = {"outcome": "refused", "method": method, "why": why, **extra}
    try:
        await sink.record_audit(actor=actor, action=REFUSED, detail=detail, now=now)
    except CertsyncError as err:
        _log.warning("audit.refusal_not_recorded", actor=actor, method=method,
                     error=type(err).__name__)


@functools.lru_cache(maxsize=256)  # a peer calls many times with one certificate
def _identity_of(pem: bytes, cluster_id: str) -> Identity:
    """The identity a verified client certificate names; a refusal is raised (not cached)."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as err:
        raise PermissionDenied(
            "the client certificate cannot be read; use a certificate from the cluster CA"
        ) from err
    return identity_from_certificate(cert, cluster_id=cluster_id)


async def authenticate(
    context: grpc.aio.ServicerContext[Any, Any], *, cluster_id: str, sink: AuditSink,
    now: Callable[[], datetime], method: str,
) -> Identity:
    """The caller's identity from its mTLS client certificate; a certificate that names no
    identity of this cluster is refused (:class:`PermissionDenied`) and audited."""
    pems = list(context.auth_context().get("x509_pem_cert", ()))
    pem = bytes(pems[0]) if pems else None
    try:
        if pem is None:
            raise PermissionDenied(
                "the call carries no client certificate; connect with mutual TLS using the "
                "certificates from 'certsync cluster init'"
            )
        return _identity_of(pem, cluster_id)
    except PermissionDenied as err:
        actor, detail = claimed_actor(pem)
        await record_refusal(sink, actor=actor, method=method, why=err.message, now=now(),
                             **detail)
        _log.warning("rpc.identity_refused", actor=actor, method=method)
        raise
