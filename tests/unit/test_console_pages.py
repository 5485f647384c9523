"""The console's pure part: what each page shows (sync.console.pages) and the timeline's
geometry (sync.console.timeline), each rule with its twin."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from node.formats import cert_sha256
from node.store_view import AuditEvent, StoredCert
from sync.console import pages, timeline
from sync.report import Observed
from sync.topology import NodeRole, NodeSpec, Topology
from tests.pki import make_chain, make_leaf

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def _stored(cert: x509.Certificate, *, name: str, has_key: bool = True,
            default: bool = False) -> StoredCert:
    dns = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return StoredCert(
        sha256=cert_sha256(cert), name=name, der=cert.public_bytes(Encoding.DER),
        role="identity", has_key=has_key, is_default=default,
        dns_names=tuple(dns.get_values_for_type(x509.DNSName)), ip_addresses=(),
        not_after=cert.not_valid_after_utc, added_at=NOW, parsed=cert)


_NODES: list[tuple[str, NodeRole, str]] = [("p1", "primary", "p1.example.com"),
                                           ("b1", "backup", "b1.example.com")]


def _topology() -> Topology:
    nodes = tuple(
        NodeSpec(name=n, role=r, hostname=h, grpc_address=f"127.0.0.1:{7400 + 2 * i}",
                 tls_address=f"127.0.0.1:{7401 + 2 * i}", cert_path=Path(f"/c/{n}.pem"),
                 admin_address=f"127.0.0.1:{7404 + i}")
        for i, (n, r, h) in enumerate(_NODES))
    return Topology(cluster_id="00000000-0000-4000-8000-000000000000",
                    site="support.example.com", nodes=nodes, ca_cert_path=Path("/c/ca.pem"),
                    sync_interval_seconds=30, stale_after_seconds=300)


def test_a_keyless_certificate_with_a_missing_issuer_carries_both_warnings() -> None:
    pki = make_chain(sans=["legacy.example.com"])
    stored = _stored(pki.leaf.cert, name="legacy", has_key=False)
    facts = pages.CertFacts(stored=stored, chain=(), chain_problems=("no certificate for "
                                                                     "issuer CN=X",))
    [row] = pages.certificate_rows([facts], now=NOW)
    assert row["warnings"] == [
        "No private key: this certificate cannot be served until its key is imported.",
        "Chain incomplete: no certificate for issuer CN=X."]
    assert row["chain_complete"] is False and row["has_key"] is False


def test_a_keyed_certificate_with_its_chain_has_no_warning() -> None:
    pki = make_chain(sans=["ok.example.com"])
    stored = _stored(pki.leaf.cert, name="ok")
    facts = pages.CertFacts(stored=stored, chain=pki.chain, chain_problems=())
    [row] = pages.certificate_rows([facts], now=NOW)
    assert row["warnings"] == [] and row["chain_complete"] is True


def test_the_default_comes_first_then_names() -> None:
    a = _stored(make_leaf(None, ["a.example.com"], slot=1).cert, name="a")
    z = _stored(make_leaf(None, ["z.example.com"], slot=2).cert, name="z", default=True)
    rows = pages.certificate_rows([pages.CertFacts(a, (), ()), pages.CertFacts(z, (), ())],
                                  now=NOW)
    assert [r["name"] for r in rows] == ["z", "a"]


def _observed(name: str, served: dict[str | None, str | None]) -> Observed:
    return Observed(name=name, reachable=True, role="primary" if name == "p1" else "backup",
                    epoch=1, revision=1, digest="d", served=served)


def test_coverage_matrix_flags_the_uncovered_node_name_and_a_mismatch() -> None:
    cert = make_leaf(None, ["support.example.com", "p1.example.com"]).cert
    default = _stored(cert, name="site", default=True)
    sha = default.sha256
    expected: dict[str | None, str] = {"support.example.com": sha, "p1.example.com": sha,
                                       "b1.example.com": sha, None: sha}
    observed = [_observed("p1", {"support.example.com": sha, "p1.example.com": sha}),
                _observed("b1", {"support.example.com": "f" * 64, "b1.example.com": sha})]
    matrix = pages.coverage_matrix(_topology(), default, observed, expected)
    cells = {(r["hostname"], c["node"]): c["state"] for r in matrix["rows"] for c in r["cells"]}
    assert cells == {
        ("support.example.com", "p1"): "ok",
        ("support.example.com", "b1"): "mismatch",   # served another certificate
        ("p1.example.com", "p1"): "ok",
        ("p1.example.com", "b1"): "n/a",             # nobody asks b1 for p1's name
        ("b1.example.com", "p1"): "n/a",
        ("b1.example.com", "b1"): "uncovered",       # the default does not name it
    }
    assert matrix["all_covered"] is False
    by = {r["hostname"]: r["matched_by"] for r in matrix["rows"]}
    assert by["p1.example.com"] == "p1.example.com" and by["b1.example.com"] is None


def test_coverage_matrix_without_a_probe_says_unprobed_not_ok() -> None:
    cert = make_leaf(None, ["support.example.com", "*.example.com"]).cert
    default = _stored(cert, name="wild", default=True)
    matrix = pages.coverage_matrix(_topology(), default,
                                   [_observed("p1", {}), _observed("b1", {})], None)
    states = {c["state"] for r in matrix["rows"] for c in r["cells"]} - {"n/a"}
    assert states == {"unprobed"} and matrix["all_covered"] is True


def test_audit_rows_name_the_target_and_the_outcome() -> None:
    events = [
        AuditEvent(id=2, at=NOW, actor="node:b1", action="console.refused",
                   detail={"path": "/", "why": "no"}),
        AuditEvent(id=1, at=NOW, actor="admin:admin", action="cert.add",
                   detail={"certificates": [{"sha256": "ab" * 32, "name": "<b>x</b>"}]}),
    ]
    refused, added = pages.audit_rows(events)
    assert (refused["outcome"], refused["target"]) == ("refused", "")
    assert (added["outcome"], added["target"]) == ("ok", "ab" * 32)
    assert "<b>x</b>" in added["detail"]  # raw text here; the template escapes it


def test_audit_rows_mark_a_forced_change_as_the_audit_command_does() -> None:
    """The console and ``certsync audit`` share one rule (node.audit_view): a change made
    past a check is ``forced``; its unforced twin is ``ok``."""
    forced = AuditEvent(id=3, at=NOW, actor="admin:admin", action="change.forced",
                        detail={"sha256": "cd" * 32, "overrode": ["coverage"]})
    plain = AuditEvent(id=4, at=NOW, actor="admin:admin", action="cert.default",
                       detail={"sha256": "cd" * 32})
    rows = pages.audit_rows([forced, plain])
    assert [r["outcome"] for r in rows] == ["forced", "ok"]
    assert [r["id"] for r in rows] == [3, 4] and rows[0]["target"] == "cd" * 32


# --------------------------------------------------------------------------- timeline


def _span(name: str, start: dt.datetime, end: dt.datetime, default: bool = False
          ) -> timeline.Span:
    return timeline.Span(sha256=name * 8, name=name, not_before=start, not_after=end,
                         default=default)


def test_timeline_windows_end_at_expiry_and_renewal_is_wider() -> None:
    chart = timeline.timeline([_span("a", NOW - 100 * DAY, NOW + 200 * DAY, default=True)],
                              now=NOW)
    [bar] = chart["bars"]
    end = bar["x"] + bar["width"]
    assert bar["renewal"]["x"] + bar["renewal"]["width"] == pytest.approx(end, abs=0.02)
    assert bar["alert"]["x"] + bar["alert"]["width"] == pytest.approx(end, abs=0.02)
    assert bar["renewal"]["width"] / bar["alert"]["width"] == pytest.approx(30 / 25, rel=0.01)
    assert bar["x"] < chart["now"]["x"] < bar["renewal"]["x"]


def test_timeline_now_inside_the_alert_window_of_an_expiring_certificate() -> None:
    chart = timeline.timeline([_span("b", NOW - 300 * DAY, NOW + 10 * DAY)], now=NOW)
    [bar] = chart["bars"]
    assert bar["alert"]["x"] < chart["now"]["x"] < bar["x"] + bar["width"]
    assert bar["expired"] is False


def test_timeline_puts_the_default_first_and_marks_the_expired() -> None:
    chart = timeline.timeline([
        _span("old", NOW - 400 * DAY, NOW - 10 * DAY),
        _span("cur", NOW - 10 * DAY, NOW + 80 * DAY, default=True),
    ], now=NOW)
    assert [(b["name"], b["default"], b["expired"]) for b in chart["bars"]] == [
        ("cur", True, False), ("old", False, True)]
    assert chart["bars"][0]["y"] < chart["bars"][1]["y"]


def test_timeline_without_certificates_still_draws_now() -> None:
    chart = timeline.timeline([], now=NOW)
    assert chart["bars"] == [] and chart["now"]["x"] > timeline.LABEL_WIDTH
