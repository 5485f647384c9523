"""Test PKI: root -> intermediate -> leaf chains of every key type, with chosen SANs and dates.

Built with ``cryptography`` directly (trustme cannot make v1 certificates, CA:TRUE leaves,
odd SANs or chosen dates). Everything is deterministic except keys and serial numbers.
RSA keys are slow to make, so :func:`make_key` caches one key per type unless ``fresh``.

    pki = make_chain("rsa-2048", sans=["support.example.com", "*.example.com"])
    pki.leaf.cert, pki.leaf.key, pki.chain           # chain = (intermediate, root)
    pem_bundle(pki.leaf.cert, *pki.chain, key=pki.leaf.key)
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node.model import KEY_TYPES, KeyType, PrivateKey

__all__ = [
    "KEY_TYPES",
    "NOW",
    "Issued",
    "Pki",
    "der_set_mac_iterations",
    "der_with_bad_version",
    "key_pem",
    "make_chain",
    "make_cross_signed_pool",
    "make_dsa_key",
    "make_intermediate",
    "make_key",
    "make_leaf",
    "make_root",
    "name",
    "pem_bundle",
    "san_entries",
]

#: a fixed "now" for tests: certificates default to NOW - 1 day .. NOW + 365 days
NOW = datetime(2026, 1, 1, tzinfo=UTC)
_DEFAULT_NOT_BEFORE = NOW - timedelta(days=1)
_DEFAULT_NOT_AFTER = NOW + timedelta(days=365)


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: PrivateKey


@dataclass(frozen=True)
class Pki:
    root: Issued
    intermediate: Issued
    leaf: Issued

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """The leaf's issuers, nearest first."""
        return (self.intermediate.cert, self.root.cert)


def _new_key(key_type: KeyType) -> PrivateKey:
    if key_type.startswith("rsa-"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    return ed25519.Ed25519PrivateKey.generate()


@functools.cache
def _cached_key(key_type: KeyType, slot: int) -> PrivateKey:
    return _new_key(key_type)


def make_key(key_type: KeyType = "ec-p256", *, fresh: bool = False, slot: int = 0) -> PrivateKey:
    """A key of ``key_type``: cached per (type, slot) unless ``fresh``."""
    return _new_key(key_type) if fresh else _cached_key(key_type, slot)


def make_dsa_key() -> dsa.DSAPrivateKey:
    """An unsupported key type, for negative tests."""
    return dsa.generate_private_key(key_size=2048)


def name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def san_entries(sans: Sequence[str]) -> list[x509.GeneralName]:
    """IP literals become iPAddress SANs; everything else a dNSName exactly as written."""
    entries: list[x509.GeneralName] = []
    for san in sans:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            entries.append(x509.DNSName(san))
    return entries


def _hash_for(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _build(
    *,
    subject: x509.Name,
    issuer_name: x509.Name,
    public_key: PrivateKey,
    signing_key: PrivateKey,
    ca: bool | None,
    sans: Sequence[str],
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=None), critical=True
        )
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(san_entries(sans)), critical=False
        )
    if ca is False:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return builder.sign(signing_key, _hash_for(signing_key))


def make_root(
    cn: str = "Example Root CA",
    key_type: KeyType = "ec-p256",
    *,
    not_before: datetime = _DEFAULT_NOT_BEFORE,
    not_after: datetime = _DEFAULT_NOT_AFTER + timedelta(days=3650),
    slot: int = 1,
) -> Issued:
    key = make_key(key_type, slot=slot)
    subject = name(cn, "Example Test PKI")
    cert = _build(
        subject=subject,
        issuer_name=subject,
        public_key=key,
        signing_key=key,
        ca=True,
        sans=(),
        not_before=not_before,
        not_after=not_after,
    )
    return Issued(cert, key)


def make_intermediate(
    issuer: Issued,
    cn: str = "Example Intermediate",
    key_type: KeyType = "ec-p256",
    *,
    not_before: datetime = _DEFAULT_NOT_BEFORE,
    not_after: datetime = _DEFAULT_NOT_AFTER + timedelta(days=1825),
    slot: int = 2,
) -> Issued:
    key = make_key(key_type, slot=slot)
    cert = _build(
        subject=name(cn, "Example Test PKI"),
        issuer_name=issuer.cert.subject,
        public_key=key,
        signing_key=issuer.key,
        ca=True,
        sans=(),
        not_before=not_before,
        not_after=not_after,
    )
    return Issued(cert, key)


def make_leaf(
    issuer: Issued | None,
    sans: Sequence[str] = ("support.example.com",),
    cn: str | None = None,
    key_type: KeyType = "ec-p256",
    *,
    not_before: datetime = _DEFAULT_NOT_BEFORE,
    not_after: datetime = _DEFAULT_NOT_AFTER,
    ca: bool | None = False,
    key: PrivateKey | None = None,
    slot: int = 0,
) -> Issued:
    """An end-entity certificate; ``issuer=None`` makes it self-signed.

    ``ca=None`` leaves out BasicConstraints; ``ca=True`` makes a CA:TRUE "server" certificate
    as ``openssl req -x509`` does with its default config.
    """
    key = key or make_key(key_type, slot=slot)
    subject = name(cn if cn is not None else (sans[0] if sans else "Example Leaf"))
    cert = _build(
        subject=subject,
        issuer_name=issuer.cert.subject if issuer else subject,
        public_key=key,
        signing_key=issuer.key if issuer else key,
        ca=ca,
        sans=sans,
        not_before=not_before,
        not_after=not_after,
    )
    return Issued(cert, key)


def make_cross_signed_pool(label: str, domain: str) -> list[Issued]:
    """Certificates for chain-index and store tests: two roots, an intermediate under root A
    also cross-signed by root B (same subject and key: two candidate issuers), a deeper
    intermediate, and leaves under each of them, a self-signed one and one naming an issuer
    that is not in the pool. ``label`` and ``domain`` keep the names apart between suites."""
    root_a = make_root(f"{label} Root A", slot=1)
    root_b = make_root(f"{label} Root B", slot=3)
    inter = make_intermediate(root_a, f"{label} Intermediate", slot=2)
    cross = Issued(make_intermediate(root_b, f"{label} Intermediate", slot=2).cert, inter.key)
    deep = make_intermediate(inter, f"{label} Deep", slot=4)
    absent = make_root(f"{label} Absent Root", slot=9)
    return [
        root_a, root_b, inter, cross, deep,
        make_leaf(inter, [f"a.{domain}"], key=make_key(slot=5)),
        make_leaf(deep, [f"b.{domain}"], key=make_key(slot=6)),
        make_leaf(cross, [f"c.{domain}"], key=make_key(slot=7)),
        make_leaf(None, [f"self.{domain}"], key=make_key(slot=8)),
        make_leaf(absent, [f"d.{domain}"], key=make_key(slot=10)),
    ]


def make_chain(
    key_type: KeyType = "ec-p256",
    *,
    sans: Sequence[str] = ("support.example.com",),
    ca_key_type: KeyType | None = None,
    not_before: datetime = _DEFAULT_NOT_BEFORE,
    not_after: datetime = _DEFAULT_NOT_AFTER,
    root_cn: str = "Example Root CA",
    intermediate_cn: str = "Example Intermediate",
) -> Pki:
    """root -> intermediate -> leaf; the leaf has ``key_type``, the CAs ``ca_key_type``."""
    ca_type = ca_key_type or key_type
    root = make_root(root_cn, ca_type)
    intermediate = make_intermediate(root, intermediate_cn, ca_type)
    leaf = make_leaf(
        intermediate, sans, key_type=key_type, not_before=not_before, not_after=not_after
    )
    return Pki(root, intermediate, leaf)


def key_pem(
    key: PrivateKey, passphrase: bytes | None = None, *, traditional: bool = False
) -> bytes:
    fmt = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if traditional
        else serialization.PrivateFormat.PKCS8
    )
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, fmt, enc)


def pem_bundle(*certs: x509.Certificate, key: PrivateKey | None = None) -> bytes:
    out = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    return out + (key_pem(key) if key is not None else b"")


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(header length, content length, total end) of the DER element at ``pos``."""
    first = data[pos + 1]
    if first < 0x80:
        return 2, first, pos + 2 + first
    count = first & 0x7F
    length = int.from_bytes(data[pos + 2 : pos + 2 + count], "big")
    return 2 + count, length, pos + 2 + count + length


def _header(tag: int, length: int) -> bytes:
    if length < 0x80:
        return bytes([tag, length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw


def der_set_mac_iterations(p12: bytes, iterations: int) -> bytes:
    """Rewrite the MacData iteration count of a DER PKCS#12 (for the 'absurd count' test).

    Written independently of node.formats' walker: Pfx = SEQUENCE {version, authSafe,
    macData}; macData = SEQUENCE {DigestInfo, salt, iterations}.
    """
    hdr, _, _ = _tlv(p12, 0)
    pos = hdr
    _, _, pos = _tlv(p12, pos)  # version
    _, _, pos = _tlv(p12, pos)  # authSafe
    mac_start = pos
    mac_hdr, _, mac_end = _tlv(p12, mac_start)
    inner = mac_start + mac_hdr
    _, _, inner = _tlv(p12, inner)  # DigestInfo
    _, _, inner = _tlv(p12, inner)  # salt
    raw = iterations.to_bytes((iterations.bit_length() + 8) // 8, "big")
    mac_body = p12[mac_start + mac_hdr : inner] + _header(0x02, len(raw)) + raw
    mac = _header(0x30, len(mac_body)) + mac_body
    body = p12[hdr:mac_start] + mac
    assert mac_end == len(p12)
    return _header(0x30, len(body)) + body


def der_with_bad_version(cert: x509.Certificate) -> bytes:
    """``cert``'s DER with its version field set to 3 (there are only v1..v3, coded 0..2):
    what cryptography refuses with ``InvalidVersion``, which is not a ``ValueError``."""
    der = cert.public_bytes(serialization.Encoding.DER)
    v3 = bytes.fromhex("a003020102")  # [0] EXPLICIT INTEGER 2, first in the TBSCertificate
    assert der.count(v3) >= 1
    return der.replace(v3, bytes.fromhex("a003020103"), 1)
