"""[shell] ``certsync inspect FILE... [--passphrase-file PATH] [--json]``.

Reads the files as one input (by content, never by extension), judges the chain and prints
the report of DESIGN.md: JSON with ``--json``, a readable table otherwise. Never prints key
material or the passphrase.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from cryptography import x509

from node import sandbox
from node.chain import ChainReport, analyze, is_self_signed
from node.formats import cert_sha256, key_type_of
from node.model import Material, Role
from node.names import sans_of
from node.text import rfc3339
from sync._io import print_json, read_input_file, read_passphrase_file

__all__ = ["inspect_report", "load_material", "register"]


def load_material(paths: Sequence[str], passphrase_file: str | None) -> Material:
    """Read FILE... (+ optional passphrase file) as one input; errors name the file."""
    passphrase = read_passphrase_file(passphrase_file) if passphrase_file else None
    sources = [(path, read_input_file(path)) for path in paths]
    box = sandbox.ParseSandbox(fork=True)  # forked: this process's modules are loaded
    try:
        return box.read_material_blocking(sources, passphrase)
    finally:
        box.kill()


def _certificate_json(cert: x509.Certificate, role: Role) -> dict[str, Any]:
    sans = sans_of(cert)
    return {
        "sha256": cert_sha256(cert),
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "role": role,
        "self_signed": is_self_signed(cert),
        "dns_names": list(sans.dns_names),
        "ip_addresses": list(sans.ip_addresses),
        "key_type": key_type_of(cert.public_key()),
        "not_before": rfc3339(cert.not_valid_before_utc),
        "not_after": rfc3339(cert.not_valid_after_utc),
    }


def inspect_report(report: ChainReport) -> dict[str, Any]:
    """The ``inspect --json`` object, field names and order as DESIGN.md fixes them."""
    private_key: dict[str, Any] | None = None
    if report.key is not None:
        private_key = {
            "key_type": key_type_of(report.key),
            "matches": cert_sha256(report.key_matches) if report.key_matches else None,
        }
    return {
        "certificates": [
            _certificate_json(cert, role)
            for cert, role in zip(report.ordered, report.roles, strict=True)
        ],
        "private_key": private_key,
        "chain": {"complete": report.complete, "problems": list(report.problems)},
    }


def _print_table(data: dict[str, Any]) -> None:
    out = sys.stdout
    certs: list[dict[str, Any]] = data["certificates"]
    out.write(f"{'#':<3}{'ROLE':<14}{'KEY':<10}{'NOT AFTER':<22}SUBJECT\n")
    for number, cert in enumerate(certs, start=1):
        self_signed_identity = cert["self_signed"] and cert["role"] == "identity"
        role = cert["role"] + (" (self)" if self_signed_identity else "")
        out.write(
            f"{number:<3}{role:<14}{cert['key_type']:<10}{cert['not_after']:<22}{cert['subject']}\n"
        )
        out.write(f"{'':<3}sha256 {cert['sha256']}\n")
        names = [*cert["dns_names"], *cert["ip_addresses"]]
        if names:
            out.write(f"{'':<3}names  {', '.join(names)}\n")
    key = data["private_key"]
    if key is None:
        out.write("private key: none\n")
    elif key["matches"] is None:
        out.write(f"private key: {key['key_type']}, matches no certificate of the input\n")
    else:
        index = next(i for i, c in enumerate(certs, start=1) if c["sha256"] == key["matches"])
        out.write(f"private key: {key['key_type']}, matches certificate {index}\n")
    chain = data["chain"]
    out.write(f"chain: {'complete' if chain['complete'] else 'INCOMPLETE'}\n")
    for problem in chain["problems"]:
        out.write(f"  - {problem}\n")


def _run(args: argparse.Namespace) -> int:
    material = load_material(args.files, args.passphrase_file)
    data = inspect_report(analyze(material))
    if args.json:
        print_json(data)
    else:
        _print_table(data)
    return 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="show the certificates, key and chain in certificate/key files (offline)",
        description=(
            "Read certificate, key, PKCS#7 and PKCS#12 files (detected by content) as one "
            "input; show each certificate, the private key and whether the chain is complete."
        ),
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="files read as one input")
    parser.add_argument(
        "--passphrase-file",
        metavar="PATH",
        help="file whose content is the passphrase (one trailing newline removed)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=_run)
