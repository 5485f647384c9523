"""[core] What opening a PKCS#12 or an encrypted PKCS#8 will cost, known before it is opened.

OpenSSL (through ``cryptography``) runs every key derivation it meets: the MAC, each
encrypted safe, each shrouded key bag — in plain safes, inside encrypted safes and in nested
``safeContents`` bags. It reads the first element of an OCTET STRING and ignores any bytes
after it, so a pre-check that skips what it cannot parse can be fooled into missing a
2**31-round count. This module therefore walks the PKCS#12 structure (RFC 7292) strictly,
every byte accounted for, and refuses what it cannot account for (trailing bytes in the
authenticated safe, unknown algorithms, public-key integrity or privacy modes); it checks
the MAC itself to learn which passphrase OpenSSL will go on with, opens the encrypted safes
with it to see the bags inside, and charges all of it — its own work and OpenSSL's — to a
per-input :class:`WorkBudget` before anything runs. Any one count above
:data:`~node.limits.MAX_KDF_ITERATIONS` is refused outright.

Refusals are :class:`Refused` with the tail of a one-line message; ``node.formats`` turns
them into a ``FormatError`` naming the file.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from Cryptodome.Cipher import ARC2
from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4, TripleDES
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from node import der
from node.der import DerError, Tlv
from node.limits import (
    MAX_KDF_ITERATIONS,
    MAX_KDF_WORK,
    MAX_SCRYPT_N,
    MAX_SCRYPT_P,
    MAX_SCRYPT_R,
)

__all__ = [
    "REEXPORT_HINT",
    "Pkcs12Plan",
    "Refused",
    "WorkBudget",
    "open_safes",
    "pkcs8_work",
    "plan_pkcs12",
    "verify_mac",
]

REEXPORT_HINT = "re-export it with a normal count, e.g. `openssl pkcs12 -export -iter 600000 ...`"


class Refused(Exception):
    """The pre-check refuses the input; ``detail`` completes "<what> in file <name> ..."."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass
class WorkBudget:
    """The key-derivation work one input may still cost; charged before each step runs."""

    limit: int = MAX_KDF_WORK
    spent: int = 0

    def charge(self, work: int) -> None:
        self.spent += work
        if self.spent > self.limit:
            raise Refused(
                f"needs more key-derivation work than one input may cost (at least "
                f"{self.spent} rounds, limit MAX_KDF_WORK = {self.limit}); {REEXPORT_HINT}"
            )


# --------------------------------------------------------------------------- algorithms

_PBES2 = "1.2.840.113549.1.5.13"
#: work units per scrypt N*r*p (2**14 * 8 * 16 took 0.88 s, 2 M PBKDF2 rounds about 0.3 s)
_SCRYPT_WEIGHT = 4
_PBKDF2 = "1.2.840.113549.1.5.12"
_SCRYPT = "1.3.6.1.4.1.11591.4.11"
_PBMAC1 = "1.2.840.113549.1.5.14"
_PBES1 = frozenset(f"1.2.840.113549.1.5.{n}" for n in (1, 3, 4, 6, 10, 11))
_P12_PBE = "1.2.840.113549.1.12.1."
#: PKCS#12 PBE (RFC 7292 appendix C): oid suffix -> (cipher, key bytes)
_P12_CIPHERS = {"1": ("rc4", 16), "2": ("rc4", 5), "3": ("3des", 24), "4": ("3des", 16),
                "5": ("rc2", 16), "6": ("rc2", 5)}  # fmt: skip
#: PBES2 encryption schemes: oid -> (cipher, key bytes)
_PBES2_CIPHERS = {
    "2.16.840.1.101.3.4.1.2": ("aes", 16),
    "2.16.840.1.101.3.4.1.22": ("aes", 24),
    "2.16.840.1.101.3.4.1.42": ("aes", 32),
    "1.2.840.113549.3.7": ("3des", 24),
}
#: PBKDF2 PRFs (hmacWithSHA*): oid -> hashlib name
_PRFS = {f"1.2.840.113549.2.{n}": h for n, h in
         ((7, "sha1"), (8, "sha224"), (9, "sha256"), (10, "sha384"), (11, "sha512"))}  # fmt: skip
#: MAC digests: oid -> hashlib name
_DIGESTS = {"1.3.14.3.2.26": "sha1", "1.2.840.113549.2.5": "md5",
            **{f"2.16.840.1.101.3.4.2.{n}": h for n, h in
               ((1, "sha256"), (2, "sha384"), (3, "sha512"), (4, "sha224"))}}  # fmt: skip
_CRYPTO_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256,
    "sha384": hashes.SHA384, "sha512": hashes.SHA512,
}  # fmt: skip


@dataclass(frozen=True)
class _Kdf:
    """A password-based encryption algorithm: what it costs and how to run it."""

    oid: str
    work: int
    salt: bytes = b""
    iterations: int = 1
    prf: str = "sha1"
    cipher: str = ""
    key_length: int = 0
    iv: bytes = b""
    scrypt: tuple[int, int, int] = (0, 0, 0)


def _kids(data: bytes, tlv: Tlv, depth: int, tags: tuple[int, ...], optional: int = 0
          ) -> list[Tlv]:
    """Children of ``tlv`` with exactly these tags (the last ``optional`` may be missing)."""
    if not tlv.constructed:
        raise DerError("holds a primitive element where a structure belongs")
    found = list(der.children(data, tlv, depth))
    if not len(tags) - optional <= len(found) <= len(tags):
        raise DerError(f"has {len(found)} fields where {len(tags)} belong")
    if [c.tag for c in found] != list(tags[: len(found)]):
        raise DerError("has a field of the wrong type")
    return found


_LIMIT_NAMES = {"iterations": "MAX_KDF_ITERATIONS", "scrypt-n": "MAX_SCRYPT_N",
                "scrypt-r": "MAX_SCRYPT_R", "scrypt-p": "MAX_SCRYPT_P"}


def _count(label: str, value: int, limit: int) -> int:
    if not 1 <= value <= limit:
        shown = value if value < 1 << 64 else "more than 2**64"
        raise Refused(
            f"asks for a key derivation with {label} {shown!r} (at most {limit} accepted, "
            f"limit {_LIMIT_NAMES[label]}), which is absurd or hostile; {REEXPORT_HINT}"
        )
    return value


def _salt_and_count(data: bytes, params: Tlv, depth: int) -> tuple[bytes, int]:
    salt, count = _kids(data, params, depth, (der.OCTET_STRING, der.INTEGER))
    iterations = _count("iterations", der.int_value(data, count), MAX_KDF_ITERATIONS)
    return data[salt.start : salt.end], iterations


def _hash_of(data: bytes, alg: Tlv, depth: int, table: dict[str, str], what: str) -> str:
    parts = list(der.children(data, alg, depth))
    if not parts or parts[0].tag != der.OID or len(parts) > 2:
        raise DerError(f"has a malformed {what} identifier")
    oid = der.oid_text(data, parts[0])
    if oid not in table:
        raise Refused(f"uses the {what} {oid!r}, which certsync cannot account for; "
                      f"{REEXPORT_HINT}")
    return table[oid]


def _kdf(data: bytes, alg: Tlv, depth: int) -> _Kdf:
    """Cost and parameters of a password-based encryption AlgorithmIdentifier."""
    parts = _kids(data, alg, depth, (der.OID, der.SEQUENCE))
    oid = der.oid_text(data, parts[0])
    params = parts[1]
    if oid.startswith(_P12_PBE) and oid[len(_P12_PBE):] in _P12_CIPHERS:
        salt, iterations = _salt_and_count(data, params, depth + 1)
        cipher, size = _P12_CIPHERS[oid[len(_P12_PBE):]]
        # PKCS#12 KDF: the key (up to 2 SHA-1 blocks) and the IV (1 block), each `iterations`
        return _Kdf(oid, 3 * iterations, salt, iterations, "sha1", cipher, size)
    if oid in _PBES1:
        salt, iterations = _salt_and_count(data, params, depth + 1)
        return _Kdf(oid, iterations, salt, iterations)
    if oid != _PBES2:
        raise Refused(f"uses the encryption {oid!r}, which certsync cannot account for; "
                      f"{REEXPORT_HINT}")
    kdf_alg, enc_alg = _kids(data, params, depth + 1, (der.SEQUENCE, der.SEQUENCE))
    enc = _kids(data, enc_alg, depth + 2, (der.OID, der.OCTET_STRING))
    enc_oid = der.oid_text(data, enc[0])
    if enc_oid not in _PBES2_CIPHERS:
        raise Refused(f"uses the cipher {enc_oid!r}, which certsync cannot account for; "
                      f"{REEXPORT_HINT}")
    cipher, size = _PBES2_CIPHERS[enc_oid]
    iv = data[enc[1].start : enc[1].end]
    kdf_parts = _kids(data, kdf_alg, depth + 2, (der.OID, der.SEQUENCE))
    kdf_oid = der.oid_text(data, kdf_parts[0])
    if kdf_oid == _SCRYPT:
        f = _kids(data, kdf_parts[1], depth + 3, (der.OCTET_STRING, der.INTEGER, der.INTEGER,
                                                  der.INTEGER, der.INTEGER), optional=1)
        n = _count("scrypt-n", der.int_value(data, f[1]), MAX_SCRYPT_N)
        r = _count("scrypt-r", der.int_value(data, f[2]), MAX_SCRYPT_R)
        p = _count("scrypt-p", der.int_value(data, f[3]), MAX_SCRYPT_P)
        # measured: one N*r*p unit of scrypt costs about 3x one PBKDF2-HMAC-SHA256 round
        return _Kdf(oid, _SCRYPT_WEIGHT * n * r * p, data[f[0].start : f[0].end], 1, "",
                    cipher, size, iv, (n, r, p))
    if kdf_oid != _PBKDF2:
        raise Refused(f"uses the key derivation {kdf_oid!r}, which certsync cannot account "
                      f"for; {REEXPORT_HINT}")
    fields = list(der.children(data, kdf_parts[1], depth + 3))
    tags = [t.tag for t in fields]
    if tags not in ([4, 2], [4, 2, 2], [4, 2, 0x30], [4, 2, 2, 0x30]):
        raise DerError("has malformed PBKDF2 parameters")
    iterations = _count("iterations", der.int_value(data, fields[1]), MAX_KDF_ITERATIONS)
    prf = "sha1"
    if tags[-1] == der.SEQUENCE:
        prf = _hash_of(data, fields[-1], depth + 4, _PRFS, "PBKDF2 PRF")
    if len(tags) >= 3 and tags[2] == der.INTEGER and der.int_value(data, fields[2]) != size:
        raise DerError("declares a key length other than its cipher's")
    blocks = -(-size // hashlib.new(prf).digest_size)
    return _Kdf(oid, iterations * blocks, data[fields[0].start : fields[0].end], iterations,
                prf, cipher, size, iv)


def pkcs8_work(data: bytes) -> int:
    """KDF work of an EncryptedPrivateKeyInfo (all of ``data``); raises Refused/DerError."""
    top = der.element(data, 0, len(data), 0)
    if top.end != len(data):
        raise DerError("has bytes after the key")
    alg, _ = _kids(data, top, 0, (der.SEQUENCE, der.OCTET_STRING))
    return _kdf(data, alg, 1).work


# --------------------------------------------------------------------------- PKCS#12

_DATA = "1.2.840.113549.1.7.1"
_ENCRYPTED_DATA = "1.2.840.113549.1.7.6"
_BAG = "1.2.840.113549.1.12.10.1."
_SHROUDED_BAG = _BAG + "2"
_SAFE_CONTENTS_BAG = _BAG + "6"
_CTX0 = 0xA0


@dataclass(frozen=True)
class _Sealed:
    kdf: _Kdf
    ciphertext: bytes


@dataclass(frozen=True)
class _Mac:
    digest: str
    value: bytes
    salt: bytes
    iterations: int


@dataclass(frozen=True)
class Pkcs12Plan:
    """A PKCS#12 read for its costs: ``visible`` is the work OpenSSL spends on the encrypted
    safes and on the shrouded key bags of plain safes; ``sealed`` the safes to open to see
    the rest; ``mac_work`` one MAC check."""

    auth_safe: bytes
    mac: _Mac | None
    visible: int
    sealed: tuple[_Sealed, ...] = field(default=())

    @property
    def mac_work(self) -> int:
        return self.mac.iterations if self.mac else 0


def _explicit(data: bytes, tlv: Tlv, depth: int) -> Tlv:
    """The one element inside a ``[0] EXPLICIT`` wrapper."""
    if tlv.tag != _CTX0:
        raise DerError("lacks its [0] content")
    found = list(der.children(data, tlv, depth))
    if not found:
        raise DerError("has an empty [0] content")
    inner = found[0]
    if inner.end != der.content_end(tlv):
        raise DerError("has more than one element in a [0] content")
    return inner


def _whole(inner: bytes, depth: int, what: str) -> Tlv:
    """``inner`` must be exactly one SEQUENCE: OpenSSL would read the first element and
    ignore the rest, so bytes after it could hide what OpenSSL will run."""
    top = der.element(inner, 0, len(inner), depth)
    if top.tag != der.SEQUENCE:
        raise DerError(f"holds no {what}")
    if top.end != len(inner):
        raise Refused(
            f"has {len(inner) - top.end} bytes after its {what}, which OpenSSL ignores and "
            "certsync cannot account for; re-export it, e.g. `openssl pkcs12 -export ...`"
        )
    return top


def _bag_work(data: bytes, contents: Tlv, depth: int) -> int:
    """KDF work of the shrouded key bags of a SafeContents, nested safeContents bags too."""
    work = 0
    for bag in der.children(data, contents, depth):
        fields = _kids(data, bag, depth + 1, (der.OID, _CTX0, der.SET), optional=1)
        oid = der.oid_text(data, fields[0])
        value = _explicit(data, fields[1], depth + 2)
        if oid == _SHROUDED_BAG:
            alg, _ = _kids(data, value, depth + 3, (der.SEQUENCE, der.OCTET_STRING))
            work += _kdf(data, alg, depth + 4).work
        elif oid == _SAFE_CONTENTS_BAG:
            if value.tag != der.SEQUENCE:
                raise DerError("has a malformed safeContents bag")
            work += _bag_work(data, value, depth + 3)
    return work


def plan_pkcs12(data: bytes) -> Pkcs12Plan:
    """Read every cost of a PKCS#12 (all of ``data``) that shows without a passphrase."""
    top = der.element(data, 0, len(data), 0)
    fields = _kids(data, top, 0, (der.INTEGER, der.SEQUENCE, der.SEQUENCE), optional=1)
    info = _kids(data, fields[1], 1, (der.OID, _CTX0))
    if der.oid_text(data, info[0]) != _DATA:
        raise Refused("uses public-key integrity (a signed PKCS#12), which certsync cannot "
                      "read; re-export it with a passphrase: `openssl pkcs12 -export ...`")
    holder = _explicit(data, info[1], 2)
    if holder.tag not in (der.OCTET_STRING, der.OCTET_STRING_CONSTRUCTED):
        raise DerError("has no OCTET STRING holding its safes")
    auth_safe = der.octets(data, holder, 3)
    safes = _whole(auth_safe, 3, "authenticated safe")
    visible = 0
    sealed: list[_Sealed] = []
    for safe in der.children(auth_safe, safes, 3):
        parts = _kids(auth_safe, safe, 4, (der.OID, _CTX0))
        kind = der.oid_text(auth_safe, parts[0])
        value = _explicit(auth_safe, parts[1], 5)
        if kind == _DATA:
            if value.tag not in (der.OCTET_STRING, der.OCTET_STRING_CONSTRUCTED):
                raise DerError("has a data safe without an OCTET STRING")
            contents = der.octets(auth_safe, value, 6)
            visible += _bag_work(contents, _whole(contents, 6, "safe contents"), 6)
        elif kind == _ENCRYPTED_DATA:
            enc = _kids(auth_safe, value, 6, (der.INTEGER, der.SEQUENCE, 0xA1), optional=1)
            eci = list(der.children(auth_safe, enc[1], 7))
            if len(eci) != 3 or [t.tag for t in eci[:2]] != [der.OID, der.SEQUENCE] or (
                eci[2].tag not in (0x80, 0xA0)
            ):
                raise DerError("has a malformed encrypted safe")
            kdf = _kdf(auth_safe, eci[1], 8)
            visible += kdf.work
            sealed.append(_Sealed(kdf, der.octets(auth_safe, eci[2], 8)))
        else:
            raise Refused(f"holds a safe of type {kind!r} (public-key privacy), which "
                          "certsync cannot read; re-export it: `openssl pkcs12 -export ...`")
    mac: _Mac | None = None
    if len(fields) == 3:
        mac_fields = _kids(data, fields[2], 1, (der.SEQUENCE, der.OCTET_STRING, der.INTEGER),
                           optional=1)
        digest_info = _kids(data, mac_fields[0], 2, (der.SEQUENCE, der.OCTET_STRING))
        alg = list(der.children(data, digest_info[0], 3))
        if alg and alg[0].tag == der.OID and der.oid_text(data, alg[0]) == _PBMAC1:
            raise Refused("uses a PBMAC1 MAC, which certsync cannot account for yet; "
                          "re-export it with an HMAC MAC: `openssl pkcs12 -export ...`")
        digest = _hash_of(data, digest_info[0], 3, _DIGESTS, "MAC digest")
        iterations = 1
        if len(mac_fields) == 3:
            iterations = _count("iterations", der.int_value(data, mac_fields[2]),
                                MAX_KDF_ITERATIONS)
        mac = _Mac(digest, data[digest_info[1].start : digest_info[1].end],
                   data[mac_fields[1].start : mac_fields[1].end], iterations)
    return Pkcs12Plan(auth_safe, mac, visible, tuple(sealed))


# --------------------------------------------------------------------------- passwords


@dataclass(frozen=True)
class _Password:
    """One password as OpenSSL uses it: ``bmp`` for the PKCS#12 KDF, ``raw`` for PBKDF2."""

    bmp: bytes
    raw: bytes


def _passwords(passphrase: bytes | None) -> list[_Password]:
    """What OpenSSL tries for ``passphrase``: itself, or (for none or empty) NULL then ""."""
    if passphrase:
        return [_Password(passphrase.decode("utf-8").encode("utf-16-be") + b"\0\0",
                          passphrase)]
    return [_Password(b"", b""), _Password(b"\0\0", b"")]


def _pkcs12_kdf(digest: str, password: bytes, salt: bytes, purpose: int, iterations: int,
                size: int) -> bytes:
    """RFC 7292 appendix B.2 (purpose 1 key, 2 IV, 3 MAC key)."""
    new: Callable[[bytes], Any] = getattr(hashlib, digest)  # sha1, sha256...: no name lookup
    u = new(b"").digest_size
    v = new(b"").block_size

    def stretch(value: bytes) -> bytes:
        return (value * (v // len(value) + 2))[: v * -(-len(value) // v)] if value else b""

    block_in = bytearray(stretch(salt) + stretch(password))
    out = b""
    while True:
        a: bytes = new(bytes([purpose]) * v + bytes(block_in)).digest()
        for _ in range(iterations - 1):
            a = new(a).digest()
        out += a
        if len(out) >= size:
            return out[:size]
        b = int.from_bytes((a * (v // u + 1))[:v], "big") + 1
        for j in range(0, len(block_in), v):
            total = (int.from_bytes(block_in[j : j + v], "big") + b) % (1 << (8 * v))
            block_in[j : j + v] = total.to_bytes(v, "big")


def verify_mac(plan: Pkcs12Plan, passphrase: bytes | None, budget: WorkBudget
               ) -> _Password | None:
    """The password OpenSSL will go on with for ``passphrase`` (None: the MAC refuses it)."""
    candidates = _passwords(passphrase)
    if plan.mac is None:
        return candidates[0]
    mac = plan.mac
    for password in candidates:
        budget.charge(mac.iterations)
        size = hashlib.new(mac.digest).digest_size
        key = _pkcs12_kdf(mac.digest, password.bmp, mac.salt, 3, mac.iterations, size)
        if hmac.compare_digest(hmac.new(key, plan.auth_safe, mac.digest).digest(), mac.value):
            return password
    return None


def _decrypt(kdf: _Kdf, ciphertext: bytes, password: _Password) -> bytes | None:
    if kdf.oid in _PBES1:
        raise Refused("has a safe encrypted with PBES1 (PKCS#5 v1.5), which certsync cannot "
                      f"open to account for its contents; {REEXPORT_HINT}")
    if kdf.oid == _PBES2:
        if kdf.scrypt[0]:
            n, r, p = kdf.scrypt
            key = Scrypt(kdf.salt, kdf.key_length, n, r, p).derive(password.raw)
        else:
            key = PBKDF2HMAC(_CRYPTO_HASHES[kdf.prf](), kdf.key_length, kdf.salt,
                             kdf.iterations).derive(password.raw)
        iv = kdf.iv
    else:
        key = _pkcs12_kdf("sha1", password.bmp, kdf.salt, 1, kdf.iterations, kdf.key_length)
        iv = b"" if kdf.cipher == "rc4" else _pkcs12_kdf(
            "sha1", password.bmp, kdf.salt, 2, kdf.iterations, 8)
    try:
        if kdf.cipher == "rc4":
            # legacy PKCS#12 ciphers: read here only to see the bags OpenSSL will open
            return Cipher(ARC4(key), mode=None).decryptor().update(ciphertext)
        if kdf.cipher == "rc2":
            # the stub omits the (real) effective_keylen keyword; RC2-40 needs it
            rc2 = ARC2.new(  # type: ignore[call-arg]  # noqa: S304 - legacy, read only
                key, ARC2.MODE_CBC, iv, effective_keylen=8 * len(key)
            )
            padded = rc2.decrypt(ciphertext)
            block = 64
        else:
            algorithm = algorithms.AES(key) if kdf.cipher == "aes" else TripleDES(key)
            block = algorithm.block_size
            decryptor = Cipher(algorithm, modes.CBC(iv)).decryptor()
            padded = decryptor.update(ciphertext) + decryptor.finalize()
        unpadder = padding.PKCS7(block).unpadder()
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:  # wrong passphrase (bad padding) or damaged ciphertext
        return None


def open_safes(plan: Pkcs12Plan, password: _Password, budget: WorkBudget) -> int | None:
    """KDF work of the bags inside the encrypted safes (each opened here, its own work
    charged first); None when a safe does not open with ``password``."""
    work = 0
    for safe in plan.sealed:
        budget.charge(safe.kdf.work)
        plain = _decrypt(safe.kdf, safe.ciphertext, password)
        if plain is None:
            return None
        try:  # OpenSSL reads the first element and ignores the rest; so do we
            contents = der.element(plain, 0, len(plain), 0)
            if contents.tag != der.SEQUENCE:
                return None
            work += _bag_work(plain, contents, 1)
        except DerError:
            return None  # not SafeContents: OpenSSL fails here too, before any bag
    return work
