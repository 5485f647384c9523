"""[shell] ``certsync cert create-self-signed|import|list|show|export|default|delete``
and ``cert stage-ca-change`` against one node."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from node.api import certsync_pb2
from node.errors import BadInput
from node.model import CREATABLE_KEY_TYPES
from sync import cmd_show
from sync._io import MAX_INPUT_BYTES, print_json, read_input_file, read_passphrase_file
from sync.client import call_node
from sync.cmd_replicate import wait_for_rollout
from sync.routing import call_primary

__all__ = ["add_subject_flags", "cert_json", "register", "subject_of"]

_FORMATS = {
    "pem": certsync_pb2.EXPORT_FORMAT_PEM,
    "der": certsync_pb2.EXPORT_FORMAT_DER,
    "p7b": certsync_pb2.EXPORT_FORMAT_P7B,
    "p12": certsync_pb2.EXPORT_FORMAT_P12,
}


def add_subject_flags(parser: argparse.ArgumentParser) -> None:
    """The subject, key type and SAN flags shared by ``cert create-self-signed`` and
    ``request create``."""
    parser.add_argument("--key", required=True, choices=CREATABLE_KEY_TYPES, help="key type")
    parser.add_argument("--cn", required=True, metavar="CN", help="subject common name")
    parser.add_argument("--country", metavar="C", help="two-letter country code")
    parser.add_argument("--state", metavar="S")
    parser.add_argument("--city", metavar="L")
    parser.add_argument("--org", metavar="O")
    parser.add_argument("--unit", metavar="U")
    parser.add_argument(
        "--san", action="append", metavar="HOST", help="DNS name or IP address (repeatable)"
    )


def subject_of(args: argparse.Namespace) -> certsync_pb2.Subject:
    return certsync_pb2.Subject(
        common_name=args.cn,
        country=args.country or "",
        state=args.state or "",
        city=args.city or "",
        org=args.org or "",
        unit=args.unit or "",
    )


def cert_json(c: certsync_pb2.CertificateInfo) -> dict[str, Any]:
    """One row of ``cert list --json`` (DESIGN.md's fields first)."""
    return {
        "sha256": c.sha256,
        "name": c.name,
        "role": c.role,
        "has_key": c.has_key,
        "default": c.is_default,
        "dns_names": list(c.dns_names),
        "not_after": c.not_after,
        "ip_addresses": list(c.ip_addresses),
        "subject": c.subject,
        # lifecycle (issue 6)
        "days_left": c.days_left,
        "renewal_state": c.renewal_state or None,
        "replaceable": c.replaceable,
        "acme": c.acme,
        "next_attempt": c.next_attempt or None,
        # the chain over the whole store (issue 11)
        "chain_complete": c.chain_complete,
        "chain_problems": list(c.chain_problems),
    }


def _warn(warnings: Any) -> None:
    for w in warnings:
        sys.stderr.write(f"certsync: warning: {w}\n")


def _create(args: argparse.Namespace) -> int:
    req = certsync_pb2.CreateSelfSignedRequest(
        name=args.name or "",
        key_type=args.key,
        subject=subject_of(args),
        sans=args.san or [],
        days=args.days,
        make_default=args.default,
        force=args.force,
    )
    resp = call_primary(args.config, args.node, lambda c: c.create_self_signed(req))
    _warn(resp.warnings)
    for line in resp.notices:  # the guide's subject rules
        sys.stderr.write(f"certsync: note: {line}\n")
    if args.json:
        print_json(cert_json(resp.certificate))
    else:
        print(resp.certificate.sha256)
    return _waited(args)


def _import(args: argparse.Namespace) -> int:
    files = [(Path(p).name, read_input_file(p)) for p in args.files]
    if sum(len(data) for _, data in files) > MAX_INPUT_BYTES:  # the node's message limit
        raise BadInput(f"the files of one import are larger than {MAX_INPUT_BYTES // 2**20} "
                       "MiB together; import them one by one")
    passphrase = read_passphrase_file(args.passphrase_file) if args.passphrase_file else None
    resp = call_primary(
        args.config,
        args.node,
        lambda c: c.import_files(
            files,
            passphrase=passphrase,
            name=args.name or "",
            make_default=args.default,
            force=args.force,
            confirm_ca_change=args.confirm_ca_change,
        ),
    )
    _warn(resp.warnings)
    for line in resp.notices:  # a certificate linked to a stored key or CSR key
        sys.stderr.write(f"certsync: note: {line}\n")
    if args.json:
        print_json(
            {
                "identity_sha256": resp.identity_sha256 or None,
                "certificates": [cert_json(c) for c in resp.certificates],
                "notices": list(resp.notices),
            }
        )
    elif resp.identity_sha256:
        print(resp.identity_sha256)
    else:
        for c in resp.certificates:
            print(c.sha256)
    return _waited(args)


def _list(args: argparse.Namespace) -> int:
    certs = call_node(args.config, args.node, lambda c: c.list_certificates())
    if args.json:
        print_json([cert_json(c) for c in certs])
        return 0
    print(f"{'SHA256':<64}  {'ROLE':<12}  KEY  DEF  {'NOT AFTER':<20}  NAME / DNS NAMES")
    for c in certs:
        names = ", ".join(c.dns_names)
        print(
            f"{c.sha256:<64}  {c.role:<12}  {'yes' if c.has_key else 'no ':<3}  "
            f"{'*' if c.is_default else ' ':<3}  {c.not_after:<20}  {c.name}"
            + (f" ({names})" if names else "")
        )
        if not c.chain_complete:  # a warning beneath it, one line per problem
            for problem in c.chain_problems or ["its chain is incomplete"]:
                print(f"  warning: chain incomplete: {problem}")
    return 0


def _write_out(path: str, data: bytes, *, secret: bool) -> None:
    p = Path(path)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
        if secret:
            os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except OSError as err:
        raise BadInput(f"cannot write {path!r}: {err.strerror}; check the directory") from err


def _export(args: argparse.Namespace) -> int:
    passphrase = read_passphrase_file(args.passphrase_file) if args.passphrase_file else None
    if args.format == "p12" and passphrase is None:
        raise BadInput("a p12 export carries the private key; give --passphrase-file")
    if args.format != "p12" and passphrase is not None:
        raise BadInput(f"a {args.format} export takes no passphrase; drop --passphrase-file")
    data = call_node(
        args.config,
        args.node,
        lambda c: c.export(args.sha256, _FORMATS[args.format], passphrase=passphrase),
    )
    _write_out(args.out, data, secret=args.format == "p12")
    return 0


def _default(args: argparse.Namespace) -> int:
    warnings = call_primary(
        args.config,
        args.node,
        lambda c: c.set_default(
            args.sha256, force=args.force, confirm_ca_change=args.confirm_ca_change
        ),
    )
    _warn(warnings)
    return _waited(args)


def _delete(args: argparse.Namespace) -> int:
    _warn(call_primary(args.config, args.node,
                       lambda c: c.delete(args.sha256, force=args.force)))
    return _waited(args)


def _waited(args: argparse.Namespace) -> int:
    """With ``--wait``: the change's rollout, waited for (exit 1 when it halted)."""
    sys.stdout.flush()  # the change's own answer first
    return wait_for_rollout(args.config) if args.wait else 0


_WAIT_HELP = ("then roll the change out now and wait: exit 1 when the rollout halts or a "
              "node is not in sync (progress on stderr)")


def _stage_ca_change(args: argparse.Namespace) -> int:
    pending = call_primary(
        args.config, args.node, lambda c: c.stage_ca_change(args.sha256, args.after)
    )
    out = {
        "sha256": pending.sha256,
        "staged_at": pending.staged_at,
        "switch_at": pending.switch_at,
    }
    if args.json:
        print_json(out)
    else:
        print(
            f"{pending.sha256} becomes the default at {pending.switch_at}; its chain is in "
            "the trust bundle at https://NODE/.well-known/certsync/trust-bundle.pem now"
        )
    return 0


_FORCE_HELP = ("with --default: make it the default even when it leaves required names "
               "uncovered (audited)")
_CONFIRM_HELP = (
    "allow a default whose chain ends in another root CA (clients pinning the old CA "
    "lose their connection)"
)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    cert = subparsers.add_parser("cert", help="certificates in a node's store")
    sub = cert.add_subparsers(dest="cert_command", metavar="COMMAND")
    sub.required = True

    create = sub.add_parser("create-self-signed", help="create a key and a self-signed cert")
    create.add_argument("--name", required=True, metavar="N", help="friendly name")
    add_subject_flags(create)
    create.add_argument("--days", type=int, default=365, help="validity (default 365)")
    create.add_argument("--default", action="store_true", help="make it the default")
    create.add_argument("--force", action="store_true", help=_FORCE_HELP)
    create.add_argument("--json", action="store_true", help="print JSON")
    create.add_argument("--wait", action="store_true", help=_WAIT_HELP)
    create.set_defaults(func=_create)

    imp = sub.add_parser("import", help="import certificates and keys (any accepted format)")
    imp.add_argument("files", nargs="+", metavar="FILE")
    imp.add_argument("--passphrase-file", metavar="P")
    imp.add_argument("--name", metavar="N", help="friendly name of the identity certificate")
    imp.add_argument("--default", action="store_true", help="make it the default")
    imp.add_argument(
        "--force", action="store_true",
        help="with --default: allow an expired certificate, or one that leaves required names "
             "uncovered (audited)"
    )
    imp.add_argument("--confirm-ca-change", action="store_true", help=_CONFIRM_HELP)
    imp.add_argument("--json", action="store_true", help="print JSON")
    imp.add_argument("--wait", action="store_true", help=_WAIT_HELP)
    imp.set_defaults(func=_import)

    lst = sub.add_parser("list", help="list the node's certificates")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(func=_list)

    exp = sub.add_parser("export", help="export a certificate (p12: with key and chain)")
    exp.add_argument("sha256", metavar="SHA256")
    exp.add_argument("--out", required=True, metavar="FILE")
    exp.add_argument("--format", choices=tuple(_FORMATS), default="pem")
    exp.add_argument("--passphrase-file", metavar="P")
    exp.set_defaults(func=_export)

    default = sub.add_parser("default", help="make a certificate the default")
    default.add_argument("sha256", metavar="SHA256")
    default.add_argument("--force", action="store_true",
                         help="allow an expired certificate, or one that leaves required names "
                              "uncovered (audited)")
    default.add_argument("--confirm-ca-change", action="store_true", help=_CONFIRM_HELP)
    default.add_argument("--wait", action="store_true", help=_WAIT_HELP)
    default.set_defaults(func=_default)

    delete = sub.add_parser("delete", help="delete a certificate and its key")
    delete.add_argument("sha256", metavar="SHA256")
    delete.add_argument("--force", action="store_true",
                        help="delete even when it is the default (then nothing may cover the "
                             "required names) or a certificate's chain needs it (audited)")
    delete.add_argument("--wait", action="store_true", help=_WAIT_HELP)
    delete.set_defaults(func=_delete)

    cmd_show.register(sub)

    stage = sub.add_parser(
        "stage-ca-change",
        help="publish a new CA's chain in the trust bundle now, make it default after a wait",
    )
    stage.add_argument("sha256", metavar="SHA256")
    stage.add_argument(
        "--after", required=True, metavar="WAIT", help="wait before the switch, e.g. 48h, 2d"
    )
    stage.add_argument("--json", action="store_true", help="print JSON")
    stage.set_defaults(func=_stage_ca_change)
