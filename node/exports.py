"""[core] Exports: certificates as PEM, DER or PKCS#7; key, certificate and chain as PKCS#12."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12

from node.certkeys import cert_sha256, public_key_matches
from node.errors import BadInput
from node.limits import MAX_KDF_ITERATIONS
from node.model import PrivateKey

__all__ = ["ADMIN_PBKDF2_ROUNDS", "export_certificates", "export_pkcs12", "pkcs12_text"]

_Encoding = serialization.Encoding

#: PBKDF2-HMAC-SHA256 rounds for PKCS#12 files an admin exports with a passphrase they chose.
#: Human passphrases are guessable, so the KDF must be slow: OWASP's Password Storage Cheat
#: Sheet recommends 600 000 iterations for PBKDF2-HMAC-SHA256. One export or import then
#: costs a few tenths of a second (MAC + key + certificate derivations), which an admin
#: does not notice. Replication uses random 256-bit passphrases and passes a small count.
ADMIN_PBKDF2_ROUNDS = 600_000


def export_certificates(
    certs: Sequence[x509.Certificate], fmt: Literal["pem", "der", "p7b"]
) -> bytes:
    """Certificates only (never a key): PEM bundle, DER of the first one, or a DER PKCS#7."""
    if not certs:
        raise BadInput("there is no certificate to export; give at least one")
    if fmt == "pem":
        return b"".join(c.public_bytes(_Encoding.PEM) for c in certs)
    if fmt == "der":
        return certs[0].public_bytes(_Encoding.DER)
    if fmt == "p7b":
        return pkcs7.serialize_certificates(list(certs), _Encoding.DER)
    raise BadInput(f"export format {fmt!r} is unknown; use pem, der, p7b or p12")


def export_pkcs12(
    *,
    name: str,
    key: PrivateKey,
    cert: x509.Certificate,
    chain: Sequence[x509.Certificate],
    passphrase: bytes,
    rounds: int = ADMIN_PBKDF2_ROUNDS,
) -> bytes:
    """PKCS#12 with key, certificate and chain, AES-256-CBC / PBKDF2-HMAC-SHA256 / SHA-256 MAC.

    The algorithms are chosen explicitly (not the library's default): certificate and key
    bags are PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC, the MAC is HMAC-SHA256, all with
    ``rounds`` iterations for the bags. Note: ``cryptography`` fixes the MAC's own PKCS#12-KDF
    iteration count at 2 048 (it offers no setting), so a guessed passphrase can be checked
    against the MAC more cheaply than against the PBKDF2 bags; the rounds still protect
    the key bag itself.
    """
    if not passphrase:
        raise BadInput(
            "a PKCS#12 export needs a non-empty passphrase; give one with --passphrase-file"
        )
    if not pkcs12_text(passphrase):
        raise BadInput(
            "a PKCS#12 passphrase must be UTF-8 text without NUL bytes; "
            "encode random passphrases (e.g. as hex or base64) first"
        )
    if not 1 <= rounds <= MAX_KDF_ITERATIONS:
        raise BadInput(f"PKCS#12 KDF rounds {rounds!r} out of range; use 1..{MAX_KDF_ITERATIONS}")
    if not public_key_matches(key, cert):
        raise BadInput(
            f"the private key does not match certificate {cert_sha256(cert)!r}; "
            "export the key that belongs to it"
        )
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(rounds)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(passphrase)
    )
    return pkcs12.serialize_key_and_certificates(
        name.encode("utf-8"), key, cert, list(chain) or None, encryption
    )


def pkcs12_text(passphrase: bytes) -> bool:
    """PKCS#12 turns the passphrase into a BMPString: it must be UTF-8 text, NUL-free.

    (``cryptography`` panics on a NUL byte and fails oddly on non-UTF-8 bytes.)
    """
    if b"\x00" in passphrase:
        return False
    try:
        passphrase.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
