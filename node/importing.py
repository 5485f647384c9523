"""[core] What an import stores: the pure decision behind the servicer's ``Import``.

:func:`plan_import` takes the material read from the input, the name asked for, the time
and the flags, and returns the entries to store, the identity's sha256 and the warnings, or
raises :class:`BadInput` / :class:`Conflict` before anything is changed.
"""

from __future__ import annotations

import datetime as dt

from node import chain as chain_mod
from node import formats
from node.errors import BadInput, Conflict
from node.model import Material
from node.sealing import spki
from node.store_view import SetEntry
from node.text import common_name, rfc3339

__all__ = ["plan_import"]


def plan_import(
    material: Material, name: str, now: dt.datetime, make_default: bool, force: bool,
    linkable: frozenset[bytes] = frozenset(),
) -> tuple[list[SetEntry], str | None, list[str]]:
    """Decide what an import stores (pure): entries, the identity's sha256, warnings.

    ``linkable`` holds the public keys (DER SPKI) the store holds a key for: an identity
    certificate alone whose key is among them is linked by the store, so it can be the
    default. Without ``name`` every entry's name is a default one, and a certificate
    stored already keeps its own (``SetEntry.name_is_default``)."""
    if not material.certificates:
        if material.keys:
            raise BadInput(
                "the input holds a private key but no certificate; import the key together "
                "with its certificate"
            )
        raise BadInput("the input holds no certificate; give a certificate, bundle or PKCS#12")
    report = chain_mod.analyze(material)
    warnings = list(report.problems)
    ident = report.identity
    if material.keys and (ident is None or report.key is None or report.key_matches != ident):
        raise BadInput(
            "the private key in the input does not belong to its identity certificate; "
            "import the key with the certificate it was made for"
        )
    if len(material.keys) > 1:
        raise BadInput(
            f"the input holds {len(material.keys)} private keys; import one certificate and "
            "its key at a time"
        )
    if make_default:
        if ident is None:
            raise BadInput("the input holds no identity certificate to make the default")
        if report.key is None and spki(ident.public_key()) not in linkable:
            raise Conflict(
                "the identity certificate comes without its private key and cannot be the "
                "default; import it with its key"
            )
        if ident.not_valid_after_utc <= now:
            when = rfc3339(ident.not_valid_after_utc)
            if not force:
                raise Conflict(
                    f"certificate {formats.cert_sha256(ident)!r} expired on {when}; import it "
                    "without --default, or force it"
                )
            warnings.append(f"certificate {formats.cert_sha256(ident)} expired on {when}")
    entries: list[SetEntry] = []
    for cert in report.ordered:
        is_ident = ident is not None and cert == ident
        entries.append(
            SetEntry(
                cert=cert,
                key=report.key if is_ident else None,
                name=(name or common_name(cert) or formats.cert_sha256(cert)[:16])
                if is_ident
                else (common_name(cert) or formats.cert_sha256(cert)[:16]),
                name_is_default=not (is_ident and name),
            )
        )
    return entries, (formats.cert_sha256(ident) if ident is not None else None), warnings
