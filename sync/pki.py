"""[shell] The cluster PKI: a CA and the mTLS identities of nodes and admins.

Shell only because it draws serial numbers (and :func:`new_key` keys); otherwise pure: the
validity window starts at the ``now`` you pass, and keys are passed in so tests can fix
every input. All keys are EC P-256 and every certificate is signed with ECDSA-SHA256. The
identity format (CN, O, SAN DNS and SAN URI, EKU) is the contract :mod:`node.identity` reads
back with ``identity_from_certificate``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node.identity import admin_uri, check_node_name, monitor_uri, node_dns_name, node_uri

__all__ = [
    "CA_VALIDITY",
    "CLOCK_SKEW",
    "LEAF_VALIDITY",
    "Issued",
    "issue_admin",
    "issue_monitor",
    "issue_node",
    "key_pem",
    "make_ca",
    "new_key",
]

#: the CA outlives every identity it issues; re-run ``cluster init`` to roll it
CA_VALIDITY = dt.timedelta(days=3650)
#: node and admin identities: long enough that a lab cluster never trips over them
LEAF_VALIDITY = dt.timedelta(days=1825)
#: certificates start a little before ``now`` so a peer whose clock lags still accepts them
CLOCK_SKEW = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Issued:
    """A key and the certificate that goes with it."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM: the file holding it is mode 0600 (no passphrase to store)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _org(cluster_id: str) -> x509.NameAttribute[str]:
    return x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"certsync {cluster_id}")


def _utc(now: dt.datetime) -> dt.datetime:
    if now.tzinfo is None:
        raise ValueError(f"now {now!r} must be timezone-aware")  # a programming error
    return now.astimezone(dt.UTC)


def make_ca(cluster_id: str, *, now: dt.datetime, key: ec.EllipticCurvePrivateKey) -> Issued:
    """A self-signed cluster CA that may only issue end-entity certificates."""
    start = _utc(now) - CLOCK_SKEW
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, "certsync cluster CA"),
        _org(cluster_id),
    ])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(key=key, cert=cert)


def _leaf(
    ca: Issued,
    *,
    subject: x509.Name,
    sans: list[x509.GeneralName],
    ekus: list[x509.ObjectIdentifier],
    key_agreement: bool,
    now: dt.datetime,
    key: ec.EllipticCurvePrivateKey,
) -> Issued:
    start = _utc(now) - CLOCK_SKEW
    end = min(start + LEAF_VALIDITY, ca.cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                # key_agreement: a node's key also unwraps transfer passphrases (ECDH)
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=key_agreement, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(key=key, cert=cert)


def _cluster_id_of(ca: Issued) -> str:
    orgs = ca.cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    value = orgs[0].value if orgs else ""
    text = value if isinstance(value, str) else value.decode()
    return text.removeprefix("certsync ")


def issue_node(
    ca: Issued, name: str, *, now: dt.datetime, key: ec.EllipticCurvePrivateKey
) -> Issued:
    """Node ``name``'s identity: serverAuth + clientAuth, SAN DNS ``<name>.node.certsync``."""
    cluster_id = _cluster_id_of(ca)
    check_node_name(name)
    return _leaf(
        ca,
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"node:{name}"),
                           _org(cluster_id)]),
        sans=[x509.DNSName(node_dns_name(name)),
              x509.UniformResourceIdentifier(node_uri(cluster_id, name))],
        ekus=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        key_agreement=True,
        now=now,
        key=key,
    )


def issue_admin(
    ca: Issued, name: str, *, now: dt.datetime, key: ec.EllipticCurvePrivateKey
) -> Issued:
    """Admin ``name``'s identity: clientAuth only, SAN URI ``certsync://<id>/admin/<name>``."""
    return _client_identity(ca, "admin", name, admin_uri, now=now, key=key)


def issue_monitor(
    ca: Issued, name: str, *, now: dt.datetime, key: ec.EllipticCurvePrivateKey
) -> Issued:
    """A metrics scraper's identity: clientAuth only, SAN URI ``certsync://<id>/monitor/<name>``;
    it may read the admin console's ``/metrics`` and nothing else."""
    return _client_identity(ca, "monitor", name, monitor_uri, now=now, key=key)


def _client_identity(
    ca: Issued, kind: str, name: str, uri: Callable[[str, str], str], *, now: dt.datetime,
    key: ec.EllipticCurvePrivateKey,
) -> Issued:
    """A client-only identity of ``kind`` (CN ``kind:name``, the certsync URI ``uri`` makes)."""
    cluster_id = _cluster_id_of(ca)
    check_node_name(name)
    return _leaf(
        ca,
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{kind}:{name}"),
                           _org(cluster_id)]),
        sans=[x509.UniformResourceIdentifier(uri(cluster_id, name))],
        ekus=[ExtendedKeyUsageOID.CLIENT_AUTH],
        key_agreement=False,
        now=now,
        key=key,
    )
