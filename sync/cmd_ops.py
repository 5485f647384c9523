"""[shell] ``certsync sni [HOSTNAME]`` and ``certsync status``: what the cluster *serves*.

``status`` gathers (shell), then reports (pure core, :func:`status_report`):

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
top, ``primary``, ``required_names`` and ``problems``. ``status`` is a report: exit 0 even
when nodes are down or out of sync.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from node.errors import CertsyncError, NodeUnreachable
from sync import plan as plan_mod
from sync._io import print_json
from sync.client import NodeClient, admin_config, admin_target, call_node
from sync.config import AdminConfig
from sync.probe import served_sha256
from sync.topology import Topology

__all__ = [
    "PROBE_TIMEOUT",
    "STATUS_TIMEOUT",
    "Observed",
    "collect_status",
    "find_primary",
    "gather",
    "print_status",
    "register",
    "runtime_primary",
    "status_report",
    "utcnow",
]

STATUS_TIMEOUT: Final = 5.0
PROBE_TIMEOUT: Final = 5.0

#: a server name of a probe; ``None`` is a ClientHello without SNI
ServerName = str | None


def utcnow() -> dt.datetime:
    """The one clock of the admin views (the core takes ``now`` as a parameter)."""
    return dt.datetime.now(dt.UTC)


# --------------------------------------------------------------------------- core


@dataclass(frozen=True)
class Observed:
    """What one node answered (``reachable=False``: nothing but ``error``).

    ``served`` maps each probed server name to the sha256 of the leaf its TLS endpoint
    served, or ``None`` when that handshake failed (``probe_errors`` says why); empty when
    the node was not probed.
    """

    name: str
    reachable: bool
    error: str | None = None
    role: str = ""
    epoch: int = 0
    revision: int = 0
    digest: str = ""
    default_sha256: str = ""
    last_sync: str = ""
    primary: str = ""  # the primary of its epoch, as the node knows it
    served: Mapping[ServerName, str | None] = field(default_factory=dict)
    probe_errors: Mapping[ServerName, str] = field(default_factory=dict)
    # lifecycle (issue 6): [{"sha256","days_left","renewal_state","next_attempt"}], pending
    certificates: tuple[Mapping[str, Any], ...] = ()
    pending_ca_change: Mapping[str, str] | None = None

    def same_set(self, other: Observed) -> bool:
        return (self.epoch, self.revision, self.digest) == (
            other.epoch, other.revision, other.digest)


def runtime_primary(topology: Topology, observed: Sequence[Observed]) -> str | None:
    """The name of the primary of the highest epoch among the nodes that answered.

    The nodes at that epoch say who their primary is; failing that, the one that claims the
    primary role; failing that (epoch 1 and below), the primary ``cluster.toml`` names.
    None when nobody answered. The primary may itself be unreachable.
    """
    answered = [o for o in observed if o.reachable]
    if not answered:
        return None
    top = max(o.epoch for o in answered)
    at_top = [o for o in answered if o.epoch == top]
    named = [o.primary for o in at_top if o.primary in topology.names]
    if named:
        return max(set(named), key=named.count)  # the majority's word on a disagreement
    claims = [o.name for o in at_top if o.role == "primary"]
    if claims:
        return claims[0]
    return topology.primary.name if top <= 1 else None


def _parse_time(text: str) -> dt.datetime | None:
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def _label(name: ServerName) -> str:
    return repr(name) if name is not None else "no SNI"


def _short(sha: str | None) -> str:
    return sha[:16] if sha else "nothing"


def _serving_ok(node: Observed, expected: Mapping[ServerName, str] | None) -> bool | None:
    """True when ``node`` served what the primary names for every name; None: unknown."""
    if expected is None:
        return None
    if not expected:
        return True  # the primary holds no certificate: there is nothing to serve
    if not node.served:
        return None
    # each node is probed for the names clients reach it by (Topology.served_names)
    return all(node.served[name] == sha for name, sha in expected.items() if name in node.served)


def _plan_state(node: Observed, serving_ok: bool | None) -> plan_mod.NodeState:
    return plan_mod.NodeState(
        name=node.name,
        reachable=node.reachable,
        epoch=node.epoch,
        revision=node.revision,
        digest=node.digest,
        last_sync=_parse_time(node.last_sync),
        serving_ok=serving_ok,
    )


def _problems(
    node: Observed,
    leader: Observed | None,
    expected: Mapping[ServerName, str] | None,
    *,
    stale: bool,
    stale_after: int,
) -> list[str]:
    if not node.reachable:
        return [node.error or "it did not answer"]
    out: list[str] = []
    if leader is None:
        return out
    if node is not leader and node.role == "primary":
        out.append(f"it claims primary at epoch {node.epoch}, but {leader.name!r} is primary "
                   f"at epoch {leader.epoch}; it must step down")
    if node.epoch != leader.epoch:
        out.append(f"its epoch {node.epoch} differs from the primary's {leader.epoch}")
    elif not node.same_set(leader):
        out.append(f"its set (revision {node.revision}, digest {_short(node.digest)}) differs "
                   f"from the primary's (revision {leader.revision}, digest "
                   f"{_short(leader.digest)})")
    if expected:
        for name, want in expected.items():
            if name not in node.served:
                continue
            got = node.served[name]
            if got is None:
                why = node.probe_errors.get(name, "the handshake failed")
                out.append(f"TLS probe with {_label(name)} failed: {why}")
            elif got != want:
                out.append(f"serves {_short(got)} for {_label(name)}, but the primary names "
                           f"{_short(want)}")
    if stale:
        when = node.last_sync or "never"
        out.append(f"last successful sync ({when}) is older than {stale_after} s")
    return out


def status_report(
    topology: Topology,
    observed: Sequence[Observed],
    expected: Mapping[ServerName, str] | None,
    *,
    now: dt.datetime,
) -> dict[str, Any]:
    """The ``status --json`` object (pure).

    ``observed`` has one entry per topology node (any order); ``expected`` maps each probed
    server name to the sha256 the runtime primary's ``SniLookup`` names (``{}`` when it
    holds no certificate, ``None`` when unknown).
    """
    by_name = {o.name: o for o in observed}
    primary = runtime_primary(topology, observed)
    leader = by_name[primary] if primary is not None and by_name[primary].reachable else None
    stale_after = topology.stale_after_seconds
    in_sync: set[str] = set()
    stale: set[str] = set()
    if leader is not None:
        others = [by_name[s.name] for s in topology.nodes if s.name != leader.name]
        decided = plan_mod.plan(
            _plan_state(leader, _serving_ok(leader, expected)),
            [_plan_state(o, _serving_ok(o, expected)) for o in others],
            now=now,
            stale_after=dt.timedelta(seconds=stale_after),
        )
        in_sync = set(decided.in_sync)
        stale = set(decided.stale)
        if _serving_ok(leader, expected) is True:
            in_sync.add(leader.name)
    top_problems: list[str] = []
    if primary is None:
        top_problems.append(
            "no node answered, so nobody can say which node is the primary; start the nodes")
    elif leader is None:
        top_problems.append(
            f"the primary {primary!r} does not answer, so no node can be shown in sync; "
            "start it, or promote another node with 'certsync promote NAME'")
    elif expected is None:
        top_problems.append(f"the primary {leader.name!r} did not say which certificate each "
                            "name gets, so no node can be shown in sync; run status again")
    nodes: list[dict[str, Any]] = []
    for spec in topology.nodes:
        node = by_name[spec.name]
        role: str = spec.role
        if primary is not None:
            if node.name == primary:
                role = "primary"
            elif node.reachable and node.role and node.role != "primary":
                role = node.role
            elif role == "primary":
                role = "backup"  # the configured primary after another's promotion
        nodes.append({
            "name": spec.name,
            "role": role,
            "hostname": spec.hostname,
            "grpc_address": spec.grpc_address,
            "tls_address": spec.tls_address,
            "reachable": node.reachable,
            "epoch": node.epoch if node.reachable else None,
            "digest": node.digest if node.reachable else None,
            "in_sync": spec.name in in_sync,
            "default_sha256": (node.default_sha256 or None) if node.reachable else None,
            "last_sync": (node.last_sync or None) if node.reachable else None,
            "revision": node.revision if node.reachable else None,
            "stale": spec.name in stale,
            "configured_role": spec.role,
            "problems": _problems(node, leader, expected, stale=spec.name in stale,
                                  stale_after=stale_after),
            "certificates": [dict(c) for c in node.certificates] if node.reachable else None,
            "pending_ca_change": dict(node.pending_ca_change)
            if node.reachable and node.pending_ca_change is not None
            else None,
        })
    answered_epochs = [o.epoch for o in observed if o.reachable]
    return {
        "epoch": max(answered_epochs, default=0),
        "primary": primary,
        "required_names": list(topology.required_names()),
        "nodes": nodes,
        "problems": top_problems,
    }


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


async def _probe(address: str, name: ServerName, rpc_timeout: float) -> tuple[str | None, str]:
    try:
        return await served_sha256(address, name, timeout=rpc_timeout), ""
    except (CertsyncError, OSError) as err:
        return None, str(err) or type(err).__name__


async def _probe_node(
    config: AdminConfig, node: Observed, names: Sequence[ServerName], rpc_timeout: float
) -> Observed:
    address = config.topology.node(node.name).tls_address
    results = await asyncio.gather(*(_probe(address, n, rpc_timeout) for n in names))
    served = {n: sha for n, (sha, _) in zip(names, results, strict=True)}
    errors = {n: why for n, (sha, why) in zip(names, results, strict=True) if sha is None}
    return replace(node, served=served, probe_errors=errors)


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


# --------------------------------------------------------------------------- commands


def _sni(args: argparse.Namespace) -> int:
    resp = call_node(args.config, args.node, lambda c: c.sni_lookup(args.hostname))
    out = {"sha256": resp.sha256 or None, "reason": resp.reason}
    if args.json:
        print_json(out)
    else:
        print(f"{resp.sha256 or '(no certificate)'}  {resp.reason}")
    return 0


def _status(args: argparse.Namespace) -> int:
    report = asyncio.run(collect_status(admin_config(args.config)))
    if args.json:
        print_json(report)
    else:
        print_status(report)
    return 0


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
            "primary names. Exit 0: this is a report."
        ),
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=_status)
