"""node.formats: every accepted format (corpus made by the real openssl CLI), bad input,
exports read back by openssl, and round-trip / robustness properties."""

from __future__ import annotations

import base64
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.errors import BadInput, FormatError, PassphraseError
from node.formats import (
    cert_sha256,
    export_certificates,
    export_pkcs12,
    key_type_of,
    public_key_matches,
    read_material,
)
from node.model import KEY_TYPES, KeyType, Material
from tests.pki import (
    Pki,
    der_set_mac_iterations,
    der_with_bad_version,
    key_pem,
    make_chain,
    make_dsa_key,
    make_key,
    make_leaf,
    pem_bundle,
)

PASS = b"corpus-passphrase-7f3a"
DER = serialization.Encoding.DER
_SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
PEM = serialization.Encoding.PEM


def openssl(*args: str | Path, stdin: bytes | None = None) -> bytes:
    done = subprocess.run(
        ["openssl", *map(str, args)], input=stdin, capture_output=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


@dataclass(frozen=True)
class Corpus:
    dir: Path
    pki: Pki  # RSA leaf, EC CAs
    ec_key_file: Path
    ec_cert_file: Path

    def path(self, name: str) -> Path:
        return self.dir / name


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    d = tmp_path_factory.mktemp("corpus")
    (d / "pw").write_bytes(PASS + b"\n")
    # the RSA key comes from openssl genpkey; our test PKI issues its certificate
    openssl(
        "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", d / "rsa.key"
    )
    rsa_key = serialization.load_pem_private_key((d / "rsa.key").read_bytes(), None)
    assert isinstance(rsa_key, rsa.RSAPrivateKey)
    base = make_chain("ec-p256", sans=["support.example.com"])
    leaf = make_leaf(base.intermediate, ["support.example.com", "*.example.com"], key=rsa_key)
    pki = Pki(base.root, base.intermediate, leaf)
    (d / "leaf.pem").write_bytes(pem_bundle(leaf.cert))
    (d / "chain.pem").write_bytes(pem_bundle(*pki.chain))
    (d / "bundle.pem").write_bytes(pem_bundle(leaf.cert, *pki.chain))
    openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", d / "ec.key"
    )
    openssl(
        "req", "-x509", "-new", "-key", d / "ec.key", "-subj", "/CN=ec.example.com",
        "-addext", "subjectAltName=DNS:ec.example.com", "-days", "30", "-out", d / "ec.pem",
    )  # fmt: skip
    return Corpus(d, pki, d / "ec.key", d / "ec.pem")


_P12 = "pkcs12 -export -inkey {d}/rsa.key -in {d}/leaf.pem -certfile {d}/chain.pem"
_OUT = "-passout file:{d}/pw"

#: file name -> (openssl commands that make it, needs the passphrase, #certificates, #keys).
#: "{d}" is the corpus directory (no spaces in it, so str.split() gives the argv).
MAKERS: dict[str, tuple[tuple[str, ...], bool, int, int]] = {
    "cert.pem": (("x509 -in {d}/leaf.pem -out {d}/cert.pem",), False, 1, 0),
    "cert.der": (("x509 -in {d}/leaf.pem -outform DER -out {d}/cert.der",), False, 1, 0),
    "bundle.pem": ((), False, 3, 0),
    "trusted.pem": (
        ("x509 -in {d}/leaf.pem -trustout -addtrust serverAuth -out {d}/trusted.pem",),
        False, 1, 0,
    ),
    "chain.p7b.pem": (
        ("crl2pkcs7 -nocrl -certfile {d}/bundle.pem -out {d}/chain.p7b.pem",), False, 3, 0
    ),
    "chain.p7b": (
        ("crl2pkcs7 -nocrl -certfile {d}/bundle.pem -outform DER -out {d}/chain.p7b",),
        False, 3, 0,
    ),
    "pkcs8.pem": (("pkey -in {d}/rsa.key -out {d}/pkcs8.pem",), False, 0, 1),
    "pkcs8.der": (("pkey -in {d}/rsa.key -outform DER -out {d}/pkcs8.der",), False, 0, 1),
    "pkcs8-enc.pem": (
        (f"pkey -in {{d}}/rsa.key -aes256 {_OUT} -out {{d}}/pkcs8-enc.pem",), True, 0, 1
    ),
    "pkcs8-enc.der": (
        (f"pkcs8 -topk8 -in {{d}}/rsa.key -v2 aes256 -outform DER {_OUT} -out {{d}}/pkcs8-enc.der",),  # noqa: E501 - one openssl command per line reads best
        True, 0, 1,
    ),
    "pkcs8-3des.der": (
        (f"pkcs8 -topk8 -in {{d}}/rsa.key -v1 PBE-SHA1-3DES -outform DER {_OUT} -out {{d}}/pkcs8-3des.der",),  # noqa: E501 - one openssl command per line reads best
        True, 0, 1,
    ),
    "rsa-trad.pem": (("rsa -in {d}/rsa.key -traditional -out {d}/rsa-trad.pem",), False, 0, 1),
    "rsa-trad.der": (
        ("rsa -in {d}/rsa.key -traditional -outform DER -out {d}/rsa-trad.der",), False, 0, 1
    ),
    "rsa-des3.pem": (
        (f"rsa -in {{d}}/rsa.key -traditional -des3 {_OUT} -out {{d}}/rsa-des3.pem",), True, 0, 1
    ),
    "ec-trad.pem": (("ec -in {d}/ec.key -out {d}/ec-trad.pem",), False, 0, 1),
    "ec-trad.der": (("ec -in {d}/ec.key -outform DER -out {d}/ec-trad.der",), False, 0, 1),
    "ec-aes.pem": ((f"ec -in {{d}}/ec.key -aes128 {_OUT} -out {{d}}/ec-aes.pem",), True, 0, 1),
    "ecparam.pem": (("ecparam -name prime256v1 -genkey -out {d}/ecparam.pem",), False, 0, 1),
    "modern.p12": ((f"{_P12} {_OUT} -out {{d}}/modern.p12",), True, 3, 1),
    "legacy.p12": ((f"{_P12} -legacy {_OUT} -out {{d}}/legacy.p12",), True, 3, 1),
    "empty-pass.p12": ((f"{_P12} -passout pass: -out {{d}}/empty-pass.p12",), False, 3, 1),
    "legacy-empty.p12": (
        (f"{_P12} -legacy -passout pass: -out {{d}}/legacy-empty.p12",), False, 3, 1
    ),
    "plain.p12": (
        (f"{_P12} -keypbe NONE -certpbe NONE -nomac -passout pass: -out {{d}}/plain.p12",),
        False, 3, 1,
    ),
    "nodes.pem": (
        (
            f"{_P12} {_OUT} -out {{d}}/for-nodes.p12",
            "pkcs12 -in {d}/for-nodes.p12 -nodes -passin file:{d}/pw -out {d}/nodes.pem",
        ),
        False, 3, 1,
    ),
}  # fmt: skip


def _make(corpus: Corpus, name: str) -> Path:
    path = corpus.path(name)
    if not path.exists():
        for command in MAKERS[name][0]:
            openssl(*command.format(d=corpus.dir).split())
    return path


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_reads_openssl_corpus(corpus: Corpus, name: str) -> None:
    _, encrypted, n_certs, n_keys = MAKERS[name]
    data = _make(corpus, name).read_bytes()
    material = read_material([(name, data)], PASS if encrypted else None)
    assert len(material.certificates) == n_certs
    assert len(material.keys) == n_keys
    expected = {cert_sha256(c) for c in (corpus.pki.leaf.cert, *corpus.pki.chain)}
    assert {cert_sha256(c) for c in material.certificates} <= expected
    for key in material.keys:
        if name.startswith(("ec", "ecparam")):
            assert key_type_of(key) == "ec-p256"
        else:
            assert public_key_matches(key, corpus.pki.leaf.cert)


@pytest.mark.parametrize("name", sorted(n for n, m in MAKERS.items() if m[1]))
def test_encrypted_corpus_without_passphrase_is_refused(corpus: Corpus, name: str) -> None:
    data = _make(corpus, name).read_bytes()
    with pytest.raises(PassphraseError) as info:
        read_material([(name, data)])
    assert info.value.source == name
    assert repr(name) in str(info.value)


@pytest.mark.parametrize("name", sorted(n for n, m in MAKERS.items() if m[1]))
def test_encrypted_corpus_with_wrong_passphrase_is_refused(corpus: Corpus, name: str) -> None:
    data = _make(corpus, name).read_bytes()
    wrong = b"wrong-" + PASS
    with pytest.raises(PassphraseError) as info:
        read_material([(name, data)], wrong)
    assert info.value.source == name
    assert wrong.decode() not in str(info.value)
    assert PASS.decode() not in str(info.value)


@pytest.mark.parametrize("name", sorted(n for n, m in MAKERS.items() if not m[1]))
def test_unencrypted_corpus_ignores_a_given_passphrase(corpus: Corpus, name: str) -> None:
    data = _make(corpus, name).read_bytes()
    assert _summary(read_material([(name, data)], b"not needed")) == _summary(
        read_material([(name, data)])
    )


def _summary(material: Material) -> tuple[list[str], list[bytes]]:
    """Comparable view: certificate fingerprints and the keys' public halves."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return (
        [cert_sha256(c) for c in material.certificates],
        [k.public_key().public_bytes(DER, spki) for k in material.keys],
    )


def test_several_files_are_one_input_deduplicated_in_first_seen_order(corpus: Corpus) -> None:
    sources = [
        (n, _make(corpus, n).read_bytes())
        for n in ("cert.der", "bundle.pem", "pkcs8.pem", "rsa-trad.der")
    ]
    material = read_material(sources)
    assert [cert_sha256(c) for c in material.certificates] == [
        cert_sha256(c) for c in (corpus.pki.leaf.cert, *corpus.pki.chain)
    ]
    assert len(material.keys) == 1


def test_mixed_pem_with_text_around_blocks(corpus: Corpus) -> None:
    text = (
        b"Bag Attributes\n    localKeyID: 01\nsubject=CN=x\n"
        + pem_bundle(corpus.pki.leaf.cert, key=corpus.pki.leaf.key)
        + b"trailing words\n"
    )
    material = read_material([("mixed.pem", text)])
    assert (len(material.certificates), len(material.keys)) == (1, 1)


# ---------------------------------------------------------------- bad input


def _rsa1024() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - must be refused


def _swap(data: bytes, old: bytes, new: bytes) -> bytes:
    assert old in data and len(old) == len(new)
    return data.replace(old, new, 1)


def _pem_block(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return b"\n".join([f"-----BEGIN {label}-----".encode(), *lines,
                       f"-----END {label}-----".encode(), b""])


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


def _bad_inputs(c: Corpus) -> dict[str, tuple[bytes, bytes | None, type[Exception], str]]:
    cert_der = _make(c, "cert.der").read_bytes()
    p12 = _make(c, "modern.p12").read_bytes()
    pem = c.path("leaf.pem").read_bytes()
    body = pem.split(b"\n")
    broken_b64 = b"\n".join([body[0], b"!!!!" + body[1][4:], *body[2:]])
    csr = openssl(
        "req", "-new", "-key", c.ec_key_file, "-subj", "/CN=csr.example.com", "-outform", "DER"
    )
    ed448_der = ed448.Ed448PrivateKey.generate().private_bytes(
        DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    p521 = ec.generate_private_key(ec.SECP521R1())
    rsa1024 = _rsa1024()
    dsa_pem = make_dsa_key().private_bytes(
        PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    leaf = x509.load_der_x509_certificate(cert_der)
    leaf_der = leaf.public_bytes(DER)
    bad_version = der_with_bad_version(leaf)
    p7b = pkcs7.serialize_certificates([leaf], DER)
    # no encryption and no MAC, so the certificate stands in clear and can be altered
    plain_p12 = openssl(*f"{_P12} -keypbe NONE -certpbe NONE -nomac -passout pass:".format(
        d=c.dir).split())
    return {
        "empty": (b"", None, FormatError, "empty"),
        "whitespace": (b"  \n\r\n", None, FormatError, "empty"),
        "random": (bytes(range(7, 250)) * 3, None, FormatError, "not a certificate"),
        "random-seq": (b"\x30\x03\x01\x01\xff", None, FormatError, "not a certificate"),
        "truncated-der": (cert_der[: len(cert_der) // 2], None, FormatError, "truncated"),
        "truncated-header": (cert_der[:3], None, FormatError, "truncated"),
        "trailing-garbage": (cert_der + b"\x30\x82\xff", None, FormatError, "truncated"),
        "truncated-p12": (p12[: len(p12) - 40], PASS, FormatError, "truncated"),
        "corrupted-p12": (_flip(p12, len(p12) // 2), PASS, PassphraseError, "damaged"),
        "absurd-iterations-p12": (
            der_set_mac_iterations(p12, 2**31 - 1), PASS, FormatError, "absurd"
        ),
        "huge-iterations-p12": (der_set_mac_iterations(p12, 2**200), PASS, FormatError, "absurd"),
        "zero-iterations-p12": (der_set_mac_iterations(p12, 0), PASS, FormatError, "iterations 0"),
        "broken-base64": (broken_b64, None, FormatError, "base64"),
        "missing-end": (pem[: len(pem) // 2], None, FormatError, "END"),
        "only-public-key": (
            c.pki.leaf.key.public_key().public_bytes(PEM, _SPKI),
            None, FormatError, "PUBLIC KEY",
        ),
        "csr": (csr, None, FormatError, "signing request"),
        "ed448-key": (ed448_der, None, FormatError, "not supported"),
        "p521-key": (key_pem(p521), None, FormatError, "secp521r1"),
        "rsa1024-key": (key_pem(rsa1024), None, FormatError, "1024"),
        "dsa-key": (dsa_pem, None, FormatError, "not supported"),
        "nul-passphrase-p12": (p12, b"a\x00b", PassphraseError, "UTF-8"),
        "latin1-passphrase-p12": (p12, "pässwort".encode("latin-1"), PassphraseError, "UTF-8"),
        # cryptography raises InvalidVersion (not a ValueError) for these (found by hypothesis)
        "bad-version-der": (bad_version, None, FormatError, "not a valid X.509"),
        "bad-version-pem": (_pem_block("CERTIFICATE", bad_version), None, FormatError,
                            "not a valid X.509"),
        "bad-version-p7b": (_swap(p7b, leaf_der, bad_version), None, FormatError,
                            "not a valid PKCS#7"),
        "bad-version-p12": (_swap(plain_p12, leaf_der, bad_version), None, FormatError,
                            "invalid X.509 certificate"),
    }  # fmt: skip


BAD_NAMES = [
    "empty", "whitespace", "random", "random-seq", "truncated-der", "truncated-header",
    "trailing-garbage", "truncated-p12", "corrupted-p12", "absurd-iterations-p12",
    "huge-iterations-p12", "zero-iterations-p12", "broken-base64", "missing-end",
    "only-public-key", "csr", "ed448-key", "p521-key", "rsa1024-key", "dsa-key",
    "nul-passphrase-p12", "latin1-passphrase-p12", "bad-version-der", "bad-version-pem",
    "bad-version-p7b", "bad-version-p12",
]  # fmt: skip


@pytest.fixture(scope="module")
def bad_inputs(corpus: Corpus) -> dict[str, tuple[bytes, bytes | None, type[Exception], str]]:
    return _bad_inputs(corpus)


@pytest.mark.parametrize("case", BAD_NAMES)
def test_bad_input_is_one_clear_error_naming_the_file(
    bad_inputs: dict[str, tuple[bytes, bytes | None, type[Exception], str]], case: str
) -> None:
    data, passphrase, error, fragment = bad_inputs[case]
    name = f"{case}.input"
    started = time.monotonic()
    with pytest.raises(error) as info:
        read_material([(name, data)], passphrase)
    assert time.monotonic() - started < 2
    message = str(info.value)
    assert info.value.source == name  # type: ignore[attr-defined]  # FormatError/PassphraseError
    assert repr(name) in message
    assert fragment in message
    assert "\n" not in message
    if passphrase:
        assert passphrase.decode("latin-1") not in message


def test_absurd_iteration_twin_with_normal_count_opens(corpus: Corpus) -> None:
    p12 = _make(corpus, "modern.p12").read_bytes()
    material = read_material([("ok.p12", der_set_mac_iterations(p12, 2048))], PASS)
    assert len(material.certificates) == 3


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def chains() -> dict[KeyType, Pki]:
    return {kt: make_chain(kt) for kt in KEY_TYPES}


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_key_type_of_private_and_public(chains: dict[KeyType, Pki], key_type: KeyType) -> None:
    leaf = chains[key_type].leaf
    assert key_type_of(leaf.key) == key_type
    assert key_type_of(leaf.cert.public_key()) == key_type


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (_rsa1024, "1024"),
        (lambda: ec.generate_private_key(ec.SECP521R1()), "secp521r1"),
        (lambda: ec.generate_private_key(ec.SECP256K1()), "secp256k1"),
        (ed448.Ed448PrivateKey.generate, "Ed448"),
    ],
)
def test_key_type_of_refuses_unsupported(make: Callable[[], object], fragment: str) -> None:
    with pytest.raises(FormatError, match=fragment):
        key_type_of(make())  # type: ignore[arg-type]  # unsupported on purpose


def test_cert_sha256_matches_openssl_fingerprint(corpus: Corpus) -> None:
    out = openssl("x509", "-in", corpus.path("leaf.pem"), "-noout", "-fingerprint", "-sha256")
    expected = out.decode().split("=", 1)[1].strip().replace(":", "").lower()
    assert cert_sha256(corpus.pki.leaf.cert) == expected
    assert re.fullmatch(r"[0-9a-f]{64}", expected)
    assert cert_sha256(corpus.pki.intermediate.cert) != expected


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_public_key_matches(chains: dict[KeyType, Pki], key_type: KeyType) -> None:
    pki = chains[key_type]
    assert public_key_matches(pki.leaf.key, pki.leaf.cert)
    assert not public_key_matches(pki.leaf.key, pki.root.cert)
    assert not public_key_matches(make_key(key_type, slot=9), pki.leaf.cert)


# ---------------------------------------------------------------- export


@pytest.mark.parametrize("fmt", ["pem", "der", "p7b"])
def test_export_certificates_reads_back_and_never_holds_a_key(
    chains: dict[KeyType, Pki], fmt: str
) -> None:
    pki = chains["ec-p256"]
    certs = (pki.leaf.cert, *pki.chain)
    out = export_certificates(certs, fmt)  # type: ignore[arg-type]  # parametrized literal
    material = read_material([(f"out.{fmt}", out)])
    if fmt == "der":
        assert material.certificates == certs[:1]
    elif fmt == "p7b":  # a PKCS#7 certificate SET is sorted by DER: same set, any order
        assert set(material.certificates) == set(certs)
    else:
        assert material.certificates == certs
    assert material.keys == ()
    assert b"PRIVATE KEY" not in out


@pytest.mark.parametrize(
    ("fmt", "args"),
    [
        ("der", ["x509", "-inform", "DER", "-noout", "-subject"]),
        ("p7b", ["pkcs7", "-inform", "DER", "-print_certs", "-noout"]),
        ("pem", ["x509", "-noout", "-subject"]),
    ],
)
def test_openssl_reads_certificate_exports(
    chains: dict[KeyType, Pki], tmp_path: Path, fmt: str, args: list[str]
) -> None:
    pki = chains["rsa-2048"]
    path = tmp_path / "out"
    path.write_bytes(export_certificates((pki.leaf.cert, *pki.chain), fmt))  # type: ignore[arg-type]
    text = openssl(*args, "-in", path).decode()
    assert "CN=support.example.com" in text.replace(" = ", "=")
    if fmt == "p7b":
        assert "CN=Example Root CA" in text.replace(" = ", "=")


def test_export_certificates_refuses_nothing_and_unknown_format(
    chains: dict[KeyType, Pki],
) -> None:
    with pytest.raises(BadInput):
        export_certificates([], "pem")
    with pytest.raises(BadInput, match="'p12'"):
        export_certificates([chains["ec-p256"].leaf.cert], "p12")  # type: ignore[arg-type]


def test_export_pkcs12_read_by_openssl_with_stated_algorithms(
    chains: dict[KeyType, Pki], tmp_path: Path
) -> None:
    pki = chains["rsa-2048"]
    blob = export_pkcs12(
        name="support", key=pki.leaf.key, cert=pki.leaf.cert, chain=pki.chain,
        passphrase=PASS, rounds=4096,
    )  # fmt: skip
    (tmp_path / "ours.p12").write_bytes(blob)
    (tmp_path / "pw").write_bytes(PASS + b"\n")
    done = subprocess.run(
        ["openssl", "pkcs12", "-info", "-noout", "-in", tmp_path / "ours.p12",
         "-passin", f"file:{tmp_path / 'pw'}"],
        capture_output=True, check=False, timeout=60,
    )  # fmt: skip
    info = done.stderr.decode() + done.stdout.decode()
    assert done.returncode == 0, info
    assert "MAC: sha256" in info
    assert "PBES2, PBKDF2, AES-256-CBC, Iteration 4096, PRF hmacWithSHA256" in info
    assert "Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC" in info
    # openssl gives back the same key and certificates
    pem = openssl(
        "pkcs12", "-in", tmp_path / "ours.p12", "-nodes", "-passin", f"file:{tmp_path / 'pw'}"
    )
    back = read_material([("openssl-out.pem", pem)])
    assert set(back.certificates) == {pki.leaf.cert, *pki.chain}
    assert public_key_matches(back.keys[0], pki.leaf.cert)
    # negative twin: a wrong passphrase is refused by openssl too
    (tmp_path / "bad").write_bytes(b"wrong\n")
    refused = subprocess.run(
        ["openssl", "pkcs12", "-info", "-noout", "-in", tmp_path / "ours.p12",
         "-passin", f"file:{tmp_path / 'bad'}"],
        capture_output=True, check=False, timeout=60,
    )  # fmt: skip
    assert refused.returncode != 0


@pytest.mark.parametrize(
    ("passphrase", "key_of", "fragment"),
    [
        (b"", "leaf", "non-empty"),
        (b"a\x00b", "leaf", "UTF-8"),
        (b"\xff\xfe", "leaf", "UTF-8"),
        (PASS, "root", "does not match"),
    ],
)
def test_export_pkcs12_refuses(
    chains: dict[KeyType, Pki], passphrase: bytes, key_of: str, fragment: str
) -> None:
    pki = chains["ec-p256"]
    key = pki.leaf.key if key_of == "leaf" else pki.root.key
    with pytest.raises(BadInput, match=fragment):
        export_pkcs12(name="x", key=key, cert=pki.leaf.cert, chain=pki.chain, passphrase=passphrase)


# ---------------------------------------------------------------- properties


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key_type=st.sampled_from(KEY_TYPES),
    chain_length=st.integers(0, 2),
    passphrase=st.text(
        st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
        min_size=1,
        max_size=40,
    ),
    name=st.text(max_size=20),
    rounds=st.integers(1, 64),
)
def test_property_pkcs12_export_then_read_gives_the_same(
    chains: dict[KeyType, Pki],
    key_type: KeyType,
    chain_length: int,
    passphrase: str,
    name: str,
    rounds: int,
) -> None:
    pki = chains[key_type]
    chain = pki.chain[:chain_length]
    blob = export_pkcs12(
        name=name, key=pki.leaf.key, cert=pki.leaf.cert, chain=chain,
        passphrase=passphrase.encode(), rounds=rounds,
    )  # fmt: skip
    material = read_material([("x.p12", blob)], passphrase.encode())
    assert material.certificates == (pki.leaf.cert, *chain)
    assert len(material.keys) == 1
    assert public_key_matches(material.keys[0], pki.leaf.cert)
    assert key_type_of(material.keys[0]) == key_type


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key_type=st.sampled_from(KEY_TYPES), fmt=st.sampled_from(["pem", "der", "p7b"]))
def test_property_certificate_export_then_read_gives_the_same(
    chains: dict[KeyType, Pki], key_type: KeyType, fmt: str
) -> None:
    pki = chains[key_type]
    certs = (pki.leaf.cert, *pki.chain)
    material = read_material([("x", export_certificates(certs, fmt))])  # type: ignore[arg-type]
    if fmt == "p7b":  # a PKCS#7 certificate SET is sorted by DER: same set, any order
        assert set(material.certificates) == set(certs)
    else:
        assert material.certificates == (certs[:1] if fmt == "der" else certs)


def _samples() -> list[bytes]:
    pki = make_chain("ec-p256")
    p12 = export_pkcs12(
        name="s", key=pki.leaf.key, cert=pki.leaf.cert, chain=pki.chain, passphrase=b"s", rounds=2
    )
    return [
        pki.leaf.cert.public_bytes(DER),
        pem_bundle(pki.leaf.cert, *pki.chain, key=pki.leaf.key),
        export_certificates([pki.leaf.cert, pki.root.cert], "p7b"),
        p12,
        key_pem(pki.leaf.key, b"s"),
        pki.leaf.key.private_bytes(
            DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    ]


_SAMPLES = _samples()


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    base = draw(st.sampled_from(_SAMPLES))
    how = draw(st.sampled_from(["truncate", "flip", "splice", "raw"]))
    if how == "raw":
        return draw(st.binary(max_size=400))
    at = draw(st.integers(0, len(base) - 1))
    if how == "truncate":
        return base[:at]
    if how == "flip":
        return base[:at] + bytes([base[at] ^ draw(st.integers(1, 255))]) + base[at + 1 :]
    return base[:at] + draw(st.binary(max_size=16)) + base[at:]


@settings(max_examples=300, deadline=None)
@given(data=_mutated(), passphrase=st.sampled_from([None, b"s", b"other"]))
def test_property_any_bytes_parse_or_raise_our_error(data: bytes, passphrase: bytes | None) -> None:
    try:
        material = read_material([("fuzz.bin", data)], passphrase)
    except (FormatError, PassphraseError) as err:
        assert err.source == "fuzz.bin"
        assert "'fuzz.bin'" in str(err)
    else:
        assert all(isinstance(c, x509.Certificate) for c in material.certificates)


def test_concatenated_der_certificates_and_a_trailing_newline(chains: dict[KeyType, Pki]) -> None:
    pki = chains["ec-p256"]
    data = pki.leaf.cert.public_bytes(DER) + pki.root.cert.public_bytes(DER) + b"\r\n"
    material = read_material([("two.der", data)])
    assert material.certificates == (pki.leaf.cert, pki.root.cert)
    # negative twin: anything but whitespace after the last object is refused
    with pytest.raises(FormatError, match=r"'two\.der'"):
        read_material([("two.der", data + b"x")])
