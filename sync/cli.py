"""[shell] The ``certsync`` command line: argparse commands; errors -> one stderr line + exit code.

This module only wires sub-commands together. Each command lives in a ``sync.cmd_*``
module exposing ``register(subparsers)``; the parser it adds sets ``func`` to a callable
``(args) -> int`` (the exit status). Errors from the :mod:`node.errors` hierarchy become one
``certsync: error: ...`` line on stderr with the error's exit code (2 bad input, 1 a failed
check); argparse usage errors become one such line with exit 2.

The global options ``--config`` and ``--node`` are accepted before the sub-command and after
it (on every leaf sub-command that has no ``--node`` of its own: ``replicate --node`` names a
target). ``--version`` prints the installed version. A reader that closes the output pipe
(``certsync ... | head``) ends any command quietly, with no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import NoReturn

from cryptography.utils import CryptographyDeprecationWarning

from node.errors import CertsyncError

__all__ = ["main"]

#: modules that add sub-commands, in help order
_COMMAND_MODULES = (
    "sync.cmd_inspect",
    "sync.cmd_coverage",
    "sync.cmd_cluster",
    "sync.cmd_node",
    "sync.cmd_cert",
    "sync.cmd_request",
    "sync.cmd_ops",
    "sync.cmd_replicate",
    "sync.cmd_rollback",
    "sync.cmd_bundle",
    "sync.cmd_acme",
    "sync.cmd_audit",
    "sync.cmd_completion",
)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, per the CLI contract."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"certsync: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="certsync",
        description=(
            "Keep the TLS certificates of a failover pair or Atlas cluster identical and valid."
        ),
    )
    parser.add_argument(
        "--config",
        metavar="ADMIN_TOML",
        help="admin config written by 'certsync cluster init' (DIR/admin.toml)",
    )
    parser.add_argument("--node", metavar="NAME", help="node to talk to (default: the primary)")
    parser.add_argument("--version", action="version", version=f"certsync {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in _COMMAND_MODULES:
        module = importlib.import_module(name)
        register: Callable[[argparse._SubParsersAction[_Parser]], None] = module.register
        register(sub)
    for leaf in _leaves(parser):
        _add_globals(leaf)
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("certsync")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"


def _leaves(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser under ``parser`` that has no sub-commands of its own."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [parser]
    return [leaf for a in subs for child in dict.fromkeys(a.choices.values())
            for leaf in _leaves(child)]


def _add_globals(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--node`` after the sub-command too (SUPPRESS: a value given
    before the sub-command is kept when the option is not repeated after it)."""
    taken = parser._option_string_actions
    if "--config" not in taken:
        parser.add_argument("--config", metavar="ADMIN_TOML", default=argparse.SUPPRESS,
                            help="admin config (DIR/admin.toml); also before the command")
    if "--node" not in taken:
        parser.add_argument("--node", metavar="NAME", default=argparse.SUPPRESS,
                            help="node to talk to (default: the primary); also before the "
                                 "command")


def main(argv: Sequence[str] | None = None) -> int:
    # gRPC's C core logs refused handshakes at INFO on stderr; errors are ours to say, in one
    # line (an operator who wants its logs sets GRPC_VERBOSITY)
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        func: Callable[[argparse.Namespace], int] = args.func
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)  # never on stderr
        status = func(args)
        sys.stdout.flush()
        return status
    except BrokenPipeError:  # the reader went away (`replicate --json | head`): stop quietly
        _quiet_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a writer whose pipe closed
    except CertsyncError as err:
        return _say(f"certsync: error: {_one_line(str(err))}", err.exit_code)
    except KeyboardInterrupt:
        return _say("certsync: interrupted", 130)


def _say(line: str, status: int) -> int:
    """Write the one line on stderr and return ``status``; a closed stderr (``2>&1 | head``)
    ends quietly too."""
    try:
        sys.stderr.write(f"{line}\n")
        sys.stderr.flush()
    except BrokenPipeError:
        _quiet_stdout()
        return 141
    return status


def _quiet_stdout() -> None:
    """Point stdout (and stderr, when it is the closed pipe too) at /dev/null, so the
    interpreter's last flush at exit has nowhere to fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):
            os.dup2(devnull, stream.fileno())
    os.dup2(devnull, sys.stdout.fileno())


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
