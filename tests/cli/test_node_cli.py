"""``certsync node serve`` as a real process, driven by the admin CLI and checked with openssl.

One node is started per module from a cluster made by ``certsync cluster init``; commands
run as subprocesses exactly as a user (or an outside test) types them.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from sync.localcluster import free_port_range
from tests._ci import require_tool

CERTSYNC = str(Path(sys.executable).parent / "certsync")
CANARY = "canary-cli-passphrase-51c0"
DEADLINE = 30.0




def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [CERTSYNC, *args], capture_output=True, text=True, timeout=60, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"certsync {args} -> {proc.returncode}: {proc.stderr}")
    return proc


@dataclass
class Cluster:
    directory: Path
    process: subprocess.Popen[bytes]
    tls_port: int
    grpc_port: int
    log: Path

    @property
    def admin(self) -> str:
        return str(self.directory / "admin.toml")

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("--config", self.admin, *args, check=check)


def _wait_ready(cluster: Cluster) -> None:
    deadline = time.monotonic() + DEADLINE
    while True:
        if cluster.process.poll() is not None:
            raise AssertionError(f"node exited with {cluster.process.returncode}")
        if cluster.cli("cert", "list", check=False).returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError("node did not answer within the deadline")
        time.sleep(0.2)  # polling a subprocess for readiness, bounded by the deadline


def _start(directory: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen(
            [CERTSYNC, "node", "serve", "--config", str(directory / "p1" / "node.toml")],
            stdout=fh,
            stderr=fh,
        )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cli")
    directory = root / "c"
    base = free_port_range(3)  # gRPC, TLS, console
    run(
        "cluster", "init", str(directory), "--site", "support.example.com",
        "--primary", "p1=p1.example.com", "--base-port", str(base),
    )
    proc = _start(directory, root / "node.log")
    c = Cluster(directory, proc, tls_port=base + 1, grpc_port=base, log=root / "node.log")
    try:
        _wait_ready(c)
        yield c
    finally:
        if c.process.poll() is None:
            c.process.send_signal(signal.SIGTERM)
            c.process.wait(timeout=30)


def _openssl_served_sha(port: int, server_name: str | None) -> str:
    args = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}"]
    args += ["-servername", server_name] if server_name else ["-noservername"]
    proc = subprocess.run(
        args, input="", capture_output=True, text=True, timeout=30, check=False
    )
    pem = proc.stdout[proc.stdout.index("-----BEGIN CERTIFICATE-----"):]
    cert = x509.load_pem_x509_certificate(pem.encode())
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def test_create_list_and_sni_match_what_openssl_sees(cluster: Cluster) -> None:
    sha = cluster.cli(
        "cert", "create-self-signed", "--name", "site", "--key", "ec-p256",
        "--cn", "support.example.com", "--san", "support.example.com",
        "--san", "*.atlas.example.com",
    ).stdout.strip()
    assert len(sha) == 64
    listed = json.loads(cluster.cli("cert", "list", "--json").stdout)
    row = next(r for r in listed if r["sha256"] == sha)
    assert set(row) >= {"sha256", "name", "role", "has_key", "default", "dns_names", "not_after"}
    assert row["dns_names"] == ["support.example.com", "*.atlas.example.com"]
    for name in ("support.example.com", "t1.atlas.example.com", None):
        args = ["sni", name, "--json"] if name else ["sni", "--json"]
        answer = json.loads(cluster.cli(*args).stdout)
        assert answer["sha256"] == _openssl_served_sha(cluster.tls_port, name)


def test_import_export_roundtrip_and_pem_has_no_key(cluster: Cluster, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.node.test_service import _cert

    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert(key, ["imp.example.com"])
    p12 = tmp_path / "in.bin"  # no extension: detected by content
    p12.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"imp", key, cert, None, serialization.BestAvailableEncryption(CANARY.encode())
        )
    )
    pw = tmp_path / "pw"
    pw.write_text(CANARY + "\n")
    sha = cluster.cli("cert", "import", str(p12), "--passphrase-file", str(pw)).stdout.strip()
    assert sha == hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert json.loads(cluster.cli("sni", "imp.example.com", "--json").stdout)["sha256"] == sha
    assert _openssl_served_sha(cluster.tls_port, "imp.example.com") == sha

    out_pem = tmp_path / "out.pem"
    cluster.cli("cert", "export", sha, "--out", str(out_pem))
    assert x509.load_pem_x509_certificate(out_pem.read_bytes()) == cert
    assert b"PRIVATE KEY" not in out_pem.read_bytes()
    out_p12 = tmp_path / "out.p12"
    cluster.cli(
        "cert", "export", sha, "--out", str(out_p12), "--format", "p12",
        "--passphrase-file", str(pw),
    )
    assert out_p12.stat().st_mode & 0o777 == 0o600
    proc = subprocess.run(
        [require_tool("openssl"), "pkcs12", "-in", str(out_p12), "-nokeys",
         "-passin", f"file:{pw}"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "BEGIN CERTIFICATE" in proc.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["cert", "import", "/nonexistent/file.pem"], "does not exist"),
        (["cert", "default", "0" * 64], "0" * 64),
        (["cert", "delete", "nothex"], "SHA-256"),
        (["sni", "http://bad/"], "http://bad/"),
        (["request", "show", "ffffffffffffffff"], "ffffffffffffffff"),
        (["--node", "nosuch", "cert", "list"], "nosuch"),
    ],
)
def test_errors_are_one_line_exit_2(cluster: Cluster, args: list[str], needle: str) -> None:
    proc = cluster.cli(*args, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("certsync: error:")
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr


def test_wrong_passphrase_is_exit_2_without_the_passphrase(
    cluster: Cluster, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.node.test_service import _cert

    key = ec.generate_private_key(ec.SECP256R1())
    blob = tmp_path / "x.p12"
    blob.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"x", key, _cert(key, ["w.example.com"]), None,
            serialization.BestAvailableEncryption(b"right-one"),
        )
    )
    pw = tmp_path / "pw"
    pw.write_text(CANARY)
    proc = cluster.cli("cert", "import", str(blob), "--passphrase-file", str(pw), check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("certsync: error:")
    assert CANARY not in proc.stderr + proc.stdout


def test_node_log_is_json_with_rpc_context_and_no_canary(cluster: Cluster) -> None:
    """Runs after the imports above (module order): the canary passphrase was sent."""
    cluster.cli("cert", "list")
    lines = cluster.log.read_text().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    rpcs = [e for e in events if e["event"] == "rpc.ok"]
    assert rpcs and {"method", "peer", "caller", "timestamp", "level"} <= set(rpcs[-1])
    assert any(e.get("method") == "Import" for e in rpcs)
    assert CANARY not in cluster.log.read_text()
    assert "PRIVATE KEY" not in cluster.log.read_text()


def test_request_create_list_show(cluster: Cluster) -> None:
    created = cluster.cli(
        "request", "create", "--key", "ec-p256", "--cn", "csr.example.com",
        "--san", "csr.example.com", "--json",
    )
    csr_id = json.loads(created.stdout)["id"]
    listed = json.loads(cluster.cli("request", "list", "--json").stdout)
    assert csr_id in [r["id"] for r in listed]
    pem = cluster.cli("request", "show", csr_id).stdout
    assert x509.load_pem_x509_csr(pem.encode()).is_signature_valid


def test_status_reports_the_node(cluster: Cluster) -> None:
    report = json.loads(cluster.cli("status", "--json").stdout)
    (node,) = report["nodes"]
    assert node["name"] == "p1" and node["reachable"] is True and node["in_sync"] is True
    assert set(node) >= {
        "name", "role", "hostname", "grpc_address", "tls_address", "reachable", "epoch",
        "digest", "in_sync", "default_sha256", "last_sync",
    }


def test_sigterm_stops_the_node_cleanly_and_then_it_is_unreachable(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "c"
    base = free_port_range(3)  # gRPC, TLS, console
    run(
        "cluster", "init", str(directory), "--site", "s.example.com",
        "--primary", "p1=p1.example.com", "--base-port", str(base),
    )
    log = tmp_path / "node.log"
    proc = _start(directory, log)
    c = Cluster(directory, proc, tls_port=base + 1, grpc_port=base, log=log)
    try:
        _wait_ready(c)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert "node.stopped" in [e["event"] for e in events]
    after = c.cli("cert", "list", check=False)
    assert after.returncode == 2
    assert "is unreachable" in after.stderr and "is it running?" in after.stderr
    assert (directory / "p1" / "store.sqlite3").exists()
