"""The store under contention and on a full volume, and re-imports that change nothing.

* Another process holds the SQLite write lock: reads answer at once (the reader connection),
  a change waits the bounded time and fails with :class:`StoreBusy`, the store unchanged;
  once the lock is released the same change goes through.
* The data volume is full (a small real tmpfs; needs root to mount it -- skipped otherwise,
  failed under CI): a change fails with :class:`StoreFull`, the store unchanged; with space
  freed the same change goes through.
* An add identical to what is stored bumps neither the revision nor the digest and writes no
  audit row; a changed one does.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from node.errors import StoreBusy, StoreFull
from node.formats import cert_sha256
from node.rpc import ERROR_DATA_KEY, ERROR_KIND_KEY, status_for
from node.store import Store
from node.store_view import SetEntry
from sync.client import error_from_status
from tests._ci import missing
from tests.pki import Pki, make_intermediate, make_key, make_leaf, make_root

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ACTOR = "admin:ops"
KEY = bytes(range(32))
BUSY_SECONDS = 0.5

#: holds the write lock of the store named by argv[1] until its stdin closes
_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


def _chain(san: str) -> Pki:
    root = make_root(f"Root for {san}")
    inter = make_intermediate(root, f"Intermediate for {san}")
    return Pki(root, inter, make_leaf(inter, [san], key=make_key(fresh=True)))


def _entries(pki: Pki, name: str = "site") -> list[SetEntry]:
    return [SetEntry(pki.leaf.cert, pki.leaf.key, name),
            SetEntry(pki.intermediate.cert, None, ""), SetEntry(pki.root.cert, None, "")]


async def _state(store: Store) -> tuple[object, ...]:
    view = await store.view()
    audit = await store.audit_log(1000)
    return (view.meta.get("revision"), view.digest, view.meta.get("default_sha256"),
            tuple(c.sha256 for c in view.certs), len(audit))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "store.sqlite3", KEY, busy_seconds=BUSY_SECONDS)
    try:
        yield s
    finally:
        await s.close()


@contextlib.asynccontextmanager
async def _write_lock_held(path: Path) -> AsyncIterator[None]:
    """Another process holds the store's write lock (BEGIN IMMEDIATE) inside the block."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLDER, str(path),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line == b"locked\n"
        yield
    finally:
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 30)


async def _until_waiting(store: Store, task: asyncio.Task[object]) -> None:
    """Until ``task`` holds the store's writer (it is waiting for the write lock)."""
    for _ in range(10_000):
        if store._lock.locked() or task.done():
            return
        await asyncio.sleep(0)
    raise AssertionError("the change never took the store's writer")


# --------------------------------------------------------------------------- busy store


async def test_reads_answer_at_once_while_another_process_holds_the_write_lock(
    store: Store,
) -> None:
    await store.add(_entries(_chain("a.example.com")), make_default=None, actor=ACTOR, now=T0)
    before = await _state(store)
    change = _entries(_chain("b.example.com"), "b")
    async with _write_lock_held(store.path):
        started = time.monotonic()
        task = asyncio.create_task(store.add(change, make_default=None, actor=ACTOR, now=T0))
        await _until_waiting(store, task)
        assert not task.done()  # the change waits for the lock ...
        listed = await asyncio.wait_for(store.list_certificates(), 1.0)  # ... a read does not
        read_seconds = time.monotonic() - started
        view = await asyncio.wait_for(store.view(), 1.0)
        assert not task.done()
        with pytest.raises(StoreBusy, match="the store is busy, try again"):
            await task
        waited = time.monotonic() - started
    assert read_seconds < BUSY_SECONDS
    assert [c.sha256 for c in listed] == list(before[3])  # type: ignore[call-overload]
    assert view.digest == before[1]
    assert BUSY_SECONDS * 0.9 <= waited < BUSY_SECONDS + 5
    assert await _state(store) == before  # nothing changed, not even an audit row


async def test_the_same_change_goes_through_once_the_lock_is_released(store: Store) -> None:
    """The twin: without the other process's lock the change is made (and audited)."""
    before = await _state(store)
    async with _write_lock_held(store.path):
        with pytest.raises(StoreBusy):
            await store.add(_entries(_chain("c.example.com")), make_default=None,
                            actor=ACTOR, now=T0)
    assert await _state(store) == before
    await store.add(_entries(_chain("c.example.com")), make_default=None,
                           actor=ACTOR, now=T0)
    after = await _state(store)
    assert after[0] == "1" and after[4] == before[4] + 1  # type: ignore[operator]


def test_store_errors_travel_as_themselves() -> None:
    """Busy and full reach the CLI as their own errors (one line, their own message)."""
    for err, code in ((StoreBusy("the store is busy, try again: x"), grpc.StatusCode.UNAVAILABLE),
                      (StoreFull("no space left on the node's data volume; x"),
                       grpc.StatusCode.RESOURCE_EXHAUSTED)):
        assert status_for(err) == code
        back = error_from_status(code, err.message,
                                 [(ERROR_KIND_KEY, type(err).__name__), (ERROR_DATA_KEY, "{}")],
                                 node="p1", address="127.0.0.1:1")
        assert type(back) is type(err) and back.message == err.message
        assert "\n" not in back.message and "unreachable" not in back.message


# --------------------------------------------------------------------------- full volume


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs mounted at a fresh directory (root only)."""
    if os.geteuid() != 0:
        missing("root, to mount a small tmpfs as a full data volume")
    mount = tmp_path / "volume"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs",
                           str(mount)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        missing(f"a tmpfs mount ({proc.stderr.strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(directory: Path) -> Path:
    """Fill ``directory``'s volume to the last byte; the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        for chunk in (b"\0" * 65536, b"\0"):
            try:
                while os.write(fd, chunk):
                    pass
            except OSError as err:
                assert err.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


async def test_a_full_volume_is_said_and_changes_nothing(small_volume: Path) -> None:
    store = await Store.open(small_volume / "store.sqlite3", KEY, busy_seconds=BUSY_SECONDS)
    try:
        await store.add(_entries(_chain("a.example.com")), make_default=None,
                        actor=ACTOR, now=T0)
        before = await _state(store)
        filler = _fill(small_volume)
        change = _entries(_chain("big.example.com"), "x" * 20000)  # more than a page
        with pytest.raises(StoreFull, match="no space left on the node's data volume"):
            await store.add(change, make_default=None, actor=ACTOR, now=T0)
        assert await _state(store) == before
        filler.unlink()  # the twin: with space the same change is made
        await store.add(change, make_default=None, actor=ACTOR, now=T0)
        assert (await _state(store))[0] == "2"
    finally:
        await store.close()


# --------------------------------------------------------------------------- re-import


async def test_an_identical_add_changes_nothing(store: Store) -> None:
    pki = _chain("a.example.com")
    await store.add(_entries(pki), make_default=None, actor=ACTOR, now=T0)
    before = await _state(store)
    assert await store.add(_entries(pki), make_default=None, actor=ACTOR, now=T0) == []
    leaf_sha = before[2]
    assert await store.add(_entries(pki), make_default=str(leaf_sha), actor=ACTOR, now=T0) == []
    assert await store.add([SetEntry(pki.root.cert, None, "")], make_default=None,
                               actor=ACTOR, now=T0) == []
    assert await _state(store) == before  # revision, digest, audit rows


@pytest.mark.parametrize("what", ["name", "key", "new certificate", "default"])
async def test_a_changed_add_bumps_the_revision(store: Store, what: str) -> None:
    """The twin: any real change is made, bumps the revision and is audited."""
    pki, other = _chain("a.example.com"), _chain("b.example.com")
    first = [SetEntry(pki.leaf.cert, None if what == "key" else pki.leaf.key, "site"),
             *_entries(pki)[1:]]
    await store.add(first, make_default=None, actor=ACTOR, now=T0)
    if what == "default":
        await store.add(_entries(other, "other"), make_default=None, actor=ACTOR, now=T0)
    before = await _state(store)
    again = {
        "name": _entries(pki, "renamed"),
        "key": _entries(pki),
        "new certificate": _entries(other),
        "default": _entries(other, "other"),
    }[what]
    default = cert_sha256(other.leaf.cert) if what == "default" else None
    await store.add(again, make_default=default, actor=ACTOR, now=T0)
    after = await _state(store)
    assert int(str(after[0])) == int(str(before[0])) + 1
    assert after[4] == before[4] + 1  # type: ignore[operator]
