"""[shell] ``certsync coverage``: which hostnames a certificate covers.

Offline form (DESIGN.md)::

    certsync coverage --cert FILE [--cert FILE]... [--passphrase-file PATH]
                      --hostname H [--hostname H]... [--json]

The ``--cert`` files are read as one input (like ``inspect``); the identity certificate of
that input is the one checked. Exit 0 when every hostname is covered, 1 when any is not, 2
for bad input (an invalid hostname, an unreadable file, an input without an identity
certificate).

Without ``--cert`` the command is the cluster form (``certsync --config ADMIN_TOML
coverage``): every node hostname and the site hostname against the default certificate.
That form is :func:`_cluster_coverage`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from node.chain import analyze
from node.errors import BadInput
from node.names import CoverageReport, Hostname, check_all, coverage_json, parse_hostname, sans_of
from sync._io import print_json
from sync.cmd_inspect import load_material

__all__ = ["register"]


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
    data: dict[str, Any] = coverage_json(report)
    if as_json:
        print_json(data)
        return
    rows = [
        (
            row["hostname"],
            "yes" if row["covered"] else "NO",
            row["kind"] or "-",
            row["matched_by"] or row.get("reason", "-"),
        )
        for row in data["hostnames"]
    ]
    header = ("HOSTNAME", "COVERED", "KIND", "MATCHED BY / REASON")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    out = sys.stdout
    for row in [header, *rows]:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)))
        out.write(f"  {row[3]}\n")
    out.write("all covered\n" if report.all_covered else "NOT all covered\n")


def _cluster_coverage(args: argparse.Namespace) -> int:
    """The cluster form: node and site hostnames against the default certificate.

    Hook for the cluster part (needs ``--config``); the offline form never comes here.
    """
    if not args.config:
        raise BadInput("coverage needs --cert FILE (offline) or --config ADMIN_TOML (cluster)")
    raise BadInput(
        f"cluster coverage with --config {args.config!r} is not available yet; "
        "check a certificate file with 'coverage --cert FILE --hostname H'"
    )


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
            "--cert: the cluster form, using the global --config."
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
