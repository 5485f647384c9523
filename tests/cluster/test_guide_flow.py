"""The appliance guide's production flow on real processes (issue 11, the store side).

An openssl root and issuing CA sign the CSR that ``request create`` made; the signed leaf
imported alone is linked to the CSR's key; the chain arrives file by file; the leaf is the
default and served; a renewal imported alone takes over; the intermediate it needs cannot be
deleted (unless forced); a re-key links the same way; a CSR made before a failover
completes on the promoted backup. Each step has its negative twin.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from sync.config import load_node_config
from sync.localcluster import LocalCluster
from tests.cluster.conftest import (
    SITE,
    MakeCluster,
    cli_ok,
    wait_served,
    wait_until,
)

NAMES = ("support.example.com", "*.example.com", "*.atlas.example.com")
TRAFFIC = (("t1", "t1.atlas.example.com"),)


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, f"openssl {' '.join(args)}: {proc.stderr}"


class OpensslCa:
    """A root CA and an issuing (intermediate) CA made with the openssl command line."""

    def __init__(self, where: Path, tag: str = "Example") -> None:
        self.dir = where
        where.mkdir(parents=True, exist_ok=True)
        (where / "ca.ext").write_text(
            "[ca]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
            "[leaf]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid\n")
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", "root.key", "-out", "root.pem", "-days", "3650",
                 "-subj", f"/CN={tag} Root CA", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=where)
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", "int.key", "-out", "int.csr",
                 "-subj", f"/CN={tag} Intermediate CA", cwd=where)
        _openssl("x509", "-req", "-in", "int.csr", "-CA", "root.pem", "-CAkey", "root.key",
                 "-CAcreateserial", "-days", "1825", "-extfile", "ca.ext", "-extensions", "ca",
                 "-out", "int.pem", cwd=where)
        self.root = where / "root.pem"
        self.intermediate = where / "int.pem"

    def sign(self, csr_pem: str, out: str, *, days: int) -> Path:
        """The leaf for ``csr_pem`` (its SANs copied), valid ``days`` days."""
        (self.dir / f"{out}.csr").write_text(csr_pem)
        _openssl("x509", "-req", "-in", f"{out}.csr", "-CA", "int.pem", "-CAkey", "int.key",
                 "-CAcreateserial", "-days", str(days), "-copy_extensions", "copy",
                 "-extfile", "ca.ext", "-extensions", "leaf", "-out", f"{out}.pem",
                 cwd=self.dir)
        return self.dir / f"{out}.pem"

    def leaf_with_own_key(self, out: str, *, days: int) -> Path:
        """A leaf for the guide's names whose key never reaches certsync."""
        sans = ",".join(f"DNS:{n}" for n in NAMES)
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", f"{out}.key", "-out", f"{out}.csr",
                 "-subj", f"/CN={SITE}", "-addext", f"subjectAltName={sans}", cwd=self.dir)
        return self.sign((self.dir / f"{out}.csr").read_text(), out, days=days)


def _verifies(cluster: LocalCluster, node: str, name: str, root: Path) -> bool:
    """``openssl s_client -verify_return_error`` against ``root`` for ``name`` passes."""
    host, _, port = cluster.spec(node).tls_address.rpartition(":")
    proc = subprocess.run(
        ["openssl", "s_client", "-connect", f"{host}:{port}", "-servername", name,
         "-CAfile", str(root), "-verify_return_error", "-verify_hostname", name],
        input="", capture_output=True, text=True, timeout=30, check=False)
    return proc.returncode == 0 and "Verify return code: 0 (ok)" in proc.stdout


def _request(cluster: LocalCluster, *where: str) -> tuple[str, str]:
    """``request create`` for the guide's names: (id, CSR PEM)."""
    sans = [a for n in NAMES for a in ("--san", n)]
    out = json.loads(cli_ok(cluster, *where, "request", "create", "--key", "ec-p256",
                            "--cn", SITE, *sans, "--json"))
    return out["id"], out["pem"]


def _certs(cluster: LocalCluster, *where: str) -> dict[str, dict[str, Any]]:
    return {c["sha256"]: c for c in json.loads(cli_ok(cluster, *where, "cert", "list",
                                                      "--json"))}


def _requests(cluster: LocalCluster, *where: str) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in json.loads(cli_ok(cluster, *where, "request", "list",
                                                  "--json"))}


def _import(cluster: LocalCluster, path: Path, *extra: str) -> tuple[str, str]:
    proc = cluster.cli(*extra, "cert", "import", str(path))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip(), proc.stderr


def test_the_guide_flow_csr_signed_leaf_chain_default_renewal_delete_rekey_failover(
    make_cluster: MakeCluster, tmp_path: Path
) -> None:
    cluster = make_cluster(traffic=TRAFFIC, sync_interval=1)
    ca = OpensslCa(tmp_path / "ca")

    # -- CSR -> the signed leaf imported alone is linked to the CSR's key
    csr_id, csr_pem = _request(cluster)
    row = _requests(cluster)[csr_id]
    assert row["state"] == "pending" and row["key_type"] == "ec-p256"
    assert row["subject"] == f"CN={SITE}" and row["dns_names"] == list(NAMES)
    # no default yet (the set's push is gated): the CSR reaches the backup all the same
    wait_until(lambda: csr_id in _requests(cluster, "--node", "b1"),
               what="the first CSR replicated to the backup")
    leaf, notes = _import(cluster, ca.sign(csr_pem, "leaf", days=90))
    assert len(leaf) == 64
    linked = [line for line in notes.splitlines() if f"key of request {csr_id}" in line]
    assert len(linked) == 1, notes
    assert _requests(cluster)[csr_id]["state"] == "fulfilled"
    certs = _certs(cluster)
    assert certs[leaf]["has_key"] is True and certs[leaf]["role"] == "identity"
    # negative twin: a leaf whose key is nowhere stays key-less, and no link is claimed
    stray, stray_notes = _import(cluster, ca.leaf_with_own_key("stray", days=90))
    assert _certs(cluster)[stray]["has_key"] is False
    assert "linked" not in stray_notes
    refused = cluster.cli("cert", "default", stray)
    assert refused.returncode == 2 and "no private key" in refused.stderr

    # -- the chain, file by file; the leaf is the default (the first with a key) and served
    _import(cluster, ca.intermediate)
    _import(cluster, ca.root)
    cli_ok(cluster, "cert", "default", leaf)
    assert _certs(cluster)[leaf]["default"] is True
    p12 = tmp_path / "leaf.p12"
    (tmp_path / "pw").write_text("secret\n")
    cli_ok(cluster, "cert", "export", leaf, "--out", str(p12), "--format", "p12",
           "--passphrase-file", str(tmp_path / "pw"))
    assert p12.stat().st_size > 0
    wait_served(cluster, leaf)

    # -- renewal imported alone (same key, later expiry): linked, default, old replaceable
    renewal, notes = _import(cluster, ca.sign(csr_pem, "renewal", days=180))
    assert f"stored key of certificate {leaf}" in notes, notes
    assert "renews the default" in notes, notes
    certs = _certs(cluster)
    assert certs[renewal]["has_key"] and certs[renewal]["default"]
    assert certs[leaf]["replaceable"] is True and certs[renewal]["replaceable"] is False
    wait_served(cluster, renewal)
    for node in cluster.names:
        assert _verifies(cluster, node, SITE, ca.root), node

    # -- another leaf of the same CA is not a CA change (its chain is stored); another CA's is
    other_id, other_pem = _request(cluster)
    same_ca, _ = _import(cluster, ca.sign(other_pem, "same-ca", days=60))
    cli_ok(cluster, "cert", "default", same_ca)
    assert _certs(cluster)[same_ca]["default"] is True
    cli_ok(cluster, "cert", "default", renewal)
    foreign = OpensslCa(tmp_path / "other", tag="Other")
    _, foreign_pem = _request(cluster)
    foreign_leaf, _ = _import(cluster, foreign.sign(foreign_pem, "foreign", days=30))
    _import(cluster, foreign.intermediate)
    changed = cluster.cli("cert", "default", foreign_leaf)
    assert changed.returncode == 2 and "changes the CA" in changed.stderr, changed.stderr
    assert _certs(cluster)[foreign_leaf]["replaceable"] is False  # another issuer

    # -- delete guard: the intermediate the default needs is refused, naming the default
    intermediate = next(s for s, c in _certs(cluster).items()
                        if c["subject"] == "CN=Example Intermediate CA")
    guarded = cluster.cli("cert", "delete", intermediate)
    assert guarded.returncode == 1 and renewal in guarded.stderr, guarded.stderr
    assert intermediate in _certs(cluster)
    # twin: a certificate nothing needs goes
    cli_ok(cluster, "cert", "delete", stray)
    assert stray not in _certs(cluster)

    # -- re-key: a new CSR with a new key for the same names takes over the same way
    rekey_id, rekey_pem = _request(cluster)
    rekeyed, notes = _import(cluster, ca.sign(rekey_pem, "rekey", days=365))
    assert f"key of request {rekey_id}" in notes and "renews the default" in notes, notes
    assert _certs(cluster)[rekeyed]["default"] is True
    wait_served(cluster, rekeyed)

    # -- forced delete of the intermediate: done, and audited
    cli_ok(cluster, "cert", "delete", intermediate, "--force")
    assert intermediate not in _certs(cluster)
    store = load_node_config(cluster.node_toml("p1")).store_path
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT detail FROM audit WHERE action = 'cert.delete'").fetchall()
    details = [json.loads(r[0]) for r in rows]
    forced = [d for d in details if d["sha256"] == intermediate]
    assert forced and forced[0]["forced"] is True and forced[0]["dependents"], details
    # twin: the unforced delete of the stray certificate is not marked forced
    assert all("forced" not in d for d in details if d["sha256"] == stray)
    _import(cluster, ca.intermediate)

    # -- a CSR made before a failover completes on the promoted backup
    late_id, late_pem = _request(cluster)
    wait_until(lambda: late_id in _requests(cluster, "--node", "b1"),
               what="the CSR replicated to the backup")
    # negative twin: the traffic node holds no CSR (the backup only)
    assert _requests(cluster, "--node", "t1") == {}
    assert cluster.stop("p1") == 0
    cli_ok(cluster, "promote", "b1")
    late, notes = _import(cluster, ca.sign(late_pem, "late", days=400), "--node", "b1")
    assert f"key of request {late_id}" in notes, notes
    assert _certs(cluster, "--node", "b1")[late]["has_key"] is True
    assert _requests(cluster, "--node", "b1")[late_id]["state"] == "fulfilled"
    wait_served(cluster, late, ["b1", "t1"])
    del other_id
