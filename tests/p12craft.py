"""Hand-made PKCS#12 files for the bounded-work tests (not tests themselves).

Written from RFC 7292 independently of ``node.der``/``node.pkcs12_limits``: a few DER
builders, then PFX files whose safes and bags carry the counts a test wants.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from node.model import PrivateKey

__all__ = [
    "encrypted_safe",
    "p12",
    "plain_safe",
    "scrypt_bag",
    "set_first_pbkdf2_count",
    "shrouded_bag",
    "shrouded_bag_with_rounds",
]

_DATA = "1.2.840.113549.1.7.1"
_ENCRYPTED_DATA = "1.2.840.113549.1.7.6"
_SHROUDED = "1.2.840.113549.1.12.10.1.2"


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _len(len(content)) + content


def seq(*parts: bytes) -> bytes:
    return tlv(0x30, b"".join(parts))


def integer(n: int) -> bytes:
    return tlv(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True))


def oid(text: str) -> bytes:
    nums = [int(x) for x in text.split(".")]
    out = bytearray([40 * nums[0] + nums[1]])
    for n in nums[2:]:
        chunk = [n & 0x7F]
        n >>= 7
        while n:
            chunk.append(0x80 | (n & 0x7F))
            n >>= 7
        out += bytes(reversed(chunk))
    return tlv(0x06, bytes(out))


def ctx0(content: bytes) -> bytes:
    return tlv(0xA0, content)


def set_first_pbkdf2_count(der: bytes, count: int) -> bytes:
    """An encrypted PKCS#8 made by cryptography (PBES2/PBKDF2) with its count replaced.

    Layout: SEQ { SEQ { OID pbes2, SEQ { SEQ { OID pbkdf2, SEQ { salt, INTEGER, ... } },
    enc } }, OCTET STRING }: re-encoded bottom-up."""
    def parts(data: bytes) -> list[bytes]:
        out, pos = [], 0
        while pos < len(data):
            start = pos
            first = data[pos + 1]
            pos += 2
            if first & 0x80:
                size = int.from_bytes(data[pos : pos + (first & 0x7F)], "big")
                pos += first & 0x7F
            else:
                size = first
            pos += size
            out.append(data[start:pos])
        return out

    def body(element: bytes) -> bytes:
        first = element[1]
        skip = 2 + (first & 0x7F if first & 0x80 else 0)
        return element[skip:]

    epki_alg, blob = parts(body(der))
    pbes2_oid, pbes2_params = parts(body(epki_alg))
    kdf, enc = parts(body(pbes2_params))
    kdf_oid, kdf_params = parts(body(kdf))
    salt, _, *rest = parts(body(kdf_params))
    kdf = seq(kdf_oid, seq(salt, integer(count), *rest))
    return seq(seq(pbes2_oid, seq(kdf, enc)), blob)


def shrouded_bag(key: PrivateKey, passphrase: bytes, count: int | None = None) -> bytes:
    """A pkcs8ShroudedKeyBag (cryptography's PBES2 key; ``count`` written in its place)."""
    epki = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )
    if count is not None:
        epki = set_first_pbkdf2_count(epki, count)
    return seq(oid(_SHROUDED), ctx0(epki))


def _pbes2(passphrase: bytes, rounds: int, plaintext: bytes) -> tuple[bytes, bytes]:
    """(AlgorithmIdentifier, ciphertext): PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC."""
    salt, iv = os.urandom(16), os.urandom(16)
    key = PBKDF2HMAC(hashes.SHA256(), 32, salt, rounds).derive(passphrase)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    alg = seq(oid("1.2.840.113549.1.5.13"), seq(
        seq(oid("1.2.840.113549.1.5.12"), seq(tlv(0x04, salt), integer(rounds), seq(
            oid("1.2.840.113549.2.9"), b"\x05\x00"))),
        seq(oid("2.16.840.1.101.3.4.1.42"), tlv(0x04, iv)),
    ))
    return alg, enc.update(padded) + enc.finalize()


def shrouded_bag_with_rounds(key: PrivateKey, passphrase: bytes, rounds: int) -> bytes:
    """A genuine pkcs8ShroudedKeyBag whose key really takes ``rounds`` to decrypt."""
    plain = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    alg, ciphertext = _pbes2(passphrase, rounds, plain)
    return seq(oid(_SHROUDED), ctx0(seq(alg, tlv(0x04, ciphertext))))


def scrypt_bag(n: int, r: int, p: int) -> bytes:
    """A pkcs8ShroudedKeyBag under PBES2/scrypt whose ciphertext is random: OpenSSL runs the
    whole scrypt derivation before it finds that nothing decrypts."""
    alg = seq(oid("1.2.840.113549.1.5.13"), seq(
        seq(oid("1.3.6.1.4.1.11591.4.11"),
            seq(tlv(0x04, os.urandom(16)), integer(n), integer(r), integer(p))),
        seq(oid("2.16.840.1.101.3.4.1.42"), tlv(0x04, os.urandom(16))),
    ))
    return seq(oid(_SHROUDED), ctx0(seq(alg, tlv(0x04, os.urandom(160)))))


def plain_safe(*bags: bytes, tail: bytes = b"") -> bytes:
    """A ContentInfo(data) holding SafeContents (``tail`` appended inside its OCTET STRING)."""
    return seq(oid(_DATA), ctx0(tlv(0x04, seq(*bags) + tail)))


def encrypted_safe(*bags: bytes, passphrase: bytes, rounds: int) -> bytes:
    """A ContentInfo(encryptedData): SafeContents under PBES2 (PBKDF2-HMAC-SHA256, AES-256)."""
    alg, ciphertext = _pbes2(passphrase, rounds, seq(*bags))
    eci = seq(oid(_DATA), alg, tlv(0x80, ciphertext))
    return seq(oid(_ENCRYPTED_DATA), ctx0(seq(integer(0), eci)))


def p12(*safes: bytes, tail: bytes = b"", mac_iterations: int | None = None) -> bytes:
    """A PFX over these safes (``tail`` appended inside the authSafe OCTET STRING, where
    OpenSSL ignores it); with ``mac_iterations`` a MacData whose (random) MAC never matches."""
    auth_safe = seq(oid(_DATA), ctx0(tlv(0x04, seq(*safes) + tail)))
    if mac_iterations is None:
        return seq(integer(3), auth_safe)
    digest = seq(seq(oid("2.16.840.1.101.3.4.2.1"), b"\x05\x00"), tlv(0x04, os.urandom(32)))
    mac = seq(digest, tlv(0x04, os.urandom(8)), integer(mac_iterations))
    return seq(integer(3), auth_safe, mac)
