"""[core] A small DER/BER reader: element headers, children, integers, OIDs, OCTET STRINGs.

Why hand-written and not pyasn1 (issue 10 asked; measured on this code base, pyasn1 0.6.5):
pyasn1's schema-less decoder fails with an ``AttributeError`` (not even a ``PyAsn1Error``) on
a valid DER PKCS#7 certificate bundle made by ``cryptography``, so reading our inputs by
shape would need the full ASN.1 schemas of PKCS#7/#8/#12 and X.509 (pyasn1-modules) besides;
and it is slow: 1.99 ms to decode one certificate against 0.004 ms here to list its top-level
children (about 500x), 1.59 ms against 0.18 ms for a whole 2 KB PKCS#12 walk. The detection of
formats and the KDF pre-check need only headers and a few fields, with exact positions (so
trailing bytes and indefinite lengths are seen, not skipped), which this gives in ~130 lines.

Every element is checked against the bounds it sits in; depth is bounded by
:data:`node.limits.MAX_DER_DEPTH`; an indefinite length (BER, Windows PFX files) ends at its
own end-of-contents marker and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from node.limits import MAX_DER_DEPTH

__all__ = [
    "BIT_STRING",
    "INTEGER",
    "OCTET_STRING",
    "OCTET_STRING_CONSTRUCTED",
    "OID",
    "SEQUENCE",
    "SET",
    "DerError",
    "Tlv",
    "children",
    "content_end",
    "element",
    "int_value",
    "octets",
    "oid_text",
]

INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
OID = 0x06
SEQUENCE = 0x30
SET = 0x31
OCTET_STRING_CONSTRUCTED = 0x24


class DerError(Exception):
    """Bytes that are not well-formed DER/BER; ``truncated`` when they end too early."""

    def __init__(self, message: str, *, truncated: bool = False) -> None:
        super().__init__(message)
        self.truncated = truncated


@dataclass(frozen=True)
class Tlv:
    tag: int
    start: int  # first content byte
    end: int  # one past the element (for indefinite length: past the end-of-contents)
    indefinite: bool = False

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)


def element(data: bytes, pos: int, end: int, depth: int) -> Tlv:
    """Parse one DER/BER element header at ``pos``; ``end`` bounds it."""
    if depth > MAX_DER_DEPTH:
        raise DerError(f"nested more than {MAX_DER_DEPTH} levels deep")
    if pos + 2 > end:
        raise DerError("ends inside an element header", truncated=True)
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise DerError("uses a multi-byte tag")
    first = data[pos + 1]
    pos += 2
    if first == 0x80:  # BER indefinite length (Windows PFX files use it)
        if not tag & 0x20:
            raise DerError("has an indefinite length on a primitive element")
        cursor = pos
        while True:
            if cursor + 2 > end:
                raise DerError("ends before an end-of-contents marker", truncated=True)
            if data[cursor] == 0 and data[cursor + 1] == 0:
                return Tlv(tag, pos, cursor + 2, indefinite=True)
            cursor = element(data, cursor, end, depth + 1).end
    if first & 0x80:
        count = first & 0x7F
        if count > 4:
            raise DerError("declares a length over 4 GiB")
        if pos + count > end:
            raise DerError("ends inside a length", truncated=True)
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    else:
        length = first
    if pos + length > end:
        raise DerError(
            f"an element declares {length} bytes but only {end - pos} follow", truncated=True
        )
    return Tlv(tag, pos, pos + length)


def content_end(tlv: Tlv) -> int:
    """End of the content bytes (excludes an indefinite length's end-of-contents)."""
    return tlv.end - 2 if tlv.indefinite else tlv.end


def children(data: bytes, tlv: Tlv, depth: int) -> Iterator[Tlv]:
    """The children of a constructed element: every byte of its content, nothing skipped."""
    pos = tlv.start
    stop = content_end(tlv)
    while pos < stop:
        child = element(data, pos, stop, depth + 1)
        yield child
        pos = child.end


def int_value(data: bytes, tlv: Tlv) -> int:
    raw = data[tlv.start : tlv.end]
    if len(raw) > 16:
        return 1 << 128  # far beyond any bound we check
    return int.from_bytes(raw, "big", signed=True)


def oid_text(data: bytes, tlv: Tlv) -> str:
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
    first = min(head // 40, 2)
    return ".".join(str(n) for n in (first, head - 40 * first, *parts[1:]))


def octets(data: bytes, tlv: Tlv, depth: int) -> bytes:
    """The value of an OCTET STRING, primitive or BER-constructed (only OCTET STRING parts)."""
    if not tlv.constructed:
        return data[tlv.start : tlv.end]
    parts = []
    for part in children(data, tlv, depth):
        if part.tag not in (OCTET_STRING, OCTET_STRING_CONSTRUCTED):
            raise DerError("holds a constructed OCTET STRING with a foreign part")
        parts.append(octets(data, part, depth + 1))
    return b"".join(parts)
