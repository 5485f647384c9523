"""[shell] The ``certsync`` command line: argparse commands; errors -> one stderr line + exit code.

This module only wires sub-commands together. Each command lives in a ``sync.cmd_*``
module exposing ``register(subparsers)``; the parser it adds sets ``func`` to a callable
``(args) -> int`` (the exit status). Errors from the :mod:`node.errors` hierarchy become one
``certsync: error: ...`` line on stderr with the error's exit code (2 bad input, 1 a failed
check); argparse usage errors become one such line with exit 2.
"""

from __future__ import annotations

import argparse
import importlib
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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in _COMMAND_MODULES:
        module = importlib.import_module(name)
        register: Callable[[argparse._SubParsersAction[_Parser]], None] = module.register
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # gRPC's C core logs refused handshakes at INFO on stderr; errors are ours to say, in one
    # line (an operator who wants its logs sets GRPC_VERBOSITY)
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)  # never on stderr
    try:
        status = func(args)
        sys.stdout.flush()
        return status
    except BrokenPipeError:  # the reader went away (`inspect --json BIG | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a writer whose pipe closed
    except CertsyncError as err:
        sys.stderr.write(f"certsync: error: {_one_line(str(err))}\n")
        return err.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("certsync: interrupted\n")
        return 130


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
