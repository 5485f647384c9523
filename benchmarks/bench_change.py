"""A change costs what changed: the primary's CPU per converge with few and with many
certificates stored, side by side in one run.

Run: ``.venv/bin/python benchmarks/bench_change.py [--stored 10,1000] [--nodes 4]
[--imports 8]``. Not a test; prints a table with the ratio to the first size.

Per stored count S a :class:`~sync.localcluster.LocalCluster` of ``--nodes`` node processes
(primary, backup, traffic nodes; anti-entropy every hour, so only the push on change runs) is
written; before it starts, the primary's store is filled directly (``Store.add``, one
transaction): a wildcard leaf of the run's CA covering the cluster's names, as default, and
S - 1 self-signed P-256 certificates with keys. The cluster starts and replicates that set
(waited for: every node serves the default over TLS, the primary's log says the rollout
completed). One converge warms the channels up. Then ``--imports`` times: a new wildcard leaf
(P-256, as bench_converge's) is imported on the primary with ``make_default`` and the clock
runs until every other node serves it (TLS probes without SNI, one at a time, as
bench_converge's) and the primary's log has one more ``rollout.completed`` (its own switch is
the rollout's last step; its endpoint is not probed, so probing costs it nothing). The
primary's CPU (utime + stime from ``/proc/PID/stat``, 10 ms ticks) is read before the import
and after that, plus a 0.3 s settle.

Goal (issue 15): primary CPU per converge with 1 000 stored <= 1.2 x with 10 stored.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_converge import (  # after the sys.path lines above
    SITE,
    _import,
    _probe,
    admin_pkcs12,
    make_material,
)
from bench_import import _cert, process_cpu  # after the sys.path lines above
from cryptography.hazmat.primitives.asymmetric import ec

from node.store import Store  # after the sys.path lines above
from node.store_view import SetEntry  # after the sys.path lines above
from sync.config import load_node_config, load_store_key  # after the sys.path lines above
from sync.localcluster import LocalCluster  # after the sys.path lines above

GOAL = 1.2
_PAUSE = 0.01  # seconds between probes after a miss / between log reads


async def preload(cluster: LocalCluster, count: int, serial: int) -> str:
    """Fill the primary's store (before it starts): a default covering the cluster and
    ``count - 1`` self-signed certificates with keys. Returns the default's sha256."""
    config = load_node_config(cluster.node_toml("p1"))
    store = await Store.open(config.store_path, load_store_key(config.store_key_path))
    try:
        m = make_material("ec-p256", serial)
        entries = [SetEntry(cert=m.leaf, key=m.key, name="site"),
                   SetEntry(cert=m.ca, key=None, name="bench CA")]
        for i in range(count - 1):
            key = ec.generate_private_key(ec.SECP256R1())
            name = f"pre{i}.change.example"
            entries.append(SetEntry(cert=_cert(name, name, key, key, ca=False), key=key,
                                    name=name))
        await store.add(entries, make_default=m.sha256, actor="admin:bench",
                        now=dt.datetime.now(dt.UTC))
        return m.sha256
    finally:
        await store.close()


def _completed(cluster: LocalCluster) -> int:
    text = cluster.log_path("p1").read_text(errors="replace")
    return text.count('"rollout.completed"')


def wait_converged(cluster: LocalCluster, sha: str, completed: int,
                   timeout: float = 600.0) -> None:
    """Until every node but the primary serves ``sha`` (no SNI) and the primary's log has
    more than ``completed`` completed rollouts."""
    deadline = time.monotonic() + timeout
    pending = collections.deque(n for n in cluster.names if n != "p1")
    while pending:
        name = pending.popleft()
        if _probe(cluster, name) == sha:
            continue
        pending.append(name)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{list(pending)} never served {sha[:12]}")
        time.sleep(_PAUSE)
    while _completed(cluster) <= completed:
        if time.monotonic() > deadline:
            raise RuntimeError("the primary never completed the rollout")
        time.sleep(_PAUSE)


def bench_stored(stored: int, nodes: int, imports: int, scratch: Path,
                 serial: list[int]) -> list[float]:
    """CPU seconds of the primary per converge, one figure per import."""
    traffic = [(f"t{i}", f"t{i}.atlas.example.com") for i in range(1, nodes - 1)]
    with LocalCluster.create(scratch / f"c{stored}", site=SITE,
                             primary=("p1", "p1.example.com"),
                             backup=("b1", "b1.example.com"), traffic=traffic,
                             sync_interval=3600, stale_after=7200) as cluster:
        serial[0] += 1
        t0 = time.monotonic()
        default = asyncio.run(preload(cluster, stored, serial[0]))
        cluster.start_all(timeout=120)
        wait_converged(cluster, default, 0)
        print(f"# {stored} stored: preloaded and replicated to {nodes - 1} nodes in "
              f"{time.monotonic() - t0:.1f} s", flush=True)
        cpus = []
        for n in range(imports + 1):
            serial[0] += 1
            m = make_material("ec-p256", serial[0])
            blob = admin_pkcs12(m)
            pid = cluster.pid("p1")
            assert pid is not None
            done = _completed(cluster)
            before = process_cpu(pid)
            asyncio.run(_import(cluster, blob))
            wait_converged(cluster, m.sha256, done)
            time.sleep(0.3)  # the rollout's last bookkeeping after its completion line
            if n:  # the first one warms the channels up
                cpus.append(process_cpu(pid) - before)
        return cpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--stored", default="10,1000", help="stored counts, comma-separated")
    parser.add_argument("--nodes", type=int, default=4, help="nodes in the cluster")
    parser.add_argument("--imports", type=int, default=8, help="timed converges per count")
    args = parser.parse_args()
    counts = [int(x) for x in args.stored.split(",")]
    serial = [0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in counts:
            rows.append((count, bench_stored(count, args.nodes, args.imports, Path(tmp), serial)))
    base = statistics.mean(rows[0][1])
    print(f"\nN = {args.nodes}, {args.imports} converges per row, primary CPU per converge")
    print("| stored | mean ms | median ms | min ms | max ms | x first row |")
    print("|---:|---:|---:|---:|---:|---:|")
    for count, cpus in rows:
        mean = statistics.mean(cpus)
        print(f"| {count} | {mean * 1e3:.1f} | {statistics.median(cpus) * 1e3:.1f} | "
              f"{min(cpus) * 1e3:.1f} | {max(cpus) * 1e3:.1f} | {mean / base:.2f}x |")
    worst = statistics.mean(rows[-1][1]) / base
    print(f"goal <= {GOAL}x: {'met' if worst <= GOAL else 'NOT met'} ({worst:.2f}x)")


if __name__ == "__main__":
    main()
