"""[core] Who an mTLS peer is: the ``certsync://`` identity in a cluster certificate's SAN URI.

Identities are the mTLS certificates the cluster CA issues. Who a peer *is* comes from the
certificate's SAN URI ``certsync://<cluster_id>/<kind>/<name>``; what it may *do* comes from
the cluster's topology (``sync.topology``), never from the certificate.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Literal, TypeAlias
from urllib.parse import urlsplit

from cryptography import x509

from node.errors import BadInput, PermissionDenied

__all__ = [
    "KINDS",
    "Identity",
    "IdentityKind",
    "admin_uri",
    "check_node_name",
    "identity_from_certificate",
    "is_uuid",
    "monitor_uri",
    "node_dns_name",
    "node_uri",
]

#: ``monitor`` is a read-only scraper (Prometheus): it may read ``/metrics`` and nothing else
IdentityKind: TypeAlias = Literal["node", "admin", "monitor"]
KINDS: tuple[IdentityKind, ...] = ("node", "admin", "monitor")

#: a DNS label in lower case: 1..63 of [a-z0-9-], not starting or ending with '-'
_NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_URI_SCHEME = "certsync"
_NODE_DNS_SUFFIX = ".node.certsync"


def check_node_name(name: str) -> str:
    """Return ``name`` if it is a valid node (or admin) name, else raise :class:`BadInput`."""
    if not _NAME_RE.fullmatch(name):
        raise BadInput(
            f"node name {name!r} is not valid; use 1 to 63 lower-case letters, digits and "
            "'-', not starting or ending with '-' (e.g. 'p1' or 'traffic-2')"
        )
    return name


def node_dns_name(name: str) -> str:
    """The SAN DNS name of node ``name``'s mTLS certificate (gRPC target name override)."""
    return f"{name}{_NODE_DNS_SUFFIX}"


def node_uri(cluster_id: str, name: str) -> str:
    return f"{_URI_SCHEME}://{cluster_id}/node/{name}"


def admin_uri(cluster_id: str, name: str) -> str:
    return f"{_URI_SCHEME}://{cluster_id}/admin/{name}"


def monitor_uri(cluster_id: str, name: str) -> str:
    return f"{_URI_SCHEME}://{cluster_id}/monitor/{name}"


@dataclass(frozen=True)
class Identity:
    """Who an mTLS peer is, read from its certificate's SAN URI."""

    kind: IdentityKind
    name: str
    cluster_id: str


def identity_from_certificate(
    cert: x509.Certificate, *, cluster_id: str | None = None
) -> Identity:
    """Read the peer identity from ``cert``'s one ``certsync://`` SAN URI.

    Raises :class:`PermissionDenied` when the URI is absent, malformed, or (with
    ``cluster_id``) names another cluster. The certificate's chain is the TLS layer's job.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)
                if u.lower().startswith(f"{_URI_SCHEME}:")]
    except x509.ExtensionNotFound:
        uris = []
    subject = cert.subject.rfc4514_string()
    if len(uris) != 1:
        raise PermissionDenied(
            f"certificate {subject!r} carries {len(uris)} certsync identity URIs, not one; "
            "use a certificate made by 'certsync cluster init'"
        )
    parts = urlsplit(uris[0])
    segments = parts.path.split("/")
    if (
        parts.scheme != _URI_SCHEME
        or parts.query
        or parts.fragment
        or len(segments) != 3
        or segments[0] != ""
        or segments[1] not in KINDS
        or not _NAME_RE.fullmatch(segments[2])
        or not is_uuid(parts.netloc)
    ):
        raise PermissionDenied(
            f"certificate {subject!r} has a malformed identity URI {uris[0]!r}; expected "
            "'certsync://<cluster_id>/node|admin|monitor/<name>'"
        )
    kind = next(k for k in KINDS if k == segments[1])
    identity = Identity(kind=kind, name=segments[2],
                        cluster_id=parts.netloc)
    if cluster_id is not None and identity.cluster_id != cluster_id:
        raise PermissionDenied(
            f"certificate {subject!r} belongs to cluster {identity.cluster_id!r}, not "
            f"{cluster_id!r}; use this cluster's certificates"
        )
    return identity


def is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False
