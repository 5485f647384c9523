"""[core] Per-recipient replication blobs: wrap on the primary, unwrap on the receiver.

What travels for each certificate of the replicated set (DESIGN.md, "What travels"):

* ``pkcs12``: certificate, key and chain as PKCS#12 (AES-256-CBC, PBKDF2-HMAC-SHA256),
  protected by a fresh random passphrase made for this one transfer;
* ``wrapped_passphrase``: that passphrase encrypted for the recipient node's identity key
  (EC P-256, from its ``node.pem``) with HPKE (RFC 9180, base mode:
  DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-256-GCM; ``cryptography``'s ``hpke``). HPKE's
  ``info`` binds the format version, cluster id, epoch, revision, sender, recipient, the
  item's name and default flag and the SHA-256 of ``pkcs12``; so a blob replayed at another
  revision or epoch, delivered to another node, altered, or swapped with another item of
  the same push fails to open, before any PKCS#12 parsing happens.

Layout of ``wrapped_passphrase`` (format version 2): one version byte (``0x02``) || HPKE's
encapsulated key (65 bytes) || the ciphertext of the 32 secret bytes with its 16-byte tag.
Version 1 (a hand-assembled ECDH + HKDF + AES-GCM wrap) is no longer accepted: every node of
a cluster runs the same release, and a refused push says to upgrade.

Pure: the passphrase's randomness comes from ``rng_bytes`` (the shell passes
:func:`os.urandom`), so tests can fix it; HPKE draws its ephemeral key inside the library
(it takes no randomness from its caller), and OpenSSL the PKCS#12 salts. Nothing here
touches files, sockets or the clock. The PKCS#12 work is CPU-bound: call these from
``asyncio.to_thread`` in the shell.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from node.errors import TransferRejected
from node.formats import BAD_CERTIFICATE, export_pkcs12
from node.model import PrivateKey

__all__ = [
    "TRANSFER_FORMAT",
    "TRANSFER_PKCS12_ROUNDS",
    "TransferContext",
    "UnwrappedItem",
    "WrappedItem",
    "unwrap_csr_key",
    "unwrap_item",
    "wrap_csr_key",
    "wrap_item",
]

#: PBKDF2 rounds for transfer blobs. Iterated hashing only slows down guessing a
#: passphrase a human chose; ours is 256 bits from the OS CSPRNG, used once and never
#: stored, so guessing it costs ~2**255 tries however many rounds we add (1 round already
#: makes a guess cost one HMAC; 600 000 would make 2**255 into 2**274, nothing gained).
#: Extra rounds would only slow every push by N nodes x certificates x rounds. Admin
#: exports with human passphrases keep strong rounds (``node.formats``' default).
TRANSFER_PKCS12_ROUNDS = 1

#: the version byte that starts every wrapped passphrase
TRANSFER_FORMAT = 2

_SECRET_LEN = 32
_SUITE = hpke.Suite(hpke.KEM.P256, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_ENC_LEN = 65  # DHKEM(P-256) encapsulated key: an uncompressed point
_TAG_LEN = 16
_WRAPPED_LEN = 1 + _ENC_LEN + _SECRET_LEN + _TAG_LEN


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
    wrapped_passphrase: bytes  # version byte || HPKE encapsulated key || ciphertext+tag

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


def _info(ctx: TransferContext, name: str, is_default: bool, blob: bytes) -> bytes:
    """HPKE's ``info``: JSON of a fixed-order list (strings quoted and escaped, so the
    encoding is unambiguous)."""
    fields = [
        f"certsync-transfer-v{TRANSFER_FORMAT}", ctx.cluster_id, ctx.epoch, ctx.revision,
        ctx.sender, ctx.recipient, name, is_default, hashlib.sha256(blob).hexdigest(),
    ]
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode()


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
    rng_bytes: Callable[[int], bytes],
) -> WrappedItem:
    """Export one certificate with its key and chain for ``ctx.recipient``; ``rng_bytes``
    (``os.urandom`` in the shell) draws the one-time passphrase."""
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
    sealed = _SUITE.encrypt(secret, recipient_public_key,
                            info=_info(ctx, name, is_default, blob))
    return WrappedItem(name=name, is_default=is_default, pkcs12=blob,
                       wrapped_passphrase=bytes([TRANSFER_FORMAT]) + sealed)


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
    if wrapped[0] != TRANSFER_FORMAT:
        raise TransferRejected(
            f"item {item.name!r} from {ctx.sender!r} is in transfer format {wrapped[0]}, "
            f"not {TRANSFER_FORMAT}; run the same certsync release on every node"
        )
    try:
        secret = _SUITE.decrypt(wrapped[1:], recipient_private_key,
                                info=_info(ctx, item.name, item.is_default, item.pkcs12))
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


# --- CSR keys, to the backup only (issue 11) ----------------------------------------------
#
# A CSR's key has no certificate to make a PKCS#12 of: it travels as its PKCS#8 DER sealed
# with the same HPKE suite for the recipient's identity key, ``info`` binding the format,
# cluster, epoch, revision, sender, recipient, the request id, the SHA-256 of the CSR's PEM
# and the digest of the pushed CSR set. Layout: version byte || encapsulated key ||
# ciphertext+tag.

_CSR_FORMAT = 1


def _csr_info(ctx: TransferContext, csr_id: str, pem: bytes, set_digest: str) -> bytes:
    fields = [
        f"certsync-csr-key-v{_CSR_FORMAT}", ctx.cluster_id, ctx.epoch, ctx.revision,
        ctx.sender, ctx.recipient, csr_id, hashlib.sha256(pem).hexdigest(), set_digest,
    ]
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode()


def wrap_csr_key(
    ctx: TransferContext,
    recipient_public_key: ec.EllipticCurvePublicKey,
    *,
    csr_id: str,
    pem: bytes,
    key: PrivateKey,
    set_digest: str,
) -> bytes:
    """A CSR's key sealed for ``ctx.recipient`` (HPKE, the suite of :func:`wrap_item`)."""
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    sealed = _SUITE.encrypt(der, recipient_public_key,
                            info=_csr_info(ctx, csr_id, pem, set_digest))
    return bytes([_CSR_FORMAT]) + sealed


def unwrap_csr_key(
    ctx: TransferContext,
    recipient_private_key: ec.EllipticCurvePrivateKey,
    *,
    csr_id: str,
    pem: bytes,
    wrapped: bytes,
    set_digest: str,
) -> PrivateKey:
    """Open a CSR key as ``ctx.recipient``; :class:`TransferRejected` when it was replayed,
    sent to another node or altered, or when the key does not match the CSR."""
    if len(wrapped) <= 1 + _ENC_LEN + _TAG_LEN or wrapped[0] != _CSR_FORMAT:
        raise TransferRejected(
            f"the key of request {csr_id!r} from {ctx.sender!r} is damaged or in another "
            "format; run the same certsync release on every node and push again"
        )
    try:
        der = _SUITE.decrypt(wrapped[1:], recipient_private_key,
                             info=_csr_info(ctx, csr_id, pem, set_digest))
        key = serialization.load_der_private_key(der, password=None)
        csr = x509.load_pem_x509_csr(pem)
    except (InvalidTag, ValueError) as err:
        raise TransferRejected(
            f"the key of request {csr_id!r} from {ctx.sender!r} does not open for node "
            f"{ctx.recipient!r} at epoch {ctx.epoch}: it was replayed, sent to another node "
            "or altered; push again from the current primary"
        ) from err
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
                      | ed25519.Ed25519PrivateKey) or _spki(key.public_key()) != _spki(
                          csr.public_key()):
        raise TransferRejected(
            f"the key of request {csr_id!r} from {ctx.sender!r} does not match the request; "
            "the primary's store is inconsistent"
        )
    return key
