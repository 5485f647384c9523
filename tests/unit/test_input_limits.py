"""Bounded work per input (issue 14): the PKCS#12 pre-check sees every count OpenSSL will
run, the total is capped per input, PEM scanning is linear; each case with its twin."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from node.errors import FormatError, PassphraseError
from node.formats import pem_blocks, read_material
from node.limits import MAX_KDF_WORK, MAX_PEM_BLOCKS
from tests.p12craft import (
    ctx0,
    encrypted_safe,
    integer,
    oid,
    p12,
    plain_safe,
    seq,
    shrouded_bag,
    shrouded_bag_with_rounds,
    tlv,
)
from tests.pki import make_chain, make_key, pem_bundle

PW = b"limits-passphrase"
HOSTILE = 2**31 - 1


def _refused(name: str, data: bytes, fragment: str) -> float:
    started = time.perf_counter()
    with pytest.raises(FormatError) as info:
        read_material([(name, data)], PW)
    elapsed = time.perf_counter() - started
    message = str(info.value)
    assert repr(name) in message and fragment in message and "\n" not in message
    assert info.value.source == name
    return elapsed


def test_a_count_hidden_behind_trailing_bytes_is_refused_at_once() -> None:
    key = make_key("ec-p256")
    hidden = p12(plain_safe(shrouded_bag(key, PW, HOSTILE)), tail=b"\x00\x00")
    assert _refused("hidden.p12", hidden, "2 bytes after its authenticated safe") < 0.5


def test_trailing_bytes_are_what_openssl_ignores() -> None:
    """Twin: the same shape with a normal count opens in OpenSSL (the tail is ignored, so a
    count there would run); certsync refuses it all the same, and reads it without the tail."""
    key = make_key("ec-p256")
    with_tail = p12(plain_safe(shrouded_bag(key, PW)), tail=b"\x00\x00")
    assert pkcs12.load_pkcs12(with_tail, PW).key is not None
    _refused("tail.p12", with_tail, "bytes after")
    clean = p12(plain_safe(shrouded_bag(key, PW)))
    assert len(read_material([("clean.p12", clean)], PW).keys) == 1


def test_a_hostile_count_in_a_visible_bag_is_refused() -> None:
    key = make_key("ec-p256")
    data = p12(plain_safe(shrouded_bag(key, PW, HOSTILE)))
    assert _refused("bag.p12", data, "MAX_KDF_ITERATIONS") < 0.5


def test_a_hostile_count_inside_an_encrypted_safe_is_refused() -> None:
    key = make_key("ec-p256")
    data = p12(encrypted_safe(shrouded_bag(key, PW, HOSTILE), passphrase=PW, rounds=1000))
    assert _refused("sealed.p12", data, "iterations 2147483647") < 0.5


def test_a_normal_key_inside_an_encrypted_safe_opens() -> None:
    """Twin: the pre-check opens the safe, finds a normal bag, and OpenSSL reads it."""
    key = make_key("ec-p256")
    data = p12(encrypted_safe(shrouded_bag(key, PW), passphrase=PW, rounds=1000))
    assert len(read_material([("sealed.p12", data)], PW).keys) == 1
    with pytest.raises(PassphraseError):  # and the wrong passphrase opens nothing
        read_material([("sealed.p12", data)], b"wrong")


def test_eight_safes_of_five_million_rounds_exceed_the_total() -> None:
    key = make_key("ec-p256")
    data = p12(*[plain_safe(shrouded_bag(key, PW, 5_000_000)) for _ in range(8)])
    assert _refused("eight.p12", data, "MAX_KDF_WORK") < 0.5


def test_two_safes_within_the_total_are_read() -> None:
    """Twin: each count is allowed, and two of them fit the total."""
    key = make_key("ec-p256")
    data = p12(*[plain_safe(shrouded_bag(key, PW)) for _ in range(2)])
    assert MAX_KDF_WORK > 2 * 2048
    assert len(read_material([("two.p12", data)], PW).keys) == 1


def test_the_total_is_per_input_across_files() -> None:
    key = make_key("ec-p256")
    first = p12(plain_safe(shrouded_bag_with_rounds(key, PW, 4_500_000)))
    assert len(read_material([("a.p12", first)], PW).keys) == 1  # alone it fits ...
    # ... and a second file that fits alone (8 M) is refused after it, before it runs
    second = p12(*[plain_safe(shrouded_bag(key, PW, 4_000_000)) for _ in range(2)])
    with pytest.raises(FormatError, match="MAX_KDF_WORK") as info:
        read_material([("a.p12", first), ("b.p12", second)], PW)
    assert info.value.source == "b.p12"


def test_a_legitimate_600k_round_openssl_file_is_accepted(tmp_path: Path) -> None:
    pki = make_chain("rsa-2048")
    (tmp_path / "leaf.pem").write_bytes(pem_bundle(pki.leaf.cert, key=pki.leaf.key))
    (tmp_path / "pw").write_bytes(PW)
    subprocess.run(
        ["openssl", "pkcs12", "-export", "-iter", "600000", "-in", tmp_path / "leaf.pem",
         "-passout", f"file:{tmp_path / 'pw'}", "-out", tmp_path / "ok.p12"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    data = (tmp_path / "ok.p12").read_bytes()
    started = time.perf_counter()
    material = read_material([("ok.p12", data)], PW)
    elapsed = time.perf_counter() - started
    assert len(material.keys) == 1 and material.certificates == (pki.leaf.cert,)
    assert elapsed < 30  # generous: the figure is in the report, not asserted here


# ---------------------------------------------------------------- PEM


def _scan_time(data: bytes) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        pem_blocks(data)
        best = min(best, time.perf_counter() - started)
    return best


def test_pem_scanning_is_linear() -> None:
    block = b"-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n"
    small, large = _scan_time(block * 1000), _scan_time(block * 16000)
    assert large / small < 16 * 4  # linear: about 16; quadratic would be about 256
    begins = b"-----BEGIN CERTIFICATE-----\n"
    small, large = _scan_time(begins * 1000), _scan_time(begins * 16000)
    assert large / small < 16 * 4


def test_sixteen_thousand_begin_lines_are_refused_quickly() -> None:
    data = b"-----BEGIN CERTIFICATE-----\n" * 16000
    started = time.perf_counter()
    with pytest.raises(FormatError, match="MAX_PEM_BLOCKS"):
        read_material([("many.pem", data)])
    assert time.perf_counter() - started < 1
    with pytest.raises(FormatError, match="without its matching END"):
        read_material([("few.pem", b"-----BEGIN CERTIFICATE-----\n" * 10)])


def test_a_bundle_within_the_block_limit_is_read() -> None:
    """Twin: many blocks below MAX_PEM_BLOCKS are fine."""
    pki = make_chain("ec-p256")
    data = pem_bundle(pki.leaf.cert, *pki.chain) * 50
    assert data.count(b"-----BEGIN ") < MAX_PEM_BLOCKS
    assert len(read_material([("bundle.pem", data)]).certificates) == 3
    with pytest.raises(FormatError, match="MAX_PEM_BLOCKS"):
        read_material([("too-many.pem", pem_bundle(pki.root.cert) * (MAX_PEM_BLOCKS + 1))])


def _indefinite(tag: int, content: bytes) -> bytes:
    return bytes([tag, 0x80]) + content + b"\x00\x00"


def _ber_p12(bag: bytes) -> bytes:
    """A PFX written with BER indefinite lengths, as Windows does."""
    safe = seq(oid("1.2.840.113549.1.7.1"), ctx0(tlv(0x04, seq(bag))))
    info = _indefinite(0x30, oid("1.2.840.113549.1.7.1")
                       + _indefinite(0xA0, tlv(0x04, seq(safe))))
    return _indefinite(0x30, integer(3) + info)


def test_a_hostile_count_behind_indefinite_lengths_is_refused() -> None:
    key = make_key("ec-p256")
    assert _refused("ber.p12", _ber_p12(shrouded_bag(key, PW, HOSTILE)), "MAX_KDF_ITERATIONS") < 1


def test_indefinite_lengths_with_a_normal_count_are_read() -> None:
    """Twin: BER is accepted (OpenSSL reads it too), only the count decides."""
    key = make_key("ec-p256")
    data = _ber_p12(shrouded_bag(key, PW))
    assert pkcs12.load_pkcs12(data, PW).key is not None
    assert len(read_material([("ber.p12", data)], PW).keys) == 1


def _nested(bag: bytes) -> bytes:
    inner = seq(oid("1.2.840.113549.1.12.10.1.6"), ctx0(seq(bag)))  # a safeContentsBag
    return p12(plain_safe(seq(oid("1.2.840.113549.1.12.10.1.6"), ctx0(seq(inner)))))


def test_a_hostile_count_in_nested_safe_contents_bags_is_refused() -> None:
    key = make_key("ec-p256")
    assert _refused("nested.p12", _nested(shrouded_bag(key, PW, HOSTILE)), "2147483647") < 1


def test_nested_safe_contents_bags_with_a_normal_count_are_accounted_and_pass() -> None:
    """Twin: the nested bag's normal count passes the pre-check (what OpenSSL makes of the
    nesting is its own answer: a key, or a typed refusal, never a hang)."""
    key = make_key("ec-p256")
    try:
        read_material([("nested.p12", _nested(shrouded_bag(key, PW)))], PW)
    except (FormatError, PassphraseError) as err:
        assert "MAX_KDF" not in str(err)
