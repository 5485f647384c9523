"""[core] Build self-signed certificates and CSRs from a key, a subject and SANs.

Pure: no I/O, and the time, the key and the serial number are parameters (the shell draws
them with :mod:`node.keygen`). Signing with RSA takes a moment; the shell calls these with
``asyncio.to_thread``.

As the appliance guide requires, when the common name is a hostname it is also the first
SAN. SAN hostnames are validated with :func:`node.names.parse_hostname` (IP literals become
iPAddress SANs); a wildcard SAN (``*.example.com``) is accepted when it would cover
something (:func:`node.names.san_rule`: whole left-most label, not over a public suffix).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pycountry
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node.errors import BadInput, HostnameError
from node.model import PrivateKey
from node.names import parse_hostname, san_rule

__all__ = [
    "MAX_DAYS",
    "Subject",
    "create_csr",
    "create_self_signed",
    "subject_name",
    "subject_notices",
    "subject_sans",
]

#: ten years; longer self-signed certificates are a mistake more often than a wish
MAX_DAYS = 3650
#: X.520 upper bounds (RFC 5280 appendix A): CN, O, OU, L, ST
_MAX_LENGTH = {"common_name": 64, "org": 64, "unit": 64, "city": 128, "state": 128}


@dataclass(frozen=True)
class Subject:
    """The subject an admin fills in. ``country`` is an ISO 3166-1 alpha-2 code."""

    common_name: str
    country: str | None = None
    state: str | None = None
    city: str | None = None
    org: str | None = None
    unit: str | None = None


def _country(code: str) -> str:
    upper = code.strip().upper()
    if len(upper) != 2 or not upper.isascii() or not upper.isalpha():
        raise BadInput(
            f"country {code!r} is not a two-letter ISO 3166 code; use e.g. 'US', 'DE' or 'GB'"
        )
    if pycountry.countries.get(alpha_2=upper) is None:
        raise BadInput(
            f"country {code!r} is not an ISO 3166-1 country code; use e.g. 'US', 'DE' or 'GB'"
        )
    return upper


def _text(field: str, value: str, label: str) -> str:
    text = value.strip()
    if not text:
        raise BadInput(f"{label} {value!r} is empty; fill it in or leave it out")
    limit = _MAX_LENGTH[field]
    if len(text) > limit:
        raise BadInput(f"{label} {text!r} is longer than {limit} characters; shorten it")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise BadInput(f"{label} {text!r} contains control characters; remove them")
    return text


def subject_name(subject: Subject) -> x509.Name:
    """The X.509 name, in the conventional C, ST, L, O, OU, CN order."""
    attrs: list[x509.NameAttribute[str]] = []
    if subject.country is not None:
        attrs.append(x509.NameAttribute(NameOID.COUNTRY_NAME, _country(subject.country)))
    optional = (
        ("state", subject.state, NameOID.STATE_OR_PROVINCE_NAME, "state"),
        ("city", subject.city, NameOID.LOCALITY_NAME, "city"),
        ("org", subject.org, NameOID.ORGANIZATION_NAME, "organisation"),
        ("unit", subject.unit, NameOID.ORGANIZATIONAL_UNIT_NAME, "organisational unit"),
    )
    for field, value, oid, label in optional:
        if value is not None:
            attrs.append(x509.NameAttribute(oid, _text(field, value, label)))
    cn = _text("common_name", subject.common_name, "common name")
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _san_entry(text: str) -> x509.GeneralName:
    if text.startswith("*"):
        rule = san_rule(text.strip().lower().rstrip("."))
        if rule.kind != "wildcard":
            raise HostnameError(
                f"wildcard SAN {text!r} would cover nothing ({rule.reason}); "
                "use '*.' followed by a domain you own, e.g. '*.example.com'",
                hostname=text,
            )
        return x509.DNSName(f"*.{rule.key}")
    host = parse_hostname(text)
    if host.kind == "ip":
        return x509.IPAddress(ipaddress.ip_address(host.value))
    return x509.DNSName(host.value)


def _cn_entry(common_name: str) -> x509.GeneralName | None:
    """The CN as a SAN when it is a hostname (or wildcard); None for a friendly title."""
    text = common_name.strip()
    if "." not in text and ":" not in text:
        return None  # a single-label title such as "Support Portal" is not a hostname
    try:
        return _san_entry(text)
    except HostnameError:
        return None


def subject_sans(subject: Subject, sans: Sequence[str]) -> list[x509.GeneralName]:
    """SAN entries: the CN first when it is a hostname, then ``sans``, without repeats."""
    entries: list[x509.GeneralName] = []
    cn_entry = _cn_entry(subject.common_name)
    if cn_entry is not None:
        entries.append(cn_entry)
    for text in sans:
        entry = _san_entry(text)
        if entry not in entries:
            entries.append(entry)
    return entries


def subject_notices(subject: Subject, sans: Sequence[str]) -> list[str]:
    """The guide's subject rules, as notices for the admin (issue 11): a CN that is a DNS
    name is put first among the SANs (:func:`subject_sans` does it; this says so when the
    SANs given did not start with it), and gets the guide's advice."""
    cn_entry = _cn_entry(subject.common_name)
    if not isinstance(cn_entry, x509.DNSName):
        return []
    cn = cn_entry.value
    notices: list[str] = []
    first = _san_entry(sans[0]) if sans else None
    if first != cn_entry:
        notices.append(f"the common name {cn!r} is a DNS name and not the first SAN; it is put "
                       "first among the SANs")
    notices.append(f"the common name {cn!r} is a DNS name: clients ignore the CN and match "
                   "the SANs only, so list every hostname clients use (site and appliance "
                   "hostnames) as a SAN")
    return notices


def _signature_hash(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | None:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None  # Ed25519 signs the message itself
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1):
        return hashes.SHA384()
    return hashes.SHA256()


def _server_extensions(
    key: PrivateKey, san_entries: list[x509.GeneralName]
) -> list[tuple[x509.ExtensionType, bool]]:
    exts: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        ),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
    ]
    if san_entries:
        exts.append((x509.SubjectAlternativeName(san_entries), False))
    return exts


def create_self_signed(
    key: PrivateKey,
    subject: Subject,
    sans: Sequence[str],
    *,
    now: datetime,
    serial: int,
    days: int = 365,
) -> x509.Certificate:
    """A self-signed server certificate valid from ``now`` for ``days`` days, with the
    serial number ``serial`` (random, from :func:`node.keygen.random_serial`)."""
    if now.tzinfo is None:
        raise BadInput(f"time {now!r} has no time zone; pass an aware datetime")
    if not 1 <= days <= MAX_DAYS:
        raise BadInput(f"validity of {days!r} days is out of range; use 1 to {MAX_DAYS}")
    name = subject_name(subject)
    entries = subject_sans(subject, sans)
    start = now.astimezone(UTC).replace(microsecond=0)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    for ext, critical in _server_extensions(key, entries):
        builder = builder.add_extension(ext, critical)
    return builder.sign(key, _signature_hash(key))


def create_csr(
    key: PrivateKey, subject: Subject, sans: Sequence[str]
) -> x509.CertificateSigningRequest:
    """A CSR for a server certificate: subject, SANs (CN first when a hostname), serverAuth."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject_name(subject))
    for ext, critical in _server_extensions(key, subject_sans(subject, sans)):
        builder = builder.add_extension(ext, critical)
    return builder.sign(key, _signature_hash(key))
