"""Hand-made certificates cryptography's builder refuses to make (not tests themselves):
duplicate extensions, unusual GeneralNames, odd name attributes, negative serials."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.p12craft import integer, oid, seq, tlv

__all__ = ["cn_name", "ext", "raw_cert", "san_ext"]

_CN = "2.5.4.3"
_SAN = "2.5.29.17"


def cn_name(cn: str) -> bytes:
    return seq(tlv(0x31, seq(oid(_CN), tlv(0x0C, cn.encode()))))


def ext(ext_oid: str, value: bytes, *, critical: bool = False) -> bytes:
    flag = tlv(0x01, b"\xff") if critical else b""
    return seq(oid(ext_oid), flag, tlv(0x04, value))


def san_ext(*general_names: bytes) -> bytes:
    return ext(_SAN, seq(*general_names))


def raw_cert(
    key: ec.EllipticCurvePrivateKey,
    *,
    subject: bytes | None = None,
    issuer: bytes | None = None,
    extensions: tuple[bytes, ...] = (),
    serial: int = 4242,
) -> bytes:
    """A v3 ECDSA-SHA256 certificate signed by ``key`` (self-signed unless told)."""
    subject = subject if subject is not None else cn_name("crafted.example.com")
    issuer = issuer if issuer is not None else subject
    sig_alg = seq(oid("1.2.840.10045.4.3.2"))
    validity = seq(tlv(0x17, b"260101000000Z"), tlv(0x17, b"360101000000Z"))
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    parts = [tlv(0xA0, integer(2)), integer(serial), sig_alg, issuer, validity, subject, spki]
    if extensions:
        parts.append(tlv(0xA3, seq(*extensions)))
    tbs = seq(*parts)
    signature = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return seq(tbs, sig_alg, tlv(0x03, b"\x00" + signature))
