"""A node whose store is busy or full answers with what happened, and keeps answering reads.

One in-process node over mTLS (as in ``test_refusal_audit``). Another process holds the
store's write lock: ``List`` answers at once while an ``Import`` waits, the import then fails
with :class:`StoreBusy` and nothing changed; with the lock released it goes through. The
store on a full tmpfs: the import fails with :class:`StoreFull`, nothing changed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from node.app import NodeApp
from node.errors import StoreBusy, StoreFull
from node.store import Store
from node.tls import TlsEndpoint
from sync.config import load_node_config, load_store_key
from sync.daemon import cluster_of
from tests.node.helpers import serve_store_api
from tests.node.test_refusal_audit import Node, cluster_dir
from tests.node.test_store_contention import _chain, _fill, _write_lock_held, small_volume
from tests.pki import pem_bundle

__all__ = ["cluster_dir", "small_volume"]  # fixtures shared with the modules they come from

BUSY_SECONDS = 1.0


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path


async def _start(cluster: Path, store_path: Path) -> tuple[Node, Callable[[], Awaitable[None]]]:
    config = load_node_config(cluster / "p1" / "node.toml")
    store = await Store.open(store_path, load_store_key(config.store_key_path),
                             busy_seconds=BUSY_SECONDS)
    endpoint = TlsEndpoint(node_name="p1", workers=2)
    endpoint.start("127.0.0.1", 0)
    app = NodeApp(name="p1", cluster=cluster_of(config.topology, "p1"), store=store,
                  endpoint=endpoint)
    await app.refresh()
    server, port = await serve_store_api(app, config)

    async def stop() -> None:
        await server.stop(None)
        endpoint.stop()
        await store.close()

    return Node(app, port, cluster), stop


@pytest.fixture
async def node(cluster_dir: Path, store_dir: Path) -> AsyncIterator[Node]:
    started, stop = await _start(cluster_dir, store_dir / "store.sqlite3")
    try:
        yield started
    finally:
        await stop()


def _site_pem(san: str) -> bytes:
    pki = _chain(san)
    return pem_bundle(pki.leaf.cert, pki.intermediate.cert, pki.root.cert, key=pki.leaf.key)


async def test_list_answers_at_once_while_an_import_waits_for_the_lock(node: Node) -> None:
    store = node.app.store
    async with node.client() as c:
        await c.import_files([("a.pem", _site_pem("a.example.com"))])
        before = (await store.get_meta("revision"), await store.digest(),
                  len(await store.audit_log(1000)))
        async with _write_lock_held(store.path):
            started = time.monotonic()
            imported = asyncio.ensure_future(
                c.import_files([("b.pem", _site_pem("b.example.com"))]))
            for _ in range(100_000):  # until the import holds the writer (waiting for the lock)
                if store._lock.locked() or imported.done():
                    break
                await asyncio.sleep(0)
            assert not imported.done()
            listed = await asyncio.wait_for(c.list_certificates(), 1.0)
            list_seconds = time.monotonic() - started
            state = await asyncio.wait_for(c.get_state(), 1.0)  # what `status` reads
            assert not imported.done()
            with pytest.raises(StoreBusy, match="the store is busy, try again"):
                await imported
            import_seconds = time.monotonic() - started
        after = (await store.get_meta("revision"), await store.digest(),
                 len(await store.audit_log(1000)))
        # the twin of the refusal: with the lock released the same import goes through
        await c.import_files([("b.pem", _site_pem("b.example.com"))])
    assert list_seconds < BUSY_SECONDS and len(listed) == 3
    assert state.set_digest == before[1]
    assert BUSY_SECONDS * 0.9 <= import_seconds < BUSY_SECONDS + 10
    assert after == before
    assert await store.get_meta("revision") == "2"


async def test_an_identical_reimport_does_not_bump_the_revision(node: Node) -> None:
    store = node.app.store
    pem = _site_pem("a.example.com")
    async with node.client() as c:
        first = await c.import_files([("a.pem", pem)])
        before = (await store.get_meta("revision"), await store.digest(),
                  len(await store.audit_log(1000)))
        again = await c.import_files([("a.pem", pem)])
        same = (await store.get_meta("revision"), await store.digest(),
                len(await store.audit_log(1000)))
        await c.import_files([("a.pem", pem)], name="renamed")  # the twin: a change
    assert again.identity_sha256 == first.identity_sha256
    assert same == before
    assert int(str(await store.get_meta("revision"))) == int(str(before[0])) + 1


async def test_a_full_data_volume_is_said_and_changes_nothing(
    cluster_dir: Path, small_volume: Path
) -> None:
    started, stop = await _start(cluster_dir, small_volume / "store.sqlite3")
    store = started.app.store
    try:
        async with started.client() as c:
            await c.import_files([("a.pem", _site_pem("a.example.com"))])
            before = (await store.get_meta("revision"), await store.digest())
            filler = _fill(small_volume)
            with pytest.raises(StoreFull, match=r"^no space left on the node.s data volume"):
                await c.import_files([("b.pem", _site_pem("b.example.com"))])
            assert (await store.get_meta("revision"), await store.digest()) == before
            assert len(await c.list_certificates()) == 3  # reads still answer
            filler.unlink()  # the twin: with space freed the import is made
            await c.import_files([("b.pem", _site_pem("b.example.com"))])
        assert await store.get_meta("revision") == "2"
    finally:
        await stop()
