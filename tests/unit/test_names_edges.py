"""node.names, the edges a mutation run found unguarded (deploy/mutation.sh node/names.py):
whole error messages (case and wording are part of the one-line CLI contract), the length
limit's boundary, the IDNA flags, reasons for uncovered names, and the JSON's ``reason`` key.
Each case has its twin.
"""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from node.errors import FormatError, HostnameError
from node.names import (
    Coverage,
    CoverageReport,
    SanSet,
    check_coverage,
    coverage_json,
    parse_hostname,
    sans_of,
)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("", "hostname '' is empty; give a DNS name such as 'support.example.com' or an IP "
             "address"),
        ("https://support.example.com", "hostname 'https://support.example.com' looks like a "
         "URL; give only the host part, e.g. 'support.example.com'"),
        ("support.example.com/x", "hostname 'support.example.com/x' looks like a URL; give "
         "only the host part, e.g. 'support.example.com'"),
        ("[::1]", "hostname '[::1]' is in brackets; give an IPv6 address without brackets, "
         "e.g. '::1'"),
        ("foo:bar", "hostname 'foo:bar' is neither a DNS name nor an IPv6 address; give the "
         "host without a port"),
        ("fe80::1%eth0", "hostname 'fe80::1%eth0' has an IPv6 zone index; give the address "
         "without '%zone'"),
        ("*.example.com", "hostname '*.example.com' is a wildcard; give the concrete hostname "
         "clients use"),
        ("a..example.com", "hostname 'a..example.com' has an empty label (two dots in a row, "
         "or a leading dot); remove it"),
        ("example.0x1f", "hostname 'example.0x1f' ends in a number but is not a valid IP "
         "address; give a DNS name or a dotted-quad"),
    ],
)
def test_parse_errors_say_exactly_this(given: str, message: str) -> None:
    with pytest.raises(HostnameError) as info:
        parse_hostname(given)
    assert str(info.value) == message
    assert info.value.hostname == given


def test_length_limit_boundary() -> None:
    """1024 characters are read (and refused as a DNS name); 1025 are refused unread."""
    with pytest.raises(HostnameError) as at_limit:
        parse_hostname("a" * 1024)
    assert "characters long" not in str(at_limit.value)
    assert "is not a valid DNS name" in str(at_limit.value)
    with pytest.raises(HostnameError) as over:
        parse_hostname("a" * 1025)
    assert str(over.value) == (f"hostname {'a' * 40 + '...'!r} is 1025 characters long; a DNS "
                               "name has at most 253")


@pytest.mark.parametrize("given", ["foo_bar.example.com", "a b.example.com", "x!.example.com"])
def test_std3_rules_refuse_non_ldh_characters(given: str) -> None:
    with pytest.raises(HostnameError, match="is not a valid DNS name"):
        parse_hostname(given)


def test_ldh_twin_is_accepted() -> None:
    assert parse_hostname("foo-bar.example.com").value == "foo-bar.example.com"


@pytest.mark.parametrize(
    ("given", "alabel"),
    [("faß.de", "xn--fa-hia.de"), ("Faß.DE", "xn--fa-hia.de"),
     ("bücher.example", "xn--bcher-kva.example")],
)
def test_idna_2008_non_transitional(given: str, alabel: str) -> None:
    """IDNA 2008 keeps ß (transitional UTS 46 would map it to "ss")."""
    assert parse_hostname(given).value == alabel
    assert parse_hostname(given).value != "fass.de"


# ------------------------------------------------------------------------- IP coverage


def test_ip_coverage_skips_an_unreadable_ip_san() -> None:
    sans = SanSet(ip_addresses=("not-an-ip", "10.0.0.1"))
    c = check_coverage(sans, "10.0.0.1")
    assert (c.hostname, c.covered, c.kind, c.matched_by) == ("10.0.0.1", True, "ip", "10.0.0.1")


def test_ip_coverage_reports_the_hostname_as_given() -> None:
    covered = check_coverage(SanSet(ip_addresses=("2001:db8::1",)), "2001:DB8:0::1")
    assert (covered.hostname, covered.covered) == ("2001:DB8:0::1", True)
    missed = check_coverage(SanSet(ip_addresses=("2001:db8::2",)), "2001:DB8:0::1")
    assert (missed.hostname, missed.covered) == ("2001:DB8:0::1", False)
    assert missed.reason == "no iPAddress SAN equals 2001:db8::1"


def test_ip_without_ip_sans_says_why_exactly() -> None:
    c = check_coverage(SanSet(dns_names=("support.example.com",)), "10.0.0.1")
    assert (c.hostname, c.covered) == ("10.0.0.1", False)
    assert c.reason == ("the certificate has no iPAddress SANs, and a DNS SAN never covers an "
                        "IP address")


# ------------------------------------------------------------------ reasons for near misses


@pytest.mark.parametrize(
    ("san", "host"),
    [("BÜCHER.example.com.", "bücher.example.com"),  # U-label in capitals: UTS 46 maps it
     ("FAß.example.com.", "faß.example.com"),  # non-transitional: ß stays ß
     ("WWW.EXAMPLE.TX.", "www.example.tx")],  # only the dot is stripped, not an 'X'
)
def test_an_ignored_san_that_names_the_host_gives_its_own_reason(san: str, host: str) -> None:
    c = check_coverage(SanSet(dns_names=(san,)), host)
    assert not c.covered
    assert c.reason == f"SAN {san!r} ends in a dot, which is malformed"


def test_an_ignored_san_for_another_host_gives_the_generic_reason() -> None:
    c = check_coverage(SanSet(dns_names=("BÜCHER.example.com.",)), "buecher.example.com")
    assert c.reason == "no SAN of the certificate covers it"


# ------------------------------------------------------------------------- coverage_json


def test_coverage_json_reason_only_for_an_uncovered_name_that_has_one() -> None:
    report = CoverageReport(False, (
        Coverage("a.example.com", False, None, None, "why not"),
        Coverage("b.example.com", False, None, None),  # no reason: no key
        Coverage("c.example.com", True, "exact", "c.example.com", "ignored"),  # covered: none
    ))
    rows = coverage_json(report)["hostnames"]
    assert rows[0]["reason"] == "why not"
    assert "reason" not in rows[1]
    assert "reason" not in rows[2]


# ------------------------------------------------------------------------- sans_of


def _cert_with_two_sans() -> x509.Certificate:
    """A certificate carrying the SAN extension twice (made by renaming a second extension's
    OID in the DER; the signature no longer verifies, which sans_of never checks)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dup.example.com")])
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(7)
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("dup.example.com")]), False)
        .add_extension(x509.IssuerAlternativeName([x509.DNSName("dup.example.com")]), False)
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    ian_oid, san_oid = bytes.fromhex("0603551d12"), bytes.fromhex("0603551d11")
    assert der.count(ian_oid) == 1
    return x509.load_der_x509_certificate(der.replace(ian_oid, san_oid))


def test_unreadable_san_extension_is_a_format_error_saying_so() -> None:
    with pytest.raises(FormatError) as info:
        sans_of(_cert_with_two_sans())
    assert str(info.value).startswith("the certificate's extensions cannot be read (")
    assert str(info.value).endswith("); re-issue the certificate")
