"""kill -9 a process looping store changes: the store is intact, old or new, never a mix.

The child is this module run as ``python -m tests.node.test_store_crash MODE DB START``: it opens
the store and commits generation after generation (a root, an intermediate and a leaf with its
key, named ``gen<N>-...``), printing each generation's number once its commit returned. The
parent SIGKILLs it at a random point (after a random number of commits, plus a random sub-
commit delay), then checks the file with SQLite's own ``integrity_check`` and the store's
invariants, and starts the next round on the same file.

Modes: ``import`` adds each generation (``Store.add``, the import path); ``replace`` replaces the
whole set by each generation (``Store.replace_all``, the replication activation path).
"""

from __future__ import annotations

import asyncio
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from node.formats import cert_sha256
from node.store import Store
from node.store_view import SetEntry
from tests.node.helpers import check_sqlite
from tests.pki import make_intermediate, make_key, make_leaf, make_root

STORE_KEY = bytes.fromhex("5e" * 32)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]
ROLES = ("leaf", "intermediate", "root")


def generation(n: int) -> list[SetEntry]:
    root = make_root(f"Gen{n} Root")
    inter = make_intermediate(root, f"Gen{n} Intermediate")
    leaf = make_leaf(inter, [f"gen{n}.example.com"], key=make_key(fresh=True))
    return [
        SetEntry(leaf.cert, leaf.key, f"gen{n}-leaf"),
        SetEntry(inter.cert, None, f"gen{n}-intermediate"),
        SetEntry(root.cert, None, f"gen{n}-root"),
    ]


async def child(mode: str, db: Path, start: int) -> None:
    store = await Store.open(db, STORE_KEY)
    print("ready", flush=True)
    n = start
    while True:
        batch = generation(n)
        leaf = cert_sha256(batch[0].cert)
        now = T0 + timedelta(seconds=n)
        if mode == "import":
            await store.add(batch, make_default=leaf, actor="admin:crash", now=now)
        else:
            await store.replace_all(
                batch, default=leaf, meta={"generation": str(n)}, actor="node:crash", now=now
            )
        print(n, flush=True)
        n += 1


def _read_line(proc: subprocess.Popen[str], deadline: float) -> str:
    assert proc.stdout is not None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("the child printed nothing before the deadline")
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if ready:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"the child exited early with status {proc.wait()}")
            return line.strip()


def _kill_at_random(mode: str, db: Path, start: int, rng: random.Random) -> int:
    """Run the child, SIGKILL it at a random point; return the last generation it reported."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.node.test_store_crash", mode, str(db), str(start)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    last = start - 1
    try:
        deadline = time.monotonic() + 60
        assert _read_line(proc, deadline) == "ready"
        for _ in range(rng.randint(0, 3)):
            last = int(_read_line(proc, deadline))
        # a random point inside the next commit(s): a deliberate jitter, not a wait for a condition
        time.sleep(rng.uniform(0, 0.03))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.stdout is not None
        for line in proc.stdout.read().split():  # commits reported before the kill landed
            last = int(line)
    assert proc.returncode == -signal.SIGKILL
    return last


async def _check_store(mode: str, db: Path, reported: int) -> int:
    """The store's invariants; returns the newest generation stored."""
    store = await Store.open(db, STORE_KEY)
    try:
        certs = await store.list_certificates()
        gens: dict[int, dict[str, str]] = defaultdict(dict)
        for c in certs:
            gen, role = c.name.removeprefix("gen").split("-")
            gens[int(gen)][role] = c.sha256
        newest = max(gens, default=-1)
        assert newest >= reported, "a commit that returned was lost"
        assert all(set(g) == set(ROLES) for g in gens.values()), f"a half generation: {gens}"
        if mode == "import":
            assert sorted(gens) == list(range(newest + 1))
            assert await store.get_meta("revision") == (str(newest + 1) if gens else None)
            assert len(await store.audit_log(10_000)) == newest + 1
        else:
            assert sorted(gens) == ([newest] if gens else [])
            assert await store.get_meta("generation") == (str(newest) if gens else None)
        for n, g in gens.items():
            key = await store.get_key(g["leaf"])
            assert key is not None, f"generation {n} lost its key"
            assert await store.get_key(g["root"]) is None
        default = await store.get_meta("default_sha256")
        assert default == (gens[newest]["leaf"] if gens else None)
        return newest
    finally:
        await store.close()


async def _rounds(mode: str, db: Path, rounds: int) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    start = 0
    for i in range(rounds):
        reported = await asyncio.to_thread(_kill_at_random, mode, db, start, rng)
        context = f"(mode {mode}, seed {seed}, round {i})"
        try:
            check_sqlite(db)
            newest = await _check_store(mode, db, reported)
        except AssertionError as err:
            raise AssertionError(f"{err} {context}") from err
        start = newest + 1


@pytest.mark.parametrize("mode", ["import", "replace"])
async def test_kill_9_a_few_rounds(tmp_path: Path, mode: str) -> None:
    await _rounds(mode, tmp_path / "store.sqlite3", 3)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["import", "replace"])
async def test_kill_9_many_rounds(tmp_path: Path, mode: str) -> None:
    await _rounds(mode, tmp_path / "store.sqlite3", 50)


if __name__ == "__main__":
    asyncio.run(child(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])))
