"""[core] Plain values shared by the core and the shell: frozen dataclasses and literal types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

__all__ = [
    "CREATABLE_KEY_TYPES",
    "KEY_TYPES",
    "KeyType",
    "Material",
    "PrivateKey",
    "Role",
]

KeyType: TypeAlias = Literal["rsa-2048", "rsa-3072", "rsa-4096", "ec-p256", "ec-p384", "ed25519"]
KEY_TYPES: tuple[KeyType, ...] = (
    "rsa-2048",
    "rsa-3072",
    "rsa-4096",
    "ec-p256",
    "ec-p384",
    "ed25519",
)
#: key types an admin may create (DESIGN.md: cert create-self-signed --key)
CREATABLE_KEY_TYPES: tuple[KeyType, ...] = KEY_TYPES[:5]

Role: TypeAlias = Literal["identity", "intermediate", "root"]

#: the private key types certsync accepts and stores
PrivateKey: TypeAlias = (
    rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
)


@dataclass(frozen=True)
class Material:
    """Everything read from one input (one or several files read as one).

    Certificates are de-duplicated by DER, in first-seen order; keys likewise.
    """

    certificates: tuple[x509.Certificate, ...] = ()
    keys: tuple[PrivateKey, ...] = ()
