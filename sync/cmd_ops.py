"""``certsync sni [HOSTNAME]`` and ``certsync status``.

``status`` asks every node of the topology for its state (concurrently, each with a short
deadline) and reports what each answers; a node that does not answer is listed with
``reachable: false``. ``in_sync`` means the node reports the same set digest and epoch as the
primary of the highest epoch seen.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from node.api import certsync_pb2
from node.errors import CertsyncError
from sync._io import print_json
from sync.client import NodeClient, admin_config, admin_target, call_node
from sync.config import AdminConfig

__all__ = ["STATUS_TIMEOUT", "collect_status", "register"]

STATUS_TIMEOUT = 5.0


def _sni(args: argparse.Namespace) -> int:
    resp = call_node(args.config, args.node, lambda c: c.sni_lookup(args.hostname))
    out = {"sha256": resp.sha256 or None, "reason": resp.reason}
    if args.json:
        print_json(out)
    else:
        print(f"{resp.sha256 or '(no certificate)'}  {resp.reason}")
    return 0


async def _state(config: AdminConfig, name: str) -> certsync_pb2.NodeState | CertsyncError:
    try:
        async with NodeClient(admin_target(config, name), timeout=STATUS_TIMEOUT) as client:
            return await client.get_state()
    except CertsyncError as err:
        return err


async def collect_status(config: AdminConfig) -> dict[str, Any]:
    """The ``status --json`` object for the cluster of ``config``."""
    topology = config.topology
    states = await asyncio.gather(*(_state(config, spec.name) for spec in topology.nodes))
    answered = [s for s in states if isinstance(s, certsync_pb2.NodeState)]
    epoch = max((s.epoch for s in answered), default=0)
    leader = next(
        (s for s in answered if s.role == "primary" and s.epoch == epoch),
        next((s for s in answered if s.name == topology.primary.name), None),
    )
    nodes = []
    for spec, state in zip(topology.nodes, states, strict=True):
        row: dict[str, Any] = {
            "name": spec.name,
            "role": spec.role,
            "hostname": spec.hostname,
            "grpc_address": spec.grpc_address,
            "tls_address": spec.tls_address,
            "reachable": isinstance(state, certsync_pb2.NodeState),
        }
        if isinstance(state, certsync_pb2.NodeState):
            row.update(
                role=state.role or spec.role,
                epoch=state.epoch,
                digest=state.set_digest,
                in_sync=leader is not None
                and state.set_digest == leader.set_digest
                and state.epoch == leader.epoch,
                default_sha256=state.default_sha256 or None,
                last_sync=state.last_sync or None,
            )
        else:
            row.update(
                epoch=None,
                digest=None,
                in_sync=False,
                default_sha256=None,
                last_sync=None,
                error=str(state),
            )
        nodes.append(row)
    return {"epoch": epoch, "nodes": nodes}


def _status(args: argparse.Namespace) -> int:
    report = asyncio.run(collect_status(admin_config(args.config)))
    if args.json:
        print_json(report)
        return 0
    print(f"epoch {report['epoch']}")
    print(f"{'NODE':<12} {'ROLE':<8} {'REACH':<5} {'SYNC':<4} {'DEFAULT':<16} ADDRESS")
    for n in report["nodes"]:
        print(
            f"{n['name']:<12} {n['role']:<8} {'yes' if n['reachable'] else 'NO':<5} "
            f"{'yes' if n['in_sync'] else 'no':<4} {(n['default_sha256'] or '-')[:16]:<16} "
            f"{n['grpc_address']}"
        )
        if not n["reachable"]:
            print(f"  {n['error']}")
    return 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    sni = subparsers.add_parser("sni", help="which certificate a server name gets")
    sni.add_argument("hostname", nargs="?", metavar="HOSTNAME", help="none: the default")
    sni.add_argument("--json", action="store_true", help="print JSON")
    sni.set_defaults(func=_sni)
    status = subparsers.add_parser("status", help="what every node of the cluster reports")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=_status)
