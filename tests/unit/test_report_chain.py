"""sync.report: the chain each node served against the primary's stored chain (issue 11)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path
from typing import Any

from sync.report import Observed, StoredChain, status_report
from sync.topology import NodeRole, NodeSpec, Topology

NODES: tuple[tuple[str, NodeRole, str], ...] = (
    ("p1", "primary", "p1.example.com"), ("b1", "backup", "b1.example.com"),
    ("t1", "traffic", "t1.example.com"))
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
LEAF, INTER, ROOT = "a" * 64, "1" * 64, "2" * 64


def _topology() -> Topology:
    specs = tuple(
        NodeSpec(name=n, role=r, hostname=h, grpc_address=f"127.0.0.1:{7400 + 2 * i}",
                 tls_address=f"127.0.0.1:{7401 + 2 * i}", cert_path=Path(f"/x/{n}.pem"))
        for i, (n, r, h) in enumerate(NODES))
    return Topology(cluster_id="00000000-0000-4000-8000-000000000000",
                    site="support.example.com", nodes=specs, ca_cert_path=Path("/x/ca.pem"),
                    stale_after_seconds=300)


def _names() -> list[str | None]:
    return [*_topology().required_names(), None]


COMPLETE = StoredChain(sent=(INTER,), complete=True)
NO_ROOT = StoredChain(sent=(INTER,), complete=False, missing_root=True,
                      problems=("the root CA CN=Root that issued CN=Inter is not stored",))
NO_INTER = StoredChain(sent=(), complete=False,
                       problems=("no certificate for issuer CN=Inter is stored",))


def _node(name: str, chain: tuple[str, ...] = (INTER,), **changes: Any) -> Observed:
    role = next(r for n, r, _ in NODES if n == name)
    base = Observed(
        name=name, reachable=True, role=role, epoch=1, revision=3, digest="d" * 64,
        default_sha256=LEAF, primary="p1",
        last_sync="" if name == "p1" else "2026-03-01T11:59:00Z",
        served=dict.fromkeys(_names(), LEAF),
        served_chains=dict.fromkeys(_names(), chain),
    )
    return replace(base, **changes)


def _report(stored: StoredChain, **chains: tuple[str, ...]) -> dict[str, Any]:
    observed = [
        _node(n, chains.get(n, (INTER,)),
              stored_chains={LEAF: stored} if n == "p1" else {})
        for n, _, _ in NODES]
    return status_report(_topology(), observed, dict.fromkeys(_names(), LEAF), now=NOW)


def _rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in report["nodes"]}


def test_every_node_sending_the_stored_chain_is_in_sync() -> None:
    report = _report(COMPLETE)
    assert all(r["in_sync"] for r in _rows(report).values())
    assert all(r["problems"] == [] for r in _rows(report).values())
    assert report["problems"] == []


def test_a_node_serving_the_leaf_without_its_intermediate_is_not_in_sync() -> None:
    """Twin of the above: the same leaf, the intermediate left out by t1."""
    rows = _rows(_report(COMPLETE, t1=()))
    assert rows["t1"]["in_sync"] is False
    assert any("without 1 certificate(s) of its stored chain" in p and INTER[:16] in p
               for p in rows["t1"]["problems"])
    assert rows["p1"]["in_sync"] and rows["b1"]["in_sync"]


def test_a_node_sending_more_than_the_chain_is_still_in_sync() -> None:
    """The stored chain's certificates must be there; a root sent as well harms nobody."""
    rows = _rows(_report(COMPLETE, b1=(INTER, ROOT)))
    assert rows["b1"]["in_sync"] is True


def test_a_stored_chain_without_its_root_is_a_warning_not_out_of_sync() -> None:
    report = _report(NO_ROOT)
    assert all(r["in_sync"] for r in _rows(report).values())
    assert len(report["problems"]) == 1
    assert report["problems"][0].startswith("warning: ")
    assert "lacks its root" in report["problems"][0] and "CN=Root" in report["problems"][0]


def test_a_stored_chain_without_its_intermediate_is_named() -> None:
    """The forced delete of the intermediate: every node sends the leaf alone, as the
    primary stores it; status says the chain is incomplete."""
    report = _report(NO_INTER, p1=(), b1=(), t1=())
    assert len(report["problems"]) == 1
    assert "is incomplete" in report["problems"][0] and "CN=Inter" in report["problems"][0]
    assert not report["problems"][0].startswith("warning: ")


def test_a_node_without_a_recorded_chain_is_judged_by_its_leaf_alone() -> None:
    """No chain recorded for a name (an older probe): nothing is claimed about it."""
    observed = [
        _node(n, stored_chains={LEAF: COMPLETE} if n == "p1" else {},
              served_chains={} if n == "t1" else dict.fromkeys(_names(), (INTER,)))
        for n, _, _ in NODES]
    report = status_report(_topology(), observed, dict.fromkeys(_names(), LEAF), now=NOW)
    assert _rows(report)["t1"]["in_sync"] is True
