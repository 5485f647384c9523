"""Good clients while 1,000 idle or slow connections are held: certsync's TLS endpoint vs nginx.

Not a test. Run it with ``.venv/bin/python -m benchmarks.bench_idle`` (``--help`` for knobs).

One CA and 100 ECDSA P-256 certificates (as :mod:`benchmarks.bench_tls`), served in one run by

* our :class:`node.tls.TlsEndpoint` in a child process (default bounds: 10 s handshake
  deadline, 4096 connections, no per-address cap; JSON logs at INFO, as a node runs), once
  per ``--loops`` count (default: the default count, and 2);
* Debian's nginx (``/usr/sbin/nginx``) from a temporary prefix, same certificates as 100 SNI
  server blocks, ``worker_processes`` = cores;
* both again with a line per request (``+log``: our ``access_log=True``, node.toml's
  ``tls_access_log``, against nginx's ``access_log`` to a file); each ``+log`` row's ratio is
  against ``nginx+log``, the others' against ``nginx``;
* optionally (``--old COMMIT``) the endpoint as it was at ``COMMIT`` (``git show``, loaded
  as a module beside the current ``node`` package): the baseline of thread-per-connection.

For each server, first **quiet** (no idle connections), then **idle**: a holder process keeps
``--idle`` connections open from 127.0.0.1 in four kinds (silent; half a ClientHello; a
ClientHello trickled one byte a second; junk), each slot reconnecting when the server closes
it (at most once per 0.5 s per slot). Meanwhile ``--clients`` processes make ``--handshakes``
full handshakes in all (new TCP connection, random SNI, ``GET /``, read the answer, close;
5 s client timeout). Printed per server and phase: served %, p50 / p99 latency (connect to
answer read), server CPU per served handshake (``/proc/PID/stat`` utime + stime of the
server and its children, over the clients' run), and the ratios ours / nginx.
Goal (issue 14): idle phase >= 99 % served, p99 <= 100 ms, CPU <= 1.3x nginx.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing as mp
import os
import random
import resource
import selectors
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_tls import (  # after the sys.path lines above
    NGINX,
    SITES,
    Server,
    _name,
    check_served,
    make_certs,
    start_nginx,
)

from node.tls import DEFAULT_LOOPS  # after the sys.path lines above

_ROOT = Path(__file__).resolve().parent.parent
#: the name suffix of the servers that log every request (ours: tls_access_log; nginx: access_log)
_LOGGED = "+log"
_CLIENT_TIMEOUT = 5.0
_RECONNECT_GAP = 0.5


def _raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


# -- our server (child process) --------------------------------------------------------------


def serve(cert_dir: Path, old: Path | None, loops: int, access_log: bool) -> None:
    """Child: serve cert_dir with TlsEndpoint (or the old one at ``old``); print the port."""
    import importlib.util

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from node.logging import configure_logging

    _raise_fd_limit(8192)
    if old is None:
        from node import tls as module
    else:
        spec = importlib.util.spec_from_file_location("certsync_old_tls", old)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)  # type: ignore[assignment,unused-ignore]
        sys.modules[spec.name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    configure_logging("json")
    served = []
    for i in range(SITES):
        certs = x509.load_pem_x509_certificates((cert_dir / f"{i:02d}.crt").read_bytes())
        key = serialization.load_pem_private_key((cert_dir / f"{i:02d}.key").read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
        sha = certs[0].fingerprint(hashes.SHA256()).hex()
        served.append(module.ServedCert(sha, certs[0], tuple(certs[1:]), key))
    endpoint = (module.TlsEndpoint(node_name="bench") if old is not None
                else module.TlsEndpoint(node_name="bench", workers=loops, access_log=access_log))
    endpoint.update(served, served[0].sha256)
    print(endpoint.start("127.0.0.1", 0), flush=True)
    sys.stdin.read()
    endpoint.stop()


def _loop_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give loop counts >= 1, e.g. 1,2")
    return list(dict.fromkeys(counts))


def _ours_name(loops: int) -> str:
    """``certsync`` for the default loop count (the goal's row), else ``certsync-Nloops``."""
    return "certsync" if loops == DEFAULT_LOOPS else f"certsync-{loops}loops"


def start_ours(name: str, cert_dir: Path, old: Path | None, loops: int = DEFAULT_LOOPS,
               *, access_log: bool = False) -> Server:
    args = [sys.executable, "-m", "benchmarks.bench_idle", "--serve", str(cert_dir),
            "--loops", str(loops)] + (["--access-log"] if access_log else [])
    if old is not None:
        args += ["--serve-old", str(old)]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, cwd=_ROOT)
    assert proc.stdout is not None
    return Server(name, proc, int(proc.stdout.readline()))


# -- the idle holder (child process) ---------------------------------------------------------


def _client_hello() -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=_name(0))
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def hold(port: int, count: int, ready: EventType, stop: EventType,
         reconnects: Synchronized[int]) -> None:
    """Keep ``count`` hostile connections open; reopen each one the server closes."""
    _raise_fd_limit(count + 256)
    hello = _client_hello()
    sel = selectors.DefaultSelector()
    # slot -> (socket, kind, bytes of the hello trickled so far, time of connect)
    slots: dict[int, tuple[socket.socket, int, int, float]] = {}
    pending: list[tuple[float, int]] = []  # (not before, slot) to reconnect

    def connect(slot: int) -> None:
        kind = slot % 4
        s = socket.socket()
        s.setblocking(True)
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            s.close()
            pending.append((time.monotonic() + _RECONNECT_GAP, slot))
            return
        s.setblocking(False)
        if kind == 1:
            s.send(hello[: len(hello) // 2])
        elif kind == 3:
            s.send(b"\x00junk, not a TLS record\r\n" * 3)
        slots[slot] = (s, kind, 0, time.monotonic())
        sel.register(s, selectors.EVENT_READ, slot)

    for i in range(count):
        connect(i)
    ready.set()
    next_trickle = time.monotonic() + 1.0
    while not stop.is_set():
        for key, _ in sel.select(0.05):
            slot = key.data
            s, _kind, _sent, born = slots[slot]
            try:
                data = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                continue  # an alert or the like: wait for the close
            sel.unregister(s)
            s.close()
            del slots[slot]
            with reconnects.get_lock():
                reconnects.value += 1
            pending.append((max(born + _RECONNECT_GAP, time.monotonic()), slot))
        now = time.monotonic()
        due = [p for p in pending if p[0] <= now]
        pending[:] = [p for p in pending if p[0] > now]
        for _, slot in due:
            connect(slot)
        if now >= next_trickle:  # the slow kind: one more byte of the hello a second
            next_trickle = now + 1.0
            for slot, (s, kind, sent, born) in list(slots.items()):
                if kind == 2 and sent < len(hello) - 1:
                    try:
                        s.send(hello[sent:sent + 1])
                    except OSError:
                        continue
                    slots[slot] = (s, kind, sent + 1, born)
    for s, *_ in slots.values():
        s.close()


# -- good clients ------------------------------------------------------------------------------


def _good(port: int, count: int, seed: int) -> list[float | None]:
    """``count`` handshakes + GET: latency in seconds each, None when not served."""
    rnd = random.Random(seed)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    out: list[float | None] = []
    for _ in range(count):
        start = time.perf_counter()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=_CLIENT_TIMEOUT) as raw:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with ctx.wrap_socket(raw, server_hostname=_name(rnd.randrange(SITES))) as tls:
                    tls.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
                    answer = b""
                    while b"\r\n\r\n" not in answer:
                        chunk = tls.recv(4096)
                        if not chunk:
                            break
                        answer += chunk
            ok = answer.startswith(b"HTTP/1.1 200")
        except OSError:
            ok = False
        out.append(time.perf_counter() - start if ok else None)
    return out


def measure(server: Server, clients: int, handshakes: int) -> dict[str, float]:
    per = [handshakes // clients + (1 if i < handshakes % clients else 0) for i in range(clients)]
    with mp.get_context("fork").Pool(clients) as pool:
        before, started = server.cpu_seconds(), time.perf_counter()
        results = pool.starmap(_good, [(server.port, n, random.randrange(1 << 30)) for n in per])
        after, wall = server.cpu_seconds(), time.perf_counter() - started
    lat = sorted(x for r in results for x in r if x is not None)
    served = len(lat)
    if len(lat) >= 2:
        q = statistics.quantiles(lat, n=100, method="inclusive")
    else:
        q = [lat[0] if lat else float("nan")] * 99
    return {
        "served_pct": 100.0 * served / handshakes,
        "p50_ms": q[49] * 1e3,
        "p99_ms": q[98] * 1e3,
        "cpu_us": (after - before) / max(served, 1) * 1e6,
        "per_s": served / wall,
    }


def phase(server: Server, idle: int, clients: int, handshakes: int) -> dict[str, float]:
    if idle == 0:
        return measure(server, clients, handshakes)
    ctx = mp.get_context("fork")
    ready, stop = ctx.Event(), ctx.Event()
    reconnects = ctx.Value("i", 0)
    holder = ctx.Process(target=hold, args=(server.port, idle, ready, stop, reconnects))
    holder.start()
    try:
        if not ready.wait(120):
            raise SystemExit("the idle holder did not connect")
        result = measure(server, clients, handshakes)
        result["reconnects"] = reconnects.value
        return result
    finally:
        stop.set()
        holder.join(30)


def run(args: argparse.Namespace) -> None:
    _raise_fd_limit(args.idle + 1024)
    rows: dict[str, dict[str, dict[str, list[float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="certsync-bench-idle-") as tmp:
        cert_dir = Path(tmp) / "certs"
        cert_dir.mkdir(mode=0o700)
        nginx_prefix, nginx_log_prefix = Path(tmp) / "nginx", Path(tmp) / "nginx-log"
        nginx_prefix.mkdir()
        nginx_log_prefix.mkdir()
        make_certs("ec-p256", cert_dir)
        old_path: Path | None = None
        if args.old:
            old_path = Path(tmp) / "old_tls.py"
            old_path.write_bytes(subprocess.run(
                ["git", "show", f"{args.old}:node/tls.py"], cwd=_ROOT, check=True,
                capture_output=True).stdout)
        # without a line per request (the defaults of both), then both with one
        servers = [start_ours(_ours_name(n), cert_dir, None, n) for n in args.loops]
        servers.append(start_nginx(cert_dir, nginx_prefix))
        servers.append(start_ours(f"{_ours_name(DEFAULT_LOOPS)}{_LOGGED}", cert_dir, None,
                                  access_log=True))
        servers.append(dataclasses.replace(
            start_nginx(cert_dir, nginx_log_prefix, access_log=True), name=f"nginx{_LOGGED}"))
        if old_path is not None:
            servers.append(start_ours("old", cert_dir, old_path))
        try:
            for s in servers:
                check_served(s, cert_dir)
                measure(s, args.clients, 40)  # warm-up
            for r in range(args.rounds):
                for s in servers if r % 2 == 0 else list(reversed(servers)):
                    n = args.old_handshakes if s.name == "old" else args.handshakes
                    for name, idle in (("quiet", 0), ("idle", args.idle)):
                        res = phase(s, idle, args.clients, n)
                        into = rows.setdefault(s.name, {}).setdefault(name, {})
                        for k, v in res.items():
                            into.setdefault(k, []).append(v)
                        print(f"round {r + 1} {s.name:8s} {name:5s}: "
                              f"{res['served_pct']:6.1f} % served, p50 {res['p50_ms']:7.1f} ms, "
                              f"p99 {res['p99_ms']:7.1f} ms, {res['cpu_us']:7.0f} us CPU each, "
                              f"{res['per_s']:5.0f}/s"
                              + (f", {res['reconnects']:.0f} idle reconnects"
                                 if "reconnects" in res else ""), flush=True)
        finally:
            for s in servers:
                s.stop()
            shutil.rmtree(nginx_prefix, ignore_errors=True)
            shutil.rmtree(nginx_log_prefix, ignore_errors=True)
    summary = {
        srv: {ph: {k: round(statistics.median(v), 1) for k, v in vals.items()}
              for ph, vals in phases.items()}
        for srv, phases in rows.items()
    }
    print(f"\n== {args.idle} idle/slow connections, {args.clients} clients, "
          f"{args.handshakes} handshakes per phase, median of {args.rounds} rounds")
    print("| server | phase | served % | p50 ms | p99 ms | handshakes/s | CPU us/handshake "
          "| CPU vs nginx |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for srv, by_phase in summary.items():
        for ph, row in by_phase.items():
            peer = f"nginx{_LOGGED}" if srv.endswith(_LOGGED) else "nginx"
            ratio = row["cpu_us"] / summary[peer][ph]["cpu_us"]
            print(f"| {srv} | {ph} | {row['served_pct']:.1f} | {row['p50_ms']:.1f} | "
                  f"{row['p99_ms']:.1f} | {row['per_s']:.0f} | {row['cpu_us']:.0f} | "
                  f"{ratio:.2f}x |")
    ours, theirs = summary["certsync"]["idle"], summary["nginx"]["idle"]
    print(f"\ngoal (idle, the default {DEFAULT_LOOPS} loop(s)): "
          f"served {ours['served_pct']:.1f} % (>= 99), "
          f"p99 {ours['p99_ms']:.1f} ms (<= 100), "
          f"CPU {ours['cpu_us'] / theirs['cpu_us']:.2f}x nginx (<= 1.3)")
    print(json.dumps(summary))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--handshakes", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--old", metavar="COMMIT",
                        help="also run node/tls.py as of COMMIT (e.g. 4a3cc71) as a baseline")
    parser.add_argument("--old-handshakes", type=int, default=40,
                        help="handshakes per phase for --old (it stalls behind idle clients)")
    parser.add_argument("--loops", type=_loop_counts, default=_loop_counts(f"{DEFAULT_LOOPS},2"),
                        help="our endpoint's event-loop threads, one server per count "
                             f"(default {DEFAULT_LOOPS},2: the default and two loops)")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--access-log", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-old", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.serve_old, args.loops[0], args.access_log)
        return
    if not Path(NGINX).exists():
        raise SystemExit(f"nginx is not installed at {NGINX!r}; apt-get install nginx-light")
    os.environ.setdefault("PYTHONHASHSEED", "0")
    run(args)


if __name__ == "__main__":
    main()
