"""[core] Private keys sealed at rest: AES-256-GCM bound to the store row that holds them.

A key is stored as PKCS#8 DER sealed under the node's store key; the associated data names
the row (``certsync-key-v1|`` + the certificate's sha256, ``certsync-csr-key-v1|`` + the
request id), so a ciphertext copied to another row, swapped or altered fails to open
(:class:`IntegrityError`). The nonce is randomness and therefore a parameter: the shell
(:mod:`node.store`) draws it with ``os.urandom(NONCE_BYTES)``.
"""

from __future__ import annotations

from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from node.errors import IntegrityError
from node.model import PrivateKey

__all__ = [
    "NONCE_BYTES",
    "STORE_KEY_BYTES",
    "csr_aad",
    "key_aad",
    "key_check",
    "key_check_opens",
    "key_der",
    "load_key",
    "seal",
    "spki",
    "unseal",
]

STORE_KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
_KEY_AAD_PREFIX: Final = b"certsync-key-v1|"
_CSR_AAD_PREFIX: Final = b"certsync-csr-key-v1|"
_CHECK_AAD: Final = b"certsync-store-check-v1"
_CHECK_PLAINTEXT: Final = b"certsync store key check"


def key_aad(sha256: str) -> bytes:
    """Associated data binding a sealed key to its certificate row."""
    return _KEY_AAD_PREFIX + sha256.encode("ascii")


def csr_aad(csr_id: str) -> bytes:
    """Associated data binding a sealed key to its CSR row."""
    return _CSR_AAD_PREFIX + csr_id.encode("utf-8")


def seal(store_key: bytes, aad: bytes, plaintext: bytes, nonce: bytes) -> tuple[bytes, bytes]:
    """AES-256-GCM under a fresh ``nonce`` (:data:`NONCE_BYTES` random bytes, never reused
    with one store key): returns ``(nonce, ciphertext)``."""
    return nonce, AESGCM(store_key).encrypt(nonce, plaintext, aad)


def unseal(store_key: bytes, aad: bytes, nonce: bytes, ciphertext: bytes, *, what: str) -> bytes:
    """Open what :func:`seal` made; :class:`IntegrityError` naming ``what`` if it does not open."""
    try:
        return AESGCM(store_key).decrypt(nonce, ciphertext, aad)
    except (InvalidTag, ValueError) as err:
        raise IntegrityError(
            f"the stored key of {what} fails authentication (the row was copied, swapped or "
            "altered, or the store key is wrong); restore the store from a backup or re-import it",
        ) from err


def key_check(store_key: bytes, nonce: bytes) -> str:
    """The ``store_key_check`` meta value a new store keeps: a known text sealed under its key."""
    sealed_nonce, ct = seal(store_key, _CHECK_AAD, _CHECK_PLAINTEXT, nonce)
    return (sealed_nonce + ct).hex()


def key_check_opens(store_key: bytes, text: str) -> bool:
    """Whether ``store_key`` opens the ``store_key_check`` value ``text`` (it is the key the
    store was created with)."""
    blob = bytes.fromhex(text)
    try:
        AESGCM(store_key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], _CHECK_AAD)
    except (InvalidTag, ValueError):
        return False
    return True


def spki(public_key: Any) -> bytes:
    """The DER SubjectPublicKeyInfo of a public key (to compare a key with a certificate)."""
    der: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def key_der(key: PrivateKey) -> bytes:
    """A private key as unencrypted PKCS#8 DER (the plaintext :func:`seal` seals)."""
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(der: bytes, *, what: str) -> PrivateKey:
    """The key :func:`key_der` wrote, once unsealed; :class:`IntegrityError` naming ``what``."""
    try:
        # The row decrypted under AES-GCM bound to it, so these are the exact bytes we
        # stored after the key passed the full check at import; RSA's costly consistency
        # check (tens of ms per read) would only repeat that.
        key = serialization.load_der_private_key(
            der, password=None, unsafe_skip_rsa_key_validation=True
        )
    except (ValueError, TypeError) as err:
        raise IntegrityError(
            f"the stored key of {what} is not a readable PKCS#8 key; "
            "restore the store from a backup"
        ) from err
    return key  # type: ignore[return-value]  # we only ever store the PrivateKey types
