"""Node memory (RSS) with 1 000 certificates, and the time its TLS endpoint takes to load them.

Run: ``.venv/bin/python benchmarks/bench_memory.py [--certs 1000] [--kind ec-p256]``. Not a
test; prints figures. The issue's goal: RSS <= 100 MiB with 1 000 certificates.

1. ``cluster init`` a one-node cluster and start ``certsync node serve`` (a real process).
2. Import ``--certs`` certificates through the gRPC API (``NodeClient.import_files``, one
   self-signed certificate with its key per import, ``cN.mem.example``), timing each import.
3. Wait until the TLS endpoint serves the last one (real handshakes with its SNI name,
   polled with a deadline), then read ``VmRSS`` / ``VmHWM`` from ``/proc/PID/status``.
4. Restart the node (SIGTERM, start again) and time from the start to the first handshake
   that gets the last certificate: opening the store, every key and every TLS context, i.e.
   the time the endpoint takes to load them all. Read ``VmRSS`` again (a node as it runs
   after a restart, without the import history in its heap).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_import import (  # after the sys.path lines above
    CERTSYNC,
    RunningNode,
    _cert,
    _key,
    spawn_node,
    wait_ready,
)
from cryptography.hazmat.primitives import serialization

from sync.client import NodeClient  # after the sys.path lines above

MIB = 1024 * 1024
GOAL_MIB = 100


def _material(i: int, kind: str) -> bytes:
    key = _key(kind)
    name = f"c{i}.mem.example"
    cert = _cert(name, name, key, key, ca=False)
    return cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def served_sha(port: int, server_name: str) -> str | None:
    """sha256 of the certificate a real handshake with ``server_name`` gets; None: no answer."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    return hashlib.sha256(der).hexdigest() if der else None


def wait_served(port: int, server_name: str, sha: str, deadline_s: float) -> float:
    """Poll handshakes until ``server_name`` gets ``sha``; return the seconds it took."""
    t0 = time.monotonic()
    while served_sha(port, server_name) != sha:
        if time.monotonic() - t0 > deadline_s:
            raise TimeoutError(f"{server_name!r} was not served {sha!r} within {deadline_s} s")
        time.sleep(0.01)  # polling a subprocess for a condition, bounded by the deadline
    return time.monotonic() - t0


async def import_all(node: RunningNode, count: int, kind: str) -> tuple[list[float], str]:
    """Import ``count`` certificates; return each import's seconds and the last sha256."""
    materials = [_material(i, kind) for i in range(count)]
    times: list[float] = []
    sha = ""
    async with NodeClient(node.target(), timeout=120) as client:
        await wait_ready(node, client)
        for i, pem in enumerate(materials):
            t0 = time.perf_counter()
            # force: the first one's name is not the cluster's (the coverage gate would refuse
            # it as the default); memory, not coverage, is measured here
            resp = await client.import_files([(f"c{i}.pem", pem)], make_default=(i == 0),
                                             force=(i == 0))
            times.append(time.perf_counter() - t0)
            sha = resp.identity_sha256
    return times, sha


def _restart(node: RunningNode) -> RunningNode:
    node.process.send_signal(signal.SIGTERM)
    node.process.wait(timeout=60)
    with (node.directory.parent / "node.log").open("ab") as log:
        proc = subprocess.Popen(
            [CERTSYNC, "node", "serve", "--config", str(node.directory / "p1" / "node.toml")],
            stdout=log,
            stderr=log,
        )
    return RunningNode(proc, node.directory, node.grpc_port, node.tls_port)


async def run(count: int, kind: str) -> None:
    last = f"c{count - 1}.mem.example"
    with tempfile.TemporaryDirectory() as tmp, spawn_node(Path(tmp)) as node:
        t0 = time.perf_counter()
        times, sha = await import_all(node, count, kind)
        total = time.perf_counter() - t0
        wait_served(node.tls_port, last, sha, 60)
        rss, hwm = node.status("VmRSS"), node.status("VmHWM")
        tenth = max(1, count // 10)
        print(f"{count} certificates ({kind}) imported through the gRPC API in {total:.1f} s")
        first, final = statistics.median(times[:tenth]), statistics.median(times[-tenth:])
        print(
            f"  per import: median of the first {tenth} {first * 1e3:.1f} ms, "
            f"of the last {tenth} {final * 1e3:.1f} ms ({final / first:.2f}x)"
        )
        print(f"  RSS after importing: {rss / MIB:.1f} MiB (peak {hwm / MIB:.1f} MiB)")

        restarted = _restart(node)
        try:
            loaded = wait_served(node.tls_port, last, sha, 300)
            rss2, hwm2 = restarted.status("VmRSS"), restarted.status("VmHWM")
        finally:
            node.process = restarted.process  # spawn_node's exit stops the restarted process
        print(f"  restart to serving all {count} over TLS: {loaded:.2f} s")
        print(f"  RSS after restart: {rss2 / MIB:.1f} MiB (peak {hwm2 / MIB:.1f} MiB)")
        worst = max(rss, rss2) / MIB
        print(f"  goal <= {GOAL_MIB} MiB: {'met' if worst <= GOAL_MIB else 'NOT met'} "
              f"({worst / GOAL_MIB:.2f}x of the goal)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--certs", type=int, default=1000, help="certificates to import")
    parser.add_argument("--kind", default="ec-p256", choices=("ec-p256", "rsa-2048"))
    args = parser.parse_args()
    asyncio.run(run(args.certs, args.kind))


if __name__ == "__main__":
    main()
