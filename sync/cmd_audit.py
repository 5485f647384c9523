"""[shell] ``certsync audit [--since DURATION] [--actor A] [--json]``: a node's audit log.

Reads the ``ReadAudit`` RPC of the node (the global ``--node``; default: the primary),
newest first. ``--since 30m|24h|7d`` is turned into a time with this machine's clock before
anything is asked (a bad duration: one line, exit 2); ``--actor`` matches the actor exactly
(``admin:ops``, ``node:p1``, ``node:lifecycle``). JSON entries are DESIGN.md's
``{"time", "actor", "action", "target", "outcome", "detail"}``. When more entries match than
``--limit`` a note on stderr says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from node.api import certsync_pb2
from node.audit_view import parse_duration
from node.errors import BadInput
from node.text import rfc3339
from sync._io import print_json
from sync.client import call_node
from sync.cluster_view import utcnow

__all__ = ["entry_json", "register"]


def entry_json(entry: certsync_pb2.AuditEntry) -> dict[str, Any]:
    """One entry in DESIGN.md's shape."""
    return {
        "time": entry.time,
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "outcome": entry.outcome,
        "detail": json.loads(entry.detail_json or "{}"),
    }


def _run(args: argparse.Namespace) -> int:
    since = "" if args.since is None else rfc3339(utcnow() - parse_duration(args.since))
    if args.limit < 1:
        raise BadInput(f"--limit {args.limit} must be at least 1")
    resp = call_node(args.config, args.node,
                     lambda c: c.read_audit(since=since, actor=args.actor or "",
                                            limit=args.limit))
    if args.json:
        print_json([entry_json(e) for e in resp.entries])
    else:
        print(f"{'TIME':<20}  {'ACTOR':<20}  {'ACTION':<22}  {'OUTCOME':<7}  TARGET")
        for e in resp.entries:
            print(f"{e.time:<20}  {e.actor:<20}  {e.action:<22}  {e.outcome:<7}  {e.target}")
    if resp.truncated:
        sys.stderr.write(f"certsync: note: more entries match; these are the newest "
                         f"{len(resp.entries)} (raise --limit or narrow --since)\n")
    return 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="the node's audit log, newest first",
        description=(
            "Show the audit log of a node (the primary, or the global --node), newest first: "
            "who changed what, and which calls were refused. Needs the admin identity."
        ),
    )
    parser.add_argument("--since", metavar="DURATION",
                        help="only entries this recent, e.g. 30m, 24h, 7d")
    parser.add_argument("--actor", metavar="A", help="only this actor, e.g. admin:admin")
    parser.add_argument("--limit", type=int, default=1000, metavar="N",
                        help="at most N entries (default 1000)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=_run)
