"""[shell] ``certsync acme request --hostname H [--key ec-p256|rsa-2048] [--default]
[--accept-failover-risk]``: order a Let's Encrypt (ACME) certificate on the primary.

The node runs the order with its HTTP-01 responder (``[acme]`` in its node.toml), stores the
certificate, its chain and key, and replicates them like any other change; certsync renews it
by itself from 30 days before expiry. On a failover pair DNS can point at one appliance only,
so renewal can fail after a failover: the command warns, and the node refuses the request
unless ``--accept-failover-risk`` is given (exit 2).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from node.acme_client import ACME_KEY_TYPES
from node.api import certsync_pb2
from sync._io import print_json
from sync.client import admin_config
from sync.cmd_cert import cert_json
from sync.routing import call_primary

__all__ = ["register"]


def _request(args: argparse.Namespace) -> int:
    config = admin_config(args.config)
    backup = config.topology.backup
    if backup is not None:
        sys.stderr.write(
            f"certsync: warning: this cluster is a failover pair ({config.topology.primary.name}"
            f" + {backup.name}); DNS can point at one appliance only, so ACME renewal can fail "
            "after a failover\n"
        )
    req = certsync_pb2.AcmeRequest(
        hostname=args.hostname,
        key_type=args.key,
        make_default=args.default,
        accept_failover_risk=args.accept_failover_risk,
        confirm_ca_change=args.confirm_ca_change,
        name=args.name or "",
        force=args.force,
    )
    resp = call_primary(args.config, args.node, lambda c: c.request_acme(req))
    for w in resp.warnings:
        if backup is None or "failover pair" not in w:  # said above already
            sys.stderr.write(f"certsync: warning: {w}\n")
    if args.json:
        print_json(cert_json(resp.certificate))
    else:
        print(resp.certificate.sha256)
    return 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    acme = subparsers.add_parser("acme", help="Let's Encrypt (ACME) certificates")
    sub = acme.add_subparsers(dest="acme_command", metavar="COMMAND")
    sub.required = True
    request = sub.add_parser("request", help="order a certificate over HTTP-01 on the primary")
    request.add_argument("--hostname", required=True, metavar="H", help="the DNS name to certify")
    request.add_argument(
        "--key", choices=ACME_KEY_TYPES, default="ec-p256", help="key type (default ec-p256)"
    )
    request.add_argument("--name", metavar="N", help="friendly name (default: the hostname)")
    request.add_argument("--default", action="store_true", help="make it the default")
    request.add_argument(
        "--accept-failover-risk",
        action="store_true",
        help="request on a failover pair although renewal can fail after a failover",
    )
    request.add_argument(
        "--confirm-ca-change",
        action="store_true",
        help="with --default: allow a default whose chain ends in another root CA",
    )
    request.add_argument(
        "--force", action="store_true",
        help="with --default: make it the default even when it leaves required names uncovered "
             "(audited)",
    )
    request.add_argument("--json", action="store_true", help="print JSON")
    request.set_defaults(func=_request)
