"""[core] The ``status`` report, from what every node answered (plain values).

:func:`status_report` turns the nodes' answers (:class:`Observed`) and what the runtime
primary names for each server name into the ``status --json`` object: which node is the
primary at run time (:func:`runtime_primary`), which nodes are in sync -- they report the
primary's epoch, revision and digest *and* their TLS endpoint served what the primary names
(served, not merely stored; :func:`sync.plan.plan` decides, as for the replicator) -- which
are stale, and why, in sentences. The gathering (RPCs, probes, the clock) is
:mod:`sync.cmd_ops`'s.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sync import plan as plan_mod
from sync.topology import Topology

__all__ = ["Observed", "ServerName", "StoredChain", "runtime_primary", "status_report"]

#: a server name of a probe; ``None`` is a ClientHello without SNI
ServerName = str | None


@dataclass(frozen=True)
class StoredChain:
    """A certificate's chain as its node stores it (over the whole store, issue 11):
    ``sent`` is what its endpoint sends after the leaf (the chain without roots)."""

    sent: tuple[str, ...] = ()
    complete: bool = True
    missing_root: bool = False
    problems: tuple[str, ...] = ()


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
    # the chain over the store (issue 11): what each probe got after the leaf, and (asked
    # of the primary only) the stored chain of each certificate by sha256
    served_chains: Mapping[ServerName, tuple[str, ...]] = field(default_factory=dict)
    stored_chains: Mapping[str, StoredChain] = field(default_factory=dict)
    # rollouts (issue 12): the primary's {"revision","state","canary","halted_reason"}
    rollout: Mapping[str, Any] | None = None

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


def _serving_ok(node: Observed, expected: Mapping[ServerName, str] | None,
                chains: Mapping[str, StoredChain]) -> bool | None:
    """True when ``node`` served what the primary names for every name; None: unknown."""
    if expected is None:
        return None
    if not expected:
        return True  # the primary holds no certificate: there is nothing to serve
    if not node.served:
        return None
    # each node is probed for the names clients reach it by (Topology.served_names)
    return all(node.served[name] == sha for name, sha in expected.items()
               if name in node.served) and not _chain_gaps(node, expected, chains)


def _chain_gaps(node: Observed, expected: Mapping[ServerName, str],
                chains: Mapping[str, StoredChain]) -> dict[ServerName, tuple[str, ...]]:
    """Per probed name for which ``node`` served the leaf the primary names: the certificates
    of the primary's stored chain for it (roots left out) that the node did not send."""
    gaps: dict[ServerName, tuple[str, ...]] = {}
    for name, want in expected.items():
        stored = chains.get(want)
        if stored is None or node.served.get(name) != want or name not in node.served_chains:
            continue
        missing = tuple(s for s in stored.sent if s not in node.served_chains[name])
        if missing:
            gaps[name] = missing
    return gaps


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
        for name, missing in _chain_gaps(node, expected, leader.stored_chains).items():
            out.append(f"serves {_short(expected[name])} for {_label(name)} without "
                       f"{len(missing)} certificate(s) of its stored chain "
                       f"({', '.join(_short(m) for m in missing)}), so clients cannot verify "
                       "it; its chain is incomplete")
    if stale:
        when = node.last_sync or "never"
        out.append(f"last successful sync ({when}) is older than {stale_after} s")
    return out


def _runtime_role(configured: str, node: Observed, primary: str | None) -> str:
    """The role ``status`` shows: the runtime primary's word over ``cluster.toml``'s."""
    if primary is None:
        return configured
    if node.name == primary:
        return "primary"
    if node.reachable and node.role and node.role != "primary":
        return node.role
    return "backup" if configured == "primary" else configured  # an ex-primary


def _cluster_problems(primary: str | None, leader: Observed | None,
                      expected: Mapping[ServerName, str] | None) -> list[str]:
    if primary is None:
        return ["no node answered, so nobody can say which node is the primary; "
                "start the nodes"]
    if leader is None:
        return [f"the primary {primary!r} does not answer, so no node can be shown in sync; "
                "start it, or promote another node with 'certsync promote NAME'"]
    if expected is None:
        return [f"the primary {leader.name!r} did not say which certificate each name gets, "
                "so no node can be shown in sync; run status again"]
    return _chain_warnings(leader, expected)


def _chain_warnings(leader: Observed, expected: Mapping[ServerName, str]) -> list[str]:
    """One sentence per certificate the primary serves whose stored chain is not complete: a
    missing root is a warning (clients that trust it verify), a missing issuer is worse."""
    out: list[str] = []
    for sha in dict.fromkeys(expected.values()):
        stored = leader.stored_chains.get(sha)
        if stored is None or stored.complete:
            continue
        names = ", ".join(_label(n) for n, want in expected.items() if want == sha)
        what = "lacks its root" if stored.missing_root else "is incomplete"
        why = "; ".join(stored.problems) or "no root is stored"
        kind = "warning: " if stored.missing_root else ""
        out.append(f"{kind}the primary's stored chain of {_short(sha)} (served for {names}) "
                   f"{what}: {why}")
    return out


def _sync_states(
    topology: Topology,
    by_name: Mapping[str, Observed],
    leader: Observed | None,
    expected: Mapping[ServerName, str] | None,
    *,
    now: dt.datetime,
) -> tuple[set[str], set[str]]:
    """Which nodes are in sync and which are stale, by the replicator's own rules."""
    if leader is None:
        return set(), set()
    others = [by_name[s.name] for s in topology.nodes if s.name != leader.name]
    chains = leader.stored_chains
    decided = plan_mod.plan(
        _plan_state(leader, _serving_ok(leader, expected, chains)),
        [_plan_state(o, _serving_ok(o, expected, chains)) for o in others],
        now=now,
        stale_after=dt.timedelta(seconds=topology.stale_after_seconds),
    )
    in_sync = set(decided.in_sync)
    if _serving_ok(leader, expected, chains) is True:
        in_sync.add(leader.name)
    return in_sync, set(decided.stale)


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
    in_sync, stale = _sync_states(topology, by_name, leader, expected, now=now)
    top_problems = _cluster_problems(primary, leader, expected)
    nodes: list[dict[str, Any]] = []
    for spec in topology.nodes:
        node = by_name[spec.name]
        nodes.append({
            "name": spec.name,
            "role": _runtime_role(spec.role, node, primary),
            "hostname": spec.hostname,
            "grpc_address": spec.grpc_address,
            "tls_address": spec.tls_address,
            "admin_url": spec.admin_url,
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
        "rollout": _rollout(leader),
    }


def _rollout(leader: Observed | None) -> dict[str, Any]:
    """The runtime primary's rollout; idle at its revision when it reports none."""
    if leader is not None and leader.rollout is not None:
        return dict(leader.rollout)
    return {"revision": leader.revision if leader is not None else None, "state": "idle",
            "canary": None, "halted_reason": None}
