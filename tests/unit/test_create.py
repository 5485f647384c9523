"""node.create: keys, self-signed certificates and CSRs; subject and SAN validation;
openssl reads what we create."""

from __future__ import annotations

import ipaddress
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node.chain import analyze, classify, is_self_signed
from node.create import (
    MAX_DAYS,
    Subject,
    create_csr,
    create_self_signed,
    subject_name,
)
from node.errors import BadInput, HostnameError
from node.formats import key_type_of, public_key_matches
from node.keygen import generate_key
from node.model import CREATABLE_KEY_TYPES, KEY_TYPES, KeyType, Material
from tests.pki import NOW, make_key

#: the serial is a parameter, drawn by node.keygen in the shell; any fixed one will do here
SERIAL = 0x5EED_C0DE


def _sans(obj: x509.Certificate | x509.CertificateSigningRequest) -> list[str]:
    ext = obj.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [
        str(n.value) if isinstance(n, x509.IPAddress) else n.value
        for n in ext
        if isinstance(n, x509.DNSName | x509.IPAddress)
    ]


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_generate_key_gives_the_requested_type(key_type: KeyType) -> None:
    # rsa-4096 included: generation takes a second or two, and a CLI flag maps to it
    assert key_type_of(generate_key(key_type)) == key_type


@pytest.mark.parametrize("bad", ["rsa-1024", "ec-p521", "", "RSA-2048"])
def test_generate_key_refuses_unknown_types(bad: str) -> None:
    with pytest.raises(BadInput, match=repr(bad)):
        generate_key(bad)  # type: ignore[arg-type]  # invalid on purpose


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_self_signed_certificate(key_type: KeyType) -> None:
    key = make_key(key_type)
    subject = Subject(
        "support.example.com", country="de", state="Berlin", city="Berlin", org="Ex", unit="IT"
    )
    cert = create_self_signed(
        key, subject, ["*.example.com", "10.0.0.7"], now=NOW, serial=SERIAL, days=30
    )
    assert cert.not_valid_before_utc == NOW
    assert cert.not_valid_after_utc == NOW + timedelta(days=30)
    assert _sans(cert) == ["support.example.com", "*.example.com", "10.0.0.7"]
    assert cert.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "DE"
    assert is_self_signed(cert)
    assert classify(cert) == "identity"
    assert public_key_matches(key, cert)
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca is False
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    report = analyze(Material(certificates=(cert,), keys=(key,)))
    assert report.complete
    assert report.identity == cert


@pytest.mark.parametrize(
    ("cn", "sans", "expected"),
    [
        ("support.example.com", [], ["support.example.com"]),
        ("Support.Example.COM.", ["support.example.com"], ["support.example.com"]),
        ("Support Portal", ["support.example.com"], ["support.example.com"]),
        (
            "*.atlas.example.com",
            ["atlas.example.com"],
            ["*.atlas.example.com", "atlas.example.com"],
        ),
        ("bücher.example", [], ["xn--bcher-kva.example"]),
        ("192.0.2.1", ["a.example.com"], ["192.0.2.1", "a.example.com"]),
        ("web01", ["2001:db8::1"], ["2001:db8::1"]),
    ],
)
def test_cn_hostname_is_the_first_san(cn: str, sans: list[str], expected: list[str]) -> None:
    key = make_key("ec-p256")
    cert = create_self_signed(key, Subject(cn), sans, now=NOW, serial=SERIAL)
    assert _sans(cert) == expected
    csr = create_csr(key, Subject(cn), sans)
    assert _sans(csr) == expected


def test_certificate_without_any_hostname_has_no_san_extension() -> None:
    cert = create_self_signed(
        make_key("ec-p256"), Subject("Support Portal"), [], now=NOW, serial=SERIAL
    )
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


@pytest.mark.parametrize(
    "san",
    [
        "https://support.example.com", "", "[::1]", "foo:bar", "a..example.com", "*.co.uk",
        "f*.example.com", "*",
    ],
)  # fmt: skip
def test_bad_sans_are_refused_with_the_value(san: str) -> None:
    with pytest.raises(HostnameError) as info:
        create_csr(make_key("ec-p256"), Subject("support.example.com"), [san])
    assert repr(san) in str(info.value) or san == ""


@pytest.mark.parametrize(
    ("subject", "fragment"),
    [
        (Subject("a.example.com", country="XX"), "'XX'"),
        (Subject("a.example.com", country="USA"), "'USA'"),
        (Subject("a.example.com", country="1A"), "'1A'"),
        (Subject(""), "common name"),
        (Subject("x" * 65), "64"),
        (Subject("a.example.com", org="   "), "organisation"),
        (Subject("a.example.com", unit="a\x00b"), "control"),
    ],
)
def test_bad_subjects_are_refused(subject: Subject, fragment: str) -> None:
    with pytest.raises(BadInput, match=fragment):
        subject_name(subject)


@pytest.mark.parametrize("code", ["US", "de", "GB", "jp", " fr "])
def test_iso_country_codes_accepted(code: str) -> None:
    name = subject_name(Subject("a.example.com", country=code))
    assert name.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == code.strip().upper()


@pytest.mark.parametrize(
    ("now", "days", "fragment"),
    [
        (datetime(2026, 1, 1), 30, "time zone"),  # noqa: DTZ001 - a naive time must be refused
        (NOW, 0, "0"),
        (NOW, MAX_DAYS + 1, str(MAX_DAYS + 1)),
    ],
)
def test_bad_validity_is_refused(now: datetime, days: int, fragment: str) -> None:
    with pytest.raises(BadInput, match=fragment):
        create_self_signed(
            make_key("ec-p256"), Subject("a.example.com"), [], now=now, serial=SERIAL, days=days
        )


def test_time_is_a_parameter_and_kept_in_utc() -> None:
    berlin = datetime(2026, 6, 1, 12, 30, 45, 999, tzinfo=UTC).astimezone()
    cert = create_self_signed(
        make_key("ec-p256"), Subject("a.example.com"), [], now=berlin, serial=SERIAL, days=1
    )
    assert cert.not_valid_before_utc == datetime(2026, 6, 1, 12, 30, 45, tzinfo=UTC)


@pytest.mark.parametrize("key_type", CREATABLE_KEY_TYPES)
def test_openssl_verifies_our_csr_and_reads_our_certificate(
    tmp_path: Path, key_type: KeyType
) -> None:
    key = make_key(key_type)
    subject = Subject("support.example.com", country="US", org="Example")
    csr = create_csr(key, subject, ["www.example.com", "198.51.100.4"])
    cert = create_self_signed(
        key, subject, ["www.example.com"], now=datetime.now(UTC), serial=SERIAL
    )
    (tmp_path / "r.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    done = subprocess.run(
        ["openssl", "req", "-in", tmp_path / "r.csr", "-verify", "-noout", "-text"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "verify OK" in done.stdout + done.stderr
    assert "DNS:support.example.com, DNS:www.example.com, IP Address:198.51.100.4" in done.stdout
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", tmp_path / "c.pem", tmp_path / "c.pem"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr + verified.stdout
    # negative twin: a certificate made with another key does not verify against this one
    other = create_self_signed(
        make_key(key_type, slot=3), subject, [], now=datetime.now(UTC), serial=SERIAL
    )
    (tmp_path / "o.pem").write_bytes(other.public_bytes(serialization.Encoding.PEM))
    refused = subprocess.run(
        ["openssl", "verify", "-CAfile", tmp_path / "c.pem", tmp_path / "o.pem"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert refused.returncode != 0


def test_ip_san_is_an_ip_address_entry() -> None:
    csr = create_csr(make_key("ec-p256"), Subject("x.example.com"), ["10.1.2.3"])
    ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ext.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.1.2.3")]
    assert "10.1.2.3" not in ext.get_values_for_type(x509.DNSName)
