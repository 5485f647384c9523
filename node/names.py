"""[core] Hostname normalisation and certificate coverage (pure core).

The rules are DESIGN.md's "Coverage" section, one by one (RFC 6125 §6.4 with the CA/Browser
Forum rules, as browsers apply them):

* names compare case-insensitively, internationalised names as A-labels (IDNA 2008 with the
  UTS #46 mapping, via the ``idna`` package);
* a trailing dot on the *hostname* is ignored; a SAN that ends in a dot covers nothing;
* a wildcard is only the whole left-most label and matches exactly one label, never the
  bare parent; partial-label wildcards and wildcards elsewhere cover nothing;
* a wildcard needs at least two labels after it and covers nothing when those labels are a
  public suffix of the ICANN section of the Public Suffix List (the list bundled with the
  ``publicsuffixlist`` package; private-section suffixes such as ``github.io`` are not
  excluded);
* the subject CN is ignored;
* an IP literal is covered only by an iPAddress SAN, never by a DNS SAN;
* an exact SAN is reported before a wildcard that also covers the name.

Hostnames given to certsync must be valid DNS names (letters, digits and hyphens per label,
IDNA 2008 for anything else) or IP literals. Underscores are refused: they are not valid in
host names (RFC 1123), and the CA/Browser Forum forbids them in certificate dNSNames, so no
publicly trusted certificate can cover such a name. A name whose last label is a number
(``1.2.3``, ``256.1.1.1``) is refused too: it is neither a valid IP literal nor a DNS host
name, and browsers would read it as an IPv4 address.

Everything here is pure: no I/O (apart from the Public Suffix List file that the library
ships, read once), no clock.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import idna
from cryptography import x509
from publicsuffixlist import PublicSuffixList

from node.errors import FormatError, HostnameError

__all__ = [
    "Coverage",
    "CoverageReport",
    "Hostname",
    "SanRule",
    "SanSet",
    "check_all",
    "check_coverage",
    "coverage_json",
    "parse_hostname",
    "preload",
    "san_rule",
    "sans_of",
]

#: longer input is refused before any IDNA work (a DNS name is at most 253 octets; the
#: U-label form of a valid name can be longer than its A-labels, but not this long)
_MAX_INPUT_CHARS = 1024

#: a last label that is a number (decimal, or 0x-hex as the WHATWG URL parser reads IPv4)
_NUMERIC_LABEL = re.compile(r"(?:[0-9]+|0x[0-9a-f]*)\Z")


@dataclass(frozen=True)
class Hostname:
    """A validated hostname: ``given`` as the user wrote it, ``value`` normalised.

    ``value`` is, for ``kind == "dns"``, the A-label form in lower case without a trailing
    dot; for ``kind == "ip"``, the address in ``ipaddress``'s compressed text.
    """

    given: str
    kind: Literal["dns", "ip"]
    value: str


@dataclass(frozen=True)
class SanSet:
    """The names a certificate presents: DNS SANs as written, IP SANs as compressed text."""

    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class Coverage:
    """Whether one hostname is covered, and by which SAN (as written in the certificate)."""

    hostname: str
    covered: bool
    kind: Literal["exact", "wildcard", "ip"] | None
    matched_by: str | None
    reason: str | None = None


@dataclass(frozen=True)
class CoverageReport:
    all_covered: bool
    items: tuple[Coverage, ...]


@dataclass(frozen=True)
class SanRule:
    """What one DNS SAN covers: an exact name, a wildcard over ``key``'s children, or nothing.

    ``key`` is normalised like :attr:`Hostname.value` (the exact name, or the wildcard's
    parent); for ``kind == "none"`` it is empty and ``reason`` says why the SAN covers nothing.
    """

    kind: Literal["exact", "wildcard", "none"]
    key: str
    reason: str = ""


def _bad(text: str, why: str) -> HostnameError:
    return HostnameError(f"hostname {text!r} {why}", hostname=text)


def _parse(text: str) -> tuple[Literal["dns", "ip"], str]:
    """Validate and normalise; raise HostnameError with a reason."""
    if not text:
        raise _bad(text, "is empty; give a DNS name such as 'support.example.com' or an IP address")
    if len(text) > _MAX_INPUT_CHARS:
        raise _bad(text[:40] + "...", f"is {len(text)} characters long; a DNS name has at most 253")
    if "://" in text or "/" in text:
        raise _bad(text, "looks like a URL; give only the host part, e.g. 'support.example.com'")
    if text.startswith("["):
        raise _bad(text, "is in brackets; give an IPv6 address without brackets, e.g. '::1'")
    if ":" in text:
        try:
            v6 = ipaddress.IPv6Address(text)
        except ValueError:
            raise _bad(
                text, "is neither a DNS name nor an IPv6 address; give the host without a port"
            ) from None
        if v6.scope_id is not None:
            raise _bad(text, "has an IPv6 zone index; give the address without '%zone'")
        return "ip", v6.compressed
    try:
        return "ip", ipaddress.IPv4Address(text).compressed
    except ValueError:
        pass
    name = text[:-1] if text.endswith(".") else text
    if "*" in name:
        raise _bad(text, "is a wildcard; give the concrete hostname clients use")
    if not name or "" in name.split("."):
        raise _bad(text, "has an empty label (two dots in a row, or a leading dot); remove it")
    try:
        value = idna.encode(name, uts46=True, std3_rules=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError) as err:
        raise _bad(
            text, f"is not a valid DNS name ({err}); use letters, digits and hyphens"
        ) from err
    if _NUMERIC_LABEL.match(value.rsplit(".", 1)[-1]):
        raise _bad(
            text, "ends in a number but is not a valid IP address; give a DNS name or a dotted-quad"
        )
    return "dns", value


def parse_hostname(text: str) -> Hostname:
    """Validate a hostname given to certsync and normalise it; raise :class:`HostnameError`."""
    kind, value = _parse(text)
    return Hostname(given=text, kind=kind, value=value)


def preload() -> None:
    """Parse the bundled Public Suffix List now (a few hundred ms, once per process), so
    that the first coverage check -- often in the middle of a replication -- does not pay it."""
    _icann_psl()


@functools.cache
def _icann_psl() -> PublicSuffixList:
    # only_icann: private-section suffixes (github.io, appspot.com) may carry wildcards.
    # accept_unknown=False: an unlisted parent is not public (single-label parents are
    # refused by the two-label rule before this list is asked).
    return PublicSuffixList(only_icann=True, accept_unknown=False)


@functools.lru_cache(maxsize=65536)
def san_rule(san: str) -> SanRule:
    """Classify one DNS SAN as written in a certificate (cached: SANs repeat)."""
    if not san:
        return SanRule("none", "", "the SAN is empty")
    if san.endswith("."):
        return SanRule("none", "", f"SAN {san!r} ends in a dot, which is malformed")
    if san == "*":
        return SanRule("none", "", "wildcard SAN '*' needs two labels after the '*'")
    if san.startswith("*."):
        rest = san[2:]
        if "*" in rest:
            return SanRule("none", "", f"SAN {san!r} has more than one wildcard")
        try:
            kind, parent = _parse(rest)
        except HostnameError:
            return SanRule("none", "", f"SAN {san!r} is not a valid wildcard name")
        if kind != "dns":
            return SanRule("none", "", f"SAN {san!r} is not a valid wildcard name")
        if "." not in parent:
            return SanRule("none", "", f"wildcard SAN {san!r} needs two labels after the '*'")
        if _icann_psl().is_public(parent):
            return SanRule("none", "", f"wildcard SAN {san!r} spans the public suffix {parent!r}")
        return SanRule("wildcard", parent)
    if "*" in san:
        return SanRule(
            "none", "", f"SAN {san!r} has a wildcard that is not the whole left-most label"
        )
    try:
        kind, value = _parse(san)
    except HostnameError:
        return SanRule("none", "", f"SAN {san!r} is not a valid DNS name")
    if kind == "ip":
        return SanRule("none", "", f"DNS SAN {san!r} is an IP address; only iPAddress SANs count")
    return SanRule("exact", value)


def sans_of(cert: x509.Certificate) -> SanSet:
    """The certificate's SANs as plain values; a certificate without the extension has none."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return SanSet()
    except (ValueError, x509.DuplicateExtension) as err:
        raise FormatError(
            f"the certificate's extensions cannot be read ({err}); re-issue the certificate"
        ) from err
    dns = tuple(ext.value.get_values_for_type(x509.DNSName))
    ips = tuple(ip.compressed for ip in ext.value.get_values_for_type(x509.IPAddress))
    return SanSet(dns_names=dns, ip_addresses=ips)


def _as_hostname(hostname: str | Hostname) -> Hostname:
    return hostname if isinstance(hostname, Hostname) else parse_hostname(hostname)


def _ip_coverage(sans: SanSet, h: Hostname) -> Coverage:
    for text in sans.ip_addresses:
        try:
            if ipaddress.ip_address(text).compressed == h.value:
                return Coverage(h.given, True, "ip", text)
        except ValueError:
            continue
    if not sans.ip_addresses:
        why = "the certificate has no iPAddress SANs, and a DNS SAN never covers an IP address"
    else:
        why = f"no iPAddress SAN equals {h.value}"
    return Coverage(h.given, False, None, None, why)


def check_coverage(sans: SanSet, hostname: str | Hostname) -> Coverage:
    """Whether ``sans`` cover ``hostname`` (a string is parsed; invalid -> HostnameError)."""
    h = _as_hostname(hostname)
    if h.kind == "ip":
        return _ip_coverage(sans, h)
    if not sans.dns_names:
        return Coverage(
            h.given, False, None, None, "the certificate has no DNS SANs and the CN is not used"
        )
    parent = h.value.partition(".")[2]
    wildcard: str | None = None
    near_miss: str | None = None
    for san in sans.dns_names:
        rule = san_rule(san)
        if rule.kind == "exact":
            if rule.key == h.value:
                return Coverage(h.given, True, "exact", san)
        elif rule.kind == "wildcard":
            if rule.key == parent:
                wildcard = wildcard or san
            elif near_miss is None and rule.key == h.value:
                near_miss = f"wildcard SAN {san!r} does not cover the bare parent name"
            elif near_miss is None and h.value.endswith("." + rule.key):
                near_miss = f"wildcard SAN {san!r} matches exactly one label"
        elif near_miss is None and _names_the_host(san, h.value):
            near_miss = rule.reason
    if wildcard is not None:
        return Coverage(h.given, True, "wildcard", wildcard)
    return Coverage(h.given, False, None, None, near_miss or "no SAN of the certificate covers it")


def _names_the_host(san: str, value: str) -> bool:
    """Would this (ignored) SAN have covered the host had it been well formed?

    Only chooses the reason reported for an uncovered name: labels with a '*' match any
    label, the others compare as A-labels where they can be converted.
    """
    written = san.rstrip(".").split(".")
    labels = value.split(".")
    if len(written) != len(labels):
        return False
    return all("*" in w or _loose_alabel(w) == h for w, h in zip(written, labels, strict=True))


def _loose_alabel(label: str) -> str:
    try:
        return idna.encode(label, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return label.lower()


def check_all(sans: SanSet, hostnames: Sequence[str | Hostname]) -> CoverageReport:
    """Check every hostname; invalid ones raise HostnameError before any is checked."""
    parsed = [_as_hostname(h) for h in hostnames]
    items = tuple(check_coverage(sans, h) for h in parsed)
    return CoverageReport(all_covered=all(i.covered for i in items), items=items)


def coverage_json(report: CoverageReport) -> dict[str, Any]:
    """The offline ``certsync coverage --json`` object (DESIGN.md)."""
    rows: list[dict[str, Any]] = []
    for item in report.items:
        row: dict[str, Any] = {
            "hostname": item.hostname,
            "covered": item.covered,
            "kind": item.kind,
            "matched_by": item.matched_by,
        }
        if not item.covered and item.reason:
            row["reason"] = item.reason
        rows.append(row)
    return {"all_covered": report.all_covered, "hostnames": rows}
