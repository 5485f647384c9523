"""[core] Read every accepted certificate/key format by content; export PEM, DER, P7B and PKCS#12.

Pure: bytes in, values out. No I/O, no clock. The shell reads the files (bounded in size,
``sync._io.read_input_file``) and passes ``(display name, content)`` pairs.

Detection is by content, never by file name:

* text containing ``-----BEGIN `` is PEM, any mix of blocks: ``CERTIFICATE``, ``TRUSTED
  CERTIFICATE``, ``PKCS7``, ``PRIVATE KEY``, ``ENCRYPTED PRIVATE KEY``, ``RSA``/``EC PRIVATE
  KEY`` (also ``Proc-Type: 4,ENCRYPTED``); other blocks (``EC PARAMETERS``, ``PUBLIC KEY``,
  CRLs) are skipped, but a file with nothing usable is refused;
* anything else is DER, one or more concatenated elements, each told apart by its shape:
  PKCS#12 (``version 3, ContentInfo``), PKCS#7 ``signedData``, an X.509 certificate, an
  encrypted PKCS#8 key, or a plain PKCS#8 / traditional RSA/EC key.

Work is bounded before any decryption: every password-based KDF iteration count in a PKCS#12
or encrypted PKCS#8 (the MAC, PBES1, PBES2/PBKDF2, scrypt) is read with a tiny DER walk and an
absurd one is refused, so a hostile file answers at once instead of burning CPU for hours.
"""

from __future__ import annotations

import base64
import binascii
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12

from node.errors import BadInput, FormatError, PassphraseError
from node.model import KeyType, Material, PrivateKey

#: what cryptography raises for certificate bytes it cannot read: ValueError, or
#: InvalidVersion (an Exception, not a ValueError) for a version field other than v1-v3
BAD_CERTIFICATE: Final = (ValueError, x509.InvalidVersion)

__all__ = [
    "ADMIN_PBKDF2_ROUNDS",
    "BAD_CERTIFICATE",
    "MAX_KDF_ITERATIONS",
    "cert_sha256",
    "export_certificates",
    "export_pkcs12",
    "key_type_of",
    "public_key_matches",
    "read_material",
]

#: PBKDF2-HMAC-SHA256 rounds for PKCS#12 files an admin exports with a passphrase they chose.
#: Human passphrases are guessable, so the KDF must be slow: OWASP's Password Storage Cheat
#: Sheet recommends 600 000 iterations for PBKDF2-HMAC-SHA256. One export or import then
#: costs a few tenths of a second (MAC + key + certificate derivations), which an admin
#: does not notice. Replication uses random 256-bit passphrases and passes a small count.
ADMIN_PBKDF2_ROUNDS = 600_000

#: Largest iteration count we run a KDF with: the JDK's PKCS12KeyStore.MAX_ITERATION_COUNT,
#: above the highest count OWASP recommends (1 300 000 for PBKDF2-HMAC-SHA1), so any file
#: Java accepts we accept. Real files use 1-2 048 (legacy, OpenSSL 3 default) up to
#: 600 000 (hardened tools); a count of 2**31 would keep us busy for many minutes.
MAX_KDF_ITERATIONS = 5_000_000
#: scrypt cost bounds (N, r, p): N = 2**20 with r = 8 already needs 1 GiB of memory.
_MAX_SCRYPT_N = 2**20
_MAX_SCRYPT_R = 32
_MAX_SCRYPT_P = 16

_DER_MAX_DEPTH = 40

_Encoding = serialization.Encoding


# --------------------------------------------------------------------------- public helpers


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


def _spki(key: PublicKey) -> bytes:
    return key.public_bytes(_Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_matches(key: PrivateKey, cert: x509.Certificate) -> bool:
    """True when ``key`` is the private half of ``cert``'s public key."""
    try:
        cert_key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return False
    return _spki(key.public_key()) == _spki(cert_key)


# --------------------------------------------------------------------------- export


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
    if not _pkcs12_text(passphrase):
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


def _pkcs12_text(passphrase: bytes) -> bool:
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


# --------------------------------------------------------------------------- reading


def read_material(
    sources: Sequence[tuple[str, bytes]], passphrase: bytes | None = None
) -> Material:
    """Read every source (display name, content) as one input.

    Certificates and keys are de-duplicated, in first-seen order. Raises FormatError (with
    ``source`` set to the file's name) for anything not accepted, and PassphraseError for an
    encrypted file without (or with the wrong) passphrase.
    """
    acc = _Accumulator()
    for name, data in sources:
        _read_one(name, data, passphrase, acc)
    return Material(certificates=tuple(acc.certs), keys=tuple(acc.keys))


class _Accumulator:
    def __init__(self) -> None:
        self.certs: list[x509.Certificate] = []
        self.keys: list[PrivateKey] = []
        self._cert_ders: set[bytes] = set()
        self._key_ids: set[bytes] = set()

    def add_cert(self, name: str, cert: x509.Certificate) -> None:
        _check_certificate(name, cert)
        der = cert.public_bytes(_Encoding.DER)
        if der not in self._cert_ders:
            self._cert_ders.add(der)
            self.certs.append(cert)

    def add_key(self, name: str, key: PrivateKeyTypes) -> None:
        checked = _supported_private_key(name, key)
        # a private key is identified by its public half: no secret bytes are kept around
        ident = _spki(checked.public_key())
        if ident not in self._key_ids:
            self._key_ids.add(ident)
            self.keys.append(checked)


def _not_accepted(name: str, detail: str) -> FormatError:
    return FormatError(
        f"file {name!r} is not a certificate, key, PKCS#7 or PKCS#12 ({detail}); "
        "give a DER or PEM certificate, PKCS#7, PKCS#8/RSA/EC key or PKCS#12 file",
        source=name,
    )


def _damaged(name: str, what: str, detail: str) -> FormatError:
    return FormatError(
        f"{what} in file {name!r} is damaged or truncated ({detail}); "
        "get a fresh copy of the file",
        source=name,
    )


def _read_one(name: str, data: bytes, passphrase: bytes | None, acc: _Accumulator) -> None:
    if not data.strip():
        raise FormatError(
            f"file {name!r} is empty; give a certificate, key, PKCS#7 or PKCS#12 file",
            source=name,
        )
    if b"-----BEGIN " in data:
        _read_pem(name, data, passphrase, acc)
    else:
        _read_der(name, data, passphrase, acc)


# ---- PEM

_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 #]{1,64})-----[ \t]*\r?\n(.*?)-----END \1-----", re.DOTALL
)
_PEM_HEADER = re.compile(rb"^[A-Za-z-]+:.*$", re.MULTILINE)
_CERT_LABELS = {b"CERTIFICATE", b"X509 CERTIFICATE"}
_KEY_LABELS = {b"PRIVATE KEY", b"ENCRYPTED PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY"}
_UNSUPPORTED_KEY_LABELS = {b"DSA PRIVATE KEY", b"OPENSSH PRIVATE KEY"}


def _read_pem(name: str, data: bytes, passphrase: bytes | None, acc: _Accumulator) -> None:
    used = 0
    skipped: list[str] = []
    blocks = list(_PEM_BLOCK.finditer(data))
    if data.count(b"-----BEGIN ") != len(blocks):
        raise FormatError(
            f"file {name!r} has a PEM block without its matching END line (truncated?); "
            "get a fresh copy of the file",
            source=name,
        )
    for number, match in enumerate(blocks, start=1):
        label = match.group(1)
        body = match.group(2)
        what = f"PEM block {number} ({label.decode('ascii')})"
        if label in _UNSUPPORTED_KEY_LABELS:
            raise FormatError(
                f"{what} in file {name!r} is a key type certsync does not support; "
                "use an RSA, EC P-256/P-384 or Ed25519 key",
                source=name,
            )
        if label not in _CERT_LABELS | _KEY_LABELS | {b"TRUSTED CERTIFICATE", b"PKCS7"}:
            skipped.append(label.decode("ascii"))
            continue
        encrypted_legacy = b"Proc-Type:" in body and b"ENCRYPTED" in body
        if label in _KEY_LABELS and encrypted_legacy:
            _read_legacy_encrypted_pem_key(name, what, match.group(0), passphrase, acc)
            used += 1
            continue
        der = _pem_body(name, what, body)
        if label in _CERT_LABELS:
            acc.add_cert(name, _load_der_cert(name, what, der))
        elif label == b"TRUSTED CERTIFICATE":
            # OpenSSL's X509_AUX: a DER certificate followed by trust settings
            try:
                first = next(_elements(der, 0, len(der), 0))
            except _DerError as err:
                raise _damaged(name, what, str(err)) from err
            acc.add_cert(name, _load_der_cert(name, what, der[: first.end]))
        elif label == b"PKCS7":
            for cert in _load_pkcs7(name, what, der):
                acc.add_cert(name, cert)
        elif label == b"ENCRYPTED PRIVATE KEY":
            _read_encrypted_pkcs8(name, what, der, passphrase, acc)
        else:
            _read_plain_key(name, what, der, acc)
        used += 1
    if not used:
        found = ", ".join(skipped) or "none"
        raise _not_accepted(name, f"PEM blocks found: {found}")


def _pem_body(name: str, what: str, body: bytes) -> bytes:
    text = _PEM_HEADER.sub(b"", body)
    compact = b"".join(text.split())
    try:
        der = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as err:
        raise FormatError(
            f"{what} in file {name!r} has broken base64; get a fresh copy of the file",
            source=name,
        ) from err
    if not der:
        raise _damaged(name, what, "the block is empty")
    return der


def _read_legacy_encrypted_pem_key(
    name: str, what: str, pem: bytes, passphrase: bytes | None, acc: _Accumulator
) -> None:
    if passphrase is None:
        raise _needs_passphrase(name, what)
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase)
    except (ValueError, TypeError) as err:
        raise _wrong_passphrase(name, what) from err
    except UnsupportedAlgorithm as err:
        raise FormatError(
            f"{what} in file {name!r} uses an encryption certsync cannot read; "
            "re-export the key as PKCS#8 with AES",
            source=name,
        ) from err
    acc.add_key(name, key)


def _needs_passphrase(name: str, what: str) -> PassphraseError:
    return PassphraseError(
        f"{what} in file {name!r} is encrypted; give its passphrase with --passphrase-file",
        source=name,
    )


def _wrong_passphrase(name: str, what: str) -> PassphraseError:
    return PassphraseError(
        f"the passphrase does not open {what} in file {name!r}; "
        "check the passphrase file (or the file is damaged)",
        source=name,
    )


# ---- DER


def _read_der(name: str, data: bytes, passphrase: bytes | None, acc: _Accumulator) -> None:
    if data[0] != 0x30:
        raise _not_accepted(name, f"it starts with byte 0x{data[0]:02x}, not a DER SEQUENCE")
    end = len(data)
    number = 0
    pos = 0
    while pos < end:
        if number and not data[pos:].strip():
            break  # trailing whitespace after a DER object (an editor's newline) is harmless
        number += 1
        what = "the DER data" if number == 1 else f"DER object {number}"
        try:
            top = _element(data, pos, end, 0)
        except _DerError as err:
            if number == 1 and not err.truncated:
                raise _not_accepted(name, str(err)) from err
            raise _damaged(name, what, str(err)) from err
        der = data[pos : top.end]
        _read_der_object(name, what, der, _element(der, 0, len(der), 0), passphrase, acc)
        pos = top.end


def _read_der_object(
    name: str,
    what: str,
    der: bytes,
    top: _Tlv,
    passphrase: bytes | None,
    acc: _Accumulator,
) -> None:
    try:
        children = list(_elements(der, top.start, _content_end(top), 1))
    except _DerError as err:
        raise _damaged(name, what, str(err)) from err
    shape = [c.tag for c in children]
    if (
        len(children) >= 2
        and shape[0] == _INTEGER
        and _int_value(der, children[0]) == 3
        and shape[1] == _SEQUENCE
    ):
        _read_pkcs12(name, der, passphrase, acc)
    elif shape and shape[0] == _OID and _oid_text(der, children[0]) == _OID_SIGNED_DATA:
        for cert in _load_pkcs7(name, what, der):
            acc.add_cert(name, cert)
    elif len(children) == 3 and shape == [_SEQUENCE, _SEQUENCE, _BIT_STRING]:
        acc.add_cert(name, _load_der_cert(name, what, der))
    elif len(children) == 2 and shape == [_SEQUENCE, _OCTET_STRING]:
        _read_encrypted_pkcs8(name, what, der, passphrase, acc)
    elif shape and shape[0] == _INTEGER:
        _read_plain_key(name, what, der, acc)
    else:
        raise _not_accepted(name, "its DER structure is none of these")


def _load_der_cert(name: str, what: str, der: bytes) -> x509.Certificate:
    try:
        cert = x509.load_der_x509_certificate(der)
    except BAD_CERTIFICATE as err:
        try:
            x509.load_der_x509_csr(der)
        except ValueError:
            raise _damaged(name, what, "not a valid X.509 certificate") from err
        raise FormatError(
            f"file {name!r} is a certificate signing request, not a certificate; "
            "give the certificate the CA issued for it",
            source=name,
        ) from err
    return cert


def _check_certificate(name: str, cert: x509.Certificate) -> None:
    """Touch every part later code reads, so damage shows up here, naming the file."""
    try:
        _ = (cert.subject.rfc4514_string(), cert.issuer.rfc4514_string())
        _ = (cert.not_valid_before_utc, cert.not_valid_after_utc, cert.serial_number)
        _ = list(cert.extensions)
        public = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as err:
        raise FormatError(
            f"a certificate in file {name!r} is malformed ({err}); get a fresh copy of the file",
            source=name,
        ) from err
    try:
        key_type_of(public)
    except FormatError as err:
        raise FormatError(
            f"certificate {cert.subject.rfc4514_string()!r} in file {name!r} has an "
            f"unsupported key: {err}",
            source=name,
        ) from err


def _supported_private_key(name: str, key: PrivateKeyTypes) -> PrivateKey:
    try:
        key_type_of(key)
    except FormatError as err:
        raise FormatError(
            f"the private key in file {name!r} is unsupported: {err}", source=name
        ) from err
    if not isinstance(
        key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    ):  # pragma: no cover - key_type_of refused every other type just above
        raise FormatError(f"the private key in file {name!r} is unsupported", source=name)
    return key


def _load_pkcs7(name: str, what: str, der: bytes) -> list[x509.Certificate]:
    try:
        with warnings.catch_warnings():
            # `openssl crl2pkcs7` writes its certificate SET unsorted (BER, not DER);
            # cryptography reads it fine and warns, which would only confuse the admin
            warnings.simplefilter("ignore", UserWarning)
            certs = pkcs7.load_der_pkcs7_certificates(der)
    except BAD_CERTIFICATE as err:
        raise _damaged(name, what, "not a valid PKCS#7 certificate bundle") from err
    except UnsupportedAlgorithm as err:
        raise FormatError(
            f"{what} in file {name!r} is a PKCS#7 that holds no certificate bundle; "
            "give a PKCS#7 (.p7b) certificate bundle",
            source=name,
        ) from err
    if not certs:
        raise FormatError(
            f"{what} in file {name!r} is a PKCS#7 without certificates; "
            "give a .p7b that holds the certificate chain",
            source=name,
        )
    return certs


def _read_plain_key(name: str, what: str, der: bytes, acc: _Accumulator) -> None:
    try:
        key = serialization.load_der_private_key(der, password=None)
    except TypeError as err:  # raised when the key turns out to need a password
        raise _needs_passphrase(name, what) from err
    except ValueError as err:
        raise _damaged(name, what, "not a valid private key") from err
    except UnsupportedAlgorithm as err:
        raise FormatError(
            f"{what} in file {name!r} is a key type certsync does not support; "
            "use an RSA, EC P-256/P-384 or Ed25519 key",
            source=name,
        ) from err
    acc.add_key(name, key)


def _read_encrypted_pkcs8(
    name: str, what: str, der: bytes, passphrase: bytes | None, acc: _Accumulator
) -> None:
    _check_kdf_work(name, what, der)
    if passphrase is None:
        raise _needs_passphrase(name, what)
    try:
        key = serialization.load_der_private_key(der, password=passphrase)
    except (ValueError, TypeError) as err:
        raise _wrong_passphrase(name, what) from err
    except UnsupportedAlgorithm as err:
        raise FormatError(
            f"{what} in file {name!r} uses an encryption or key type certsync does not "
            "support; re-export it as PKCS#8 with AES and an RSA/EC key",
            source=name,
        ) from err
    acc.add_key(name, key)


def _read_pkcs12(name: str, der: bytes, passphrase: bytes | None, acc: _Accumulator) -> None:
    what = "the PKCS#12 data"
    _check_kdf_work(name, what, der)
    usable = passphrase is None or _pkcs12_text(passphrase)
    candidates: list[bytes | None] = []
    if passphrase is not None and usable:
        candidates.append(passphrase)
    # DESIGN.md: an unencrypted PKCS#12, or one encrypted with the empty passphrase, opens
    # without a passphrase file
    candidates += [None, b""]
    loaded: pkcs12.PKCS12KeyAndCertificates | None = None
    for candidate in candidates:
        try:
            loaded = pkcs12.load_pkcs12(der, candidate)
        except (ValueError, TypeError):  # wrong passphrase, damaged bags
            continue
        except x509.InvalidVersion as err:  # it opened, but a certificate in it is damaged
            raise _damaged(name, "the PKCS#12 data", "it holds an invalid X.509 certificate"
                           ) from err
        except UnsupportedAlgorithm as err:
            raise FormatError(
                f"PKCS#12 file {name!r} uses an algorithm certsync cannot read; "
                "re-export it with AES-256 (or legacy 3DES/RC2) encryption",
                source=name,
            ) from err
        break
    if loaded is None:
        if not usable:
            raise PassphraseError(
                f"the passphrase for PKCS#12 file {name!r} is not UTF-8 text without NUL "
                "bytes, which a PKCS#12 passphrase must be; check the passphrase file",
                source=name,
            )
        if passphrase is None:
            raise PassphraseError(
                f"PKCS#12 file {name!r} is protected by a passphrase; "
                "give it with --passphrase-file",
                source=name,
            )
        raise PassphraseError(
            f"the passphrase does not open PKCS#12 file {name!r}; "
            "check the passphrase file (or the file is damaged)",
            source=name,
        )
    if loaded.key is not None:
        acc.add_key(name, loaded.key)
    if loaded.cert is not None:
        acc.add_cert(name, loaded.cert.certificate)
    for extra in loaded.additional_certs:
        acc.add_cert(name, extra.certificate)


# --------------------------------------------------------------------------- tiny DER walk

_INTEGER = 0x02
_BIT_STRING = 0x03
_OCTET_STRING = 0x04
_OID = 0x06
_SEQUENCE = 0x30
_OCTET_STRING_CONSTRUCTED = 0x24

_OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
_OID_PBKDF2 = "1.2.840.113549.1.5.12"
_OID_SCRYPT = "1.3.6.1.4.1.11591.4.11"
#: PBES1 (PKCS#5 v1.5) and PKCS#12 PBE ids: their params are SEQUENCE {salt, iterations}
_OIDS_SALT_ITERATIONS = frozenset(
    {f"1.2.840.113549.1.5.{n}" for n in (1, 3, 4, 6, 10, 11)}
    | {f"1.2.840.113549.1.12.1.{n}" for n in range(1, 7)}
)


class _DerError(Exception):
    def __init__(self, message: str, *, truncated: bool = False) -> None:
        super().__init__(message)
        self.truncated = truncated


@dataclass(frozen=True)
class _Tlv:
    tag: int
    start: int  # first content byte
    end: int  # one past the element (for indefinite length: past the end-of-contents)
    indefinite: bool = False

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)


def _element(data: bytes, pos: int, end: int, depth: int) -> _Tlv:
    """Parse one DER/BER element header at ``pos``; ``end`` bounds it."""
    if depth > _DER_MAX_DEPTH:
        raise _DerError("nested too deeply")
    if pos + 2 > end:
        raise _DerError("ends inside an element header", truncated=True)
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise _DerError("uses a multi-byte tag")
    first = data[pos + 1]
    pos += 2
    if first == 0x80:  # BER indefinite length (Windows PFX files use it)
        if not tag & 0x20:
            raise _DerError("has an indefinite length on a primitive element")
        cursor = pos
        while True:
            if cursor + 2 > end:
                raise _DerError("ends before an end-of-contents marker", truncated=True)
            if data[cursor] == 0 and data[cursor + 1] == 0:
                return _Tlv(tag, pos, cursor + 2, indefinite=True)
            cursor = _element(data, cursor, end, depth + 1).end
    if first & 0x80:
        count = first & 0x7F
        if count > 4:
            raise _DerError("declares a length over 4 GiB")
        if pos + count > end:
            raise _DerError("ends inside a length", truncated=True)
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    else:
        length = first
    if pos + length > end:
        raise _DerError(
            f"an element declares {length} bytes but only {end - pos} follow", truncated=True
        )
    return _Tlv(tag, pos, pos + length)


def _elements(data: bytes, start: int, end: int, depth: int) -> Iterator[_Tlv]:
    """The children of a constructed element whose content spans ``start:end``."""
    pos = start
    while pos < end:
        if data[pos] == 0 and pos + 1 < end and data[pos + 1] == 0:
            return  # end-of-contents of an indefinite-length parent
        child = _element(data, pos, end, depth)
        yield child
        pos = child.end


def _content_end(tlv: _Tlv) -> int:
    """End of the content bytes (excludes an indefinite length's end-of-contents)."""
    return tlv.end - 2 if tlv.indefinite else tlv.end


def _int_value(data: bytes, tlv: _Tlv) -> int:
    raw = data[tlv.start : tlv.end]
    if len(raw) > 16:
        return 1 << 128  # far beyond any bound we check
    return int.from_bytes(raw, "big", signed=True)


def _oid_text(data: bytes, tlv: _Tlv) -> str:
    raw = data[tlv.start : tlv.end]
    if not raw or len(raw) > 64:
        return ""
    parts: list[int] = []
    value = 0
    for byte in raw:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    if not parts:
        return ""
    head = parts[0]
    first, second = (min(head // 40, 2), head - 40 * min(head // 40, 2))
    return ".".join(str(n) for n in (first, second, *parts[1:]))


def _octets(data: bytes, tlv: _Tlv, depth: int) -> bytes:
    """The value of an OCTET STRING, primitive or BER-constructed."""
    if tlv.tag == _OCTET_STRING:
        return data[tlv.start : tlv.end]
    return b"".join(
        _octets(data, part, depth + 1)
        for part in _elements(data, tlv.start, _content_end(tlv), depth + 1)
        if part.tag in (_OCTET_STRING, _OCTET_STRING_CONSTRUCTED)
    )


def _kdf_costs(data: bytes, tlv: _Tlv, depth: int) -> Iterator[tuple[str, int]]:
    """Every KDF cost parameter below ``tlv``: ("iterations"|"scrypt-n"|..., value).

    Walks constructed elements and OCTET STRINGs whose content is itself DER (the
    ``Data`` safes of a PKCS#12), reads the params of PBKDF2, scrypt, PBES1 / PKCS#12-PBE
    algorithm identifiers, and a PKCS#12 MacData's iteration count.
    """
    if depth > _DER_MAX_DEPTH:
        raise _DerError("nested too deeply")
    if tlv.tag in (_OCTET_STRING, _OCTET_STRING_CONSTRUCTED):
        inner = _octets(data, tlv, depth)
        if inner[:1] in (b"\x30", b"\xa0"):
            try:
                top = _element(inner, 0, len(inner), depth + 1)
                whole = top.end == len(inner)
                found = list(_kdf_costs(inner, top, depth + 1)) if whole else []
            except _DerError:
                found = []  # opaque bytes (salt, ciphertext, key material), not DER
            yield from found
        return
    if not tlv.constructed:
        return
    children = list(_elements(data, tlv.start, _content_end(tlv), depth + 1))
    tags = [c.tag for c in children]
    if tlv.tag == _SEQUENCE and len(children) == 2 and tags[0] == _OID:
        oid = _oid_text(data, children[0])
        params = children[1]
        if params.tag == _SEQUENCE and (oid == _OID_PBKDF2 or oid in _OIDS_SALT_ITERATIONS):
            fields = list(_elements(data, params.start, _content_end(params), depth + 2))
            if len(fields) >= 2 and fields[1].tag == _INTEGER:
                yield ("iterations", _int_value(data, fields[1]))
            return
        if params.tag == _SEQUENCE and oid == _OID_SCRYPT:
            fields = list(_elements(data, params.start, _content_end(params), depth + 2))
            names = ("scrypt-n", "scrypt-r", "scrypt-p")
            for label, field in zip(names, fields[1:4], strict=False):
                if field.tag == _INTEGER:
                    yield (label, _int_value(data, field))
            return
    if (  # MacData ::= SEQUENCE { DigestInfo, macSalt OCTET STRING, iterations INTEGER }
        tlv.tag == _SEQUENCE
        and len(children) == 3
        and tags == [_SEQUENCE, _OCTET_STRING, _INTEGER]
    ):
        yield ("iterations", _int_value(data, children[2]))
        return
    for child in children:
        yield from _kdf_costs(data, child, depth + 1)


def _check_kdf_work(name: str, what: str, der: bytes) -> None:
    """Refuse absurd KDF parameters before anything is decrypted."""
    try:
        top = _element(der, 0, len(der), 0)
        costs = list(_kdf_costs(der, top, 0))
    except _DerError as err:
        raise _damaged(name, what, str(err)) from err
    limits = {
        "iterations": MAX_KDF_ITERATIONS,
        "scrypt-n": _MAX_SCRYPT_N,
        "scrypt-r": _MAX_SCRYPT_R,
        "scrypt-p": _MAX_SCRYPT_P,
    }
    for label, value in costs:
        if not 1 <= value <= limits[label]:
            shown = value if value < 1 << 64 else "more than 2**64"
            raise FormatError(
                f"{what} in file {name!r} asks for a key derivation with {label} {shown!r} "
                f"(at most {limits[label]} accepted), which is absurd or hostile; "
                "re-export the file with a normal iteration count",
                source=name,
            )
