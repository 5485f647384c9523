"""[core] Per-recipient replication blobs: wrap on the primary, unwrap on the receiver.

What travels for each certificate of the replicated set (DESIGN.md, "What travels"):

* ``pkcs12``: certificate, key and chain as PKCS#12 (AES-256-CBC, PBKDF2-HMAC-SHA256),
  protected by a fresh random passphrase made for this one transfer;
* ``wrapped_passphrase``: that passphrase encrypted for the recipient node's identity key
  (EC P-256, from its ``node.pem``): ephemeral ECDH -> HKDF-SHA256 -> AES-256-GCM. The
  associated data binds cluster id, epoch, revision, sender, recipient, the item's name
  and default flag and the SHA-256 of ``pkcs12``; so a blob replayed at another
  revision or epoch, delivered to another node, altered, or swapped with another item of
  the same push fails to open, before any PKCS#12 parsing happens.

Layout of ``wrapped_passphrase``: ephemeral public key (65 bytes, uncompressed X9.62
point) || nonce (12 bytes) || ciphertext of the 32 secret bytes with the 16-byte GCM tag.

Pure: randomness comes from ``rng_bytes`` (default :func:`os.urandom`), so tests can fix
it; nothing here touches files, sockets or the clock. The PKCS#12 work is CPU-bound: call
these from ``asyncio.to_thread`` in the shell.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import pkcs12

from node.errors import TransferRejected
from node.formats import BAD_CERTIFICATE, export_pkcs12
from node.model import PrivateKey

__all__ = [
    "TRANSFER_PKCS12_ROUNDS",
    "TransferContext",
    "UnwrappedItem",
    "WrappedItem",
    "unwrap_item",
    "wrap_item",
]

#: PBKDF2 rounds for transfer blobs. Iterated hashing only slows down guessing a
#: passphrase a human chose; ours is 256 bits from the OS CSPRNG, used once and never
#: stored, so guessing it costs ~2**255 tries however many rounds we add (1 round already
#: makes a guess cost one HMAC; 600 000 would make 2**255 into 2**274, nothing gained).
#: Extra rounds would only slow every push by N nodes x certificates x rounds. Admin
#: exports with human passphrases keep strong rounds (``node.formats``' default).
TRANSFER_PKCS12_ROUNDS = 1

_SECRET_LEN = 32
_NONCE_LEN = 12
_POINT_LEN = 65  # uncompressed P-256 point: 0x04 || X || Y
_TAG_LEN = 16
_WRAPPED_LEN = _POINT_LEN + _NONCE_LEN + _SECRET_LEN + _TAG_LEN
_HKDF_INFO = b"certsync transfer v1 passphrase wrap"
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@dataclass(frozen=True)
class TransferContext:
    """What a blob is bound to: replaying it under any other value fails."""

    cluster_id: str
    epoch: int
    revision: int
    sender: str
    recipient: str


@dataclass(frozen=True)
class WrappedItem:
    """One certificate of the replicated set, as it travels to one recipient."""

    name: str
    is_default: bool
    pkcs12: bytes
    wrapped_passphrase: bytes  # ephemeral public key || nonce || AES-GCM ciphertext+tag

    def __repr__(self) -> str:  # blobs are large and opaque; keep reprs (and logs) short
        return (f"WrappedItem(name={self.name!r}, is_default={self.is_default!r}, "
                f"pkcs12=<{len(self.pkcs12)} bytes>, "
                f"wrapped_passphrase=<{len(self.wrapped_passphrase)} bytes>)")


@dataclass(frozen=True)
class UnwrappedItem:
    """A received certificate with its key and chain, ready for the receiver's checks."""

    name: str
    is_default: bool
    cert: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...]

    def __repr__(self) -> str:  # never print the key
        return (f"UnwrappedItem(name={self.name!r}, is_default={self.is_default!r}, "
                f"cert={self.cert.subject.rfc4514_string()!r}, chain={len(self.chain)})")


def _associated_data(ctx: TransferContext, name: str, is_default: bool, blob: bytes) -> bytes:
    # JSON of a fixed-order list: unambiguous (strings are quoted and escaped)
    fields = [
        "certsync-transfer-v1", ctx.cluster_id, ctx.epoch, ctx.revision, ctx.sender,
        ctx.recipient, name, is_default, hashlib.sha256(blob).hexdigest(),
    ]
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode()


def _wrap_key(shared: bytes, ephemeral_point: bytes, recipient_point: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None,
        info=_HKDF_INFO + ephemeral_point + recipient_point,
    ).derive(shared)


def _point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.X962,
                            serialization.PublicFormat.UncompressedPoint)


def _ephemeral_key(rng_bytes: Callable[[int], bytes]) -> ec.EllipticCurvePrivateKey:
    """A P-256 key drawn from ``rng_bytes`` (rejection sampling keeps it uniform)."""
    while True:
        value = int.from_bytes(rng_bytes(32), "big")
        if 0 < value < _P256_ORDER:
            return ec.derive_private_key(value, ec.SECP256R1())


def _passphrase(secret: bytes) -> bytes:
    # hex, not the raw bytes: PKCS#12 passwords are C strings, a NUL byte would cut them
    return secret.hex().encode("ascii")


def wrap_item(
    ctx: TransferContext,
    recipient_public_key: ec.EllipticCurvePublicKey,
    *,
    name: str,
    key: PrivateKey,
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate],
    is_default: bool,
    rng_bytes: Callable[[int], bytes] = os.urandom,
) -> WrappedItem:
    """Export one certificate with its key and chain for ``ctx.recipient``."""
    if not isinstance(recipient_public_key.curve, ec.SECP256R1):
        raise TransferRejected(
            f"recipient {ctx.recipient!r} has a {recipient_public_key.curve.name!r} identity "
            "key, not P-256; re-issue its certificate with 'certsync cluster init'"
        )
    secret = rng_bytes(_SECRET_LEN)
    blob = export_pkcs12(
        name=name, key=key, cert=cert, chain=list(chain),
        passphrase=_passphrase(secret), rounds=TRANSFER_PKCS12_ROUNDS,
    )
    ephemeral = _ephemeral_key(rng_bytes)
    ephemeral_point = _point(ephemeral.public_key())
    shared = ephemeral.exchange(ec.ECDH(), recipient_public_key)
    wrap_key = _wrap_key(shared, ephemeral_point, _point(recipient_public_key))
    nonce = rng_bytes(_NONCE_LEN)
    sealed = AESGCM(wrap_key).encrypt(nonce, secret,
                                      _associated_data(ctx, name, is_default, blob))
    return WrappedItem(name=name, is_default=is_default, pkcs12=blob,
                       wrapped_passphrase=ephemeral_point + nonce + sealed)


def unwrap_item(
    ctx: TransferContext,
    recipient_private_key: ec.EllipticCurvePrivateKey,
    item: WrappedItem,
) -> UnwrappedItem:
    """Open ``item`` as ``ctx.recipient``; :class:`TransferRejected` if anything is off.

    Checks, in order: the wrapped passphrase authenticates under this context (cluster,
    epoch, revision, sender, recipient, name, default flag, blob hash); the PKCS#12 opens
    with it; it holds one certificate and its key, and the key matches the certificate.
    Chain building, dates and coverage are the receiver's later checks.
    """
    wrapped = item.wrapped_passphrase
    if len(wrapped) != _WRAPPED_LEN:
        raise TransferRejected(
            f"item {item.name!r} from {ctx.sender!r} has a wrapped passphrase of "
            f"{len(wrapped)} bytes, not {_WRAPPED_LEN}; it is damaged, push again"
        )
    ephemeral_point = wrapped[:_POINT_LEN]
    nonce = wrapped[_POINT_LEN:_POINT_LEN + _NONCE_LEN]
    sealed = wrapped[_POINT_LEN + _NONCE_LEN:]
    try:
        ephemeral = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(),
                                                                 ephemeral_point)
        shared = recipient_private_key.exchange(ec.ECDH(), ephemeral)
        wrap_key = _wrap_key(shared, ephemeral_point, _point(recipient_private_key.public_key()))
        secret = AESGCM(wrap_key).decrypt(
            nonce, sealed, _associated_data(ctx, item.name, item.is_default, item.pkcs12))
    except (InvalidTag, ValueError) as err:
        raise TransferRejected(
            f"item {item.name!r} from {ctx.sender!r} does not open for node "
            f"{ctx.recipient!r} at epoch {ctx.epoch} revision {ctx.revision}: it was "
            "replayed, sent to another node or altered; push again from the current primary"
        ) from err
    try:
        loaded = pkcs12.load_pkcs12(item.pkcs12, _passphrase(secret))
    except BAD_CERTIFICATE as err:
        raise TransferRejected(
            f"item {item.name!r} from {ctx.sender!r} is not a PKCS#12 that opens with its "
            "wrapped passphrase; push again from the current primary"
        ) from err
    if loaded.cert is None or loaded.key is None:
        raise TransferRejected(
            f"item {item.name!r} from {ctx.sender!r} lacks its certificate or its key; "
            "only certificates with keys are replicated, push again"
        )
    key = loaded.key
    cert = loaded.cert.certificate
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
                      | ed25519.Ed25519PrivateKey):
        raise TransferRejected(
            f"item {item.name!r} from {ctx.sender!r} holds a {type(key).__name__} key, which "
            "certsync does not store"
        )
    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise TransferRejected(
            f"item {item.name!r} from {ctx.sender!r}: the key does not match certificate "
            f"{cert.subject.rfc4514_string()!r}; the primary's store is inconsistent"
        )
    return UnwrappedItem(
        name=item.name, is_default=item.is_default, cert=cert, key=key,
        chain=tuple(extra.certificate for extra in loaded.additional_certs),
    )


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)
