""""Any input either parses or raises our error type" (STYLE.md 12, issue 14): a corpus of
valid inputs in every accepted format, mutated (truncated, bytes flipped, spliced, crossed
with another file). Bounded in the default run, deep with ``-m slow``. An input that ends in
anything else is saved under ``tests/fixtures/parse`` and replayed from then on."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.errors import FormatError, PassphraseError
from node.formats import export_certificates, export_pkcs12, read_material
from tests.p12craft import encrypted_safe, p12, plain_safe, shrouded_bag
from tests.pki import key_pem, make_chain, make_key, pem_bundle

PW = b"fuzz-pw"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "parse"
DER = serialization.Encoding.DER


def _pem(label: str, der: bytes) -> bytes:
    import base64

    body = base64.encodebytes(der)
    return f"-----BEGIN {label}-----\n".encode() + body + f"-----END {label}-----\n".encode()


def _corpus() -> list[bytes]:
    pki = make_chain("ec-p256")
    rsa = make_chain("rsa-2048")
    certs = [pki.leaf.cert, *pki.chain]
    legacy = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(50)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())  # noqa: S303 - a legacy file, as old tools write it
        .build(PW)
    )
    key = make_key("ec-p256", slot=5)
    return [
        pki.leaf.cert.public_bytes(DER),
        pem_bundle(*certs, key=pki.leaf.key),
        export_certificates(certs, "p7b"),
        _pem("PKCS7", export_certificates(certs, "p7b")),
        _pem("TRUSTED CERTIFICATE", pki.root.cert.public_bytes(DER)),
        export_pkcs12(name="f", key=pki.leaf.key, cert=pki.leaf.cert, chain=pki.chain,
                      passphrase=PW, rounds=3),
        pkcs12.serialize_key_and_certificates(b"l", rsa.leaf.key, rsa.leaf.cert, None, legacy),
        p12(encrypted_safe(shrouded_bag(key, PW), passphrase=PW, rounds=3),
            plain_safe(shrouded_bag(key, PW))),
        key_pem(pki.leaf.key, PW),
        key_pem(rsa.leaf.key, PW, traditional=True),
        key_pem(pki.leaf.key, traditional=True),
        pki.leaf.key.private_bytes(DER, serialization.PrivateFormat.PKCS8,
                                   serialization.BestAvailableEncryption(PW)),
        rsa.leaf.key.private_bytes(DER, serialization.PrivateFormat.TraditionalOpenSSL,
                                   serialization.NoEncryption()),
    ]  # fmt: skip


_CORPUS = _corpus()


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    base = draw(st.sampled_from(_CORPUS))
    how = draw(st.sampled_from(["truncate", "flip", "splice", "cross", "repeat", "raw"]))
    if how == "raw":
        return draw(st.binary(max_size=600))
    at = draw(st.integers(0, len(base) - 1))
    if how == "truncate":
        return base[:at]
    if how == "flip":
        count = draw(st.integers(1, 4))
        out = bytearray(base)
        for _ in range(count):
            i = draw(st.integers(0, len(base) - 1))
            out[i] ^= draw(st.integers(1, 255))
        return bytes(out)
    if how == "splice":
        return base[:at] + draw(st.binary(min_size=1, max_size=16)) + base[at:]
    if how == "repeat":
        size = draw(st.integers(1, 64))
        return base[:at] + base[at : at + size] * draw(st.integers(2, 5)) + base[at:]
    other = draw(st.sampled_from(_CORPUS))
    cut = draw(st.integers(0, len(other) - 1))
    return base[:at] + other[cut:]


def _parses_or_raises_ours(data: bytes, passphrase: bytes | None, name: str) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a warning escaping read_material fails too
            read_material([(name, data)], passphrase)
    except (FormatError, PassphraseError) as err:
        assert err.source == name
        assert repr(name) in str(err) and "\n" not in str(err)
    except BaseException:
        FIXTURES.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(data).hexdigest()[:16]
        (FIXTURES / f"fuzz-{digest}.bin").write_bytes(data)
        raise


def test_the_corpus_itself_parses() -> None:
    """Twin of the property: every unmutated corpus file is read (so mutations start from
    real inputs, not from garbage)."""
    for number, data in enumerate(_CORPUS):
        material = read_material([(f"corpus-{number}", data)], PW)
        assert material.certificates or material.keys


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_mutated(), passphrase=st.sampled_from([None, PW, b"other"]))
def test_property_mutated_inputs_parse_or_raise_our_error(
    data: bytes, passphrase: bytes | None
) -> None:
    _parses_or_raises_ours(data, passphrase, "fuzz.bin")


@pytest.mark.slow
@settings(max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_mutated(), passphrase=st.sampled_from([None, PW, b"other"]))
def test_property_deep(data: bytes, passphrase: bytes | None) -> None:
    _parses_or_raises_ours(data, passphrase, "fuzz.bin")


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.bin")), ids=lambda p: p.name)
@pytest.mark.parametrize("passphrase", [None, PW])
def test_regression_fixtures_parse_or_raise_our_error(path: Path, passphrase: bytes | None
                                                      ) -> None:
    _parses_or_raises_ours(path.read_bytes(), passphrase, path.name)


def test_the_fixtures_are_there() -> None:
    """The replay above is not vacuous: the hostile inputs of test_typed_errors are kept."""
    assert len(list(FIXTURES.glob("*.bin"))) >= 7
