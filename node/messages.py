"""[shell] The gRPC messages of the store API, to and from plain values.

Building a message from a stored record (:func:`cert_info`, :func:`csr_info`,
:func:`pending_msg`) and reading a request's fields into the toolkit's values
(:func:`subject_of`, :func:`key_type_of_text`, :func:`sans_of_request`). Pure functions; a
shell module only because the generated ``node.api`` package loads gRPC.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509

from node import create
from node.api import certsync_pb2
from node.certkeys import key_type_of
from node.errors import BadInput, FormatError
from node.lifecycle import StagedCaChange
from node.model import CREATABLE_KEY_TYPES, KeyType
from node.renewal_plan import CertStatus
from node.store_chain import ChainState
from node.store_view import StoredCert, StoredCsr
from node.text import rfc3339

__all__ = [
    "cert_info",
    "csr_info",
    "key_source_of",
    "key_type_of_text",
    "pending_msg",
    "sans_of_request",
    "subject_of",
]


def key_source_of(stored: StoredCert) -> str:
    """Where the certificate's key came from: ``import`` (stored with it), ``csr`` (the key
    of a stored request) or ``""`` (no key stored). The store keeps no CSR link yet, so a
    stored key reads as ``import``; the link to a request's key goes here."""
    return "import" if stored.has_key else ""


def _key_type(cert: x509.Certificate) -> str:
    try:
        return key_type_of(cert.public_key())
    except (FormatError, ValueError):  # a key type certsync does not create nor serve
        return ""


def cert_info(
    stored: StoredCert, status: CertStatus | None = None, chain: ChainState | None = None
) -> certsync_pb2.CertificateInfo:
    cert = stored.certificate()
    info = certsync_pb2.CertificateInfo(
        sha256=stored.sha256,
        name=stored.name,
        role=stored.role,
        has_key=stored.has_key,
        is_default=stored.is_default,
        dns_names=list(stored.dns_names),
        ip_addresses=list(stored.ip_addresses),
        not_after=rfc3339(stored.not_after),
        added_at=rfc3339(stored.added_at),
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
    )
    if status is not None:  # lifecycle (issue 6)
        info.days_left = status.days_left
        info.renewal_state = status.renewal_state
        info.replaceable = status.replaceable
        info.next_attempt = rfc3339(status.next_attempt)
        info.acme = status.acme
    info.not_before = rfc3339(cert.not_valid_before_utc)
    info.key_type = _key_type(cert)
    info.key_source = key_source_of(stored)
    if chain is not None:  # the chain over the whole store (issue 11)
        info.chain_complete = chain.complete
        info.chain_problems.extend(chain.problems)
        info.chain_missing_root = chain.missing_root
        info.chain_sent.extend(chain.sent)
        info.chain.extend(
            certsync_pb2.ChainLink(sha256=link.sha256, subject=link.subject, role=link.role)
            for link in chain.links
        )
    return info


def subject_of(msg: certsync_pb2.Subject) -> create.Subject:
    if not msg.common_name.strip():
        raise BadInput("the subject needs a common name; give --cn NAME")
    return create.Subject(
        common_name=msg.common_name,
        country=msg.country or None,
        state=msg.state or None,
        city=msg.city or None,
        org=msg.org or None,
        unit=msg.unit or None,
    )


def key_type_of_text(text: str) -> KeyType:
    for kt in CREATABLE_KEY_TYPES:
        if kt == text:
            return kt
    choices = ", ".join(CREATABLE_KEY_TYPES)
    raise BadInput(f"key type {text!r} cannot be created; use one of {choices}")


def sans_of_request(values: Sequence[str]) -> list[str]:
    """SANs as given; :mod:`node.create` validates them (wildcards are fine in a SAN)."""
    return list(values)


def pending_msg(staged: StagedCaChange) -> certsync_pb2.PendingCaChange:
    return certsync_pb2.PendingCaChange(
        sha256=staged.sha256,
        staged_at=rfc3339(staged.staged_at),
        switch_at=rfc3339(staged.switch_at),
    )


def csr_info(stored: StoredCsr) -> certsync_pb2.CsrInfo:
    """A CSR as its message: subject, DNS SANs, key type and state read from its PEM."""
    csr = x509.load_pem_x509_csr(stored.pem)
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = san.get_values_for_type(x509.DNSName)
    except (x509.ExtensionNotFound, ValueError):  # none, or unreadable: no names to show
        dns = []
    return certsync_pb2.CsrInfo(
        id=stored.id,
        name=stored.name,
        pem=stored.pem.decode("ascii"),
        created_at=rfc3339(stored.created_at),
        subject=csr.subject.rfc4514_string(),
        dns_names=dns,
        key_type=key_type_of(csr.public_key()),
        state="fulfilled" if stored.fulfilled_by else "pending",
        fulfilled_by=stored.fulfilled_by or "",
    )
