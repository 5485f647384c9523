"""[core] Read every accepted certificate/key format by content; export PEM, DER, P7B, PKCS#12.

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

Work is bounded before any decryption (``node.pkcs12_limits``): every key derivation a
PKCS#12 or encrypted PKCS#8 will cost is found by a strict walk and charged to one budget per
input (``node.limits``), so a hostile file is refused at once instead of burning CPU for
hours. PEM blocks are found in one linear pass. Whatever a parser raises on damaged input —
including ``BaseException`` subclasses such as a Rust panic in ``cryptography`` — becomes one
``FormatError`` naming the file; library warnings are silenced while reading.
"""

from __future__ import annotations

import base64
import binascii
import re
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import Final, TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    PrivateKeyTypes,
)
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12

from node import der as _der
from node import pkcs12_limits as p12
from node.certkeys import PublicKey, cert_sha256, key_type_of, public_key_matches, spki
from node.der import DerError
from node.errors import CertsyncError, FormatError, PassphraseError
from node.exports import ADMIN_PBKDF2_ROUNDS, export_certificates, export_pkcs12, pkcs12_text
from node.limits import MAX_KDF_ITERATIONS, MAX_PEM_BLOCKS
from node.model import Material, PrivateKey

#: what cryptography raises for certificate bytes it cannot read: ValueError, or
#: InvalidVersion (an Exception, not a ValueError) for a version field other than v1-v3
BAD_CERTIFICATE: Final = (ValueError, x509.InvalidVersion)

__all__ = [
    "ADMIN_PBKDF2_ROUNDS",
    "BAD_CERTIFICATE",
    "MAX_KDF_ITERATIONS",
    "PublicKey",
    "cert_sha256",
    "export_certificates",
    "export_pkcs12",
    "key_type_of",
    "public_key_matches",
    "read_material",
]

_Encoding = serialization.Encoding
_T = TypeVar("_T")


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
    with warnings.catch_warnings():
        # e.g. CryptographyDeprecationWarning for a negative serial number: the file is
        # read as it is, and a warning on stderr would only break the one-line contract
        warnings.simplefilter("ignore")
        for name, data in sources:
            try:
                _read_one(name, data, passphrase, acc)
            except CertsyncError:
                raise
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as err:
                raise FormatError(
                    f"file {name!r} could not be read: the parser failed on it "
                    f"({type(err).__name__}), so it is damaged or uses an unsupported "
                    "encoding; get a fresh copy of the file",
                    source=name,
                ) from err
    return Material(certificates=tuple(acc.certs), keys=tuple(acc.keys))


class _Accumulator:
    def __init__(self) -> None:
        self.budget = p12.WorkBudget()
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
        ident = spki(checked.public_key())
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

#: one BEGIN or END line marker; each match attempt is bounded, so scanning is linear
_PEM_MARKER = re.compile(rb"-----(BEGIN|END) ([A-Z0-9 #]{1,64})-----([ \t]*\r?\n)?")
_PEM_HEADER = re.compile(rb"^[A-Za-z-]+:.*$", re.MULTILINE)
_CERT_LABELS = {b"CERTIFICATE", b"X509 CERTIFICATE"}
_KEY_LABELS = {b"PRIVATE KEY", b"ENCRYPTED PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY"}
_UNSUPPORTED_KEY_LABELS = {b"DSA PRIVATE KEY", b"OPENSSH PRIVATE KEY"}


def pem_blocks(data: bytes) -> list[tuple[bytes, bytes, bytes]] | None:
    """(label, body, whole block) of every PEM block, in one pass over ``data``; None when a
    BEGIN line has no matching END line before the next BEGIN (or the end)."""
    blocks: list[tuple[bytes, bytes, bytes]] = []
    begins = 0
    open_label: bytes | None = None
    begin_at = body_at = 0
    for marker in _PEM_MARKER.finditer(data):
        kind, label = marker.group(1), marker.group(2)
        if kind == b"BEGIN":
            begins += 1
            if open_label is not None or marker.group(3) is None:
                return None
            open_label, begin_at, body_at = label, marker.start(), marker.end()
        elif open_label is not None:
            if label != open_label:
                return None
            end = marker.start() + 9 + len(label) + 5
            blocks.append((label, data[body_at : marker.start()], data[begin_at:end]))
            open_label = None
    if open_label is not None or begins != data.count(b"-----BEGIN "):
        return None
    return blocks


def _read_pem(name: str, data: bytes, passphrase: bytes | None, acc: _Accumulator) -> None:
    used = 0
    skipped: list[str] = []
    if data.count(b"-----BEGIN ") > MAX_PEM_BLOCKS:
        raise FormatError(
            f"file {name!r} has more than {MAX_PEM_BLOCKS} PEM blocks (limit MAX_PEM_BLOCKS); "
            "split it into smaller files",
            source=name,
        )
    blocks = pem_blocks(data)
    if blocks is None:
        raise FormatError(
            f"file {name!r} has a PEM block without its matching END line (truncated?); "
            "get a fresh copy of the file",
            source=name,
        )
    for number, (label, body, whole) in enumerate(blocks, start=1):
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
            _read_legacy_encrypted_pem_key(name, what, whole, passphrase, acc)
            used += 1
            continue
        der = _pem_body(name, what, body)
        if label in _CERT_LABELS:
            acc.add_cert(name, _load_der_cert(name, what, der))
        elif label == b"TRUSTED CERTIFICATE":
            # OpenSSL's X509_AUX: a DER certificate followed by trust settings
            try:
                first = _der.element(der, 0, len(der), 0)
            except DerError as err:
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


_DEK_INFO = re.compile(rb"^DEK-Info: *([A-Za-z0-9-]+) *, *([0-9A-Fa-f]*)[ \t]*\r?$", re.MULTILINE)
#: IV bytes of the ciphers OpenSSL writes in DEK-Info (`openssl rsa -des3/-aes*`...)
_IV_BYTES = {b"DES-EDE3-CBC": 8, b"DES-CBC": 8, b"AES-128-CBC": 16, b"AES-192-CBC": 16,
             b"AES-256-CBC": 16, b"DES-EDE-CBC": 8}  # fmt: skip


def _read_legacy_encrypted_pem_key(
    name: str, what: str, pem: bytes, passphrase: bytes | None, acc: _Accumulator
) -> None:
    dek = _DEK_INFO.search(pem)
    if dek is None or len(dek.group(2)) != 2 * _IV_BYTES.get(dek.group(1).upper(), 0):
        # cryptography panics (a Rust PanicException) on an IV shorter than its cipher's
        raise _damaged(name, what, "its DEK-Info line names no known cipher with a whole IV")
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

_SIGNED_DATA = "1.2.840.113549.1.7.2"


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
            top = _der.element(data, pos, end, 0)
        except DerError as err:
            if number == 1 and not err.truncated:
                raise _not_accepted(name, str(err)) from err
            raise _damaged(name, what, str(err)) from err
        der = data[pos : top.end]
        _read_der_object(name, what, der, _der.element(der, 0, len(der), 0), passphrase, acc)
        pos = top.end


def _read_der_object(
    name: str,
    what: str,
    der: bytes,
    top: _der.Tlv,
    passphrase: bytes | None,
    acc: _Accumulator,
) -> None:
    try:
        children = list(_der.children(der, top, 0))
    except DerError as err:
        raise _damaged(name, what, str(err)) from err
    shape = [c.tag for c in children]
    if (
        len(children) >= 2
        and shape[0] == _der.INTEGER
        and _der.int_value(der, children[0]) == 3
        and shape[1] == _der.SEQUENCE
    ):
        _read_pkcs12(name, der, passphrase, acc)
    elif shape and shape[0] == _der.OID and _der.oid_text(der, children[0]) == _SIGNED_DATA:
        for cert in _load_pkcs7(name, what, der):
            acc.add_cert(name, cert)
    elif len(children) == 3 and shape == [_der.SEQUENCE, _der.SEQUENCE, _der.BIT_STRING]:
        acc.add_cert(name, _load_der_cert(name, what, der))
    elif len(children) == 2 and shape == [_der.SEQUENCE, _der.OCTET_STRING]:
        _read_encrypted_pkcs8(name, what, der, passphrase, acc)
    elif shape and shape[0] == _der.INTEGER:
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
        _ = [e.value for e in cert.extensions]
        _ = (cert.signature_algorithm_oid, cert.tbs_certificate_bytes, cert.signature)
        public = cert.public_key()
    except Exception as err:  # DuplicateExtension, UnsupportedGeneralNameType,
        # TypeError (a name attribute of the wrong type), ValueError (malformed extensions)...
        detail = " ".join(str(err).split())[:160]
        raise FormatError(
            f"a certificate in file {name!r} has a part certsync cannot decode "
            f"({type(err).__name__}: {detail}); get a fresh copy of the file or a "
            "certificate without that part",
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
    _charge(name, what, lambda: acc.budget.charge(p12.pkcs8_work(der)))
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


def _charge(name: str, what: str, step: Callable[[], _T]) -> _T:
    """Run a pre-check step; its refusals become one FormatError naming the file."""
    try:
        return step()
    except p12.Refused as err:
        raise FormatError(f"{what} in file {name!r} {err.detail}", source=name) from err
    except DerError as err:
        raise _damaged(name, what, str(err)) from err


def _read_pkcs12(name: str, der: bytes, passphrase: bytes | None, acc: _Accumulator) -> None:
    what = "the PKCS#12 data"
    plan = _charge(name, what, lambda: p12.plan_pkcs12(der))
    usable = passphrase is None or pkcs12_text(passphrase)
    # DESIGN.md: an unencrypted PKCS#12, or one encrypted with the empty passphrase, opens
    # without a passphrase file (OpenSSL tries NULL and "" for None)
    candidates: list[bytes | None] = [passphrase] if passphrase and usable else []
    candidates.append(None)
    loaded: pkcs12.PKCS12KeyAndCertificates | None = None
    for candidate in candidates:
        password = _charge(name, what, partial(p12.verify_mac, plan, candidate, acc.budget))
        if password is None:
            continue
        inner = _charge(name, what, partial(p12.open_safes, plan, password, acc.budget))
        if inner is None:
            continue
        # OpenSSL's own work: its MAC check (twice for NULL then ""), safes and bags
        openssl_work = plan.mac_work * (1 if candidate else 2) + plan.visible + inner
        _charge(name, what, partial(acc.budget.charge, openssl_work))
        try:
            loaded = pkcs12.load_pkcs12(der, candidate)
        except (ValueError, TypeError):  # wrong passphrase, damaged bags
            continue
        except x509.InvalidVersion as err:  # it opened, but a certificate in it is damaged
            raise _damaged(name, what, "it holds an invalid X.509 certificate") from err
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
