"""A real cluster (``certsync node serve`` processes) and a real browser for the console.

One cluster per module (p1 primary, b1 backup), prepared as an admin would: a default
certificate that covers the site and p1 but not b1's hostname, a certificate imported
without its key and without its issuer (the chain warning), whose friendly name is
``<script>alert(1)</script>``, and a CSR. The browser is Debian's Chromium
(``/usr/bin/chromium``) driven by Playwright; nothing is downloaded. Without Chromium or
Playwright the tests skip, and fail under CI (tests/_ci.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sync.localcluster import LocalCluster
from tests._ci import require, require_chromium, require_tool
from tests.cluster.conftest import cli_ok, wait_until
from tests.pki import make_chain, pem_bundle

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
SITE = "support.example.com"
HOSTILE_NAME = "<script>alert(1)</script>"


@dataclass(frozen=True)
class Console:
    """The prepared cluster and what the tests look for."""

    cluster: LocalCluster
    origin: str  # p1's console, as the browser reaches it
    admin_address: str
    default_sha: str
    keyless_sha: str

    @property
    def directory(self) -> Path:
        return self.cluster.directory

    def admin_p12(self) -> dict[str, str]:
        passphrase = (self.directory / "admin.p12.pass").read_text().rstrip("\n")
        return {"origin": self.origin, "pfxPath": str(self.directory / "admin.p12"),
                "passphrase": passphrase}

    def pem_identity(self, cert: Path, key: Path) -> dict[str, str]:
        return {"origin": self.origin, "certPath": str(cert), "keyPath": str(key)}


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    require_tool("openssl", "needed by the cluster's probes; deploy/setup.sh installs it")
    tmp = tmp_path_factory.mktemp("console")
    cluster = LocalCluster.create(tmp / "c", site=SITE, primary=("p1", "p1.example.com"),
                                  backup=("b1", "b1.example.com"), sync_interval=2)
    try:
        cluster.start_all()
        out = cli_ok(cluster, "cert", "create-self-signed", "--name", "site", "--key",
                     "ec-p256", "--cn", SITE, "--san", SITE, "--san", "p1.example.com",
                     "--default", "--force")  # b1's name uncovered on purpose (the matrix)
        default_sha = out.split()[0]
        pki = make_chain("ec-p256", sans=["legacy.example.com"])
        leaf = tmp / "leaf-only.pem"
        leaf.write_bytes(pem_bundle(pki.leaf.cert))
        keyless_sha = cli_ok(cluster, "cert", "import", str(leaf), "--name",
                             HOSTILE_NAME).split()[0]
        cli_ok(cluster, "request", "create", "--name", "next-year", "--key", "ec-p256",
               "--cn", SITE, "--san", SITE)
        spec = cluster.spec("p1")
        assert spec.admin_address is not None
        yield Console(cluster=cluster, origin=f"https://{spec.admin_address}",
                      admin_address=spec.admin_address, default_sha=default_sha,
                      keyless_sha=keyless_sha)
    finally:
        cluster.stop_all()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = require_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the dev extra installs it
        require(False, "Playwright for Python (pip install -e '.[dev]')")
        raise
    with sync_playwright() as pw:
        # --no-sandbox: CI and the dev machines run as root, where Chromium's sandbox cannot start
        b = pw.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def screenshot(page: Any, name: str) -> Path:
    """Save what the page shows under tests/artifacts/ (kept out of git)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"console-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def status_json(cluster: LocalCluster) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(cli_ok(cluster, "status", "--json"))
    return report


def wait_probed(cluster: LocalCluster) -> dict[str, Any]:
    """Wait until p1 reports its own set (the probe has something to compare with)."""
    def ready() -> dict[str, Any] | None:
        report = status_json(cluster)
        p1 = next(n for n in report["nodes"] if n["name"] == "p1")
        return report if p1["in_sync"] else None

    return wait_until(ready, what="p1 in sync with itself")


def goto(page: Any, url: str) -> Any:
    """``page.goto(url)``, again when Chromium reports ERR_NETWORK_CHANGED: it cancels a
    navigation whenever an interface of the machine changes (other test runs create and drop
    network namespaces and addresses); any other error is raised at once."""
    from playwright.sync_api import Error

    for attempt in range(3):
        try:
            return page.goto(url)
        except Error as err:
            if "ERR_NETWORK_CHANGED" not in str(err) or attempt == 2:
                raise
    raise AssertionError("unreachable")
