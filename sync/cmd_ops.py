"""[shell] ``certsync sni [HOSTNAME]`` and ``certsync status``: what the cluster *serves*.

``status`` gathers (shell), then reports (pure core, :func:`sync.report.status_report`):

1. ``GetState`` of every node of the topology, concurrently, each with a short deadline; a
   node that does not answer is listed with ``reachable: false`` and why.
2. The **runtime primary** (:func:`runtime_primary`): the node that claims ``primary`` at
   the highest epoch seen -- after a promotion that is not the node ``cluster.toml`` names.
3. ``SniLookup`` on the runtime primary for every required name
   (:meth:`~sync.topology.Topology.required_names`) and for no name: which certificate each
   server name should get.
4. A real TLS handshake with every node whose epoch, revision and digest equal the
   primary's (the primary included): once with SNI for each name clients reach that node
   by (the site and its own hostname, :meth:`~sync.topology.Topology.served_names`), once
   without.
5. ``in_sync`` and ``stale`` come from :func:`sync.plan.plan`, the rules the replicator
   acts on: in sync means the node reports the primary's epoch, revision and digest *and*
   its TLS endpoint served, for every probed name, the certificate the primary names -- served,
   not merely stored. Stale means its last successful sync is older than
   ``stale_after_seconds`` of ``cluster.toml`` (the primary itself is never stale).

Every JSON field of DESIGN.md is present for every node (``null`` when unknown); extra
fields: ``revision``, ``stale``, ``configured_role``, ``problems`` (sentences) and, at the
top, ``primary``, ``required_names`` and ``problems``. ``status`` is a check
(:func:`status_ok`): exit 0 when every node is reachable, in sync and not stale, 1 otherwise
-- also when some or all nodes do not answer (never 2 for that).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from typing import Any

from node.errors import CheckFailed
from sync._io import print_json
from sync.client import admin_config, call_node
from sync.cluster_view import collect_status

__all__ = ["print_status", "register", "status_ok"]

def print_status(report: Mapping[str, Any]) -> None:
    """The human table of a :func:`status_report`."""
    print(f"epoch {report['epoch']}  primary {report['primary'] or '(none)'}")
    header = ("NODE", "ROLE", "REACHABLE", "IN SYNC", "STALE", "DEFAULT", "TLS ADDRESS")
    rows = [
        (
            n["name"],
            n["role"],
            "yes" if n["reachable"] else "NO",
            "yes" if n["in_sync"] else "NO",
            "STALE" if n["stale"] else "-",
            (n["default_sha256"] or "-")[:16],
            n["tls_address"],
        )
        for n in report["nodes"]
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    for n in report["nodes"]:
        for problem in n["problems"]:
            print(f"  {n['name']}: {problem}")
        pending = n.get("pending_ca_change")
        if pending:
            print(f"  {n['name']}: CA change to {pending['sha256'][:16]} at {pending['switch_at']}")
        for c in n.get("certificates") or ():
            if c["renewal_state"] not in ("valid", "replaced"):
                nxt = f", next attempt {c['next_attempt']}" if c["next_attempt"] else ""
                print(f"  {n['name']}: {c['sha256'][:16]} {c['renewal_state']}, "
                      f"{c['days_left']} days left{nxt}")
    for problem in report["problems"]:
        print(f"  cluster: {problem}")
    rollout = report.get("rollout") or {}
    if rollout.get("state") not in (None, "idle"):
        why = f": {rollout['halted_reason']}" if rollout.get("halted_reason") else ""
        print(f"  rollout of revision {rollout['revision']}: {rollout['state']}{why}")


# --------------------------------------------------------------------------- commands


def _sni(args: argparse.Namespace) -> int:
    resp = call_node(args.config, args.node, lambda c: c.sni_lookup(args.hostname))
    out = {"sha256": resp.sha256 or None, "reason": resp.reason}
    if args.json:
        print_json(out)
    else:
        print(f"{resp.sha256 or '(no certificate)'}  {resp.reason}")
    return 0


def status_ok(report: Mapping[str, Any]) -> bool:
    """Whether the cluster passes the check ``status`` is: every node reachable, in sync and
    not stale."""
    nodes = report["nodes"]
    return bool(nodes) and all(n["reachable"] and n["in_sync"] and not n["stale"]
                               for n in nodes)


def _status(args: argparse.Namespace) -> int:
    report = asyncio.run(collect_status(admin_config(args.config)))
    if args.json:
        print_json(report)
    else:
        print_status(report)
    return 0 if status_ok(report) else CheckFailed.exit_code


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    sni = subparsers.add_parser("sni", help="which certificate a server name gets")
    sni.add_argument("hostname", nargs="?", metavar="HOSTNAME", help="none: the default")
    sni.add_argument("--json", action="store_true", help="print JSON")
    sni.set_defaults(func=_sni)
    status = subparsers.add_parser(
        "status",
        help="what every node of the cluster reports and serves",
        description=(
            "Ask every node for its state and probe each node's TLS endpoint with the site "
            "hostname, its own hostname and without SNI. A node is in sync when it reports "
            "the primary's "
            "epoch, revision and digest and serves, for every name, the certificate the "
            "primary names. Exit 0 when every node is reachable, in sync and not stale; "
            "1 otherwise (also when nodes do not answer)."
        ),
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=_status)
