"""[core] What each console page shows, as plain values for its template (no I/O, no clock).

Every function takes what the shell read (stored rows, lifecycle statuses, chains, the
status report and its observations) and ``now``, and returns dicts and lists the Jinja2
templates render. A row is a ``dict``, so a new field (one another part of certsync adds to
the store or the status report) is one more key here and one more cell in a template.

* :func:`certificate_rows` -- the certificates list, like the appliance's: name, subject,
  SANs, issuer, key yes/no, expiry with days left, default, the chain warning beneath the
  name (incomplete chain, or an identity certificate whose key is missing), renewal state,
  replaceable.
* :func:`certificate_detail` -- one certificate (the data of ``cert show``).
* :func:`request_rows` -- CSRs with their PEM and whether a stored certificate fulfils them.
* :func:`coverage_matrix` -- every required hostname x node: covered, by which SAN, what the
  node served for it at the last probe; uncovered and mismatched cells are flagged.
* :func:`node_rows` -- the status report's nodes.
* :func:`audit_rows` -- audit events for the table.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from node.audit_view import audit_entry
from node.certkeys import cert_sha256, key_type_of
from node.lifecycle import days_left
from node.names import check_all, coverage_json, sans_of
from node.store_view import AuditEvent, StoredCert, StoredCsr
from node.text import rfc3339
from sync.report import Observed
from sync.topology import Topology

__all__ = [
    "AUDIT_PAGE_SIZE",
    "CertFacts",
    "audit_rows",
    "certificate_detail",
    "certificate_rows",
    "chain_warnings",
    "coverage_matrix",
    "node_rows",
    "request_rows",
]

AUDIT_PAGE_SIZE = 50


@dataclass(frozen=True)
class CertFacts:
    """One stored certificate with what the shell looked up for it."""

    stored: StoredCert
    chain: tuple[x509.Certificate, ...]  # issuers, nearest first (build_chain)
    chain_problems: tuple[str, ...]
    renewal_state: str | None = None
    replaceable: bool | None = None
    days_left: int | None = None


def _sha(cert: x509.Certificate) -> str:
    return cert_sha256(cert)


def chain_warnings(facts: CertFacts) -> list[str]:
    """The sentences shown beneath a certificate's name: what keeps it from being served
    with a complete chain (an identity without its key, a chain that does not reach a root)."""
    out: list[str] = []
    stored = facts.stored
    if stored.role == "identity" and not stored.has_key:
        out.append("No private key: this certificate cannot be served until its key is "
                   "imported.")
    out.extend(f"Chain incomplete: {p}." for p in facts.chain_problems)
    return out


def _names(stored: StoredCert) -> list[str]:
    return [*stored.dns_names, *stored.ip_addresses]


def certificate_rows(facts: Sequence[CertFacts], *, now: dt.datetime) -> list[dict[str, Any]]:
    """The certificates list: default first, then by name."""
    rows = []
    for f in facts:
        s = f.stored
        cert = s.certificate()
        rows.append({
            "sha256": s.sha256,
            "name": s.name,
            "subject": cert.subject.rfc4514_string(),
            "issuer": cert.issuer.rfc4514_string(),
            "sans": _names(s),
            "role": s.role,
            "has_key": s.has_key,
            "default": s.is_default,
            "not_after": rfc3339(s.not_after),
            "days_left": f.days_left if f.days_left is not None else days_left(s.not_after, now),
            "expired": s.not_after <= now,
            "chain_complete": not f.chain_problems,
            "chain_problems": list(f.chain_problems),
            "warnings": chain_warnings(f),
            "renewal_state": f.renewal_state,
            "replaceable": f.replaceable,
        })
    rows.sort(key=lambda r: (not r["default"], str(r["name"]).lower(), str(r["sha256"])))
    return rows


def certificate_detail(
    facts: CertFacts,
    *,
    required: Sequence[str],
    served_by: Sequence[str],
    now: dt.datetime,
    roles: Mapping[str, str],
) -> dict[str, Any]:
    """One certificate: ``cert show``'s data. ``roles`` maps the sha256 of stored
    certificates to their role (for the chain's rows); ``served_by`` names the nodes whose
    TLS endpoint served it at the last probe."""
    s = facts.stored
    cert = s.certificate()
    row = certificate_rows([facts], now=now)[0]
    row.update({
        "dns_names": list(s.dns_names),
        "ip_addresses": list(s.ip_addresses),
        "key_type": key_type_of(cert.public_key()),
        "not_before": rfc3339(cert.not_valid_before_utc),
        "chain": [
            {"sha256": _sha(c), "subject": c.subject.rfc4514_string(),
             "role": roles.get(_sha(c), "root" if c.subject == c.issuer else "intermediate")}
            for c in facts.chain
        ],
        "coverage": coverage_json(check_all(sans_of(cert), list(required)))["hostnames"],
        "served_by": list(served_by),
        "pem": cert.public_bytes(serialization.Encoding.PEM).decode(),
    })
    return row


def request_rows(
    csrs: Sequence[StoredCsr], certs: Sequence[StoredCert]
) -> list[dict[str, Any]]:
    """CSRs, newest first, with subject, SANs, key type, PEM and ``pending``/``fulfilled``
    (a stored certificate carries the CSR's public key)."""
    held = {
        c.certificate().public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        for c in certs
    }
    rows = []
    for r in sorted(csrs, key=lambda r: r.created_at, reverse=True):
        csr = x509.load_pem_x509_csr(r.pem)
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = [*san.get_values_for_type(x509.DNSName),
                     *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]
        except (x509.ExtensionNotFound, ValueError):
            names = []
        spki = csr.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        rows.append({
            "id": r.id,
            "name": r.name,
            "subject": csr.subject.rfc4514_string(),
            "dns_names": names,
            "key_type": key_type_of(csr.public_key()),
            "created_at": rfc3339(r.created_at),
            "state": "fulfilled" if spki in held else "pending",
            "pem": r.pem.decode("ascii", "replace"),
        })
    return rows


def _short(sha: str | None) -> str:
    return sha[:16] if sha else ""


def coverage_matrix(
    topology: Topology,
    default: StoredCert | None,
    observed: Sequence[Observed],
    expected: Mapping[str | None, str] | None,
) -> dict[str, Any]:
    """Every required hostname (rows) x node (columns).

    A row's coverage is the default certificate's (``default``: this node's, which is the
    primary's set when in sync). A cell exists where clients reach that node by that name
    (:meth:`~sync.topology.Topology.served_names`); it shows what the node served for the
    name at the last probe, and ``state`` is ``ok``, ``uncovered`` (the default does not
    cover the name), ``mismatch`` (served another certificate than the primary names),
    ``unprobed`` (no answer, or not probed) or ``n/a`` (not a name of that node).
    """
    by_name = {o.name: o for o in observed}
    hostnames = list(topology.required_names())
    report = (coverage_json(check_all(sans_of(default.certificate()), hostnames))["hostnames"]
              if default is not None else
              [{"hostname": h, "covered": False, "kind": None, "matched_by": None,
                "reason": "no default certificate"} for h in hostnames])
    rows = []
    for entry in report:
        host = str(entry["hostname"])
        want = (expected or {}).get(host)
        cells: list[dict[str, Any]] = []
        for spec in topology.nodes:
            if host not in topology.served_names(spec.name):
                cells.append({"node": spec.name, "state": "n/a"})
                continue
            node = by_name.get(spec.name)
            served = node.served.get(host) if node is not None else None
            if not entry["covered"]:
                state = "uncovered"
            elif served is None:
                state = "unprobed"
            elif want and served != want:
                state = "mismatch"
            else:
                state = "ok"
            cells.append({
                "node": spec.name, "state": state, "served": served,
                "served_short": _short(served),
                "why": (node.probe_errors.get(host) if node is not None else None)
                or (None if node is None or node.reachable else node.error),
            })
        rows.append({**entry, "expected": want, "cells": cells})
    return {
        "nodes": [spec.name for spec in topology.nodes],
        "rows": rows,
        "default": None if default is None else {"sha256": default.sha256,
                                                 "name": default.name},
        "all_covered": all(r["covered"] for r in rows),
    }


def node_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The nodes of a ``status --json`` report, with the rollout state when it has one."""
    rollout = report.get("rollout")
    rows = []
    for n in report["nodes"]:
        rows.append({
            **n,
            "digest_short": _short(n.get("digest")),
            "rollout": rollout.get("state") if isinstance(rollout, Mapping) else None,
        })
    return rows


def audit_rows(events: Sequence[AuditEvent]) -> list[dict[str, Any]]:
    """Audit events for the table; ``detail`` as compact JSON text (escaped by Jinja2)."""
    return [
        {**audit_entry(e), "id": e.id,
         "detail": json.dumps(dict(e.detail), sort_keys=True, default=str)}
        for e in events
    ]
