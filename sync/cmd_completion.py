"""[shell] ``certsync completion bash|zsh``: a shell completion script, made by ``shtab``.

The script is generated from the very parser ``certsync`` runs (:func:`sync.cli.build_parser`),
so every sub-command and flag is in it and none goes stale. Arguments that name a file
(metavar ``FILE``, ``...TOML``, ``PATH``, ``FILE.zip``) complete file names, ``DIR``
arguments directory names. Install: ``certsync completion bash >
/etc/bash_completion.d/certsync``, or for zsh into a directory of ``$fpath`` as
``_certsync`` (README "Shell completion").
"""

from __future__ import annotations

import argparse
import re
from typing import Any, Final

import shtab

__all__ = ["SHELLS", "completion_script", "register"]

SHELLS: Final = ("bash", "zsh")
_FILE_METAVAR: Final = re.compile(r"FILE|TOML|PATH|PASS|\.zip$|\.p12$")
_DIR_METAVAR: Final = re.compile(r"^DIR$")


def _mark_paths(parser: argparse.ArgumentParser) -> None:
    """Let file and directory arguments complete paths (shtab reads ``action.complete``)."""
    for action in parser._actions:
        metavar = action.metavar if isinstance(action.metavar, str) else ""
        if _DIR_METAVAR.search(metavar):
            action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
        elif _FILE_METAVAR.search(metavar):
            action.complete = shtab.FILE  # type: ignore[attr-defined]
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                _mark_paths(sub)


def completion_script(shell: str) -> str:
    """The completion script of ``certsync`` for ``shell`` (``bash`` or ``zsh``)."""
    from sync.cli import build_parser  # the CLI imports this module while it builds

    parser = build_parser()
    _mark_paths(parser)
    return shtab.complete(parser, shell=shell)


def _run(args: argparse.Namespace) -> int:
    print(completion_script(args.shell), end="")
    return 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "completion",
        help="print a bash or zsh completion script",
        description=("Print the shell completion script of certsync, e.g. "
                     "'certsync completion bash > /etc/bash_completion.d/certsync'."),
    )
    parser.add_argument("shell", choices=SHELLS, help="the shell to complete for")
    parser.set_defaults(func=_run)
