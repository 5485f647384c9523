"""[shell] ``certsync cluster init``: the command line of :mod:`sync.cluster_init`."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from sync.cluster_init import DEFAULT_BASE_PORT, DEFAULT_LISTEN, init_cluster, plan_init
from sync.topology import DEFAULT_STALE_AFTER_SECONDS, DEFAULT_SYNC_INTERVAL_SECONDS

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    req = plan_init(
        Path(args.dir), site=args.site, primary=args.primary, backup=args.backup,
        traffic=args.traffic or (), listen=args.listen, base_port=args.base_port,
        advertise=args.advertise or (), sync_interval_seconds=args.sync_interval,
        stale_after_seconds=args.stale_after,
    )
    topology = init_cluster(req, now=dt.datetime.now(dt.UTC))
    out = sys.stdout
    out.write(f"cluster {topology.cluster_id} for site {topology.site} written to "
              f"{req.directory}\n")
    for spec in topology.nodes:
        out.write(f"  {spec.name:<12} {spec.role:<8} {spec.hostname:<32} grpc "
                  f"{spec.grpc_address}  tls {spec.tls_address}  console {spec.admin_url}\n")
    first = req.directory / topology.nodes[0].name / "node.toml"
    out.write(f"start a node:  certsync node serve --config {first}\n")
    out.write(f"administer:    certsync --config {req.directory / 'admin.toml'} status\n")
    out.write(f"browser:       import {req.directory / 'admin.p12'} (passphrase in "
              f"{req.directory / 'admin.p12.pass'}), then open a console URL\n")
    return 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    cluster = subparsers.add_parser("cluster", help="create and describe a cluster")
    sub = cluster.add_subparsers(dest="cluster_command", metavar="SUBCOMMAND")
    sub.required = True
    init = sub.add_parser(
        "init",
        help="write a ready local cluster (CA, node and admin identities, configs) into DIR",
        description="Node i (primary 0, backup 1, traffic nodes next in the given order) "
                    "listens for gRPC on BASE+2i and for TLS on BASE+2i+1.",
    )
    init.add_argument("dir", metavar="DIR", help="new or empty directory")
    init.add_argument("--site", required=True, metavar="HOST",
                      help="the hostname clients use (e.g. support.example.com)")
    init.add_argument("--primary", required=True, metavar="NAME=HOST")
    init.add_argument("--backup", metavar="NAME=HOST")
    init.add_argument("--traffic", action="append", metavar="NAME=HOST",
                      help="a traffic node; repeat for more")
    init.add_argument("--listen", default=DEFAULT_LISTEN, metavar="ADDR",
                      help=f"address every node listens on (default {DEFAULT_LISTEN})")
    init.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT, metavar="PORT",
                      help=f"first port (default {DEFAULT_BASE_PORT})")
    init.add_argument("--advertise", action="append", metavar="NAME=ADDR",
                      help="address others use to reach NAME (e.g. a container's service "
                           "name); default: the --listen address (loopback if it is 0.0.0.0 "
                           "or ::)")
    init.add_argument("--sync-interval", type=int, default=DEFAULT_SYNC_INTERVAL_SECONDS,
                      metavar="SECONDS", help="anti-entropy period (default %(default)s)")
    init.add_argument("--stale-after", type=int, default=DEFAULT_STALE_AFTER_SECONDS,
                      metavar="SECONDS",
                      help="status flags a node whose last sync is older (default %(default)s)")
    init.set_defaults(func=_run)
