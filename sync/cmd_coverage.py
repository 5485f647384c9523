"""[shell] ``certsync coverage``: which hostnames a certificate covers.

Offline form (DESIGN.md)::

    certsync coverage --cert FILE [--cert FILE]... [--passphrase-file PATH]
                      --hostname H [--hostname H]... [--json]

The ``--cert`` files are read as one input (like ``inspect``); the identity certificate of
that input is the one checked. Exit 0 when every hostname is covered, 1 when any is not, 2
for bad input (an invalid hostname, an unreadable file, an input without an identity
certificate).

Without ``--cert`` the command is the cluster form (``certsync --config ADMIN_TOML
coverage``): every node hostname and the site hostname against the runtime primary's
default certificate (or ``--node NAME``'s), fetched with ``List`` + a PEM ``Export``
(certificates only). Each row adds ``"node"``: the node whose hostname it is, ``null`` for
the site hostname. Exit 0 all covered, 1 otherwise -- also when there is no default
certificate (the check ran: nothing is covered, and the rows say why); 2 when no node
answers.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from cryptography import x509

from node.api import certsync_pb2
from node.chain import analyze
from node.errors import BadInput
from node.formats import cert_sha256
from node.names import (
    CoverageReport,
    Hostname,
    SanSet,
    check_all,
    coverage_json,
    parse_hostname,
    sans_of,
)
from sync._io import print_json
from sync.client import NodeClient, admin_config, admin_target
from sync.cluster_view import find_primary
from sync.cmd_inspect import load_material
from sync.config import AdminConfig
from sync.topology import Topology

__all__ = [
    "NO_DEFAULT_REASON",
    "cluster_coverage_json",
    "collect_cluster_coverage",
    "fetch_default_certificate",
    "print_data",
    "register",
]


def _offline(args: argparse.Namespace) -> int:
    given: list[str] = args.hostname or []
    if not given:
        raise BadInput("coverage --cert FILE needs at least one --hostname H to check")
    hostnames: list[Hostname] = [parse_hostname(h) for h in given]  # bad ones: exit 2 first
    paths: list[str] = args.cert
    report = analyze(load_material(paths, args.passphrase_file))
    if report.identity is None:
        files = ", ".join(repr(p) for p in paths)
        raise BadInput(
            f"{files} holds no identity (server) certificate, only CA certificates; "
            "give the file with the server certificate"
        )
    result = check_all(sans_of(report.identity), hostnames)
    _print(result, as_json=args.json)
    return 0 if result.all_covered else 1


def _print(report: CoverageReport, *, as_json: bool) -> None:
    print_data(coverage_json(report), as_json=as_json)


def print_data(data: dict[str, Any], *, as_json: bool) -> None:
    """Print a coverage object as JSON or as a table (with a NODE column when it has one)."""
    if as_json:
        print_json(data)
        return
    cluster = "node" in data
    header = ("HOSTNAME", *(("NODE",) if cluster else ()), "COVERED", "KIND",
              "MATCHED BY / REASON")
    rows = [
        (
            row["hostname"],
            *((row["node"] or "(site)",) if cluster else ()),
            "yes" if row["covered"] else "NO",
            row["kind"] or "-",
            row["matched_by"] or row.get("reason", "-"),
        )
        for row in data["hostnames"]
    ]
    out = sys.stdout
    if cluster:
        which = data["sha256"][:16] if data["sha256"] else "(none)"
        out.write(f"default certificate {which} of node {data['node']}\n")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)))
        out.write(f"  {row[-1]}\n")
    out.write("all covered\n" if data["all_covered"] else "NOT all covered\n")


NO_DEFAULT_REASON = "the node has no default certificate; make one default with 'cert default'"


def cluster_coverage_json(
    topology: Topology, sans: SanSet | None, *, node: str, sha256: str | None
) -> dict[str, Any]:
    """The cluster ``coverage --json`` object (pure).

    Rows are the site hostname (``"node": null``) then every node's hostname (``"node"``:
    that node's name), once each (a hostname shared by several keeps its first owner).
    ``sans`` is the default certificate's names; ``None`` means there is no default
    certificate, so nothing is covered. Extra top-level fields: ``node`` (whose default
    certificate was checked), ``sha256`` (that certificate, or null) and, without one,
    ``reason``.
    """
    owners: dict[str, str | None] = {topology.site: None}
    for spec in topology.nodes:
        owners.setdefault(spec.hostname, spec.name)
    if sans is None:
        rows: list[dict[str, Any]] = [
            {"hostname": h, "covered": False, "kind": None, "matched_by": None,
             "reason": NO_DEFAULT_REASON, "node": owner}
            for h, owner in owners.items()
        ]
        return {"all_covered": False, "hostnames": rows, "node": node, "sha256": None,
                "reason": f"node {node!r} has no default certificate"}
    data = coverage_json(check_all(sans, list(owners)))
    for row, owner in zip(data["hostnames"], owners.values(), strict=True):
        row["node"] = owner
    data["node"] = node
    data["sha256"] = sha256
    return data


async def fetch_default_certificate(
    config: AdminConfig, node: str | None
) -> tuple[str, x509.Certificate | None]:
    """``(node name, its default certificate or None)``; node None: the runtime primary.

    Only the certificate travels: ``List`` to find the default, then a PEM ``Export``
    (certificates only, never a key).
    """
    name = node or await find_primary(config)
    async with NodeClient(admin_target(config, name)) as client:
        listed = await client.list_certificates()
        default = next((c for c in listed if c.is_default), None)
        if default is None:
            return name, None
        pem = await client.export(default.sha256, certsync_pb2.EXPORT_FORMAT_PEM)
    return name, x509.load_pem_x509_certificate(pem)  # the first block: the certificate


async def collect_cluster_coverage(config: AdminConfig, node: str | None) -> dict[str, Any]:
    """The cluster ``coverage --json`` object, fetched from ``node`` (None: the primary)."""
    name, cert = await fetch_default_certificate(config, node)
    if cert is None:
        return cluster_coverage_json(config.topology, None, node=name, sha256=None)
    return cluster_coverage_json(config.topology, sans_of(cert), node=name,
                                 sha256=cert_sha256(cert))


def _cluster_coverage(args: argparse.Namespace) -> int:
    """The cluster form: node and site hostnames against the default certificate."""
    if not args.config:
        raise BadInput("coverage needs --cert FILE (offline) or --config ADMIN_TOML (cluster)")
    if args.hostname or args.passphrase_file:
        raise BadInput("--hostname and --passphrase-file belong to the offline form; add "
                       "--cert FILE, or drop them to check the cluster's own hostnames")
    data = asyncio.run(collect_cluster_coverage(admin_config(args.config), args.node))
    print_data(data, as_json=args.json)
    return 0 if data["all_covered"] else 1


def _run(args: argparse.Namespace) -> int:
    if not args.cert:
        return _cluster_coverage(args)
    return _offline(args)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "coverage",
        help="check that a certificate covers hostnames (offline with --cert, or the cluster)",
        description=(
            "Offline: check that the identity certificate in FILE covers every --hostname "
            "(RFC 6125 and CA/Browser Forum rules: SANs only, one-label left-most wildcards, "
            "no wildcard over a public suffix). Exit 0 all covered, 1 otherwise. Without "
            "--cert: the cluster form (certsync --config ADMIN_TOML [--node NAME] coverage): "
            "the site hostname and every node's hostname against the default certificate of "
            "the primary (or of --node), fetched without its key. Each JSON row then has "
            "\"node\": the node whose hostname it is, or null for the site hostname. No "
            "default certificate: nothing is covered, exit 1."
        ),
    )
    parser.add_argument(
        "--cert",
        action="append",
        metavar="FILE",
        help="certificate file (PEM, DER, PKCS#7, PKCS#12); repeat to read several as one input",
    )
    parser.add_argument(
        "--passphrase-file",
        metavar="PATH",
        help="file whose content is the passphrase (one trailing newline removed)",
    )
    parser.add_argument(
        "--hostname",
        action="append",
        metavar="H",
        help="hostname or IP address to check; repeat for several",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=_run)
