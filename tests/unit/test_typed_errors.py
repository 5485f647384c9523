"""Every parser failure is one FormatError naming the file (issue 14), and certificates with
parts cryptography cannot decode are refused in one line (issue 11); each with its twin.

The hostile inputs are made here and also kept as regression fixtures in
``tests/fixtures/parse`` (replayed by ``test_regression_fixtures_parse_or_raise_our_error``,
together with anything the fuzz property of ``test_parse_property`` saved)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from node.errors import FormatError
from node.formats import read_material
from tests.certcraft import cn_name, ext, raw_cert, san_ext
from tests.p12craft import oid, seq, tlv
from tests.pki import key_pem, make_key

PW = b"typed-errors-pw"
_DNS = tlv(0x82, b"crafted.example.com")
_CA = ext("2.5.29.19", seq(tlv(0x01, b"\xff")), critical=True)


def _key() -> ec.EllipticCurvePrivateKey:
    key = make_key("ec-p256", slot=3)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _short_iv_pem() -> bytes:
    """A traditional encrypted PEM key whose DEK-Info IV is cut short (cryptography panics)."""
    good = key_pem(_key(), PW, traditional=True).decode()
    short_iv = "00112233445566778899AABBCCDDEE"  # 15 bytes; AES needs 16
    return re.sub(r"(DEK-Info: [A-Z0-9-]+,)([0-9A-F]+)", rf"\g<1>{short_iv}", good).encode()


def _ip_constraint(address: bytes) -> bytes:
    subtree = seq(tlv(0x87, address))
    return raw_cert(_key(), extensions=(ext("2.5.29.30", seq(tlv(0xA0, subtree))), _CA))


_BITSTRING_CN = seq(tlv(0x31, seq(oid("2.5.4.3"), tlv(0x03, b"\x00ab"))))

#: case -> (hostile input, the same made right, passphrase, fragment of the message)
CASES: dict[str, tuple[Callable[[], bytes], Callable[[], bytes], bytes | None, str]] = {
    "duplicate-extension": (
        lambda: raw_cert(_key(), extensions=(san_ext(_DNS), san_ext(_DNS))),
        lambda: raw_cert(_key(), extensions=(san_ext(_DNS),)),
        None, "DuplicateExtension",
    ),
    "x400-san": (
        lambda: raw_cert(_key(), extensions=(san_ext(tlv(0xA3, seq(seq()))),)),
        lambda: raw_cert(_key(), extensions=(san_ext(_DNS),)),
        None, "UnsupportedGeneralNameType",
    ),
    "edi-party-san": (
        lambda: raw_cert(_key(), extensions=(san_ext(tlv(0xA5, tlv(0xA1, tlv(0x0C, b"x")))),)),
        lambda: raw_cert(_key(), extensions=(san_ext(_DNS),)),
        None, "UnsupportedGeneralNameType",
    ),
    "bit-string-name": (
        lambda: raw_cert(_key(), subject=_BITSTRING_CN),
        lambda: raw_cert(_key(), subject=cn_name("ok.example.com")),
        None, "TypeError",
    ),
    "malformed-ip-name-constraint": (
        lambda: _ip_constraint(b"\x0a\x00\x00\x00\xff"),  # 5 bytes: neither v4 nor v6 + mask
        lambda: _ip_constraint(b"\x0a\x00\x00\x00\xff\x00\x00\x00"),
        None, "cannot decode",
    ),
    "short-dek-info-iv": (
        _short_iv_pem, lambda: key_pem(_key(), PW, traditional=True), PW, "DEK-Info"
    ),
    "short-trusted-certificate": (
        lambda: b"-----BEGIN TRUSTED CERTIFICATE-----\nMA==\n-----END TRUSTED CERTIFICATE-----\n",
        lambda: b"-----BEGIN TRUSTED CERTIFICATE-----\n" + b"\n".join(
            _b64_lines(raw_cert(_key()))) + b"\n-----END TRUSTED CERTIFICATE-----\n",
        None, "truncated",
    ),
}  # fmt: skip


def _b64_lines(der: bytes) -> list[bytes]:
    import base64

    text = base64.b64encode(der)
    return [text[i : i + 64] for i in range(0, len(text), 64)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_input_is_one_format_error_naming_the_file(case: str) -> None:
    make_bad, _, passphrase, fragment = CASES[case]
    name = f"{case}.input"
    with pytest.raises(FormatError) as info:
        read_material([(name, make_bad())], passphrase)
    message = str(info.value)
    assert info.value.source == name
    assert repr(name) in message and fragment in message and "\n" not in message
    assert PW.decode() not in message


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_same_input_made_right_is_read(case: str) -> None:
    _, make_good, passphrase, _ = CASES[case]
    material = read_material([(f"{case}.ok", make_good())], passphrase)
    assert len(material.certificates) + len(material.keys) == 1


def test_a_negative_serial_is_read_without_a_warning_escaping() -> None:
    data = raw_cert(_key(), serial=-5, extensions=(san_ext(_DNS),))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        material = read_material([("negative.der", data)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert material.certificates[0].serial_number == -5
    assert seen == []


def test_a_warning_would_be_seen_without_the_filter() -> None:
    """Twin: cryptography does warn on that certificate, so the test above can fail."""
    from cryptography import x509

    data = raw_cert(_key(), serial=-5, extensions=(san_ext(_DNS),))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        x509.load_der_x509_certificate(data).serial_number  # noqa: B018 - the access warns
    assert seen


def write_fixtures() -> None:  # pragma: no cover - run by hand to refresh the fixtures
    from pathlib import Path

    here = Path(__file__).resolve().parents[1] / "fixtures" / "parse"
    for case, (make_bad, _, _, _) in CASES.items():
        (here / f"{case}.bin").write_bytes(make_bad())
