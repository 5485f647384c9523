"""Import of a PKCS#12: the bare cost, through node.store.Store, and through the gRPC API.

Run: ``.venv/bin/python benchmarks/bench_import.py [--imports N] [--rounds R] [--preload P]``.
Not a test; prints a table.

Per key type (P-256 and RSA-2048), ``N`` distinct PKCS#12 files are made up front (leaf +
intermediate + root, one key per type, AES-256-CBC / PBKDF2-HMAC-SHA256 with ``R`` rounds, as
``node.formats.export_pkcs12`` makes them; default ``formats.ADMIN_PBKDF2_ROUNDS``). Then:

* **bare**: ``pkcs12.load_key_and_certificates`` + one SQLite transaction inserting the three
  certificates and the key (sealed with AES-GCM, so no plaintext key is written even here),
  WAL and ``synchronous=FULL`` like the store. This is the floor an import cannot go below.
* **store**: the same load + ``Store.add`` (key check, sealing off the event loop, audit row,
  revision, one ``BEGIN IMMEDIATE ... COMMIT``).

* **grpc**: ``NodeClient.import_files`` against a real node (``certsync node serve`` as a
  child process, made by ``cluster init``, mutual TLS, JSON logs at INFO as in production):
  detection by content, import planning, ``Store.add``, the TLS endpoint serving the new
  certificate, the response. ``--preload P`` first imports ``P`` other certificates, so
  the cost of an import into a store that already holds many is visible too.

Wall time and CPU time per import are reported (median over ``N``); for ``grpc`` the CPU is
the node's (``/proc/PID/stat``) plus this client's. The issue's goal: grpc <= 1.3x bare.
:func:`spawn_node` (a node subprocess on free loopback ports, with its CPU and RSS readers)
is shared with ``bench_memory.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from node import formats  # after the sys.path line above
from node.errors import CertsyncError  # after the sys.path line above
from node.model import PrivateKey  # after the sys.path line above
from node.sealing import key_aad  # after the sys.path line above
from node.store import Store
from node.store_view import SetEntry
from sync.client import NodeClient, NodeTarget  # after the sys.path line above
from sync.cluster_init import init_cluster, plan_init  # after the sys.path line above
from sync.localcluster import free_port_range  # after the sys.path line above

KINDS = ("ec-p256", "rsa-2048")
PASSPHRASE = b"bench-import-passphrase"
T0 = datetime(2026, 1, 1, tzinfo=UTC)

ImportFn = Callable[[bytes, bytes], Awaitable[None]]
CERTSYNC = str(Path(sys.executable).parent / "certsync")
_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads) so far, in seconds (10 ms ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # fields 14 and 15 of stat(5)


@dataclass(frozen=True)
class Timing:
    """Median wall and CPU seconds per import over ``count`` imports."""

    label: str
    count: int
    wall: float
    cpu: float


def _key(kind: str) -> PrivateKey:
    if kind == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unknown key kind {kind!r}; use one of {KINDS}")


def _cert(
    subject: str, issuer: str, public: PrivateKey, signer: PrivateKey, ca: bool
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(public.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0 - timedelta(days=1))
        .not_valid_after(T0 + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False
        )
    return builder.sign(signer, hashes.SHA256())


def make_p12s(kind: str, count: int, rounds: int = formats.ADMIN_PBKDF2_ROUNDS) -> list[bytes]:
    """``count`` PKCS#12 files with distinct leaf certificates (one key), passphrase PASSPHRASE."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    root = _cert("Bench Root", "Bench Root", ca_key, ca_key, ca=True)
    inter = _cert("Bench Intermediate", "Bench Root", ca_key, ca_key, ca=True)
    key = _key(kind)
    out = []
    for i in range(count):
        leaf = _cert(f"host{i}.bench.example", "Bench Intermediate", key, ca_key, ca=False)
        out.append(
            formats.export_pkcs12(
                name=f"host{i}",
                key=key,
                cert=leaf,
                chain=(inter, root),
                passphrase=PASSPHRASE,
                rounds=rounds,
            )
        )
    return out


async def time_imports(
    label: str,
    blobs: Sequence[bytes],
    fn: ImportFn,
    extra_cpu: Callable[[], float] | None = None,
) -> Timing:
    """Median wall and CPU time of ``await fn(blob, PASSPHRASE)`` over the blobs; the CPU is
    this process's plus ``extra_cpu()``'s (e.g. a node subprocess) when given."""
    walls, cpus = [], []
    for blob in blobs:
        x0 = extra_cpu() if extra_cpu else 0.0
        w0, c0 = time.perf_counter(), time.process_time()
        await fn(blob, PASSPHRASE)
        walls.append(time.perf_counter() - w0)
        x1 = extra_cpu() if extra_cpu else 0.0
        cpus.append(time.process_time() - c0 + x1 - x0)
    return Timing(label, len(blobs), statistics.median(walls), statistics.median(cpus))


def _load(blob: bytes, passphrase: bytes) -> tuple[PrivateKey, list[x509.Certificate]]:
    key, cert, extra = pkcs12.load_key_and_certificates(blob, passphrase)
    assert key is not None and cert is not None
    return key, [cert, *extra]  # type: ignore[return-value]  # P-256 / RSA keys only here


async def measure_bare(blobs: Sequence[bytes], directory: Path) -> Timing:
    """pkcs12 load + one SQLite commit per blob (WAL, synchronous=FULL, like the store)."""
    conn = sqlite3.connect(directory / "bare.sqlite3", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS certificates (sha256 TEXT PRIMARY KEY, der BLOB NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS keys (sha256 TEXT PRIMARY KEY, nonce BLOB, ciphertext BLOB)"
    )
    aead = AESGCM(os.urandom(32))

    async def bare(blob: bytes, passphrase: bytes) -> None:
        key, certs = _load(blob, passphrase)
        ders = [c.public_bytes(serialization.Encoding.DER) for c in certs]
        shas = [formats.cert_sha256(c) for c in certs]
        key_der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        nonce = os.urandom(12)
        sealed = aead.encrypt(nonce, key_der, key_aad(shas[0]))
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT OR IGNORE INTO certificates (sha256, der) VALUES (?, ?)",
            zip(shas, ders, strict=True),
        )
        conn.execute("INSERT INTO keys VALUES (?, ?, ?)", (shas[0], nonce, sealed))
        conn.execute("COMMIT")

    try:
        return await time_imports("bare", blobs, bare)
    finally:
        conn.close()


async def measure_store(blobs: Sequence[bytes], directory: Path) -> Timing:
    """pkcs12 load + ``Store.add`` per blob."""
    store = await Store.open(directory / "store.sqlite3", os.urandom(32))

    async def via_store(blob: bytes, passphrase: bytes) -> None:
        key, certs = _load(blob, passphrase)
        entries = [SetEntry(certs[0], key, "bench")] + [SetEntry(c, None, "") for c in certs[1:]]
        await store.add(entries, make_default=None, actor="admin:bench", now=T0)

    try:
        return await time_imports("store", blobs, via_store)
    finally:
        await store.close()


# --------------------------------------------------------------------------- a node subprocess




@dataclass
class RunningNode:
    """A ``certsync node serve`` child process and how to reach it."""

    process: subprocess.Popen[bytes]
    directory: Path
    grpc_port: int
    tls_port: int

    def target(self) -> NodeTarget:
        d = self.directory
        return NodeTarget.from_files(
            name="p1",
            address=f"127.0.0.1:{self.grpc_port}",
            ca_cert=d / "ca.pem",
            cert=d / "admin.pem",
            key=d / "admin-key.pem",
        )

    def cpu_seconds(self) -> float:
        """utime + stime of the node (all its threads) so far."""
        return process_cpu(self.process.pid)

    def status(self, field_name: str) -> int:
        """A ``kB`` figure of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``) in bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(f"no {field_name!r} in /proc/{self.process.pid}/status")


async def wait_ready(node: RunningNode, client: NodeClient, deadline_s: float = 60.0) -> None:
    """Poll the node's GetState until it answers (bounded by a deadline)."""
    deadline = time.monotonic() + deadline_s
    while True:
        if node.process.poll() is not None:
            raise RuntimeError(f"the node exited with status {node.process.returncode}")
        try:
            await client.get_state()
            return
        except CertsyncError:  # NodeUnreachable while it starts: not ready yet
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)  # polling a subprocess for readiness, bounded above


@contextlib.contextmanager
def spawn_node(root: Path) -> Iterator[RunningNode]:
    """``cluster init`` a one-node cluster in ``root/c`` and run its node until the block ends
    (SIGTERM, then SIGKILL after 30 s; ``node.process`` may be replaced by a restart). The
    node's log goes to ``root/node.log``."""
    base = free_port_range(2)
    req = plan_init(
        root / "c", site="bench.example", primary="p1=p1.bench.example", base_port=base
    )
    init_cluster(req, now=datetime.now(UTC))
    with (root / "node.log").open("ab") as log:
        proc = subprocess.Popen(
            [CERTSYNC, "node", "serve", "--config", str(root / "c" / "p1" / "node.toml")],
            stdout=log,
            stderr=log,
        )
    node = RunningNode(proc, root / "c", grpc_port=base, tls_port=base + 1)
    try:
        yield node
    finally:
        proc = node.process  # the caller may have restarted it
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _pem_material(i: int, kind: str) -> bytes:
    """A self-signed certificate and its key as one PEM file (preload input, no KDF)."""
    key = _key(kind)
    cert = _cert(f"pre{i}.bench.example", f"pre{i}.bench.example", key, key, ca=False)
    return cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


async def measure_grpc(
    blobs: Sequence[bytes], directory: Path, preload: int = 0
) -> Timing:
    """``NodeClient.import_files`` per blob against a node subprocess (``preload`` others first)."""
    with spawn_node(directory) as node:
        async with NodeClient(node.target(), timeout=120) as client:
            await wait_ready(node, client)
            for i in range(preload):
                await client.import_files([(f"pre{i}.pem", _pem_material(i, "ec-p256"))])

            async def via_grpc(blob: bytes, passphrase: bytes) -> None:
                await client.import_files([("bench.p12", blob)], passphrase=passphrase)

            return await time_imports(
                "grpc" if not preload else f"grpc+{preload}",
                blobs,
                via_grpc,
                extra_cpu=node.cpu_seconds,
            )


async def run(count: int, rounds: int, preloads: Sequence[int]) -> None:
    print(f"{count} imports per row, PBKDF2 rounds {rounds} (both sides), medians per import")
    head = ("key", "path", "wall ms", "cpu ms", "x bare wall", "x bare cpu")
    print(f"{head[0]:9} {head[1]:9} {head[2]:>9} {head[3]:>9} {head[4]:>12} {head[5]:>11}")
    for kind in KINDS:
        blobs = await asyncio.to_thread(make_p12s, kind, count, rounds)
        with tempfile.TemporaryDirectory() as tmp:
            bare = await measure_bare(blobs, Path(tmp))
            stored = await measure_store(blobs, Path(tmp))  # a database of its own
            rows = [bare, stored]
            for n, preload in enumerate(preloads):
                sub = Path(tmp) / f"node{n}"
                sub.mkdir()
                rows.append(await measure_grpc(blobs, sub, preload))
        for t in rows:
            print(
                f"{kind:9} {t.label:9} {t.wall * 1e3:9.2f} {t.cpu * 1e3:9.2f} "
                f"{t.wall / bare.wall:11.2f}x {t.cpu / bare.cpu:10.2f}x",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--imports", type=int, default=20, help="imports per key type and path")
    parser.add_argument(
        "--rounds",
        type=int,
        default=formats.ADMIN_PBKDF2_ROUNDS,
        help="PBKDF2 rounds of the PKCS#12 files (default: what certsync's export uses)",
    )
    parser.add_argument(
        "--preload",
        type=int,
        action="append",
        help="certificates imported before the timed grpc imports (repeatable; default 0)",
    )
    args = parser.parse_args()
    asyncio.run(run(args.imports, args.rounds, args.preload or [0]))


if __name__ == "__main__":
    main()
