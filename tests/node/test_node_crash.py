"""kill -9 the NODE (``certsync node serve``) in a loop of imports through the API.

Each round starts the node, imports generation after generation through
``NodeClient.import_files`` (one PEM file per generation: a leaf with its key, its
intermediate and its root, ``gen<N>``), then starts one more import and SIGKILLs the node at
a random point while it runs (a random number of completed imports, then a random delay
inside the next one). After the kill the store file is checked with SQLite's own
``PRAGMA integrity_check`` and opened with the node's store key: every generation that was
acknowledged is there, and every generation there is whole -- leaf, key (it opens, and it is
the leaf's key), intermediate and root -- never a part of one. The next round restarts the
node on the same files and continues. Three rounds by default, 50 with ``-m slow``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from node.errors import CertsyncError
from node.store import Store
from sync.client import NodeClient, NodeTarget
from sync.cluster_init import init_cluster, plan_init
from sync.config import load_store_key
from sync.localcluster import free_port_range
from tests.node.helpers import check_sqlite
from tests.pki import make_intermediate, make_key, make_leaf, make_root

CERTSYNC = str(Path(sys.executable).parent / "certsync")
DEADLINE = 60.0
PARTS = ("leaf", "intermediate", "root")


def generation_pem(n: int) -> bytes:
    """Generation ``n``: leaf (gen<n>.crash.example) + its key + intermediate + root, one PEM."""
    root = make_root(f"Gen{n} Root")
    inter = make_intermediate(root, f"Gen{n} Intermediate")
    leaf = make_leaf(inter, [f"gen{n}.crash.example"], key=make_key(fresh=True))
    certs = (leaf.cert, inter.cert, root.cert)
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    return pem + leaf.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _part(cn: str) -> tuple[int, str]:
    """(generation, part) from a subject CN: ``gen3.crash.example`` / ``Gen3 Root`` ..."""
    if cn.endswith(".crash.example"):
        return int(cn.removeprefix("gen").split(".")[0]), "leaf"
    gen, what = cn.split(" ")
    return int(gen.removeprefix("Gen")), what.lower()


class Node:
    """The node's cluster directory and its current process."""

    def __init__(self, root: Path) -> None:
        base = free_port_range(3)  # gRPC, TLS, console
        self.directory = root / "c"
        init_cluster(
            plan_init(
                self.directory, site="crash.example", primary="p1=p1.crash.example",
                base_port=base,
            ),
            now=datetime.now(UTC),
        )
        self.grpc_port = base
        self.log = root / "node.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def node_dir(self) -> Path:
        return self.directory / "p1"

    def start(self) -> None:
        with self.log.open("ab") as fh:
            self.process = subprocess.Popen(
                [CERTSYNC, "node", "serve", "--config", str(self.node_dir / "node.toml")],
                stdout=fh,
                stderr=fh,
            )

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        assert self.process.wait(timeout=DEADLINE) == -signal.SIGKILL

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def client(self) -> NodeClient:
        d = self.directory
        target = NodeTarget.from_files(
            name="p1", address=f"127.0.0.1:{self.grpc_port}", ca_cert=d / "ca.pem",
            cert=d / "admin.pem", key=d / "admin-key.pem",
        )
        return NodeClient(target, timeout=30)

    async def wait_ready(self, client: NodeClient) -> None:
        deadline = time.monotonic() + DEADLINE
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"the node exited with {self.process.returncode}; "
                                     f"see {self.log}")
            with contextlib.suppress(CertsyncError):  # unreachable while it starts
                await client.get_state()
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the node did not answer within {DEADLINE} s")
            await asyncio.sleep(0.05)  # polling a subprocess, bounded by the deadline


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    try:
        yield n
    finally:
        n.stop()


async def _round(node: Node, start: int, rng: random.Random) -> int:
    """One run of the node killed at a random point; the last generation acknowledged."""
    node.start()
    last = start - 1
    async with node.client() as client:
        await node.wait_ready(client)
        n = start
        for _ in range(rng.randint(0, 3)):
            await client.import_files([(f"gen{n}.pem", generation_pem(n))])
            last, n = n, n + 1
        pending = asyncio.create_task(client.import_files([(f"gen{n}.pem", generation_pem(n))]))
        # a random point inside the import: a deliberate jitter, not a wait for a condition
        await asyncio.wait({pending}, timeout=rng.uniform(0, 0.15))
        node.kill()
        try:
            await pending
            last = n  # acknowledged before the kill landed
        except CertsyncError:
            pass  # cut off: the store must hold generation n whole or not at all
    return last


async def _check_store(node: Node, acknowledged: int) -> int:
    """Every generation whole, none acknowledged lost; returns the newest stored."""
    store_key = load_store_key(node.node_dir / "store.key")
    store = await Store.open(node.node_dir / "store.sqlite3", store_key)
    try:
        gens: dict[int, dict[str, str]] = defaultdict(dict)
        for c in await store.list_certificates():
            cn = c.certificate().subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
            gen, part = _part(str(cn))
            gens[gen][part] = c.sha256
        newest = max(gens, default=-1)
        assert newest >= acknowledged, f"generation {acknowledged} was acknowledged, then lost"
        assert sorted(gens) == list(range(newest + 1)), f"a generation is missing: {sorted(gens)}"
        for n, parts in gens.items():
            assert set(parts) == set(PARTS), f"generation {n} is half stored: {parts}"
            key = await store.get_key(parts["leaf"])
            assert key is not None, f"generation {n} lost its key"
            leaf = (await store.get(parts["leaf"])).certificate()
            assert key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ) == leaf.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ), f"generation {n}'s key is not its leaf's"
            chain, problems = await store.chain(parts["leaf"])
            assert problems == ()
            assert [c.subject for c in chain] == [
                (await store.get(parts[p])).certificate().subject for p in ("intermediate", "root")
            ]
        return newest
    finally:
        await store.close()


async def _rounds(node: Node, rounds: int) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    start = 0
    for i in range(rounds):
        acknowledged = await _round(node, start, rng)
        try:
            check_sqlite(node.node_dir / "store.sqlite3")
            newest = await _check_store(node, acknowledged)
        except AssertionError as err:
            raise AssertionError(f"{err} (seed {seed}, round {i}; node log {node.log})") from err
        start = newest + 1


async def test_kill_9_node_a_few_rounds(node: Node) -> None:
    await _rounds(node, 3)


@pytest.mark.slow
async def test_kill_9_node_many_rounds(node: Node) -> None:
    await _rounds(node, 50)


async def test_a_half_generation_is_detected(node: Node) -> None:
    """Negative twin: the check above fails on a store holding a generation without its
    root (what a torn import would leave), so the crash test can fail."""
    node.start()
    async with node.client() as client:
        await node.wait_ready(client)
        await client.import_files([("gen0.pem", generation_pem(0))])
        pem = generation_pem(1)
        head = pem.split(b"-----END CERTIFICATE-----\n")
        # leaf, intermediate and the key; the root left out
        torn = head[0] + b"-----END CERTIFICATE-----\n" + head[1] + b"-----END CERTIFICATE-----\n"
        torn += pem[pem.index(b"-----BEGIN PRIVATE KEY-----"):]
        await client.import_files([("gen1.pem", torn)])
    node.stop()
    with pytest.raises(AssertionError, match="generation 1 is half stored"):
        await _check_store(node, 1)
