"""One in-process node: chains built over the whole store, in its answers and on the wire.

A leaf imported alone (with its key), its intermediate and root later, one by one: ``List``
and ``ShowCertificate`` follow each step, and the TLS endpoint sends every intermediate of
the stored chain -- ``openssl s_client -CAfile root.pem`` verifies it (return code 0), and
no longer once the intermediate is deleted (the twin).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import inspect
import re
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from node.app import NodeApp
from node.errors import NotFound
from node.store import Store
from node.tls import TlsEndpoint
from sync.cli import main as cli_main
from sync.client import NodeClient, NodeTarget
from sync.config import load_node_config, load_store_key
from sync.daemon import cluster_of
from sync.probe import served_chain
from tests._ci import require_tool
from tests.node.helpers import serve_store_api
from tests.pki import make_chain, pem_bundle

SITE = "support.example.com"


@dataclass
class Node:
    port: int
    tls_port: int
    cluster_dir: Path

    def client(self) -> NodeClient:
        d = self.cluster_dir
        return NodeClient(NodeTarget.from_files(
            name="p1", address=f"127.0.0.1:{self.port}", ca_cert=d / "ca.pem",
            cert=d / "admin.pem", key=d / "admin-key.pem"), timeout=10)


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cluster") / "c"
    assert cli_main(["cluster", "init", str(d), "--site", SITE,
                     "--primary", "p1=p1.example.com"]) == 0
    return d


@pytest.fixture
async def node(cluster_dir: Path, tmp_path: Path) -> AsyncIterator[Node]:
    config = load_node_config(cluster_dir / "p1" / "node.toml")
    store = await Store.open(tmp_path / "store.sqlite3", load_store_key(config.store_key_path))
    endpoint = TlsEndpoint(node_name="p1", workers=2)
    tls_port = endpoint.start("127.0.0.1", 0)
    app = NodeApp(name="p1", cluster=cluster_of(config.topology, "p1"), store=store,
                  endpoint=endpoint)
    await app.refresh()
    server, port = await serve_store_api(app, config)
    try:
        yield Node(port, tls_port, cluster_dir)
    finally:
        await server.stop(None)
        endpoint.stop()
        await store.close()


def _sha(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _verify_code(port: int, root_pem: Path) -> int:
    """openssl's verdict on what the endpoint sends for the site (0: verified)."""
    proc = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", SITE,
         "-CAfile", str(root_pem), "-verify_hostname", SITE],
        input="", capture_output=True, text=True, timeout=30, check=False)
    found = re.search(r"Verify return code: (\d+)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    return int(found.group(1))


async def test_the_chain_follows_the_store_and_the_endpoint_sends_it(
    node: Node, tmp_path: Path
) -> None:
    require_tool("openssl", "verifies what the endpoint sends")
    now = dt.datetime.now(dt.UTC)
    pki = make_chain(sans=(SITE,), not_before=now - dt.timedelta(days=1),
                     not_after=now + dt.timedelta(days=90),
                     intermediate_cn="Example Intermediate CA")
    leaf, inter, root = pki.leaf.cert, pki.intermediate.cert, pki.root.cert
    root_pem = tmp_path / "root.pem"
    root_pem.write_bytes(pem_bundle(root))

    address = f"127.0.0.1:{node.tls_port}"

    async def verify() -> int:
        return await asyncio.to_thread(_verify_code, node.tls_port, root_pem)

    async with node.client() as c:
        resp = await c.import_files([("leaf.pem", pem_bundle(leaf, key=pki.leaf.key))])
        sha = resp.identity_sha256
        info = await c.show_certificate(sha)
        assert not info.chain_complete and not info.chain_missing_root
        assert "no certificate for issuer CN=Example Intermediate CA" in info.chain_problems[0]
        assert [link.sha256 for link in info.chain] == [sha]
        assert info.key_source == "import" and info.key_type == "ec-p256"
        assert info.not_before and info.not_after
        assert await verify() != 0  # the leaf alone: unable to verify

        await c.import_files([("inter.pem", pem_bundle(inter))])  # a later import
        info = await c.show_certificate(sha)
        assert info.chain_missing_root and not info.chain_complete
        assert [link.sha256 for link in info.chain] == [sha, _sha(inter)]
        assert list(info.chain_sent) == [_sha(inter)]
        assert await verify() == 0  # the intermediate imported later is sent
        # the probe of status records the same chain
        assert await served_chain(address, SITE, timeout=10) == (sha, _sha(inter))

        await c.import_files([("root.pem", pem_bundle(root))])
        info = await c.show_certificate(sha)
        assert info.chain_complete and list(info.chain_problems) == []
        assert [(link.sha256, link.role) for link in info.chain] == [
            (sha, "identity"), (_sha(inter), "intermediate"), (_sha(root), "root")]
        listed = {x.sha256: x for x in await c.list_certificates()}
        assert listed[sha].chain_complete and listed[_sha(inter)].chain_complete
        assert listed[_sha(inter)].key_source == ""  # no key stored for it
        assert await verify() == 0

        # the intermediate goes (forced past a delete guard, if the client has one): the state
        # follows, so does the wire
        forced: dict[str, Any] = (
            {"force": True} if "force" in inspect.signature(c.delete).parameters else {})
        await c.delete(_sha(inter), **forced)
        info = await c.show_certificate(sha)
        assert not info.chain_complete and not info.chain_missing_root
        listed = {x.sha256: x for x in await c.list_certificates()}
        assert not listed[sha].chain_complete and listed[sha].chain_problems
        assert await verify() != 0
        assert await served_chain(address, SITE, timeout=10) == (sha,)


async def test_show_of_an_unknown_certificate_is_not_found(node: Node) -> None:
    async with node.client() as c:
        with pytest.raises(NotFound):
            await c.show_certificate("0" * 64)


@pytest.mark.parametrize("stored_first", [True, False])
async def test_an_import_warns_about_the_chain_as_stored(node: Node, stored_first: bool) -> None:
    """The leaf imported alone: no warning about its issuer when the intermediate (and root)
    are stored already; the twin, an empty store, names the missing issuer."""
    pki = make_chain(intermediate_cn="Example Intermediate CA")
    async with node.client() as c:
        if stored_first:
            await c.import_files([("ca.pem", pem_bundle(pki.intermediate.cert, pki.root.cert))])
        resp = await c.import_files([("leaf.pem", pem_bundle(pki.leaf.cert, key=pki.leaf.key))])
    issuer_warnings = [w for w in resp.warnings if "Example Intermediate CA" in w]
    assert bool(issuer_warnings) is not stored_first, list(resp.warnings)
    leaf_info = next(i for i in resp.certificates if i.sha256 == resp.identity_sha256)
    assert leaf_info.chain_complete is stored_first
