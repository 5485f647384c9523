"""The functional core stays pure: no asyncio, grpc, sqlite or socket, no clock reads.

Two independent checks per core module:

* **AST**: the source imports none of the forbidden modules (at any depth of the file) and
  calls no clock (``datetime.now/utcnow/today``, ``date.today``, ``time.time/monotonic/...``).
* **Import in a fresh interpreter** with an ``__import__`` guard: any import of a forbidden
  module *issued by our own code* (``node.*``/``sync.*``) fails, and every module of ours that
  gets loaded must itself be core, so a core module cannot reach I/O through a shell module
  of ours. (Third-party internals are not ours to police: ``cryptography.x509`` loads
  ``email.utils``, which imports ``socket``.)

A listed module whose file does not exist yet is skipped.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = [
    "node.formats", "node.chain", "node.create", "node.names", "node.selection", "node.model",
    "node.errors", "sync.topology", "sync.plan", "sync.transfer", "node.lifecycle",
]  # fmt: skip
FORBIDDEN = {"asyncio", "grpc", "sqlite3", "aiosqlite", "socket"}
CLOCK_ATTRS = {"now", "utcnow", "today"}
TIME_CLOCKS = {
    "time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns",
    "localtime", "gmtime", "ctime",
}  # fmt: skip


def _path(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + ".py")


def _existing(modules: list[str]) -> list[str]:
    return [m for m in modules if _path(m).exists()]


def violations(source: str) -> list[str]:
    """Forbidden imports and clock calls in one module's source."""
    found: list[str] = []
    time_aliases: set[str] = set()
    clock_names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in FORBIDDEN:
                    found.append(f"line {node.lineno}: import {alias.name}")
                if top == "time":
                    time_aliases.add(alias.asname or "time")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            top = node.module.split(".")[0]
            if top in FORBIDDEN:
                found.append(f"line {node.lineno}: from {node.module} import ...")
            if node.module == "time":
                for alias in node.names:
                    if alias.name in TIME_CLOCKS:
                        clock_names.add(alias.asname or alias.name)
                        found.append(f"line {node.lineno}: from time import {alias.name}")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute):
                if func.attr in CLOCK_ATTRS:
                    found.append(f"line {node.lineno}: call .{func.attr}()")
                if (
                    func.attr in TIME_CLOCKS
                    and isinstance(func.value, ast.Name)
                    and func.value.id in time_aliases | {"time"}
                ):
                    found.append(f"line {node.lineno}: call time.{func.attr}()")
            elif isinstance(func, ast.Name) and func.id in clock_names:
                found.append(f"line {node.lineno}: call {func.id}()")
    return found


@pytest.mark.parametrize("module", _existing(CORE))
def test_core_module_source_is_pure(module: str) -> None:
    assert violations(_path(module).read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import asyncio\n", 1),
        ("from grpc import aio\n", 1),
        ("import sqlite3 as db\n", 1),
        ("def f():\n    import aiosqlite\n", 1),
        ("from socket import socket\n", 1),
        ("import datetime\nx = datetime.datetime.now()\n", 1),
        ("from datetime import datetime, UTC\nx = datetime.now(UTC)\n", 1),
        ("from datetime import date\nx = date.today()\n", 1),
        ("import time\nx = time.time()\n", 1),
        ("import time as t\nx = t.monotonic()\n", 1),
        ("from time import perf_counter\nx = perf_counter()\n", 2),
        # negative twins: pure code passes
        ("from datetime import datetime\ndef f(now: datetime) -> datetime:\n    return now\n", 0),
        ("import re\nfrom node.errors import BadInput\n", 0),
        ("from time import sleep\n", 0),
    ],
)
def test_the_checker_itself(source: str, expected: int) -> None:
    assert len(violations(source)) == expected


_GUARD = """
import builtins, importlib, json, sys
forbidden = set(sys.argv[2].split(","))
real_import = builtins.__import__
def guarded(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__name__", "")
    ours = importer.split(".")[0] in ("node", "sync")
    if level == 0 and ours and name.split(".")[0] in forbidden:
        raise ImportError(f"{importer} imports {name}")
    return real_import(name, globals, locals, fromlist, level)
builtins.__import__ = guarded
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(n for n in sys.modules if n.split(".")[0] in ("node", "sync"))))
"""


@pytest.mark.parametrize("module", _existing(CORE))
def test_core_module_imports_only_core_and_no_forbidden_module(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _GUARD, module, ",".join(sorted(FORBIDDEN))],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    allowed = set(CORE) | {"node", "sync"}
    assert loaded - allowed == set()


def test_the_import_guard_catches_a_shell_module() -> None:
    """Negative twin: a module of ours that imports asyncio is refused by the same guard."""
    candidates = ("sync.replicator", "node.store", "node.service", "sync.client")
    shell = next((m for m in candidates if _path(m).exists()), None)
    if shell is None:
        pytest.skip("no shell module exists yet")
    done = subprocess.run(
        [sys.executable, "-c", _GUARD, shell, ",".join(sorted(FORBIDDEN))],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "imports" in done.stderr
