"""[shell] ``certsync node serve --config DIR/NAME/node.toml``: one node until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any

from node.errors import ConfigError
from node.logging import configure_logging

__all__ = ["register"]


async def _serve(config_path: Path) -> None:
    from sync.config import load_node_config
    from sync.daemon import run_node  # the daemon pulls in grpc; only this command needs it

    config = load_node_config(config_path)
    configure_logging(config.log_format)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_node(config, stop=stop)


def _run(args: argparse.Namespace) -> int:
    path = args.node_config or args.config
    if not path:
        raise ConfigError("give the node's config: --config DIR/NAME/node.toml")
    asyncio.run(_serve(Path(path)))
    return 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    node = subparsers.add_parser("node", help="run a node")
    sub = node.add_subparsers(dest="node_command", metavar="COMMAND")
    sub.required = True
    serve = sub.add_parser(
        "serve", help="run one node (gRPC API + TLS endpoint) until SIGTERM or SIGINT"
    )
    serve.add_argument(
        "--config", dest="node_config", metavar="NODE_TOML", help="DIR/NAME/node.toml"
    )
    serve.set_defaults(func=_run)
