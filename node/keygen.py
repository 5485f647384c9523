"""[shell] Where new keys and serial numbers come from: the one place that draws randomness
for certificates (the core modules take keys and serials as parameters).

RSA generation blocks for a while; callers on the event loop use ``asyncio.to_thread``.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from node.errors import BadInput
from node.model import CREATABLE_KEY_TYPES, KEY_TYPES, KeyType, PrivateKey

__all__ = ["generate_key", "random_serial"]


def generate_key(key_type: KeyType) -> PrivateKey:
    """A new private key: rsa-2048/3072/4096, ec-p256/p384, or ed25519."""
    if key_type not in KEY_TYPES:
        raise BadInput(
            f"key type {key_type!r} is unknown; use one of {', '.join(CREATABLE_KEY_TYPES)}"
        )
    if key_type.startswith("rsa-"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    return ed25519.Ed25519PrivateKey.generate()


def random_serial() -> int:
    """A random positive serial number of 159 bits (RFC 5280 section 4.1.2.2)."""
    return x509.random_serial_number()
