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
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Final

from node.errors import CertsyncError, CheckFailed, NodeUnreachable
from sync._io import print_json
from sync.client import NodeClient, admin_config, admin_target, call_node
from sync.config import AdminConfig
from sync.probe import served_chain
from sync.report import Observed, ServerName, StoredChain, runtime_primary, status_report

__all__ = [
    "PROBE_TIMEOUT",
    "STATUS_TIMEOUT",
    "collect_status",
    "find_primary",
    "gather",
    "print_status",
    "register",
    "status_ok",
    "utcnow",
]

STATUS_TIMEOUT: Final = 5.0
PROBE_TIMEOUT: Final = 5.0

def utcnow() -> dt.datetime:
    """The one clock of the admin views (the core takes ``now`` as a parameter)."""
    return dt.datetime.now(dt.UTC)


# --------------------------------------------------------------------------- shell


async def _observe(config: AdminConfig, name: str, rpc_timeout: float) -> Observed:
    try:
        async with NodeClient(admin_target(config, name), timeout=rpc_timeout) as client:
            state = await client.get_state()
    except CertsyncError as err:
        return Observed(name=name, reachable=False, error=str(err))
    return Observed(
        name=name,
        reachable=True,
        role=state.role,
        epoch=state.epoch,
        revision=state.revision,
        digest=state.set_digest,
        default_sha256=state.default_sha256,
        last_sync=state.last_sync,
        primary=state.primary,
        certificates=tuple(
            {
                "sha256": c.sha256,
                "days_left": c.days_left,
                "renewal_state": c.renewal_state,
                "next_attempt": c.next_attempt or None,
            }
            for c in state.certificates
        ),
        pending_ca_change=(
            {
                "sha256": state.pending_ca_change.sha256,
                "staged_at": state.pending_ca_change.staged_at,
                "switch_at": state.pending_ca_change.switch_at,
            }
            if state.HasField("pending_ca_change")
            else None
        ),
        rollout=(
            {
                "revision": state.rollout.revision,
                "state": state.rollout.state,
                "canary": state.rollout.canary or None,
                "halted_reason": state.rollout.halted_reason or None,
            }
            if state.HasField("rollout")
            else None
        ),
    )


async def _expected(
    config: AdminConfig, leader: str, names: Sequence[ServerName], rpc_timeout: float
) -> dict[ServerName, str] | None:
    try:
        async with NodeClient(admin_target(config, leader), timeout=rpc_timeout) as client:
            answers = await asyncio.gather(*(client.sni_lookup(n) for n in names))
    except CertsyncError:
        return None
    expected = {n: a.sha256 for n, a in zip(names, answers, strict=True)}
    return {} if not any(expected.values()) else expected


async def _probe(
    address: str, name: ServerName, rpc_timeout: float
) -> tuple[tuple[str, ...] | None, str]:
    try:
        return await served_chain(address, name, timeout=rpc_timeout), ""
    except (CertsyncError, OSError) as err:
        return None, str(err) or type(err).__name__


async def _probe_node(
    config: AdminConfig, node: Observed, names: Sequence[ServerName], rpc_timeout: float
) -> Observed:
    address = config.topology.node(node.name).tls_address
    results = await asyncio.gather(*(_probe(address, n, rpc_timeout) for n in names))
    served = {n: (got[0] if got else None) for n, (got, _) in zip(names, results, strict=True)}
    chains = {n: got[1:] for n, (got, _) in zip(names, results, strict=True) if got}
    errors = {n: why for n, (got, why) in zip(names, results, strict=True) if got is None}
    return replace(node, served=served, probe_errors=errors, served_chains=chains)


async def _stored_chains(
    config: AdminConfig, node: Observed, rpc_timeout: float
) -> Observed:
    """``node`` with the stored chain of each of its certificates (issue 11); as it was when
    it does not answer (then no chain is judged)."""
    try:
        async with NodeClient(admin_target(config, node.name), timeout=rpc_timeout) as client:
            listed = await client.list_certificates()
    except CertsyncError:
        return node
    return replace(node, stored_chains={
        c.sha256: StoredChain(sent=tuple(c.chain_sent), complete=c.chain_complete,
                              missing_root=c.chain_missing_root,
                              problems=tuple(c.chain_problems))
        for c in listed
    })


async def gather(
    config: AdminConfig,
    *,
    rpc_timeout: float = STATUS_TIMEOUT,
    probe_timeout: float = PROBE_TIMEOUT,
) -> tuple[list[Observed], dict[ServerName, str] | None]:
    """Ask every node, find the runtime primary, probe the nodes that store its set.

    Returns the observations (topology order) and what the primary names per server name
    (see :func:`status_report`).
    """
    topology = config.topology
    observed = list(await asyncio.gather(
        *(_observe(config, spec.name, rpc_timeout) for spec in topology.nodes)))
    primary = runtime_primary(topology, observed)
    leader = next((o for o in observed if o.name == primary and o.reachable), None)
    if leader is None:
        return observed, None
    names: list[ServerName] = [*topology.required_names(), None]
    expected = await _expected(config, leader.name, names, rpc_timeout)
    if not expected:
        return observed, expected
    leader = await _stored_chains(config, leader, rpc_timeout)
    observed = [leader if o.name == leader.name else o for o in observed]
    probed = list(await asyncio.gather(*(
        _probe_node(config, o, [*topology.served_names(o.name), None], probe_timeout)
        if o.reachable and o.same_set(leader) else _done(o)
        for o in observed
    )))
    return probed, expected


async def _done(node: Observed) -> Observed:
    return node


async def find_primary(config: AdminConfig, *, rpc_timeout: float = STATUS_TIMEOUT) -> str:
    """The runtime primary's name (see :func:`runtime_primary`); NodeUnreachable if none."""
    topology = config.topology
    observed = await asyncio.gather(
        *(_observe(config, spec.name, rpc_timeout) for spec in topology.nodes))
    primary = runtime_primary(topology, observed)
    if primary is None:
        raise NodeUnreachable(
            f"no node of cluster {topology.cluster_id!r} answered, so the primary is unknown; "
            "start the nodes or name one with --node NAME")
    return primary


async def collect_status(
    config: AdminConfig, *, now: dt.datetime | None = None
) -> dict[str, Any]:
    """The ``status --json`` object for the cluster of ``config`` (``now``: the clock)."""
    observed, expected = await gather(config)
    return status_report(config.topology, observed, expected, now=now or utcnow())


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
