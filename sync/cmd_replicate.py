"""[shell] ``certsync replicate`` and ``certsync promote``.

``replicate [--node NAME]... [--force] [--json]`` asks the current primary (of the highest
verified epoch the reachable nodes report, :func:`sync.routing.locate_primary`) to push now,
and prints one line per node as the primary finishes it (on stderr with ``--json``, whose
final object is all that goes to stdout). Exit 0 only when every
named node is in sync (it *serves* the primary's set); 1 when one is not, or when the
coverage gate refuses (the message lists the uncovered names); 2 when the primary cannot be
reached.

``promote NAME [--json]`` reads every reachable node's epoch, signs a promotion of NAME at
the highest epoch + 1 with the admin's mTLS key (``admin.toml``), calls Promote on NAME and
then Announce on every other reachable node, and prints the new epoch. Nodes that are down
learn it later: from the new primary's pushes, or by asking when they come back.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from node.api import certsync_pb2
from node.errors import CertsyncError, CheckFailed, ConfigError, NodeUnreachable
from sync._io import print_json
from sync.client import NodeClient, admin_config, admin_target
from sync.config import AdminConfig
from sync.promotion import sign_promotion
from sync.receiver import promotion_to_msg
from sync.routing import locate_primary

__all__ = ["REPLICATE_TIMEOUT", "find_primary", "promote", "register", "replicate"]

STATE_TIMEOUT = 5.0
#: a push to many nodes with RSA keys takes a while; the stream shares one deadline
REPLICATE_TIMEOUT = 300.0


async def _states(config: AdminConfig) -> dict[str, certsync_pb2.NodeState | CertsyncError]:
    async def one(name: str) -> certsync_pb2.NodeState | CertsyncError:
        try:
            async with NodeClient(admin_target(config, name), timeout=STATE_TIMEOUT) as c:
                return await c.get_state()
        except CertsyncError as err:
            return err

    names = config.topology.names
    return dict(zip(names, await asyncio.gather(*(one(n) for n in names)), strict=True))


def find_primary(states: dict[str, certsync_pb2.NodeState | CertsyncError],
                 default: str) -> str:
    """The node reporting role primary at the highest epoch (else ``default``)."""
    answered = [s for s in states.values() if isinstance(s, certsync_pb2.NodeState)]
    top = max((s.epoch for s in answered), default=0)
    return next((s.name for s in answered if s.epoch == top and s.role == "primary"), default)


async def replicate(config: AdminConfig, nodes: list[str], *, force: bool,
                    on_progress: Any = None) -> tuple[str, list[certsync_pb2.ReplicateProgress]]:
    """Ask the current primary to push now; returns its name and every node's progress."""
    for n in nodes:
        config.topology.node(n)  # NotFound (exit 2) before anything is sent
    primary = (await locate_primary(config)).primary  # the highest verified epoch's
    progress: list[certsync_pb2.ReplicateProgress] = []
    async with NodeClient(admin_target(config, primary), timeout=REPLICATE_TIMEOUT) as client:
        async for p in client.replicate(nodes, force=force):
            progress.append(p)
            if on_progress is not None:
                on_progress(p)
    return primary, progress


def _progress_line(p: certsync_pb2.ReplicateProgress) -> str:
    return f"{p.node:<12} {p.state:<11} {p.message}"


def _progress_json(p: certsync_pb2.ReplicateProgress) -> dict[str, Any]:
    return {"name": p.node, "state": p.state, "in_sync": p.in_sync, "message": p.message,
            "epoch": p.epoch, "revision": p.revision, "digest": p.set_digest or None,
            "error": p.error or None}


def show_step(p: certsync_pb2.ReplicateProgress, *, json: bool) -> None:
    """One progress line as the step happens (stderr when the final answer is JSON)."""
    if p.node:
        print(_progress_line(p), flush=True, file=sys.stderr if json else sys.stdout)


def outcome(progress: list[certsync_pb2.ReplicateProgress]
            ) -> tuple[list[certsync_pb2.ReplicateProgress], dict[str, Any] | None]:
    """The last progress of each node, and the rollout of the summary (None: no summary)."""
    final = {p.node: p for p in progress if p.node}
    summary = next((p for p in reversed(progress) if not p.node and p.HasField("rollout")),
                   None)
    rollout = None if summary is None else {
        "revision": summary.rollout.revision, "state": summary.rollout.state,
        "canary": summary.rollout.canary or None,
        "halted_reason": summary.rollout.halted_reason or None}
    return list(final.values()), rollout


def _replicate(args: argparse.Namespace) -> int:
    config = admin_config(args.config)
    targets: list[str] = list(dict.fromkeys(args.targets or []))
    primary, progress = asyncio.run(replicate(
        config, targets, force=args.force,
        on_progress=lambda p: show_step(p, json=bool(args.json))))
    if primary != config.topology.primary.name:
        sys.stderr.write(f"certsync: note: used node {primary!r}, the current primary "
                         f"(cluster.toml names {config.topology.primary.name!r})\n")
    final, rollout = outcome(progress)
    halted = rollout is not None and rollout["state"] == "halted"
    all_in_sync = all(p.in_sync for p in final) and not halted
    if args.json:
        print_json({"primary": primary, "forced": bool(args.force), "all_in_sync": all_in_sync,
                    "nodes": [_progress_json(p) for p in final], "rollout": rollout})
    if not all_in_sync:
        if not args.json:
            behind = [p.node for p in final if not p.in_sync]
            if halted and rollout is not None:
                print(f"rollout of revision {rollout['revision']} halted: "
                      f"{rollout['halted_reason']}")
            if behind:
                print(f"not in sync: {', '.join(behind)}")
        return CheckFailed.exit_code
    return 0


def wait_for_rollout(config_path: str | None) -> int:
    """``--wait`` of a change: ask the primary to roll the change out now and wait for it;
    progress lines and the outcome go to stderr (stdout keeps the command's own answer).
    0 when every node serves the change, 1 when its rollout halted or a node is behind."""
    config = admin_config(config_path)
    _primary, progress = asyncio.run(replicate(
        config, [], force=False, on_progress=lambda p: show_step(p, json=True)))
    final, rollout = outcome(progress)
    halted = rollout is not None and rollout["state"] == "halted"
    if halted and rollout is not None:
        sys.stderr.write(f"certsync: rollout of revision {rollout['revision']} halted: "
                         f"{rollout['halted_reason']}\n")
    behind = [p.node for p in final if not p.in_sync]
    if behind:
        sys.stderr.write(f"certsync: not in sync: {', '.join(behind)}\n")
    return CheckFailed.exit_code if halted or behind else 0


def _admin_identity(config: AdminConfig) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(config.cert_path.read_bytes())
        key = serialization.load_pem_private_key(config.key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(f"cannot read the admin certificate or key named in "
                          f"{str(config.path)!r}; use the files 'certsync cluster init' "
                          "wrote") from err
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"the admin key named in {str(config.path)!r} is not an EC key; use "
                          "the one 'certsync cluster init' wrote")
    return cert, key


async def promote(config: AdminConfig, name: str) -> dict[str, Any]:
    """Make ``name`` the primary at a higher epoch; the ``promote --json`` object."""
    config.topology.node(name)  # NotFound (exit 2)
    states = await _states(config)
    target = states[name]
    if not isinstance(target, certsync_pb2.NodeState):
        raise NodeUnreachable(f"node {name!r} cannot be promoted while it is unreachable "
                              f"({target}); start it first", node=name)
    epoch = max(s.epoch for s in states.values()
                if isinstance(s, certsync_pb2.NodeState)) + 1
    cert, key = _admin_identity(config)
    promotion = promotion_to_msg(sign_promotion(
        cluster_id=config.topology.cluster_id, epoch=epoch, primary=name,
        admin_cert=cert, admin_key=key))
    async with NodeClient(admin_target(config, name), timeout=STATE_TIMEOUT * 6) as client:
        await client.promote(promotion)

    async def tell(other: str) -> tuple[str, str | None]:
        try:
            async with NodeClient(admin_target(config, other), timeout=STATE_TIMEOUT) as c:
                await c.announce(promotion)
            return other, None
        except CertsyncError as err:
            return other, str(err)

    others = [n for n, s in states.items()
              if n != name and isinstance(s, certsync_pb2.NodeState)]
    told = await asyncio.gather(*(tell(n) for n in others))
    return {
        "primary": name,
        "epoch": epoch,
        "announced": sorted(n for n, err in told if err is None),
        "not_announced": sorted([n for n, err in told if err is not None]
                                + [n for n, s in states.items()
                                   if not isinstance(s, certsync_pb2.NodeState)]),
    }


def _promote(args: argparse.Namespace) -> int:
    result = asyncio.run(promote(admin_config(args.config), args.name))
    if args.json:
        print_json(result)
    else:
        print(f"node {result['primary']} is the primary at epoch {result['epoch']}")
        if result["not_announced"]:
            print(f"not told yet (they learn it from the new primary): "
                  f"{', '.join(result['not_announced'])}")
    return 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    rep = subparsers.add_parser(
        "replicate", help="push the primary's certificates now and wait until they are served")
    rep.add_argument("--node", dest="targets", action="append", metavar="NAME",
                     help="a node to push to; repeat for more (default: every node)")
    rep.add_argument("--force", action="store_true",
                     help="push even when the default leaves required names uncovered "
                          "(logged and audited)")
    rep.add_argument("--json", action="store_true", help="print JSON")
    rep.set_defaults(func=_replicate)
    pro = subparsers.add_parser(
        "promote", help="make NAME the primary with a higher epoch (failover)")
    pro.add_argument("name", metavar="NAME")
    pro.add_argument("--json", action="store_true", help="print JSON")
    pro.set_defaults(func=_promote)
