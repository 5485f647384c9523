"""Server CPU per full TLS handshake: certsync's TLS endpoint vs nginx, same client, same run.

Not a test. Run it with ``.venv/bin/python -m benchmarks.bench_tls`` (``--help`` for knobs).

For each key type (ECDSA P-256, RSA-2048) it makes one CA and 100 certificates
(``site00.bench.test`` ...), then serves them

* with :class:`node.tls.TlsEndpoint` in a child process (JSON logs at INFO, as a node runs), and
* with Debian's nginx (``/usr/sbin/nginx``), started from a temporary prefix on loopback
  with the same certificates as 100 SNI ``server`` blocks, ``worker_processes`` = cores,
  access log off,

and drives each with the same client: ``--clients`` processes (Python ``ssl``) that each
open a new TCP connection, complete a full handshake with a random one of the 100 server
names (no session resumption: every handshake is new), and close. Rounds alternate
between the two servers so that machine noise hits both alike.

Server CPU is read from ``/proc/<pid>/stat`` (utime + stime; our process with all its
threads, nginx's master and workers), and divided by the handshakes the clients completed.
It prints both figures per key type and their ratio (the goal: certsync <= 1.3x nginx).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import random
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

NGINX = "/usr/sbin/nginx"
SITES = 100
_TICK = os.sysconf("SC_CLK_TCK")


def _name(i: int) -> str:
    return f"site{i:02d}.bench.test"


def _key(kind: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    if kind == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_certs(kind: str, directory: Path) -> None:
    """A CA and SITES leaf certificates: DIR/NN.crt (leaf + CA) and DIR/NN.key (plain PEM)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = _key(kind)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bench CA {kind}")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    for i in range(SITES):
        key = _key(kind)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _name(i))]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(_name(i))]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        (directory / f"{i:02d}.crt").write_bytes(
            cert.public_bytes(serialization.Encoding.PEM) + ca_pem
        )
        key_path = directory / f"{i:02d}.key"
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )


# -- servers -------------------------------------------------------------------------------


def serve_certsync(cert_dir: Path, workers: int) -> None:
    """Child process: serve cert_dir with TlsEndpoint; print the port; run until stdin closes."""
    from node.logging import configure_logging
    from node.tls import ServedCert, TlsEndpoint

    configure_logging("json")
    served = []
    for i in range(SITES):
        pem = (cert_dir / f"{i:02d}.crt").read_bytes()
        certs = x509.load_pem_x509_certificates(pem)
        key = serialization.load_pem_private_key((cert_dir / f"{i:02d}.key").read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
        sha = certs[0].fingerprint(hashes.SHA256()).hex()
        served.append(ServedCert(sha, certs[0], tuple(certs[1:]), key))
    endpoint = TlsEndpoint(node_name="bench", workers=workers)
    endpoint.update(served, served[0].sha256)
    port = endpoint.start("127.0.0.1", 0)
    print(port, flush=True)
    sys.stdin.read()
    endpoint.stop()


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int

    def pids(self) -> list[int]:
        """The server process and its children (nginx workers)."""
        pids = [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        pids += [int(p) for p in children.read_text().split()]
        return pids

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        return total / _TICK

    def stop(self) -> None:
        if self.proc.stdin is None:  # nginx: stops on SIGTERM
            self.proc.terminate()
        else:  # ours: stops when its stdin closes
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def start_certsync(cert_dir: Path, workers: int) -> Server:
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_tls", "--serve", str(cert_dir),
         "--workers", str(workers)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return Server("certsync", proc, port)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_nginx(cert_dir: Path, prefix: Path, *, access_log: bool = False,
                sites: int = SITES) -> Server:
    """nginx serving cert_dir's ``sites`` (NN.crt, NN.key) by SNI, the first as default;
    ``access_log``: one line per request to a file (as our endpoint logs each request)."""
    port = _free_port()
    blocks = []
    for i in range(sites):
        blocks.append(
            f"""
    server {{
        listen 127.0.0.1:{port} ssl{" default_server" if i == 0 else ""};
        server_name {_name(i)};
        ssl_certificate {cert_dir}/{i:02d}.crt;
        ssl_certificate_key {cert_dir}/{i:02d}.key;
        location / {{ return 200 "bench\\n"; }}
    }}"""
        )
    (prefix / "logs").mkdir(exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""worker_processes {os.cpu_count() or 1};
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {f"{prefix}/logs/access.log" if access_log else "off"};
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    ssl_protocols TLSv1.2 TLSv1.3;
    server_names_hash_bucket_size 64;
{"".join(blocks)}
}}
"""
    )
    proc = subprocess.Popen(
        [NGINX, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read() if proc.stderr else b""
                raise SystemExit(f"nginx did not start: {err.decode(errors='replace')}") from None
            time.sleep(0.05)
    return Server("nginx", proc, port)


# -- client --------------------------------------------------------------------------------


def _client(port: int, seconds: float, seed: int) -> tuple[int, int]:
    """Full handshakes with random SNI until time is up: (completed, failed)."""
    rnd = random.Random(seed)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    names = [_name(i) for i in range(SITES)]
    done = failed = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with ctx.wrap_socket(raw, server_hostname=rnd.choice(names)):
                    done += 1
        except OSError:
            failed += 1
    return done, failed


def measure(server: Server, clients: int, seconds: float) -> tuple[float, int, int]:
    """(server CPU seconds per handshake, handshakes, failures) for one round."""
    with mp.get_context("fork").Pool(clients) as pool:
        before = server.cpu_seconds()
        results = pool.starmap(
            _client, [(server.port, seconds, random.randrange(1 << 30)) for _ in range(clients)]
        )
        after = server.cpu_seconds()
    done = sum(r[0] for r in results)
    failed = sum(r[1] for r in results)
    return (after - before) / max(done, 1), done, failed


def check_served(server: Server, cert_dir: Path) -> None:
    """Both servers must serve the right certificate by SNI, or the comparison means nothing."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for i in (0, 42, SITES - 1):
        want = x509.load_pem_x509_certificates((cert_dir / f"{i:02d}.crt").read_bytes())[0]
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname=_name(i)) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
            version = tls.version()
        got = x509.load_der_x509_certificate(der or b"")
        if got != want or version != "TLSv1.3":
            raise SystemExit(f"{server.name} served the wrong certificate for {_name(i)!r}")


def run(kinds: Sequence[str], rounds: int, seconds: float, clients: int, workers: int) -> None:
    results: dict[str, dict[str, float]] = {}
    for kind in kinds:
        with tempfile.TemporaryDirectory(prefix="certsync-bench-") as tmp:
            cert_dir = Path(tmp) / "certs"
            cert_dir.mkdir(mode=0o700)
            nginx_prefix = Path(tmp) / "nginx"
            nginx_prefix.mkdir()
            make_certs(kind, cert_dir)
            servers = [start_certsync(cert_dir, workers), start_nginx(cert_dir, nginx_prefix)]
            per: dict[str, list[float]] = {s.name: [] for s in servers}
            try:
                for s in servers:
                    check_served(s, cert_dir)
                    measure(s, clients, min(seconds, 1.0))  # warm-up
                for r in range(rounds):
                    for s in servers if r % 2 == 0 else reversed(servers):
                        cpu, done, failed = measure(s, clients, seconds)
                        per[s.name].append(cpu)
                        print(
                            f"{kind} round {r + 1} {s.name:8s}: {done:6d} handshakes "
                            f"({failed} failed), {cpu * 1e6:7.1f} us server CPU each",
                            flush=True,
                        )
            finally:
                for s in servers:
                    s.stop()
                shutil.rmtree(nginx_prefix, ignore_errors=True)
            ours = statistics.median(per["certsync"])
            theirs = statistics.median(per["nginx"])
            results[kind] = {
                "certsync_us": round(ours * 1e6, 1),
                "nginx_us": round(theirs * 1e6, 1),
                "ratio": round(ours / theirs, 3),
            }
            print(
                f"== {kind}: certsync {ours * 1e6:.1f} us, nginx {theirs * 1e6:.1f} us "
                f"server CPU per full handshake (median of {rounds}); ratio {ours / theirs:.2f}x",
                flush=True,
            )
    print(json.dumps(results))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--kind", action="append", choices=["ec-p256", "rsa-2048"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--workers", type=int, default=16, help="TlsEndpoint worker threads")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve_certsync(args.serve, args.workers)
        return
    if not Path(NGINX).exists():
        raise SystemExit(f"nginx is not installed at {NGINX!r}; apt-get install nginx-light")
    run(args.kind or ["ec-p256", "rsa-2048"], args.rounds, args.seconds, args.clients, args.workers)


if __name__ == "__main__":
    main()
