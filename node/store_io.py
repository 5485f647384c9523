"""[shell] What SQLite's failures mean for the node, and the store's reader connection.

:func:`write_error` turns the SQLite errors a change can meet into errors of our hierarchy
that say what happened: the write lock held by another connection past the bounded wait
(:data:`STORE_BUSY_SECONDS`) is :class:`StoreBusy`; a full data volume (SQLite's ``FULL``, or
an I/O error on a volume with no space left) is :class:`StoreFull`. Either way the change's
transaction was rolled back, so the store holds what it held.

:func:`open_reader` opens the second, read-only connection a store reads through while its
writer connection is taken by a change (which may be waiting for the write lock): in WAL
mode a reader never waits for a writer.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Final

import aiosqlite

from node.errors import CertsyncError, StoreBusy, StoreFull

__all__ = ["STORE_BUSY_SECONDS", "open_reader", "write_error"]

#: how long a change waits for another connection's write lock before :class:`StoreBusy`
STORE_BUSY_SECONDS: Final = 5.0

_BUSY: Final = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_FULL: Final = sqlite3.SQLITE_FULL
_IOERR: Final = sqlite3.SQLITE_IOERR


def _primary_code(err: sqlite3.Error) -> int | None:
    code = getattr(err, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def _no_space_left(path: Path) -> bool:
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 2 * st.f_bsize  # not even two blocks


def write_error(err: sqlite3.Error, path: Path, *, waited: float) -> CertsyncError | None:
    """The error of our hierarchy for ``err``, met by a change to the store at ``path``
    after waiting up to ``waited`` seconds for the lock; ``None`` when it is none of ours
    (a bug, which keeps its traceback)."""
    code = _primary_code(err)
    if code in _BUSY:
        return StoreBusy(
            f"the store is busy, try again: another process held its write lock for more "
            f"than {waited:g} s; nothing was changed"
        )
    if code == _FULL or (code == _IOERR and _no_space_left(path)):
        return StoreFull(
            "no space left on the node's data volume; nothing was changed; free space "
            "there and try again"
        )
    return None


async def open_reader(path: Path, *, busy_seconds: float) -> aiosqlite.Connection:
    """A read-only connection (``query_only``) on the WAL store at ``path``."""
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        await conn.execute(f"PRAGMA busy_timeout = {int(busy_seconds * 1000)}")
        await conn.execute("PRAGMA query_only = ON")
        await conn.execute("PRAGMA trusted_schema = OFF")
    except BaseException:
        await conn.close()
        raise
    return conn
