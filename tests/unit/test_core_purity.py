"""The layout holds: arrows point inward, the functional core stays pure, modules stay small.

What is checked, over every module of ``node/`` and ``sync/`` (generated ``node/api`` aside):

* **Tags.** Each module's docstring starts with ``[core]`` or ``[shell]``. The core is the
  set of ``[core]``-tagged modules, and it must equal :data:`CORE`, the list this file keeps
  by hand: a tagged module that is not checked, a checked module that is not tagged, and a
  listed module whose file is missing all fail.
* **Arrows.** No ``node/`` module imports ``sync`` (at any depth of the file, inside
  functions too); no core module imports a shell module of ours.
* **Purity of the core**, by the AST of the whole file: no forbidden module (I/O, threads,
  event loops, clocks, randomness: :data:`FORBIDDEN`), no ``open``, no file-system methods,
  no clock read (``datetime.now``/``utcnow``/``today`` through any alias, ``getattr``
  included), no randomness drawn (``os.urandom``, ``secrets``, ``random``, key generation,
  ``random_serial_number``, ``uuid4``). Randomness drawn *inside* a library call that cannot
  take it from its caller is allowed only on :data:`LIBRARY_RANDOMNESS`, a short list.
* **Purity at import**: in a fresh interpreter with an ``__import__`` guard, importing a core
  module loads no forbidden module from our code and no module of ours that is not core.
* **Size.** No module over :data:`MAX_LINES` lines unless its docstring has a line starting
  ``Size:`` saying why; at most :data:`MAX_EXCUSED` such modules, none over
  :data:`HARD_MAX_LINES`.

Every rule is proved by a planted violation (``PLANTED``) that the checker must report, each
with a clean twin that it must not.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("node", "sync")

#: the functional core, kept by hand; it must match the ``[core]`` tags exactly
CORE = frozenset({
    "node.chain", "node.create", "node.errors", "node.formats", "node.identity",
    "node.importing", "node.lifecycle", "node.model", "node.names", "node.renewal_plan",
    "node.sealing", "node.selection", "node.store_chain", "node.store_rows", "node.store_view",
    "node.text",
    "node.der", "node.limits", "node.pkcs12_limits", "node.certkeys", "node.exports",
    "node.coverage_gate",
    "node.linking",
    "sync.plan", "sync.promotion", "sync.report", "sync.rollout", "sync.snapshot", "sync.staging",
    "sync.topology", "sync.transfer",
    "node.audit_view",
    "sync.console", "sync.console.pages", "sync.console.timeline",
})  # fmt: skip

#: modules a core file may not import (top-level names): I/O, processes, threads, event
#: loops, databases, RPC, clocks and randomness
FORBIDDEN = frozenset({
    "os", "subprocess", "ssl", "socket", "threading", "asyncio", "sqlite3", "aiosqlite",
    "grpc", "time", "random", "secrets", "multiprocessing", "concurrent", "shutil",
    "tempfile", "selectors", "signal", "urllib.request", "http", "requests", "structlog",
})  # fmt: skip
CLOCK_ATTRS = frozenset({"now", "utcnow", "today"})
#: calls that draw randomness or generate keys
RANDOM_ATTRS = frozenset({
    "urandom", "getrandom", "token_bytes", "token_hex", "token_urlsafe", "randbits",
    "generate_private_key", "generate", "random_serial_number", "uuid1", "uuid4",
})  # fmt: skip
#: library entry points that draw randomness inside, with no way to pass it in
LIBRARY_DRAWS = frozenset({
    "hpke", "serialize_key_and_certificates", "BestAvailableEncryption",
    "encryption_builder",
})  # fmt: skip
#: where a library's own draw is allowed: (module, entry point) -> why
LIBRARY_RANDOMNESS: dict[tuple[str, str], str] = {
    ("sync.transfer", "hpke"): "HPKE draws its ephemeral key inside Suite.encrypt",
    ("node.formats", "encryption_builder"): "PKCS#12 export: OpenSSL draws salts and IVs",
    ("node.formats", "BestAvailableEncryption"): "PEM key export: OpenSSL draws salt and IV",
    ("node.formats", "serialize_key_and_certificates"): "PKCS#12 export: salts and IVs",
    ("node.exports", "encryption_builder"): "PKCS#12 export: OpenSSL draws salts and IVs",
    ("node.exports", "serialize_key_and_certificates"): "PKCS#12 export: salts and IVs",
}
FILE_IO_ATTRS = frozenset({
    "read_bytes", "read_text", "write_bytes", "write_text", "open", "unlink", "mkdir",
    "touch", "iterdir", "glob", "rglob", "exists", "is_file", "is_dir", "stat", "chmod",
    "rmdir", "symlink_to",
})  # fmt: skip

MAX_LINES = 600
HARD_MAX_LINES = 900
MAX_EXCUSED = 2


def _module_files() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if rel.parts[:2] == ("node", "api"):
                continue  # generated from proto/ (tests/node/test_generated.py)
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _module_files()


def _docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""


def tag_of(path: Path) -> str | None:
    """``core``, ``shell``, or None for a module without a tag (an empty package marker is
    tagged by its package's role: it has no code)."""
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        return "empty"
    doc = _docstring(path)
    for tag in ("core", "shell"):
        if doc.startswith(f"[{tag}]"):
            return tag
    return None


TAGS = {name: tag_of(path) for name, path in MODULES.items()}


# --------------------------------------------------------------------------- the checker


@dataclass(frozen=True)
class Finding:
    rule: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.rule}: {self.what}"


def _imported(node: ast.Import | ast.ImportFrom, module: str) -> list[str]:
    """Absolute names of the modules ``node`` imports (relative imports resolved)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parent = module.split(".")[: -node.level] if node.level else []
        base = ".".join([*parent, base] if base else parent)
    # "from node import store" imports the module node.store
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def _root_name(expr: ast.expr) -> str | None:
    while isinstance(expr, ast.Attribute):
        expr = expr.value
    if isinstance(expr, ast.Call):
        return _root_name(expr.func)
    return expr.id if isinstance(expr, ast.Name) else None


def purity_findings(source: str, module: str = "sync.example") -> list[Finding]:
    """Everything in ``source`` a core module may not do (see the module docstring)."""
    tree = ast.parse(source)
    found: list[Finding] = []
    clock_roots: set[str] = set()  # names bound to the datetime module or its classes
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for name in _imported(node, module):
                top = name.split(".")[0]
                if top in FORBIDDEN or name in FORBIDDEN:
                    found.append(Finding("forbidden import", node.lineno, name))
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "datetime":
                        clock_roots.add(alias.asname or "datetime")
            elif node.module == "datetime":
                for alias in node.names:
                    if alias.name in ("datetime", "date"):
                        clock_roots.add(alias.asname or alias.name)
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if alias.name in CLOCK_ATTRS | RANDOM_ATTRS:
                        found.append(Finding("clock or randomness", node.lineno, alias.name))
                    if alias.name in LIBRARY_DRAWS:
                        found.append(Finding("library randomness", node.lineno, alias.name))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if node.attr in CLOCK_ATTRS and _root_name(node.value) in clock_roots:
                found.append(Finding("clock read", node.lineno, f".{node.attr}"))
            if node.attr in RANDOM_ATTRS:
                found.append(Finding("randomness", node.lineno, f".{node.attr}"))
            if node.attr in LIBRARY_DRAWS:
                found.append(Finding("library randomness", node.lineno, node.attr))
            if node.attr in FILE_IO_ATTRS:
                found.append(Finding("file system", node.lineno, f".{node.attr}"))
        elif isinstance(node, ast.Name) and node.id == "open":
            found.append(Finding("file system", node.lineno, "open"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "__import__")
        ):
            for arg in node.args[1:2] if node.func.id == "getattr" else node.args[:1]:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    target = arg.value
                    if target in CLOCK_ATTRS | RANDOM_ATTRS | FILE_IO_ATTRS or (
                        target.split(".")[0] in FORBIDDEN
                    ):
                        found.append(Finding("dynamic access", node.lineno, target))
    # library draws on the allow-list are fine in the module named there
    return [
        f for f in found
        if not (f.rule == "library randomness" and (module, f.what) in LIBRARY_RANDOMNESS)
    ]  # fmt: skip


def import_findings(source: str, module: str, tags: dict[str, str | None]) -> list[Finding]:
    """Arrow violations of ``module``: ``node`` importing ``sync``; core importing shell."""
    found: list[Finding] = []
    core = tags.get(module) == "core"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = _imported(node, module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if module.split(".")[0] == "node" and top == "sync":
                found.append(Finding("node imports sync", node.lineno, name))
            if core and top in PACKAGES and name in tags and tags[name] not in ("core", "empty"):
                found.append(Finding("core imports shell", node.lineno, name))
    return found


# --------------------------------------------------------------------------- the real tree


def test_every_module_is_tagged_core_or_shell() -> None:
    untagged = sorted(name for name, tag in TAGS.items() if tag is None)
    assert untagged == [], "docstring must start with [core] or [shell]"


def test_the_core_list_matches_the_tags() -> None:
    tagged = {name for name, tag in TAGS.items() if tag == "core"}
    missing = sorted(m for m in CORE if m not in MODULES)
    assert missing == [], "listed core modules whose file is missing"
    assert sorted(tagged - CORE) == [], "tagged [core] but not checked: add them to CORE"
    assert sorted(CORE - tagged) == [], "checked as core but not tagged [core]"


@pytest.mark.parametrize("module", sorted(CORE))
def test_core_module_source_is_pure(module: str) -> None:
    path = MODULES.get(module)
    assert path is not None, f"{module} is listed as core but has no file"
    findings = purity_findings(path.read_text(encoding="utf-8"), module)
    assert [str(f) for f in findings] == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_arrows_point_inward(module: str) -> None:
    source = MODULES[module].read_text(encoding="utf-8")
    assert [str(f) for f in import_findings(source, module, TAGS)] == []


def size_problems(files: dict[str, Path]) -> list[str]:
    """What breaks the size rule among ``files`` (module name -> path)."""
    sizes = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in files.items()}
    excused = {m for m in sizes if any(
        line.startswith("Size:") for line in _docstring(files[m]).splitlines())}
    problems = [f"{m}: {sizes[m]} lines, no 'Size:' line" for m in sorted(sizes)
                if sizes[m] > MAX_LINES and m not in excused]
    if len(excused) > MAX_EXCUSED:
        problems.append(f"{len(excused)} modules excuse their size: {sorted(excused)}")
    problems += [f"{m}: {sizes[m]} lines, over {HARD_MAX_LINES}" for m in sorted(excused)
                 if sizes[m] > HARD_MAX_LINES]
    return problems


def test_modules_stay_small() -> None:
    assert size_problems(MODULES) == []


_GUARD = """
import builtins, importlib, json, sys
forbidden = set(sys.argv[2].split(","))
real_import = builtins.__import__
def guarded(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__name__", "")
    ours = importer.split(".")[0] in ("node", "sync")
    if level == 0 and ours and (name.split(".")[0] in forbidden or name in forbidden):
        raise ImportError(f"{importer} imports {name}")
    return real_import(name, globals, locals, fromlist, level)
builtins.__import__ = guarded
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(n for n in sys.modules if n.split(".")[0] in ("node", "sync"))))
"""


def _guarded_import(module: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _GUARD, module, ",".join(sorted(FORBIDDEN))],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("module", sorted(CORE))
def test_core_module_imports_only_core_and_no_forbidden_module(module: str) -> None:
    done = _guarded_import(module)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    allowed = set(CORE) | {m for m, t in TAGS.items() if t == "empty"}
    assert sorted(loaded - allowed) == []


def test_the_import_guard_catches_a_shell_module() -> None:
    """Negative twin: a module of ours that imports asyncio is refused by the same guard."""
    done = _guarded_import("sync.replicator")
    assert done.returncode != 0
    assert "imports" in done.stderr


# --------------------------------------------------------------------------- planted bugs

#: (source, module it pretends to be, rule expected); each rule has a clean twin below
PLANTED = [
    ("import asyncio\n", "node.x", "forbidden import"),
    ("def f():\n    import subprocess\n    subprocess.run(['true'])\n", "node.x",
     "forbidden import"),
    ("import os\nx = os.environ\n", "node.x", "forbidden import"),
    ("from ssl import SSLContext\n", "node.x", "forbidden import"),
    ("import threading\n", "node.x", "forbidden import"),
    ("import sqlite3 as db\n", "node.x", "forbidden import"),
    ("def f():\n    import aiosqlite\n", "node.x", "forbidden import"),
    ("from grpc import aio\n", "node.x", "forbidden import"),
    ("from socket import socket\n", "node.x", "forbidden import"),
    ("import time\nx = time.time()\n", "node.x", "forbidden import"),
    ("def f(p):\n    with open(p) as fh:\n        return fh.read()\n", "node.x", "file system"),
    ("def f(p):\n    return p.read_bytes()\n", "node.x", "file system"),
    ("import datetime\nx = datetime.datetime.now()\n", "node.x", "clock read"),
    ("import datetime as dt\nclock = dt.datetime.now\ny = clock()\n", "node.x", "clock read"),
    ("from datetime import datetime as D, UTC\nx = D.now(UTC)\n", "node.x", "clock read"),
    ("from datetime import date\nx = date.today()\n", "node.x", "clock read"),
    ("import datetime\nx = getattr(datetime.datetime, 'now')()\n", "node.x", "dynamic access"),
    ("import secrets\nx = secrets.token_bytes(8)\n", "node.x", "forbidden import"),
    ("import random\nx = random.random()\n", "node.x", "forbidden import"),
    ("from cryptography.hazmat.primitives.asymmetric import ec\n"
     "k = ec.generate_private_key(ec.SECP256R1())\n", "node.x", "randomness"),
    ("from cryptography.hazmat.primitives.asymmetric import ed25519\n"
     "k = ed25519.Ed25519PrivateKey.generate()\n", "node.x", "randomness"),
    ("from cryptography import x509\nn = x509.random_serial_number()\n", "node.x", "randomness"),
    ("import uuid\nu = uuid.uuid4()\n", "node.x", "randomness"),
    ("from cryptography.hazmat.primitives import hpke\n", "node.x", "library randomness"),
    ("from sync.topology import Topology\n", "node.x", "node imports sync"),
    ("def f():\n    from sync import replicator\n", "node.x", "node imports sync"),
    ("import importlib\nm = importlib.import_module('sync.plan')\n", "node.x",
     "node imports sync"),
    ("def f():\n    from node.store import Store\n", "node.names", "core imports shell"),
    ("from . import store\n", "node.names", "core imports shell"),
]
CLEAN = [
    ("from datetime import datetime\ndef f(now: datetime) -> datetime:\n    return now\n",
     "node.x"),
    ("import re\nfrom node.errors import BadInput\n", "node.x"),
    ("from node.names import parse_hostname\n", "node.names"),
    ("from node.store import Store\n", "sync.x"),  # shell code may use the shell
    ("def f(rng):\n    return rng(32)\n", "node.x"),  # randomness as a parameter
    ("from cryptography.hazmat.primitives import hpke\n", "sync.transfer"),  # allow-listed
    ("from pathlib import Path\ndef f(p: Path) -> str:\n    return p.name\n", "node.x"),
    ("import uuid\nok = uuid.UUID('6f1c1f64-7a0e-4a7e-9d3b-0c4f5f3a9e11')\n", "node.x"),
]

_PLANTED_TAGS: dict[str, str | None] = {
    **TAGS, "node.x": "core", "node.names": "core", "node.store": "shell", "sync.x": "shell",
    "sync.plan": "core", "sync.topology": "core", "sync.replicator": "shell",
}


def _all_findings(source: str, module: str) -> set[str]:
    rules = {f.rule for f in import_findings(source, module, _PLANTED_TAGS)}
    if _PLANTED_TAGS.get(module) == "core":
        rules |= {f.rule for f in purity_findings(source, module)}
    return rules


@pytest.mark.parametrize(("source", "module", "rule"), PLANTED)
def test_a_planted_violation_is_found(source: str, module: str, rule: str) -> None:
    assert rule in _all_findings(source, module)


@pytest.mark.parametrize(("source", "module"), CLEAN)
def test_its_clean_twin_passes(source: str, module: str) -> None:
    assert _all_findings(source, module) == set()


def test_every_rule_has_a_planted_violation() -> None:
    rules = {"forbidden import", "file system", "clock read", "dynamic access", "randomness",
             "library randomness", "node imports sync", "core imports shell"}
    assert {rule for _, _, rule in PLANTED} == rules


def test_untagged_and_oversized_modules_are_caught(tmp_path: Path) -> None:
    """The tag and size rules fail on planted files (and pass their twins)."""
    untagged = tmp_path / "a.py"
    untagged.write_text('"""No tag here."""\n')
    tagged = tmp_path / "b.py"
    tagged.write_text('"""[shell] Tagged."""\n')
    assert tag_of(untagged) is None
    assert tag_of(tagged) == "shell"
    body = "x = 1\n" * (MAX_LINES + 1)
    big = tmp_path / "c.py"
    big.write_text('"""[core] Big."""\n' + body)
    excused = [tmp_path / f"e{i}.py" for i in range(MAX_EXCUSED + 1)]
    for path in excused:
        path.write_text('"""[core] Big.\n\nSize: one table.\n"""\n' + body)
    huge = tmp_path / "h.py"
    huge.write_text('"""[core] Huge.\n\nSize: one table.\n"""\n' + "x = 1\n" * HARD_MAX_LINES)
    assert size_problems({"big": big}) == [f"big: {MAX_LINES + 2} lines, no 'Size:' line"]
    assert size_problems({"ok": excused[0]}) == []  # twin: an excused module passes
    assert "modules excuse their size" in " ".join(
        size_problems({f"e{i}": p for i, p in enumerate(excused)}))
    assert size_problems({"huge": huge}) == [f"huge: {HARD_MAX_LINES + 4} lines, over 900"]
