"""[shell] ``certsync cert show SHA256 [--json]``: one stored certificate in detail.

What the appliance's certificate page, ``cmctl inspect`` and HAProxy's ``show ssl cert``
show, for one certificate of a node's store (default: the runtime primary's):

1. ``ShowCertificate`` on the node: subject, issuer, SANs, key type, where its key came from,
   its chain built over the node's whole store with its state, dates, days left, renewal
   state, whether it is the default;
2. its coverage of every required name of the cluster (the site hostname and every node's
   hostname; the ``hostnames`` rows of the cluster ``coverage``), from its SANs (a PEM
   ``Export``: certificates only);
3. ``served_by``: the nodes whose TLS endpoint presented it at this probe (one handshake per
   name clients reach the node by, and one without SNI, as ``status`` probes).

The JSON keys are DESIGN.md's, exactly (:func:`show_json`).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography import x509

from node.api import certsync_pb2
from node.errors import CertsyncError
from node.names import sans_of
from sync._io import print_json
from sync.client import NodeClient, admin_config, admin_target
from sync.cluster_view import PROBE_TIMEOUT, find_primary
from sync.cmd_coverage import cluster_coverage_json
from sync.config import AdminConfig
from sync.probe import served_sha256

__all__ = ["collect_show", "register", "served_by", "show_json"]


def show_json(
    info: certsync_pb2.CertificateInfo,
    coverage: Sequence[Mapping[str, Any]],
    served: Sequence[str],
) -> dict[str, Any]:
    """The ``cert show --json`` object (pure): DESIGN.md's keys, in its order."""
    return {
        "sha256": info.sha256,
        "name": info.name,
        "subject": info.subject,
        "issuer": info.issuer,
        "dns_names": list(info.dns_names),
        "ip_addresses": list(info.ip_addresses),
        "key_type": info.key_type or None,
        "has_key": info.has_key,
        "key_source": info.key_source or None,
        "chain": [{"sha256": c.sha256, "subject": c.subject, "role": c.role}
                  for c in info.chain],
        "chain_complete": info.chain_complete,
        "chain_problems": list(info.chain_problems),
        "coverage": [dict(row) for row in coverage],
        "not_before": info.not_before,
        "not_after": info.not_after,
        "days_left": info.days_left,
        "renewal_state": info.renewal_state or None,
        "default": info.is_default,
        "served_by": list(served),
    }


async def _presented(address: str, names: Sequence[str | None]) -> set[str]:
    async def one(name: str | None) -> str | None:
        try:
            return await served_sha256(address, name, timeout=PROBE_TIMEOUT)
        except (CertsyncError, OSError):
            return None  # an unreachable node serves nothing

    return {sha for sha in await asyncio.gather(*(one(n) for n in names)) if sha}


async def served_by(config: AdminConfig, sha256: str) -> list[str]:
    """The nodes (topology order) whose TLS endpoint presents ``sha256`` for a name clients
    reach it by, or without SNI."""
    topology = config.topology
    found = await asyncio.gather(*(
        _presented(spec.tls_address, [*topology.served_names(spec.name), None])
        for spec in topology.nodes))
    return [spec.name for spec, shas in zip(topology.nodes, found, strict=True)
            if sha256 in shas]


async def collect_show(config: AdminConfig, node: str | None, sha256: str) -> dict[str, Any]:
    """The ``cert show --json`` object for ``sha256`` in ``node``'s store (None: the
    primary's)."""
    name = node or await find_primary(config)
    async with NodeClient(admin_target(config, name)) as client:
        info = await client.show_certificate(sha256)
        pem = await client.export(info.sha256, certsync_pb2.EXPORT_FORMAT_PEM)
    cert = x509.load_pem_x509_certificate(pem)  # the first block: the certificate
    coverage = cluster_coverage_json(config.topology, sans_of(cert), node=name,
                                     sha256=info.sha256)["hostnames"]
    return show_json(info, coverage, await served_by(config, info.sha256))


def print_show(data: Mapping[str, Any]) -> None:
    """The human form of :func:`show_json`."""
    def line(label: str, value: Any) -> None:
        print(f"{label:<14} {value}")

    line("sha256", data["sha256"])
    line("name", data["name"] + ("  (default)" if data["default"] else ""))
    line("subject", data["subject"])
    line("issuer", data["issuer"])
    line("dns names", ", ".join(data["dns_names"]) or "-")
    if data["ip_addresses"]:
        line("ip addresses", ", ".join(data["ip_addresses"]))
    key = f"key stored (from {data['key_source']})" if data["has_key"] else "no key stored"
    line("key", f"{data['key_type'] or 'unknown type'}, {key}")
    line("valid", f"{data['not_before']} .. {data['not_after']} ({data['days_left']} days left)")
    line("renewal", data["renewal_state"] or "-")
    line("chain", "complete" if data["chain_complete"] else "INCOMPLETE")
    for link in data["chain"]:
        print(f"  {link['role']:<12} {link['sha256'][:16]}  {link['subject']}")
    for problem in data["chain_problems"]:
        print(f"  warning: {problem}")
    print("coverage")
    for row in data["coverage"]:
        where = row.get("node") or "(site)"
        how = row["matched_by"] if row["covered"] else f"NOT covered: {row.get('reason') or '-'}"
        print(f"  {row['hostname']:<32} {where:<10} {how}")
    line("served by", ", ".join(data["served_by"]) or "no node")


def _show(args: argparse.Namespace) -> int:
    data = asyncio.run(collect_show(admin_config(args.config), args.node, args.sha256))
    if args.json:
        print_json(data)
    else:
        print_show(data)
    return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """``cert show`` under the ``cert`` command's subparsers."""
    show = sub.add_parser("show", help="one certificate: chain, coverage, dates, who serves it")
    show.add_argument("sha256", metavar="SHA256")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=_show)
