"""[shell] Mutation testing of the modules whose bugs would be silent and dangerous (mutmut 3).

``deploy/mutation.sh [MODULE...]`` (no MODULE: every module of :data:`MODULES`, in order)
runs mutmut on one module at a time, in a scratch copy of the tree (the worktree is never
changed), with that module's own small in-process test selection, on a wall-clock budget
(``MUTATION_BUDGET`` seconds per module, default 600) and ``MUTATION_WORKERS`` mutmut
workers (default 1: the machine is shared); ``MUTATION_TESTS`` (space-separated paths)
replaces the module's test selection, e.g. to measure a "before" score. It prints, per
module, the mutation score counted over EVERY mutant mutmut generates (a mutant that
survived, timed out, had no test, or was not reached within the budget counts as not
killed) and each surviving mutant with its diff, marked ``equivalent`` when
tests/mutation-equivalent.md lists it with a reason.
Exit 0 when every module reaches :data:`GOAL`, 1 otherwise.

Add a module by adding a line to :data:`MODULES`: its path and the fast tests that guard it.
"""

from __future__ import annotations

import ast
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomli_w

ROOT = Path(__file__).resolve().parents[1]
GOAL = 90.0
EQUIVALENT_FILE = ROOT / "tests" / "mutation-equivalent.md"

#: module -> the in-process tests that kill its mutants (keep these small and fast)
MODULES: dict[str, tuple[str, ...]] = {
    "node/names.py": ("tests/unit/test_names.py", "tests/unit/test_names_edges.py"),
    "node/selection.py": ("tests/unit/test_selection.py", "tests/unit/test_selection_edges.py"),
    "sync/promotion.py": ("tests/unit/test_promotion.py", "tests/unit/test_promotion_messages.py",
                          "tests/unit/test_fencing.py"),
    "node/logging.py": ("tests/node/test_logging.py", "tests/node/test_logging_rules.py"),
    "node/chain.py": ("tests/unit/test_chain.py", "tests/unit/test_chain_index.py",
                      "tests/unit/test_chain_edges.py"),
    "sync/transfer.py": ("tests/unit/test_transfer.py", "tests/unit/test_transfer_csr.py"),
    "sync/staging.py": ("tests/unit/test_staging.py",),
    "node/sealing.py": ("tests/unit/test_sealing.py", "tests/node/test_store.py"),
}


@dataclass(frozen=True)
class Outcome:
    module: str
    statuses: dict[str, str]  # mutant name -> killed / survived / timeout / ...
    seconds: float
    budget_hit: bool

    @property
    def total(self) -> int:
        return len(self.statuses)

    @property
    def killed(self) -> int:
        return sum(1 for s in self.statuses.values() if s in KILLED)

    @property
    def score(self) -> float:
        return 100.0 * self.killed / self.total if self.total else 0.0

    def survivors(self) -> list[str]:
        return sorted(n for n, s in self.statuses.items() if s not in KILLED)


#: statuses that count as killed; everything else (timeout included) is a survivor
KILLED = frozenset({"killed", "caught by type check"})

_STATUS_BY_CODE = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests",
                   34: "skipped", 36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout",
                   255: "timeout", 37: "caught by type check", -11: "segfault", -9: "segfault"}


def _status(code: int | None) -> str:
    if code is None:
        return "not checked"
    return _STATUS_BY_CODE.get(code, "suspicious")


def equivalents(text: str) -> dict[str, str]:
    """``- `mutant.name`: reason`` lines of tests/mutation-equivalent.md -> reason."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"\s*[-*]\s+`([^`]+)`\s*[:\u2014-]+\s*(.+)", line)
        if m:
            found[m.group(1)] = m.group(2).strip()
    return found


def _scratch(module: str, tests: tuple[str, ...], into: Path) -> None:
    for part in ("node", "sync", "tests"):
        shutil.copytree(ROOT / part, into / part,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    tool = project.setdefault("tool", {})
    tool["mutmut"] = {
        "source_paths": ["node", "sync"],
        "only_mutate": [module],
        "pytest_add_cli_args_test_selection": list(tests),
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-q", "-p", "no:randomly"],
        "also_copy": ["tests/"],
        "use_git_change_detection": False,
    }
    (into / "pyproject.toml").write_text(tomli_w.dumps(project), "utf-8")


def _functions(source: str) -> dict[str, str]:
    """Every function of a mutmut-made file by name (mutants and ``__mutmut_orig`` copies)."""
    found: dict[str, str] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found[node.name] = ast.get_source_segment(source, node) or ""
    return found


def _diff(functions: dict[str, str], name: str) -> str:
    """The lines a mutant changes, ``-old | +new`` on one line (read from mutmut's copy:
    ``mutmut show`` costs a process start per mutant)."""
    short = name.rsplit(".", 1)[-1]
    orig = re.sub(r"__mutmut_\d+\Z", "__mutmut_orig", short)
    if short not in functions or orig not in functions:
        return "(diff not found)"
    strip = re.compile(r"__mutmut_(?:\d+|orig)\b")
    before = strip.sub("", functions[orig]).splitlines()
    after = strip.sub("", functions[short]).splitlines()
    lines = [ln for ln in difflib.unified_diff(before, after, lineterm="", n=0)
             if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    return " | ".join(ln[0] + ln[1:].strip() for ln in lines[:6])


def _mutmut() -> str:
    found = shutil.which("mutmut", path=str(Path(sys.executable).parent)) or shutil.which("mutmut")
    if found is None:
        raise SystemExit("mutation: mutmut is not installed; run deploy/setup.sh (dev extra)")
    return found


def run_module(module: str, *, budget: float, workers: int, keep: Path | None) -> Outcome:
    override = os.environ.get("MUTATION_TESTS", "").split()
    tests = tuple(override) or MODULES[module]
    work = Path(tempfile.mkdtemp(prefix="certsync-mutation-"))
    try:
        _scratch(module, tests, work)
        env = {**os.environ, "HYPOTHESIS_PROFILE": "ci", "CI": ""}
        env.pop("PYTHONPATH", None)
        start = time.monotonic()
        budget_hit = False
        log = (keep or work) / f"{module.replace('/', '_')}.log"
        with log.open("w") as out:
            proc = subprocess.Popen([_mutmut(), "run", "--max-children", str(workers)],
                                    cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                proc.wait(timeout=budget)
            except subprocess.TimeoutExpired:
                budget_hit = True
                os.killpg(proc.pid, 15)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, 9)
                    proc.wait()
        seconds = time.monotonic() - start
        meta = work / "mutants" / (module + ".meta")
        if not meta.exists():
            tail = log.read_text(errors="replace")[-3000:]
            raise SystemExit(f"mutation: mutmut made no result for {module}:\n{tail}")
        codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
        outcome = Outcome(module, {k: _status(v) for k, v in codes.items()}, seconds, budget_hit)
        listed = equivalents(EQUIVALENT_FILE.read_text("utf-8")) if EQUIVALENT_FILE.exists() \
            else {}
        mutated = (work / "mutants" / module).read_text("utf-8")
        _report(outcome, listed, _functions(mutated))
        return outcome
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _report(o: Outcome, listed: dict[str, str], functions: dict[str, str]) -> None:
    mark = "ok" if o.score >= GOAL else "BELOW GOAL"
    print(f"== {o.module}: {o.killed}/{o.total} killed = {o.score:.1f} % ({mark}, goal "
          f"{GOAL:.0f} %), {o.seconds:.0f} s{' (budget hit)' if o.budget_hit else ''}")
    for name in o.survivors():
        why = listed.get(name)
        tag = f"equivalent: {why}" if why else "UNEXPLAINED"
        print(f"   {o.statuses[name]:<11} {name}  [{tag}]")
        print(f"               {_diff(functions, name)}")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    modules = argv or list(MODULES)
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        print(f"mutation: error: unknown module {unknown[0]!r}; known: {', '.join(MODULES)}",
              file=sys.stderr)
        return 2
    budget = float(os.environ.get("MUTATION_BUDGET", "600"))
    workers = int(os.environ.get("MUTATION_WORKERS", "1"))
    keep = Path(os.environ["MUTATION_LOGS"]) if os.environ.get("MUTATION_LOGS") else None
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    outcomes = [run_module(m, budget=budget, workers=workers, keep=keep) for m in modules]
    print("== summary")
    for o in outcomes:
        print(f"   {o.module:<22} {o.score:5.1f} %  ({o.killed}/{o.total})")
    return 0 if all(o.score >= GOAL for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
