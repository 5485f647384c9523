"""[shell] What the cluster serves, gathered: every node's state, the runtime primary, what it
names per server name and a real handshake with every node that stores its set -- the
shell half of ``certsync status`` (the report itself is pure: :func:`sync.report.status_report`),
used by the CLI, the support bundle and the admin console alike. See :mod:`sync.cmd_ops` for
the steps.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Final

from node.errors import CertsyncError, NodeUnreachable
from sync.client import NodeClient, admin_target
from sync.config import AdminConfig
from sync.probe import served_chain
from sync.report import Observed, ServerName, StoredChain, runtime_primary, status_report

__all__ = [
    "PROBE_TIMEOUT",
    "STATUS_TIMEOUT",
    "collect_status",
    "find_primary",
    "gather",
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
