"""``certsync completion bash|zsh``: scripts made by shtab from the real parser.

The bash script is loaded into a real bash and asked to complete, as a person pressing Tab
would; the zsh script is loaded by a real zsh (after ``compinit``) and its command list read.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pytest

from sync.cli import build_parser
from sync.localcluster import certsync_command
from tests._ci import require_tool


def _subcommands() -> list[str]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(sub.choices)


def _script(shell: str) -> str:
    proc = subprocess.run([*certsync_command(), "completion", shell], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _complete(script: Path, *words: str) -> list[str]:
    """What bash offers for the command line ``certsync WORDS`` (the last word is completed)."""
    bash = require_tool("bash", "Debian's bash package")
    line = " ".join(["certsync", *words])
    quoted = " ".join(f"'{w}'" for w in ["certsync", *words])
    program = (f"source {script}; COMP_WORDS=({quoted}); COMP_CWORD={len(words)}; "
               f"COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; _shtab_certsync; "
               'printf "%s\\n" "${COMPREPLY[@]}"')
    proc = subprocess.run([bash, "--norc", "-c", program], capture_output=True, text=True,
                          timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    return [w for w in proc.stdout.splitlines() if w]


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "certsync.bash"
    path.write_text(_script("bash"))
    return path


def test_bash_offers_every_subcommand(bash_script: Path) -> None:
    names = _subcommands()
    assert {"audit", "completion", "status", "cert", "support-bundle"} <= set(names)
    assert sorted(_complete(bash_script, "")) == sorted(names)
    assert _complete(bash_script, "au") == ["audit"]
    assert _complete(bash_script, "zzz") == []  # twin: nothing starts so


def test_bash_offers_the_flags_of_a_subcommand(bash_script: Path) -> None:
    assert _complete(bash_script, "audit", "--s") == ["--since"]
    assert set(_complete(bash_script, "cert", "")) >= {"import", "list", "export", "delete"}
    status_flags = _complete(bash_script, "status", "--")
    assert "--json" in status_flags and "--since" not in status_flags  # twin: not status's


def test_zsh_lists_every_subcommand(tmp_path: Path) -> None:
    """A real zsh loads the script after compinit; its command list (what _describe is given
    to show) is every sub-command."""
    zsh = require_tool("zsh", "Debian's zsh package; deploy/setup.sh installs it")
    script = _script("zsh")
    assert script.startswith("#compdef certsync")
    path = tmp_path / "_certsync"
    path.write_text(script)
    check = subprocess.run([zsh, "-n", str(path)], capture_output=True, text=True,
                           timeout=30, check=False)
    assert check.returncode == 0, check.stderr
    program = (f"autoload -U compinit && compinit -u -d {tmp_path / 'zcompdump'}; "
               f"source {path} 2>/dev/null; "
               '_describe() { print -l -- "${(@P)2}"; }; _shtab_certsync_commands')
    proc = subprocess.run([zsh, "-f", "-c", program], capture_output=True, text=True,
                          timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    listed = [line.split(":", 1)[0] for line in proc.stdout.splitlines() if line]
    assert sorted(listed) == sorted(_subcommands())
    assert "fish" not in listed


def test_an_unknown_shell_is_one_line_exit_2() -> None:
    proc = subprocess.run([*certsync_command(), "completion", "fish"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and "invalid choice: 'fish'" in proc.stderr
