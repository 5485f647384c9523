"""[shell] ``certsync request create|list|show``: certificate signing requests on a node."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from node.api import certsync_pb2
from sync._io import print_json
from sync.client import call_node
from sync.cmd_cert import add_subject_flags, subject_of
from sync.routing import call_primary

__all__ = ["register"]


def _csr_json(csr: certsync_pb2.CsrInfo) -> dict[str, Any]:
    return {"id": csr.id, "name": csr.name, "created_at": csr.created_at, "pem": csr.pem,
            "subject": csr.subject, "dns_names": list(csr.dns_names),
            "key_type": csr.key_type, "state": csr.state,
            "fulfilled_by": csr.fulfilled_by or None}


def _create(args: argparse.Namespace) -> int:
    req = certsync_pb2.CreateRequestRequest(
        name=args.name or "", key_type=args.key, subject=subject_of(args), sans=args.san or []
    )
    csr = call_primary(args.config, args.node, lambda c: c.create_request(req))
    for line in csr.notices:  # the guide's subject rules
        sys.stderr.write(f"certsync: note: {line}\n")
    if args.json:
        print_json(_csr_json(csr))
    else:
        print(csr.id)
        sys.stdout.write(csr.pem)
    return 0


def _list(args: argparse.Namespace) -> int:
    csrs = call_node(args.config, args.node, lambda c: c.list_requests())
    if args.json:
        print_json([{k: v for k, v in _csr_json(c).items() if k != "pem"} for c in csrs])
        return 0
    print(f"{'ID':<16}  {'CREATED':<20}  {'STATE':<9}  {'KEY':<8}  SUBJECT / DNS NAMES")
    for c in csrs:
        names = ", ".join(c.dns_names)
        print(f"{c.id:<16}  {c.created_at:<20}  {c.state:<9}  {c.key_type:<8}  {c.subject}"
              + (f" ({names})" if names else ""))
    return 0


def _delete(args: argparse.Namespace) -> int:
    call_primary(args.config, args.node, lambda c: c.delete_request(args.id))
    return 0


def _show(args: argparse.Namespace) -> int:
    csr = call_node(args.config, args.node, lambda c: c.show_request(args.id))
    if args.json:
        print_json(_csr_json(csr))
    else:
        sys.stdout.write(csr.pem)
    return 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    request = subparsers.add_parser("request", help="certificate signing requests (CSRs)")
    sub = request.add_subparsers(dest="request_command", metavar="COMMAND")
    sub.required = True
    create = sub.add_parser("create", help="generate a key and a CSR on the node")
    create.add_argument("--name", metavar="N", help="friendly name (default: the CN)")
    add_subject_flags(create)
    create.add_argument("--json", action="store_true", help="print JSON")
    create.set_defaults(func=_create)
    lst = sub.add_parser("list", help="list the node's CSRs")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(func=_list)
    show = sub.add_parser("show", help="print a CSR's PEM")
    show.add_argument("id", metavar="ID")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=_show)
    delete = sub.add_parser("delete", help="delete a CSR and its key")
    delete.add_argument("id", metavar="ID")
    delete.set_defaults(func=_delete)
