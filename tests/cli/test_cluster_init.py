"""`certsync cluster init`: files, modes, certificates (checked by openssl and by a real
mutual-TLS handshake), and a table of bad input that must exit 2 and write nothing."""

from __future__ import annotations

import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509

from node.errors import PermissionDenied
from node.identity import Identity, identity_from_certificate
from sync.cli import main
from sync.config import load_admin_config, load_node_config, load_store_key, load_topology

BASE = ["--site", "support.example.com", "--primary", "p1=p1.example.com",
        "--backup", "b1=b1.example.com", "--traffic", "t1=t1.example.com",
        "--traffic", "t2=t2.example.com"]
SECRETS = ["ca-key.pem", "admin-key.pem", "admin.p12", "admin.p12.pass", "monitor-key.pem",
           *[f"{n}/{f}" for n in ("p1", "b1", "t1", "t2") for f in ("node-key.pem", "store.key")]]
PUBLIC = ["cluster.toml", "ca.pem", "admin.pem", "admin.toml", "monitor.pem",
          *[f"{n}/{f}" for n in ("p1", "b1", "t1", "t2") for f in ("node.pem", "node.toml")]]


def _init(directory: Path, *extra: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(["cluster", "init", str(directory), *extra])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("c") / "cluster"
    rc = main(["cluster", "init", str(directory), *BASE, "--base-port", "9100"])
    assert rc == 0
    return directory


@pytest.fixture(scope="module")
def other_cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("o") / "other"
    assert main(["cluster", "init", str(directory), *BASE]) == 0
    return directory


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_console_script_writes_a_cluster(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sync.cli", "cluster", "init", str(tmp_path / "c"),
         "--site", "support.example.com", "--primary", "p1=p1.example.com"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "p1" in proc.stdout and "127.0.0.1:7400" in proc.stdout
    assert "console https://127.0.0.1:7402/" in proc.stdout  # one node: base + 2N + 0
    assert "admin.p12" in proc.stdout
    assert (tmp_path / "c" / "p1" / "node.toml").is_file()


def test_files_and_modes(cluster_dir: Path) -> None:
    for rel in SECRETS:
        assert stat.S_IMODE((cluster_dir / rel).stat().st_mode) == 0o600, rel
    for rel in PUBLIC:
        assert stat.S_IMODE((cluster_dir / rel).stat().st_mode) == 0o644, rel
    written = sorted(p.relative_to(cluster_dir).as_posix()
                     for p in cluster_dir.rglob("*") if p.is_file())
    assert written == sorted(SECRETS + PUBLIC)


def test_configs_parse_with_agreed_layout(cluster_dir: Path) -> None:
    topo = load_topology(cluster_dir / "cluster.toml")
    assert [(n.name, n.role, n.hostname) for n in topo.nodes] == [
        ("p1", "primary", "p1.example.com"), ("b1", "backup", "b1.example.com"),
        ("t1", "traffic", "t1.example.com"), ("t2", "traffic", "t2.example.com")]
    assert [(n.grpc_address, n.tls_address) for n in topo.nodes] == [
        (f"127.0.0.1:{9100 + 2 * i}", f"127.0.0.1:{9101 + 2 * i}") for i in range(4)]
    assert topo.required_names() == ("support.example.com", "p1.example.com",
                                     "b1.example.com", "t1.example.com", "t2.example.com")
    assert (topo.sync_interval_seconds, topo.stale_after_seconds) == (30, 300)
    for i, spec in enumerate(topo.nodes):
        node = load_node_config(cluster_dir / spec.name / "node.toml")
        assert node.topology == topo
        assert node.spec == spec
        assert node.grpc_listen == f"127.0.0.1:{9100 + 2 * i}"
        assert node.tls_listen == f"127.0.0.1:{9101 + 2 * i}"
        assert node.store_path == cluster_dir / spec.name / "store.sqlite3"
        assert node.cert_path == spec.cert_path == cluster_dir / spec.name / "node.pem"
        assert node.ca_cert_path == topo.ca_cert_path == cluster_dir / "ca.pem"
        assert node.log_format == "json"
        assert len(load_store_key(node.store_key_path)) == 32
    admin = load_admin_config(cluster_dir / "admin.toml")
    assert (admin.name, admin.topology, admin.key_path) == (
        "admin", topo, cluster_dir / "admin-key.pem")


def test_store_keys_differ_per_node(cluster_dir: Path) -> None:
    keys = {load_store_key(cluster_dir / n / "store.key") for n in ("p1", "b1", "t1", "t2")}
    assert len(keys) == 4


def _openssl_verify(ca: Path, cert: Path, purpose: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca), "-purpose", purpose, str(cert)],
        capture_output=True, text=True, timeout=30, check=False,
    )


@pytest.mark.parametrize("node", ["p1", "b1", "t1", "t2"])
@pytest.mark.parametrize("purpose", ["sslserver", "sslclient"])
def test_openssl_accepts_node_certs(cluster_dir: Path, node: str, purpose: str) -> None:
    proc = _openssl_verify(cluster_dir / "ca.pem", cluster_dir / node / "node.pem", purpose)
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_openssl_accepts_admin_as_client_only(cluster_dir: Path) -> None:
    ok = _openssl_verify(cluster_dir / "ca.pem", cluster_dir / "admin.pem", "sslclient")
    assert ok.returncode == 0, ok.stderr + ok.stdout
    bad = _openssl_verify(cluster_dir / "ca.pem", cluster_dir / "admin.pem", "sslserver")
    assert bad.returncode != 0


def test_openssl_refuses_another_clusters_ca(cluster_dir: Path, other_cluster_dir: Path) -> None:
    proc = _openssl_verify(other_cluster_dir / "ca.pem", cluster_dir / "p1" / "node.pem",
                           "sslserver")
    assert proc.returncode != 0


def test_identities_round_trip_and_stay_in_their_cluster(
    cluster_dir: Path, other_cluster_dir: Path
) -> None:
    cid = load_topology(cluster_dir / "cluster.toml").cluster_id
    for name in ("p1", "b1", "t1", "t2"):
        cert = _cert(cluster_dir / name / "node.pem")
        assert identity_from_certificate(cert, cluster_id=cid) == Identity("node", name, cid)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [f"{name}.node.certsync"]
    admin = _cert(cluster_dir / "admin.pem")
    assert identity_from_certificate(admin, cluster_id=cid) == Identity("admin", "admin", cid)
    foreign = _cert(other_cluster_dir / "p1" / "node.pem")
    with pytest.raises(PermissionDenied):
        identity_from_certificate(foreign, cluster_id=cid)


class Handshake:
    """Outcome of one real TLS 1.3 handshake over a socket pair (both sides' errors kept)."""

    def __init__(self) -> None:
        self.client_cert_seen: x509.Certificate | None = None
        self.server_error: BaseException | None = None
        self.client_error: BaseException | None = None


def _mtls_handshake(server_dir: Path, node: str, client_dir: Path, trust_dir: Path,
                    target: str | None = None) -> Handshake:
    """Node ``node`` of ``server_dir`` serves and requires a client certificate from its CA;
    the admin of ``client_dir`` connects, trusting ``trust_dir``'s CA, asking for ``target``
    (default: the name gRPC clients use, ``<node>.node.certsync``)."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(server_dir / node / "node.pem", server_dir / node / "node-key.pem")
    server_ctx.load_verify_locations(server_dir / "ca.pem")
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_cert_chain(client_dir / "admin.pem", client_dir / "admin-key.pem")
    client_ctx.load_verify_locations(trust_dir / "ca.pem")
    a, b = socket.socketpair()
    result = Handshake()

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as tls:
                der = tls.getpeercert(binary_form=True)
                assert der is not None
                result.client_cert_seen = x509.load_der_x509_certificate(der)
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as err:
            result.server_error = err
            a.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname=target or f"{node}.node.certsync") as tls:
            assert tls.recv(2) == b"ok"
    except (ssl.SSLError, OSError) as err:
        result.client_error = err
    finally:
        b.close()
        thread.join(timeout=30)
    assert not thread.is_alive()
    return result


def test_real_mtls_handshake(cluster_dir: Path) -> None:
    result = _mtls_handshake(cluster_dir, "b1", cluster_dir, cluster_dir)
    assert (result.server_error, result.client_error) == (None, None)
    assert result.client_cert_seen is not None
    cid = load_topology(cluster_dir / "cluster.toml").cluster_id
    assert identity_from_certificate(result.client_cert_seen, cluster_id=cid) == Identity(
        "admin", "admin", cid)


def test_real_mtls_handshake_refuses_another_clusters_admin(
    cluster_dir: Path, other_cluster_dir: Path
) -> None:
    # the client trusts the right CA but presents another cluster's admin certificate
    result = _mtls_handshake(cluster_dir, "p1", other_cluster_dir, cluster_dir)
    assert isinstance(result.server_error, ssl.SSLError)
    assert "certificate" in str(result.server_error).lower()
    assert result.client_cert_seen is None


def test_real_mtls_handshake_refuses_another_clusters_node(
    cluster_dir: Path, other_cluster_dir: Path
) -> None:
    # the client (this cluster's admin) reaches a node of another cluster: it refuses it
    result = _mtls_handshake(other_cluster_dir, "p1", cluster_dir, cluster_dir)
    assert isinstance(result.client_error, ssl.SSLCertVerificationError)


def test_real_mtls_handshake_checks_the_node_name(cluster_dir: Path) -> None:
    # b1 answers where the client expects p1: its certificate does not pass for p1
    result = _mtls_handshake(cluster_dir, "b1", cluster_dir, cluster_dir,
                             target="p1.node.certsync")
    assert isinstance(result.client_error, ssl.SSLCertVerificationError)
    assert "p1.node.certsync" in str(result.client_error)


def test_listen_and_advertise(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _init(tmp_path / "c", "--site", "s.example.com", "--primary", "p1=p1.example.com",
                       "--traffic", "t1=t1.example.com", "--listen", "0.0.0.0",  # noqa: S104  (a flag value, not a bind)
                       "--advertise", "t1=t1-svc", "--base-port", "8000", capsys=capsys)
    assert rc == 0, err
    topo = load_topology(tmp_path / "c" / "cluster.toml")
    assert topo.node("p1").grpc_address == "127.0.0.1:8000"  # wildcard listen: loopback
    assert topo.node("t1").grpc_address == "t1-svc:8002"
    assert topo.node("t1").tls_address == "t1-svc:8003"
    node = load_node_config(tmp_path / "c" / "t1" / "node.toml")
    assert (node.grpc_listen, node.tls_listen) == ("0.0.0.0:8002", "0.0.0.0:8003")
    # the admin consoles come after the 2N gRPC and TLS ports: node i at base + 2N + i
    assert node.admin_address == "0.0.0.0:8005"
    assert topo.node("p1").admin_url == "https://127.0.0.1:8004/"
    assert topo.node("t1").admin_url == "https://t1-svc:8005/"


def test_admin_p12_opens_with_its_passphrase_file_and_holds_the_admin_identity(
    cluster_dir: Path,
) -> None:
    from cryptography.hazmat.primitives.serialization import pkcs12

    passphrase = (cluster_dir / "admin.p12.pass").read_bytes().rstrip(b"\n")
    assert len(passphrase) == 32
    p12 = pkcs12.load_pkcs12((cluster_dir / "admin.p12").read_bytes(), passphrase)
    assert p12.cert is not None and p12.cert.certificate == _cert(cluster_dir / "admin.pem")
    assert [c.certificate for c in p12.additional_certs] == [_cert(cluster_dir / "ca.pem")]
    with pytest.raises(ValueError):  # the twin: another passphrase does not open it
        pkcs12.load_pkcs12((cluster_dir / "admin.p12").read_bytes(), b"x" * 32)


def test_monitor_identity_is_its_own_kind(cluster_dir: Path) -> None:
    cid = load_topology(cluster_dir / "cluster.toml").cluster_id
    monitor = _cert(cluster_dir / "monitor.pem")
    assert identity_from_certificate(monitor, cluster_id=cid) == Identity("monitor", "monitor",
                                                                           cid)
    eku = monitor.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]  # a client, never a server


def test_monitor_is_a_reserved_node_name(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _init(tmp_path / "c", "--site", "s.example.com", "--primary",
                       "monitor=m.example.com", capsys=capsys)
    assert rc == 2 and "reserved" in err
    assert not (tmp_path / "c").exists()


def test_ipv6_listen_is_bracketed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _init(tmp_path / "c", "--site", "s.example.com", "--primary", "p1=p1.example.com",
                       "--listen", "::1", capsys=capsys)
    assert rc == 0, err
    assert load_topology(tmp_path / "c" / "cluster.toml").primary.grpc_address == "[::1]:7400"


def test_existing_empty_directory_is_used(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    rc, _, err = _init(target, "--site", "s.example.com", "--primary", "p1=p1.example.com",
                       capsys=capsys)
    assert rc == 0, err
    assert (target / "cluster.toml").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no temp dir left over


def _snapshot(root: Path) -> list[tuple[str, bytes | None]]:
    return sorted((p.relative_to(root).as_posix(), p.read_bytes() if p.is_file() else None)
                  for p in root.rglob("*"))


GOOD = {"--site": "s.example.com", "--primary": "p1=p1.example.com"}


def _args(**changes: str | list[str] | None) -> list[str]:
    merged: dict[str, str | list[str] | None] = {**GOOD, **changes}
    argv: list[str] = []
    for flag, value in merged.items():
        if value is None:
            continue
        for one in ([value] if isinstance(value, str) else value):
            argv += [flag.replace("_", "-"), one]
    return argv


BAD_INPUT = [
    pytest.param(_args(**{"--primary": "P1=p1.example.com"}), "node name", id="upper-name"),
    pytest.param(_args(**{"--primary": "p_1=p1.example.com"}), "node name", id="underscore"),
    pytest.param(_args(**{"--primary": "p1"}), "NAME=VALUE", id="no-equals"),
    pytest.param(_args(**{"--primary": "=p1.example.com"}), "NAME=VALUE", id="no-name"),
    pytest.param(_args(**{"--primary": "p1="}), "NAME=VALUE", id="no-host"),
    pytest.param(_args(**{"--primary": "p1=https://p1.example.com"}), "hostname", id="url"),
    pytest.param(_args(**{"--primary": "p1=p1..example.com"}), "hostname", id="empty-label"),
    pytest.param(_args(**{"--primary": "p1=[::1]"}), "hostname", id="bracketed-v6"),
    pytest.param(_args(**{"--primary": "p1=foo:bar"}), "hostname", id="colon"),
    pytest.param(_args(**{"--primary": "p1=*.example.com"}), "hostname", id="wildcard"),
    pytest.param(_args(**{"--site": "http://s.example.com"}), "hostname", id="site-url"),
    pytest.param(_args(**{"--site": ""}), "hostname", id="site-empty"),
    pytest.param(_args(**{"--backup": "p1=b1.example.com"}), "given twice", id="dup-name"),
    pytest.param(_args(**{"--traffic": ["t1=t.example.com", "t2=T.example.com."]}),
                 "given twice", id="dup-hostname"),
    pytest.param(_args(**{"--traffic": "admin=a.example.com"}), "reserved", id="admin-name"),
    pytest.param(_args(**{"--advertise": "zz=h"}), "names no node", id="advertise-unknown"),
    pytest.param(_args(**{"--advertise": ["p1=a", "p1=b"]}), "twice", id="advertise-twice"),
    pytest.param(_args(**{"--advertise": "p1=a/b"}), "hostname", id="advertise-bad"),
    pytest.param(_args(**{"--listen": "0.0.0.0:80"}), "hostname", id="listen-with-port"),
    pytest.param(_args(**{"--base-port": "65535"}), "--base-port", id="port-too-high"),
    pytest.param(_args(**{"--base-port": "0"}), "--base-port", id="port-zero"),
    pytest.param(_args(**{"--base-port": "x"}), "invalid int", id="port-not-int"),
    pytest.param(_args(**{"--stale-after": "0"}), "--stale-after", id="stale-zero"),
    pytest.param(_args(**{"--primary": None}), "--primary", id="no-primary"),
    pytest.param(_args(**{"--site": None}), "--site", id="no-site"),
]


@pytest.mark.parametrize(("argv", "fragment"), BAD_INPUT)
def test_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    try:
        rc, out, err = _init(tmp_path / "c", *argv, capsys=capsys)
    except SystemExit as exc:  # argparse usage errors exit from inside the parser
        rc, (out, err) = int(str(exc.code)), capsys.readouterr()
    assert rc == 2
    assert out == ""
    assert err.startswith("certsync: error:") and err.count("\n") == 1, err
    assert fragment in err
    assert list(tmp_path.iterdir()) == []  # DIR not created, no temp dir left


@pytest.mark.parametrize("kind", ["non-empty", "file", "dangling-symlink"])
def test_refuses_an_occupied_dir_and_leaves_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    target = tmp_path / "c"
    if kind == "non-empty":
        target.mkdir()
        (target / "keep.txt").write_text("mine")
    elif kind == "file":
        target.write_text("mine")
    else:
        target.symlink_to(tmp_path / "nowhere")
    before = _snapshot(tmp_path)
    rc, out, err = _init(target, *_args(), capsys=capsys)
    assert rc == 2 and out == ""
    assert err.startswith("certsync: error:") and err.count("\n") == 1, err
    assert _snapshot(tmp_path) == before


def test_a_second_init_into_the_same_dir_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, _ = _init(tmp_path / "c", *_args(), capsys=capsys)
    assert rc == 0
    before = _snapshot(tmp_path)
    rc, _, err = _init(tmp_path / "c", *_args(), capsys=capsys)
    assert rc == 2 and "not empty" in err
    assert _snapshot(tmp_path) == before


def test_umask_does_not_widen_or_break_modes(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    old = os.umask(0o000)
    try:
        rc, _, err = _init(tmp_path / "c", *_args(), capsys=capsys)
    finally:
        os.umask(old)
    assert rc == 0, err
    assert stat.S_IMODE((tmp_path / "c" / "p1" / "node-key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "c" / "cluster.toml").stat().st_mode) == 0o644
