"""[shell] ``certsync rollback [--to REVISION] [--force] [--json]``: undo a change everywhere.

Asks the current primary (as ``replicate`` finds it) to make an earlier activated set of its
set history the proposal, as a new revision (audited ``rollout.rollback``; any proposal in
flight is discarded), then rolls it out like any change -- staged everywhere, the canary
first, the primary last -- and prints a line per node and step as it happens (on stderr with
``--json``). Without ``--to`` the set activated before the current one is restored. Exit 0
when the rollout completed and every node serves the restored set; 1 when it halted or a node
is not in sync (or the coverage gate refuses it: ``--force`` as for ``replicate``); 2 when the
revision is not kept or the primary cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from node.api import certsync_pb2
from node.errors import CheckFailed
from sync._io import print_json
from sync.client import NodeClient, admin_config, admin_target
from sync.cmd_replicate import (
    REPLICATE_TIMEOUT,
    _progress_json,
    _states,
    find_primary,
    outcome,
    show_step,
)
from sync.config import AdminConfig

__all__ = ["register", "rollback"]


async def rollback(config: AdminConfig, to_revision: int, *, force: bool, on_progress: Any = None
                   ) -> tuple[str, certsync_pb2.RollbackResponse,
                              list[certsync_pb2.ReplicateProgress]]:
    """Restore the set of ``to_revision`` (0: the previous one) everywhere."""
    primary = find_primary(await _states(config), config.topology.primary.name)
    progress: list[certsync_pb2.ReplicateProgress] = []
    async with NodeClient(admin_target(config, primary), timeout=REPLICATE_TIMEOUT) as client:
        answer = await client.rollback(to_revision)
        async for p in client.replicate((), force=force):
            progress.append(p)
            if on_progress is not None:
                on_progress(p)
    return primary, answer, progress


def _rollback(args: argparse.Namespace) -> int:
    config = admin_config(args.config)
    primary, answer, progress = asyncio.run(rollback(
        config, args.to or 0, force=args.force,
        on_progress=lambda p: show_step(p, json=bool(args.json))))
    final, rollout = outcome(progress)
    done = (rollout is None or rollout["state"] == "idle") and all(p.in_sync for p in final)
    if args.json:
        print_json({"primary": primary, "restored_revision": answer.restored_revision,
                    "revision": answer.revision, "default_sha256": answer.default_sha256 or None,
                    "all_in_sync": done, "rollout": rollout,
                    "nodes": [_progress_json(p) for p in final]})
    else:
        print(f"restored the set of revision {answer.restored_revision} as revision "
              f"{answer.revision} (default {answer.default_sha256[:16] or 'none'})")
        if not done:
            why = (rollout or {}).get("halted_reason") or "not every node is in sync"
            print(f"rollout of revision {answer.revision} not complete: {why}")
    return 0 if done else CheckFailed.exit_code


def _revision(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a revision (a whole number from 1)")
    return int(text)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    rb = subparsers.add_parser(
        "rollback", help="make an earlier set current everywhere, as a new revision")
    rb.add_argument("--to", type=_revision, metavar="REVISION",
                    help="the revision whose set to restore (default: the one before the "
                         "current one; 'certsync status' shows the current revision)")
    rb.add_argument("--force", action="store_true",
                    help="roll it out even when its default leaves required names uncovered "
                         "(logged and audited)")
    rb.add_argument("--json", action="store_true", help="print JSON")
    rb.set_defaults(func=_rollback)
