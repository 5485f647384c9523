"""[core] Small certificate and key helpers: fingerprint, key type, key matches certificate."""

from __future__ import annotations

from typing import TypeAlias

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)

from node.errors import FormatError
from node.model import KeyType, PrivateKey

__all__ = ["PublicKey", "cert_sha256", "key_type_of", "public_key_matches", "spki"]

_Encoding = serialization.Encoding


def cert_sha256(cert: x509.Certificate) -> str:
    """The certificate's fingerprint: 64 lowercase hex digits of SHA-256 over its DER."""
    return cert.fingerprint(hashes.SHA256()).hex()


PublicKey: TypeAlias = CertificatePublicKeyTypes


def key_type_of(key: PrivateKey | PrivateKeyTypes | PublicKey) -> KeyType:
    """``rsa-2048`` ... ``ed25519`` for a private or public key; anything else is a FormatError."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        size = key.key_size
        if size == 2048:
            return "rsa-2048"
        if size == 3072:
            return "rsa-3072"
        if size == 4096:
            return "rsa-4096"
        raise FormatError(
            f"RSA key size {size!r} is not supported; use a 2048, 3072 or 4096-bit RSA key"
        )
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1):
            return "ec-p256"
        if isinstance(key.curve, ec.SECP384R1):
            return "ec-p384"
        raise FormatError(
            f"elliptic curve {key.curve.name!r} is not supported; use P-256 or P-384"
        )
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "ed25519"
    raise FormatError(
        f"key type {type(key).__name__!r} is not supported; use RSA (2048/3072/4096), "
        "EC P-256/P-384 or Ed25519"
    )


def spki(key: PublicKey) -> bytes:
    return key.public_bytes(_Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_matches(key: PrivateKey, cert: x509.Certificate) -> bool:
    """True when ``key`` is the private half of ``cert``'s public key."""
    try:
        cert_key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return False
    return spki(key.public_key()) == spki(cert_key)
