"""The admin console in a real browser: what a person sees, and who is turned away.

Every page is opened in headless Chromium with the admin identity (``DIR/admin.p12``, as a
person imports it) and saved as a screenshot under tests/artifacts/. The negative twins
use ``ignore_https_errors`` (Playwright cannot be given the cluster CA) and assert the
handshake failure or the 403 itself; the server's identity is checked apart with ``ssl``.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from node.identity import node_dns_name
from sync.topology import split_address
from tests.browser.conftest import (
    HOSTILE_NAME,
    SITE,
    Console,
    goto,
    screenshot,
    status_json,
    wait_probed,
)
from tests.cluster.conftest import cli_ok
from tests.pki import key_pem, make_leaf, make_root, pem_bundle

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def admin_page(browser: Any, console: Console) -> Iterator[Any]:
    context = browser.new_context(ignore_https_errors=True,
                                  client_certificates=[console.admin_p12()])
    page = context.new_page()
    dialogs: list[str] = []

    def dialog(d: Any) -> None:  # an alert() that ran would land here
        dialogs.append(d.message)
        d.dismiss()

    page.on("dialog", dialog)
    page.dialogs = dialogs
    try:
        yield page
    finally:
        context.close()


def _page_with(browser: Any, identity: dict[str, str] | None) -> Any:
    context = browser.new_context(ignore_https_errors=True,
                                  client_certificates=[identity] if identity else [])
    return context.new_page()


# --------------------------------------------------------------------------- identity


def _handshake(console: Console, server_name: str) -> x509.Certificate:
    host, port = split_address(console.admin_address)
    ctx = ssl.create_default_context(cafile=str(console.directory / "ca.pem"))
    ctx.load_cert_chain(str(console.directory / "admin.pem"),
                        str(console.directory / "admin-key.pem"))
    with socket.create_connection((host, port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=server_name) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_the_console_presents_the_nodes_cluster_identity(console: Console) -> None:
    cert = _handshake(console, node_dns_name("p1"))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["p1.node.certsync"]


def test_the_console_is_not_another_nodes_identity(console: Console) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match=r"b1\.node\.certsync"):
        _handshake(console, node_dns_name("b1"))


def _get_over_tls(console: Console, cert: Path | None, key: Path | None) -> bytes:
    """GET / with ``ssl`` and (optionally) a client certificate; the first bytes answered.
    A refused client certificate raises ``ssl.SSLError`` (in TLS 1.3 at the first read)."""
    host, port = split_address(console.admin_address)
    ctx = ssl.create_default_context(cafile=str(console.directory / "ca.pem"))
    if cert is not None and key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    with socket.create_connection((host, port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=node_dns_name("p1")) as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: p1.node.certsync\r\nConnection: close\r\n\r\n")
        return tls.recv(64)


def _refused(console: Console, cert: Path | None, key: Path | None) -> str:
    """Why the server refused the TLS session (its alert), or AssertionError when it
    answered. The server's refusal may surface as an alert or as a closed connection."""
    try:
        answer = _get_over_tls(console, cert, key)
    except (ssl.SSLError, ConnectionResetError) as err:
        return str(err) or type(err).__name__
    assert answer == b"", f"the console answered {answer!r}"
    return "closed without an answer"


def test_no_client_certificate_fails_the_handshake(browser: Any, console: Console) -> None:
    from playwright.sync_api import Error

    page = _page_with(browser, None)
    with pytest.raises(Error, match=r"net::ERR_(?!NETWORK_CHANGED)\w+"):
        goto(page, console.origin + "/")
    page.context.close()
    assert _refused(console, None, None)


def test_another_cas_certificate_fails_the_handshake(
    browser: Any, console: Console, tmp_path: Path
) -> None:
    from playwright.sync_api import Error

    other = make_root("Another CA")
    leaf = make_leaf(other, ["admin.example.com"])
    cert, key = tmp_path / "other.pem", tmp_path / "other-key.pem"
    cert.write_bytes(pem_bundle(leaf.cert))
    key.write_bytes(key_pem(leaf.key))
    page = _page_with(browser, console.pem_identity(cert, key))
    with pytest.raises(Error, match=r"net::ERR_(?!NETWORK_CHANGED)\w+"):
        goto(page, console.origin + "/")
    page.context.close()
    assert _refused(console, cert, key)
    # the twin: the admin's own PEM identity over the same path gets an answer
    d = console.directory
    assert _get_over_tls(console, d / "admin.pem", d / "admin-key.pem").startswith(
        b"HTTP/1.1 200")


def test_a_node_identity_gets_403(browser: Any, console: Console) -> None:
    d = console.directory / "b1"
    page = _page_with(browser, console.pem_identity(d / "node.pem", d / "node-key.pem"))
    response = goto(page, console.origin + "/")
    assert response is not None and response.status == 403
    message = page.locator("#error-message").inner_text()
    assert message == "Only an admin identity may see the console."
    assert page.locator("table.certificates").count() == 0
    assert response.headers["x-frame-options"] == "DENY"  # headers on refusals too
    screenshot(page, "403-node")
    page.context.close()


def test_the_monitor_identity_gets_metrics_but_no_page(browser: Any, console: Console) -> None:
    d = console.directory
    page = _page_with(browser, console.pem_identity(d / "monitor.pem", d / "monitor-key.pem"))
    refused = goto(page, console.origin + "/coverage")
    assert refused is not None and refused.status == 403
    assert "/metrics only" in page.locator("#error-message").inner_text()
    metrics = goto(page, console.origin + "/metrics")
    assert metrics is not None and metrics.status == 200
    families = {f.name: f for f in text_string_to_metric_families(metrics.text())}
    report = status_json(console.cluster)
    assert families["certsync_epoch"].samples[0].value == report["epoch"]
    p1 = next(n for n in report["nodes"] if n["name"] == "p1")
    assert families["certsync_revision"].samples[0].value == p1["revision"]
    shas = {s.labels["sha256"] for s in families["certsync_certificate_not_after_seconds"]
            .samples}
    assert {console.default_sha, console.keyless_sha} <= shas
    page.context.close()


# --------------------------------------------------------------------------- pages


def test_certificates_list_shows_the_chain_warning_beneath_the_name(
    admin_page: Any, console: Console
) -> None:
    response = goto(admin_page, console.origin + "/")
    assert response is not None and response.status == 200
    headers = response.headers
    assert "script-src" not in headers["content-security-policy"]
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
    keyless = admin_page.locator(f'tr[data-sha256="{console.keyless_sha}"]')
    warnings = keyless.locator("td.name .chain-warning")
    assert warnings.count() == 2
    assert "No private key" in warnings.nth(0).inner_text()
    assert "Chain incomplete: no certificate for issuer" in warnings.nth(1).inner_text()
    assert keyless.locator("td.key").inner_text() == "no"
    default = admin_page.locator(f'tr[data-sha256="{console.default_sha}"]')
    assert default.locator("td.name .chain-warning").count() == 0  # the twin: no warning
    assert "default" in default.locator("td.default-mark").inner_text()
    assert "days left" in default.locator("td.expiry").inner_text()
    assert SITE in default.locator("td.sans").inner_text()
    screenshot(admin_page, "certificates")


def test_a_hostile_friendly_name_is_shown_as_text(admin_page: Any, console: Console) -> None:
    goto(admin_page, console.origin + "/")
    link = admin_page.locator(f'tr[data-sha256="{console.keyless_sha}"] td.name a')
    assert link.inner_text() == HOSTILE_NAME
    assert admin_page.locator("script").count() == 0
    assert admin_page.dialogs == []
    goto(admin_page, console.origin + "/audit?action=cert.add")
    details = admin_page.locator("td.detail").all_inner_texts()
    assert any(HOSTILE_NAME in text for text in details), details
    assert admin_page.locator("script").count() == 0 and admin_page.dialogs == []


def test_coverage_matrix_marks_the_uncovered_node_name(admin_page: Any, console: Console) -> None:
    wait_probed(console.cluster)
    goto(admin_page, console.origin + "/coverage")
    uncovered = admin_page.locator('tr[data-hostname="b1.example.com"] td[data-node="b1"]')
    assert uncovered.get_attribute("data-state") == "uncovered"
    assert uncovered.locator(".state").inner_text() == "NOT COVERED"
    covered = admin_page.locator(f'tr[data-hostname="{SITE}"] td[data-node="p1"]')
    assert covered.get_attribute("data-state") == "ok"
    assert covered.locator(".served").inner_text() == f"served {console.default_sha[:16]}"
    bg = "el => getComputedStyle(el).backgroundColor"
    assert uncovered.evaluate(bg) != covered.evaluate(bg)  # it stands out
    by = admin_page.locator('tr[data-hostname="p1.example.com"] td.by').inner_text()
    assert by.startswith("p1.example.com")
    not_there = admin_page.locator('tr[data-hostname="b1.example.com"] td[data-node="p1"]')
    assert not_there.get_attribute("data-state") == "n/a"
    screenshot(admin_page, "coverage")


def test_timeline_draws_bars_windows_and_now(admin_page: Any, console: Console) -> None:
    goto(admin_page, console.origin + "/timeline")
    listed = admin_page.locator("svg.timeline g.cert")
    count = len(cli_ok(console.cluster, "cert", "list", "--json").split('"sha256"')) - 1
    assert listed.count() == count
    default = admin_page.locator(f'svg.timeline g[data-sha256="{console.default_sha}"]')
    assert default.get_attribute("class") == "cert default"
    others = admin_page.locator("svg.timeline rect.bar.default")
    assert others.count() == 1

    def box(sel: str) -> tuple[float, float]:
        el = default.locator(sel)
        return float(el.get_attribute("x")), float(el.get_attribute("width"))

    bar_x, bar_w = box("rect.bar")
    renew_x, renew_w = box("rect.window.renewal")
    alert_x, alert_w = box("rect.window.alert")
    assert renew_w > alert_w > 0  # 30 days wider than 25
    assert renew_x + renew_w == pytest.approx(bar_x + bar_w, abs=0.05)
    assert alert_x + alert_w == pytest.approx(bar_x + bar_w, abs=0.05)
    now_x = float(admin_page.locator("svg.timeline line.now").get_attribute("x1"))
    assert bar_x <= now_x < renew_x  # made today, not yet in its renewal window
    line = admin_page.locator("svg.timeline line.now").bounding_box()
    assert line is not None and line["height"] > 50  # drawn across the bars
    screenshot(admin_page, "timeline")


def test_audit_page_after_an_import(admin_page: Any, console: Console, tmp_path: Path) -> None:
    extra = make_leaf(None, ["audit.example.com"], key=None)
    path = tmp_path / "audited.pem"
    path.write_bytes(pem_bundle(extra.cert, key=extra.key))
    sha = cli_ok(console.cluster, "cert", "import", str(path), "--name", "audited").split()[0]
    goto(admin_page, console.origin + "/audit")
    newest = admin_page.locator("tr.event").first
    assert newest.locator("td.actor").inner_text() == "admin:admin"
    assert newest.locator("td.action").inner_text() == "cert.add"
    assert newest.locator("td.target").inner_text() == sha[:16]
    screenshot(admin_page, "audit")
    goto(admin_page, console.origin + "/audit?actor=admin:admin&action=csr.add")
    rows = admin_page.locator("tr.event")
    assert rows.count() == 1 and rows.first.locator("td.action").inner_text() == "csr.add"
    goto(admin_page, console.origin + "/audit?actor=node:nobody")
    assert admin_page.locator("tr.event").count() == 0  # the twin: a filter that matches none
    bad = goto(admin_page, console.origin + "/audit?page=0")
    assert bad is not None and bad.status == 400


def test_nodes_page_agrees_with_status(admin_page: Any, console: Console) -> None:
    report = wait_probed(console.cluster)
    goto(admin_page, console.origin + "/nodes")
    for node in report["nodes"]:
        row = admin_page.locator(f'tr.node[data-node="{node["name"]}"]')
        assert row.locator("td.in-sync").inner_text() == ("yes" if node["in_sync"] else "no")
        assert node["admin_url"].startswith("https://")
        assert row.locator("th a").get_attribute("href") == node["admin_url"]
    screenshot(admin_page, "nodes")


def test_requests_show_the_pem_to_copy(admin_page: Any, console: Console) -> None:
    goto(admin_page, console.origin + "/requests")
    pem = admin_page.locator("section.request textarea.pem").first.input_value()
    assert pem.startswith("-----BEGIN CERTIFICATE REQUEST-----")
    assert x509.load_pem_x509_csr(pem.encode()).subject.rfc4514_string() == f"CN={SITE}"
    assert admin_page.locator("section.request .badge").first.inner_text() == "pending"
    screenshot(admin_page, "requests")


def test_detail_page_downloads_certificates_only(admin_page: Any, console: Console) -> None:
    goto(admin_page, f"{console.origin}/certificates/{console.default_sha}")
    assert console.default_sha in admin_page.locator("dl.facts").inner_text()
    assert admin_page.locator("table.coverage-list tr.uncovered").count() == 1
    screenshot(admin_page, "detail")
    for fmt in ("pem", "der", "p7b"):
        link = admin_page.locator(f'p.downloads a[href$="/download/{fmt}"]')
        assert link.is_visible()
        response = admin_page.request.get(console.origin + link.get_attribute("href"))
        assert response.status == 200
        assert response.headers["content-disposition"].startswith("attachment;")
        body = response.body()
        assert b"PRIVATE KEY" not in body
        if fmt == "pem":
            assert x509.load_pem_x509_certificate(body).fingerprint is not None
        if fmt == "der":
            assert x509.load_der_x509_certificate(body).subject.rfc4514_string() == f"CN={SITE}"
    for fmt in ("p12", "key"):  # the twins: there is no such download
        response = admin_page.request.get(
            f"{console.origin}/certificates/{console.default_sha}/download/{fmt}")
        assert response.status == 404
