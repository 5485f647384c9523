"""Converge time: from an import on the primary returning to every node *serving* the new
certificate, for clusters of N node processes on this machine.

Run: ``.venv/bin/python benchmarks/bench_converge.py [--sizes 4,16,64] [--repeats 3]``.
Not a test; prints a table of figures and ratios.

Per size N a :class:`~sync.localcluster.LocalCluster` is started (primary, backup, N-2
traffic nodes; anti-entropy every hour, so only the push on change is measured). Per key
type (P-256, RSA-2048) and repeat, a fresh wildcard leaf (from the run's one CA) is
imported on the primary as a passphrase-protected PKCS#12 (made off the clock) with
``make_default``; the clock starts
when the Import RPC returns and stops when a TLS handshake without SNI to every node returns
the new leaf. Probing costs CPU too (the nodes share 2 cores with it), so the probe loop
makes one handshake at a time and pauses after a miss (:func:`wait_all_serving`). As a
cross-check, the nodes' own logs give the time each swapped its TLS contexts
(``tls.updated``): "log" column.

Compared in the same run with:

* **limit** -- the model: one PKCS#12 export + one gRPC round trip + N x (bare per-node
  cost: PKCS#12 load with key check + an SSL context from the certificate and key + one
  SQLite commit, ``synchronous=FULL``) / cores.
* **manual** -- the appliance guide's path done by machine: one ``openssl pkcs12 -export``,
  then one ``openssl pkcs12`` import (parse, decrypt, write PEM) per node, sequentially,
  each a process. Goal: manual >= converge at N = 64 with P-256.
* **conc1** -- our own push with concurrency 1 (the primary restarted with
  ``CERTSYNC_PUSH_CONCURRENCY=1``, which sync/daemon.py reads); shows what the
  fan-out buys (about 2 x is the most 2 cores allow).
* **floor** -- the limit plus what the probes DESIGN.md requires cost by themselves: N x 3
  handshakes (the site, the node's own hostname, no SNI) x the CPU of one handshake / cores,
  measured against Debian's nginx (``/usr/sbin/nginx``, from a temporary prefix as
  ``bench_tls`` starts it) serving the same certificate and key type: nginx's CPU plus a
  reference client's, the probe :mod:`sync.probe` makes (same context settings: TLS >= 1.2,
  nothing verified, the leaf's fingerprint compared) made with the standard library's
  blocking handshake (printed apart, and our probe client beside it). Neither our endpoint
  nor our probe code is in it, so the floor does not move when our code does. No push that
  proves "served" the way DESIGN.md asks can beat it. Goal: converge <= 1.3 x floor at
  N = 16 and 64.

``--base DIR`` measures another checkout (its own ``.venv``; e.g. the code a branch started
from) in the same run, before ours, with the same references: the ``base/ours`` column.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import hashlib
import json
import os
import shutil
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_tls import NGINX, Server, start_nginx  # after the sys.path lines above
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

import sync.localcluster  # after the sys.path lines above
from node.formats import export_pkcs12  # after the sys.path lines above
from sync.client import NodeClient, admin_target  # after the sys.path lines above
from sync.localcluster import LocalCluster, served_certificate  # after the sys.path lines above
from sync.probe import served_sha256  # after the sys.path lines above
from sync.transfer import TRANSFER_PKCS12_ROUNDS  # after the sys.path lines above

SITE = "support.example.com"
SANS = (SITE, "*.example.com", "*.atlas.example.com")
KEY_TYPES = ("ec-p256", "rsa-2048")
PROBES_PER_NODE = 3  # the site, the node's own hostname, no SNI (sync.replicator._probe)
CONCURRENCY_ENV = "CERTSYNC_PUSH_CONCURRENCY"
ADMIN_PASSPHRASE = b"bench-admin-passphrase"  # the admin's own export, as in the guide

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


# --------------------------------------------------------------------------- material


def new_key(key_type: str) -> PrivateKey:
    if key_type == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


@dataclass(frozen=True)
class Material:
    key: PrivateKey
    leaf: x509.Certificate
    ca: x509.Certificate

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.leaf.public_bytes(serialization.Encoding.DER)).hexdigest()


@dataclass(frozen=True)
class Issuer:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def make_issuer() -> Issuer:
    """One CA for the whole run: every import is a renewal from the same CA (a new CA as
    default would trip the node's CA-change guard, which asks for a confirmation)."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                     False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Issuer(key=key, cert=cert)


_ISSUER: list[Issuer] = []


def make_material(key_type: str, serial: int) -> Material:
    """A wildcard leaf with a ``key_type`` key from the run's CA (P-256)."""
    if not _ISSUER:
        _ISSUER.append(make_issuer())
    issuer = _ISSUER[0]
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    key = new_key(key_type)
    ca, ca_name, ca_key = issuer.cert, issuer.cert.subject, issuer.key
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SITE)]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        # a day later each time: the newest always wins SNI selection among equals
        .not_valid_after(now + dt.timedelta(days=365 + serial))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in SANS]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return Material(key=key, leaf=leaf, ca=ca)


def admin_pkcs12(m: Material) -> bytes:
    return pkcs12.serialize_key_and_certificates(
        b"bench", m.key, m.leaf, [m.ca],
        serialization.BestAvailableEncryption(ADMIN_PASSPHRASE),
    )


# --------------------------------------------------------------------------- limit model


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


@dataclass(frozen=True)
class Limit:
    export: float
    per_node: float
    load: float
    context: float
    commit: float

    def total(self, n: int, rtt: float, cores: int) -> float:
        return self.export + rtt + n * self.per_node / cores


def measure_limit(m: Material, scratch: Path, repeats: int = 15) -> Limit:
    """The bare costs of the model, measured in this process."""
    passphrase = os.urandom(32).hex().encode()
    blob = export_pkcs12(name="bench", key=m.key, cert=m.leaf, chain=[m.ca],
                         passphrase=passphrase, rounds=TRANSFER_PKCS12_ROUNDS)
    export = _median_time(lambda: export_pkcs12(
        name="bench", key=m.key, cert=m.leaf, chain=[m.ca], passphrase=passphrase,
        rounds=TRANSFER_PKCS12_ROUNDS), repeats)
    load = _median_time(lambda: pkcs12.load_key_and_certificates(blob, passphrase), repeats)

    cert_path, key_path = scratch / "leaf.pem", scratch / "leaf-key.pem"
    cert_path.write_bytes(m.leaf.public_bytes(serialization.Encoding.PEM)
                          + m.ca.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(m.key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    key_path.chmod(0o600)

    def context() -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert_path, key_path)

    ctx_time = _median_time(context, repeats)
    db = sqlite3.connect(scratch / "bench.sqlite3", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE IF NOT EXISTS s (id INTEGER PRIMARY KEY, blob BLOB)")

    def commit() -> None:
        db.execute("BEGIN")
        db.execute("DELETE FROM s")
        db.execute("INSERT INTO s (blob) VALUES (?)", (blob,))
        db.execute("COMMIT")

    commit_time = _median_time(commit, repeats)
    db.close()
    key_path.unlink()
    return Limit(export=export, per_node=load + ctx_time + commit_time, load=load,
                 context=ctx_time, commit=commit_time)


# --------------------------------------------------------------------------- manual path


def manual_path(m: Material, n: int, scratch: Path) -> float:
    """One ``openssl pkcs12 -export`` then N sequential ``openssl pkcs12`` imports."""
    work = Path(tempfile.mkdtemp(dir=scratch))
    (work / "leaf.pem").write_bytes(m.leaf.public_bytes(serialization.Encoding.PEM))
    (work / "ca.pem").write_bytes(m.ca.public_bytes(serialization.Encoding.PEM))
    key = work / "key.pem"
    key.write_bytes(m.key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    key.chmod(0o600)
    pw = work / "pw"
    pw.write_bytes(ADMIN_PASSPHRASE)
    pw.chmod(0o600)

    def run(args: Sequence[str]) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    start = time.perf_counter()
    run(["pkcs12", "-export", "-in", str(work / "leaf.pem"), "-inkey", str(key),
         "-certfile", str(work / "ca.pem"), "-passout", f"file:{pw}",
         "-out", str(work / "site.p12")])
    for i in range(n):
        run(["pkcs12", "-in", str(work / "site.p12"), "-passin", f"file:{pw}", "-nodes",
             "-out", str(work / f"node{i}.pem")])
    return time.perf_counter() - start


# --------------------------------------------------------------------------- converge


def _probe(cluster: LocalCluster, name: str) -> str | None:
    try:
        der = served_certificate(cluster.spec(name).tls_address, None, timeout=5)
    except OSError:
        return None
    return hashlib.sha256(der).hexdigest()


def wait_all_serving(cluster: LocalCluster, sha: str, timeout: float = 300.0) -> float:
    """Probe (no SNI) until every node serves ``sha``; the monotonic time it was done.

    The probes share the 2 cores with the nodes, so they must not crowd them out: one
    handshake at a time, round the nodes not yet seen serving ``sha``, and after a miss a
    pause of 5 ms or 2 % of the time waited so far, whichever is longer (so the figure is
    late by at most that, plus a handshake or two). Polling every pending node at once, as
    this benchmark first did, spent as much CPU on probing as the nodes spent on converging;
    waiting on one node at a time left the nodes that finished meanwhile to be probed one by
    one at the end.
    """
    start = time.monotonic()
    deadline = start + timeout
    pending = collections.deque(cluster.names)
    while pending:
        name = pending.popleft()
        if _probe(cluster, name) == sha:
            continue
        pending.append(name)
        now = time.monotonic()
        if now > deadline:
            raise RuntimeError(f"{len(pending)} nodes never served {sha[:12]}: "
                               f"{list(pending)[:8]}")
        time.sleep(max(_PROBE_PAUSE, (now - start) * _PROBE_PAUSE_SHARE))
    return time.monotonic()


_PROBE_PAUSE = 0.005  # seconds, at least
_PROBE_PAUSE_SHARE = 0.02  # of the time waited so far, at most


def log_swap_time(cluster: LocalCluster, sha: str, since: dt.datetime) -> float | None:
    """Seconds from ``since`` to the last node's ``tls.updated`` with ``sha`` as default."""
    latest: dt.datetime | None = None
    for name in cluster.names:
        first: dt.datetime | None = None
        for line in cluster.log_path(name).read_text(errors="replace").splitlines():
            if '"tls.updated"' not in line or sha not in line:
                continue
            try:
                event = json.loads(line)
                when = dt.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
            except (ValueError, KeyError):
                continue
            if event.get("default_sha256") == sha:
                first = when if first is None else min(first, when)
        if first is None:
            return None
        latest = first if latest is None else max(latest, first)
    # the primary swaps inside the Import call, before ``since``: it counts as 0
    return max(0.0, (latest - since).total_seconds()) if latest is not None else None


async def _import(cluster: LocalCluster, blob: bytes) -> None:
    async with NodeClient(admin_target(cluster.config, None), timeout=120) as client:
        await client.import_files([("site.p12", blob)], passphrase=ADMIN_PASSPHRASE,
                                  make_default=True)


async def _rtt(cluster: LocalCluster, repeats: int = 20) -> float:
    async with NodeClient(admin_target(cluster.config, None)) as client:
        await client.get_state()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            await client.get_state()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


@dataclass(frozen=True)
class ProbeCost:
    """CPU seconds of one probe handshake against nginx: its side and the reference
    client's; ``ours`` is the client side as :mod:`sync.probe` makes it (for comparison)."""

    server: float
    client: float
    ours: float

    @property
    def total(self) -> float:
        return self.server + self.client


def _reference_context() -> ssl.SSLContext:
    """The probe's question asked with the standard library alone (the settings of
    sync.probe: TLS >= 1.2, nothing verified -- the fingerprint is compared)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _reference_probe(ctx: ssl.SSLContext, port: int, server_name: str | None) -> str:
    """One full handshake: the sha256 of the leaf served for ``server_name``."""
    with (socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
          ctx.wrap_socket(raw, server_hostname=server_name) as tls):
        der = tls.getpeercert(binary_form=True)
    return hashlib.sha256(der or b"").hexdigest()


def measure_probe_cost(m: Material, scratch: Path, names: Sequence[str | None],
                       repeats: int = 300) -> ProbeCost:
    """One probe handshake's CPU over ``repeats`` handshakes cycling through ``names``:
    Debian's nginx serving the same certificate and key (its master and workers, from
    /proc) plus a reference client (this process: the standard library's blocking
    handshake with the settings sync.probe uses). Neither our endpoint nor our probe code is
    in it, so the floor does not move when our code does; our probe client is measured
    beside it (``ours``)."""
    work = Path(tempfile.mkdtemp(dir=scratch))
    cert_dir, prefix = work / "certs", work / "nginx"
    cert_dir.mkdir()
    prefix.mkdir()
    (cert_dir / "00.crt").write_bytes(m.leaf.public_bytes(serialization.Encoding.PEM)
                                      + m.ca.public_bytes(serialization.Encoding.PEM))
    key_path = cert_dir / "00.key"
    key_path.write_bytes(m.key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    key_path.chmod(0o600)
    server: Server = start_nginx(cert_dir, prefix, sites=1)
    ctx = _reference_context()

    def reference(count: int) -> None:
        for i in range(count):
            if _reference_probe(ctx, server.port, names[i % len(names)]) != m.sha256:
                raise RuntimeError(f"nginx did not serve {m.sha256[:12]}")

    async def ours(count: int) -> None:
        for i in range(count):
            sha = await served_sha256(f"127.0.0.1:{server.port}", names[i % len(names)],
                                      timeout=5)
            if sha != m.sha256:
                raise RuntimeError(f"nginx served {sha[:12]}, not {m.sha256[:12]}")

    try:
        reference(10)  # warm: workers forked, first contexts made
        asyncio.run(ours(10))
        cpu_server, cpu_client = server.cpu_seconds(), time.process_time()
        reference(repeats)
        client = time.process_time() - cpu_client
        served = server.cpu_seconds() - cpu_server
        cpu_ours = time.process_time()
        asyncio.run(ours(repeats))
        ours_client = time.process_time() - cpu_ours
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return ProbeCost(server=served / repeats, client=client / repeats,
                     ours=ours_client / repeats)


def converge_once(cluster: LocalCluster, m: Material) -> tuple[float, float | None]:
    blob = admin_pkcs12(m)
    asyncio.run(_import(cluster, blob))
    t0, wall0 = time.monotonic(), dt.datetime.now(dt.UTC)
    done = wait_all_serving(cluster, m.sha256)
    return done - t0, log_swap_time(cluster, m.sha256, wall0)


# --------------------------------------------------------------------------- main


@dataclass
class Row:
    tree: str
    n: int
    key_type: str
    converge: float
    log: float | None
    limit: float
    manual: float | None
    conc1: float | None
    floor: float
    probe: ProbeCost
    probe_floor: float


@dataclass(frozen=True)
class Tree:
    """Whose code the cluster runs: ``ours`` (this checkout) or another checkout with its own
    ``.venv`` (``--base``), whose ``certsync`` starts the nodes and runs the cluster CLI."""

    name: str
    command: tuple[str, ...] | None = None  # None: this installation's


def _use_tree(tree: Tree) -> None:
    if tree.command is None:
        sync.localcluster.certsync_command = _OWN_COMMAND
    else:
        command = list(tree.command)
        sync.localcluster.certsync_command = lambda: list(command)


_OWN_COMMAND = sync.localcluster.certsync_command


@dataclass(frozen=True)
class Reference:
    """What the code under test does not change, per size and key type: measured once."""

    limit: float
    probe: ProbeCost
    probe_floor: float
    manual: float | None

    @property
    def floor(self) -> float:
        return self.limit + self.probe_floor


def measure_references(n: int, rtt: float, scratch: Path, serial: list[int], *,
                       manual: bool) -> dict[str, Reference]:
    cores = os.cpu_count() or 1
    own = "t1.atlas.example.com" if n > 2 else "b1.example.com"
    refs = {}
    for key_type in KEY_TYPES:
        mats = []
        for _ in range(2):
            serial[0] += 1
            mats.append(make_material(key_type, serial[0]))
        # the probes DESIGN.md requires (the site, the node's own hostname and no SNI, per
        # node), client and server side, against nginx with this key type
        probe = measure_probe_cost(mats[0], scratch, (SITE, own, None))
        probe_floor = n * PROBES_PER_NODE * probe.total / cores
        limit = measure_limit(mats[0], scratch)
        refs[key_type] = Reference(
            limit=limit.total(n, rtt, cores), probe=probe, probe_floor=probe_floor,
            manual=statistics.median(manual_path(m, n, scratch) for m in mats)
            if manual else None)
        print(f"#   {key_type}: one probe handshake {probe.total * 1e6:.0f} us CPU (nginx "
              f"{probe.server * 1e6:.0f} us + reference client {probe.client * 1e6:.0f} us; "
              f"sync.probe's client {probe.ours * 1e6:.0f} us), "
              f"{PROBES_PER_NODE} per node {probe_floor:.3f} s over {cores} cores; per node "
              f"load {limit.load * 1e3:.2f} ms, context {limit.context * 1e3:.2f} ms, commit "
              f"{limit.commit * 1e3:.2f} ms; export {limit.export * 1e3:.2f} ms; rtt "
              f"{rtt * 1e3:.2f} ms; limit {refs[key_type].limit:.3f} s, floor "
              f"{refs[key_type].floor:.3f} s", flush=True)
    return refs


def bench_size(n: int, repeats: int, scratch: Path, serial: list[int], trees: Sequence[Tree],
               *, conc1: bool, manual: bool) -> list[Row]:
    traffic = [(f"t{i}", f"t{i}.atlas.example.com") for i in range(1, n - 1)]
    rows = []
    refs: dict[str, Reference] | None = None
    for tree in trees:
        _use_tree(tree)
        started = time.monotonic()
        with LocalCluster.create(scratch / f"cluster{n}-{tree.name}", site=SITE,
                                 primary=("p1", "p1.example.com"),
                                 backup=("b1", "b1.example.com"), traffic=traffic,
                                 sync_interval=3600, stale_after=7200) as cluster:
            cluster.start_all(timeout=60 + 3 * n)
            print(f"# N={n} {tree.name}: {n} node processes ready in "
                  f"{time.monotonic() - started:.1f} s", flush=True)
            rtt = asyncio.run(_rtt(cluster))
            if refs is None:
                refs = measure_references(n, rtt, scratch, serial, manual=manual)
            serial[0] += 1
            converge_once(cluster, make_material("ec-p256", serial[0]))  # warm-up: channels
            tree_rows = []
            for key_type in KEY_TYPES:
                mats = []
                for _ in range(repeats):
                    serial[0] += 1
                    mats.append(make_material(key_type, serial[0]))
                runs = [converge_once(cluster, m) for m in mats]
                ref = refs[key_type]
                logs = [r[1] for r in runs if r[1] is not None]
                tree_rows.append(Row(
                    tree.name, n, key_type, statistics.median(r[0] for r in runs),
                    statistics.median(logs) if logs else None, ref.limit, ref.manual, None,
                    ref.floor, ref.probe, ref.probe_floor))
                print(f"#   {tree.name} {key_type}: runs "
                      f"{', '.join(f'{r[0]:.3f}' for r in runs)} s", flush=True)
            if conc1:  # our push with concurrency 1, same cluster
                cluster.stop("p1")
                cluster.start("p1", env={CONCURRENCY_ENV: "1"})
                serial[0] += 1
                converge_once(cluster, make_material("ec-p256", serial[0]))
                for row in tree_rows:
                    mats = []
                    for _ in range(repeats):
                        serial[0] += 1
                        mats.append(make_material(row.key_type, serial[0]))
                    row.conc1 = statistics.median(converge_once(cluster, m)[0] for m in mats)
            rows.extend(tree_rows)
    _use_tree(Tree("ours"))
    return rows


def _fmt(value: float | None) -> str:
    return f"{value:8.3f}" if value is not None else "       -"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:6.2f}x" if a is not None and b else "      -"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="4,16,64", help="node counts (default 4,16,64)")
    parser.add_argument("--repeats", type=int, default=3, help="imports per key type and size")
    parser.add_argument("--base", type=Path, default=None,
                        help="another checkout (with its own .venv) measured in the same run "
                             "before ours, e.g. the code this branch started from")
    parser.add_argument("--no-conc1", action="store_true", help="skip the concurrency-1 runs")
    parser.add_argument("--no-manual", action="store_true", help="skip the manual path")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if any(n < 2 for n in sizes):
        parser.error(f"--sizes {args.sizes!r}: every size needs a primary and a backup (>= 2)")
    if not Path(NGINX).is_file():
        parser.error(f"nginx is not installed at {NGINX!r} (the floor's server); "
                     "apt-get install nginx-light")
    trees = [Tree("ours")]
    if args.base is not None:
        script = args.base.resolve() / ".venv" / "bin" / "certsync"
        if not script.is_file():
            parser.error(f"--base {args.base}: no {script} (run deploy/setup.sh there)")
        trees.insert(0, Tree("base", (str(script),)))
    print(f"# {os.cpu_count()} cores; PKCS#12 transfer rounds {TRANSFER_PKCS12_ROUNDS}; "
          f"conc1 via {CONCURRENCY_ENV}=1; trees {', '.join(t.name for t in trees)}",
          flush=True)
    rows: list[Row] = []
    serial = [0]
    tmp = Path(tempfile.mkdtemp(prefix="bench-converge-"))
    try:
        for n in sizes:
            rows.extend(bench_size(n, args.repeats, tmp, serial, trees,
                                   conc1=not args.no_conc1, manual=not args.no_manual))
    except BaseException:
        print(f"# failed; node logs kept in {tmp}", file=sys.stderr)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    base = {(r.n, r.key_type): r for r in rows if r.tree == "base"}
    print()
    print(f"{'tree':<5} {'N':>3} {'key':<9} {'converge':>8} {'log':>8} {'limit':>8} "
          f"{'floor':>8} {'probes':>8} {'manual':>8} {'conc1':>8}  {'conv/floor':>10} "
          f"{'manual/conv':>11} {'conc1/conv':>10} {'base/ours':>9}")
    for r in rows:
        before = base.get((r.n, r.key_type)) if r.tree != "base" else None
        print(f"{r.tree:<5} {r.n:>3} {r.key_type:<9} {_fmt(r.converge)} {_fmt(r.log)} "
              f"{_fmt(r.limit)} {_fmt(r.floor)} {_fmt(r.probe_floor)} {_fmt(r.manual)} "
              f"{_fmt(r.conc1)}  {_ratio(r.converge, r.floor):>10} "
              f"{_ratio(r.manual, r.converge):>11} {_ratio(r.conc1, r.converge):>10} "
              f"{_ratio(before.converge if before else None, r.converge):>9}")
    print("\nseconds; converge = import returned -> every node serves it (TLS probe, no SNI);"
          " log = the same from the nodes' tls.updated events; floor = limit + probes, the CPU"
          f" of the {PROBES_PER_NODE} probe handshakes per node DESIGN.md requires (nginx "
          "serving the same certificate + a reference stdlib client) / cores; base/ours > 1: "
          "ours is faster; goals: conv/floor <= 1.3 at N=16 and 64, manual/conv >= 1.0 at "
          "N=64 P-256, base/ours >= 1")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
