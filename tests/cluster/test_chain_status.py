"""Chains over the whole store, on a cluster of real node processes on loopback (issue 11).

A CA-signed leaf imported alone (with its key) as the default, then its intermediate and
root one by one: ``cert list`` shows the chain state (and a warning beneath an incomplete
chain), every node sends the stored chain (``openssl s_client -CAfile root.pem`` verifies),
``status`` warns about a chain without its root but keeps the nodes in sync, ``cert show``
has DESIGN.md's keys and names the nodes that serve it; deleting the intermediate breaks
the chain everywhere and ``status`` says so.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from pathlib import Path
from typing import Any

from sync.localcluster import LocalCluster
from tests.cluster.conftest import (
    BACKUP,
    COVERING,
    PRIMARY,
    SITE,
    MakeCluster,
    cli_ok,
    wait_in_sync,
    wait_until,
)
from tests.pki import make_chain, pem_bundle

SHOW_KEYS = {
    "sha256", "name", "subject", "issuer", "dns_names", "ip_addresses", "key_type", "has_key",
    "key_source", "chain", "chain_complete", "chain_problems", "coverage", "not_before",
    "not_after", "days_left", "renewal_state", "default", "served_by",
}


def _verify_code(address: str, root_pem: Path, name: str) -> int:
    host, _, port = address.rpartition(":")
    proc = subprocess.run(
        ["openssl", "s_client", "-connect", f"{host}:{port}", "-servername", name,
         "-CAfile", str(root_pem), "-verify_hostname", name],
        input="", capture_output=True, text=True, timeout=30, check=False)
    found = re.search(r"Verify return code: (\d+)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    return int(found.group(1))


def _codes(cluster: LocalCluster, root_pem: Path) -> dict[str, int]:
    """openssl's verdict per node, for the site and for the node's own hostname."""
    return {f"{n}/{host}": _verify_code(cluster.spec(n).tls_address, root_pem, host)
            for n in cluster.names for host in (SITE, cluster.spec(n).hostname)}


def _report(cluster: LocalCluster) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cli_ok(cluster, "status", "--json"))
    return out


def _listed(cluster: LocalCluster) -> dict[str, dict[str, Any]]:
    return {c["sha256"]: c for c in json.loads(cli_ok(cluster, "cert", "list", "--json"))}


def _import(cluster: LocalCluster, tmp_path: Path, name: str, data: bytes, *flags: str) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return cli_ok(cluster, "cert", "import", str(path), *flags).strip()


def test_status_and_views_follow_the_chain_over_the_store(
    make_cluster: MakeCluster, tmp_path: Path
) -> None:
    cluster = make_cluster(traffic=(("t1", "t1.atlas.example.com"),))
    now = dt.datetime.now(dt.UTC)
    pki = make_chain(sans=COVERING, not_before=now - dt.timedelta(days=1),
                     not_after=now + dt.timedelta(days=90),
                     intermediate_cn="Example Intermediate CA")
    root_pem = tmp_path / "root.pem"
    root_pem.write_bytes(pem_bundle(pki.root.cert))

    leaf = _import(cluster, tmp_path, "leaf.pem", pem_bundle(pki.leaf.cert, key=pki.leaf.key),
                   "--default")
    row = _listed(cluster)[leaf]
    assert row["chain_complete"] is False
    assert any("Example Intermediate CA" in p for p in row["chain_problems"])
    table = cli_ok(cluster, "cert", "list")
    assert "warning: chain incomplete" in table and "Example Intermediate CA" in table

    inter = _import(cluster, tmp_path, "inter.pem", pem_bundle(pki.intermediate.cert))
    wait_in_sync(cluster)
    report = _report(cluster)
    warnings = [p for p in report["problems"] if "lacks its root" in p]
    assert len(warnings) == 1 and warnings[0].startswith("warning: "), report["problems"]
    assert all(n["in_sync"] for n in report["nodes"])  # a missing root: not out of sync
    # every node sends the intermediate imported later: verified, for every name
    assert set(_codes(cluster, root_pem).values()) == {0}

    root = _import(cluster, tmp_path, "root.pem", pem_bundle(pki.root.cert))
    wait_in_sync(cluster)
    report = _report(cluster)
    assert not [p for p in report["problems"] if "chain" in p], report["problems"]
    listed = _listed(cluster)
    assert listed[leaf]["chain_complete"] and listed[leaf]["chain_problems"] == []
    assert "warning: chain incomplete" not in cli_ok(cluster, "cert", "list")

    shown = json.loads(cli_ok(cluster, "cert", "show", leaf, "--json"))
    assert set(shown) == SHOW_KEYS
    assert [c["sha256"] for c in shown["chain"]] == [leaf, inter, root]
    assert [c["role"] for c in shown["chain"]] == ["identity", "intermediate", "root"]
    assert shown["chain_complete"] and shown["default"] and shown["has_key"]
    assert shown["key_source"] == "import" and shown["key_type"] == "ec-p256"
    assert sorted(shown["served_by"]) == sorted(cluster.names)
    assert {r["hostname"] for r in shown["coverage"]} == {
        SITE, PRIMARY[1], BACKUP[1], "t1.atlas.example.com"}
    assert all(r["covered"] for r in shown["coverage"])
    # twin: a certificate nobody serves (the root) is served by no node
    assert json.loads(cli_ok(cluster, "cert", "show", root, "--json"))["served_by"] == []
    assert "served by" in cli_ok(cluster, "cert", "show", leaf)

    # the intermediate goes (forced past a delete guard, if there is one)
    force = ["--force"] if "--force" in cli_ok(cluster, "cert", "delete", "--help") else []
    cli_ok(cluster, "cert", "delete", inter, *force)

    def broken() -> dict[str, Any] | None:
        report = _report(cluster)
        named = [p for p in report["problems"] if "is incomplete" in p]
        return report if named else None

    report = wait_until(broken, what="status naming the broken chain")
    assert any("Example Intermediate CA" in p for p in report["problems"])
    assert _listed(cluster)[leaf]["chain_complete"] is False
    wait_in_sync(cluster)
    assert 0 not in set(_codes(cluster, root_pem).values())
