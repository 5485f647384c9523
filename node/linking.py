"""[core] The store-wide link model: which stored key belongs to which certificate, which
certificate takes another's place, and what a deletion would break.

Judged over everything a node holds, never over the files of one import:

* :func:`plan_links` -- a certificate stored without a key is linked to any key the store
  holds (the key of another certificate, or a CSR's key) with the same public key,
  whichever of the two arrived first;
* :func:`takes_over` -- a renewal or re-key: same DNS names, a strictly later
  ``not_after``, the same issuing CA (issuer name and, when both say, authority key id);
* :func:`dependents` -- the certificates that need a certificate in their stored chain (the
  default, and every identity certificate with a key), so deleting it is refused unless
  forced.

Inputs are plain values (:class:`KeyHolder`, :class:`LinkCandidate`), so the shell reads
them from its rows and the rules are table tests.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from cryptography import x509

from node.formats import cert_sha256
from node.model import PrivateKey
from node.store_view import SetEntry, StoreView

__all__ = [
    "EntryLinks",
    "IssuerId",
    "KeyHolder",
    "Link",
    "LinkCandidate",
    "apply_links",
    "dependents",
    "dependents_in",
    "describe_link",
    "issuer_of",
    "plan_entry_links",
    "plan_links",
    "requests_digest",
    "takes_over",
]

HolderKind = Literal["cert", "csr"]


@dataclass(frozen=True)
class KeyHolder:
    """Something the store holds a private key for: a certificate (``ref`` its sha256) or a
    CSR (``ref`` its id); ``spki`` is the DER SubjectPublicKeyInfo of that key."""

    kind: HolderKind
    ref: str
    spki: bytes


@dataclass(frozen=True)
class LinkCandidate:
    """A certificate stored (or arriving) without its key."""

    sha256: str
    spki: bytes


@dataclass(frozen=True)
class Link:
    """``cert_sha256`` gets the key ``source`` holds."""

    cert_sha256: str
    source: KeyHolder


def plan_links(
    candidates: Iterable[LinkCandidate], holders: Iterable[KeyHolder]
) -> list[Link]:
    """Every candidate whose public key a holder has, linked to that holder.

    A certificate's key is preferred to a CSR's (it is the same key; the certificate is
    already served), and among holders of one kind the first given wins, so the answer is
    the same for the same inputs. A candidate that is also a holder (it has its key) is not
    linked again.
    """
    by_spki: dict[bytes, KeyHolder] = {}
    held: set[str] = set()
    for h in holders:
        if h.kind == "cert":
            held.add(h.ref)
        current = by_spki.get(h.spki)
        if current is None or (current.kind == "csr" and h.kind == "cert"):
            by_spki[h.spki] = h
    links: list[Link] = []
    seen: set[str] = set()
    for c in candidates:
        if c.sha256 in held or c.sha256 in seen:
            continue
        source = by_spki.get(c.spki)
        if source is not None and not (source.kind == "cert" and source.ref == c.sha256):
            links.append(Link(cert_sha256=c.sha256, source=source))
            seen.add(c.sha256)
    return links


def describe_link(link: Link) -> str:
    """The one line an import prints for a link."""
    if link.source.kind == "csr":
        return (
            f"certificate {link.cert_sha256} is linked to the key of request "
            f"{link.source.ref}; the request is fulfilled"
        )
    return (
        f"certificate {link.cert_sha256} is linked to the stored key of certificate "
        f"{link.source.ref} (the same public key)"
    )


@dataclass(frozen=True)
class IssuerId:
    """The CA that signed a certificate: its issuer name (RFC 4514) and the authority key
    identifier, when the certificate carries one."""

    name: str
    key_id: bytes | None

    def same(self, other: IssuerId) -> bool:
        """The same name, and the same key when both sides say."""
        if self.name != other.name:
            return False
        return self.key_id is None or other.key_id is None or self.key_id == other.key_id


def issuer_of(cert: x509.Certificate) -> IssuerId:
    """The issuing CA of ``cert``, as its issuer name and authority key identifier."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except (x509.ExtensionNotFound, ValueError):  # absent, or unreadable: the name decides
        return IssuerId(cert.issuer.rfc4514_string(), None)
    return IssuerId(cert.issuer.rfc4514_string(), aki.key_identifier)


def _names(names: Iterable[str]) -> frozenset[str]:
    return frozenset(n.lower().rstrip(".") for n in names)


def takes_over(
    new_names: Sequence[str],
    new_not_after: datetime,
    new_issuer: IssuerId,
    old_names: Sequence[str],
    old_not_after: datetime,
    old_issuer: IssuerId,
) -> bool:
    """Whether a certificate takes another's place: a renewal or re-key has the same DNS
    names (case-insensitive, at least one), a strictly later ``not_after`` and comes from
    the same issuing CA."""
    new_set = _names(new_names)
    return (
        bool(new_set)
        and new_set == _names(old_names)
        and new_not_after > old_not_after
        and new_issuer.same(old_issuer)
    )


def dependents(
    sha256: str,
    chains: Mapping[str, Sequence[str]],
    default_sha256: str | None,
) -> list[str]:
    """What a deletion of ``sha256`` would break, as one sentence per dependent.

    ``chains`` maps every identity certificate with a key (and the default) to the sha256s
    of its stored chain, nearest first (the certificate itself may lead). The default is a
    dependent of itself.
    """
    out: list[str] = []
    if default_sha256 == sha256:
        out.append(f"{sha256} is the default certificate")
    for owner in sorted(chains):
        if owner == sha256:
            continue
        if sha256 in chains[owner]:
            what = ("the default" if owner == default_sha256
                    else "an identity certificate with a key")
            out.append(f"{owner} ({what}) needs it in its chain")
    return out


def dependents_in(view: StoreView, sha256: str) -> list[str]:
    """:func:`dependents` of ``sha256`` over a store view: the default and every identity
    certificate with a key, by their stored chains."""
    owners = {c.sha256 for c in view.certs if c.has_key and c.role == "identity"}
    if view.default_sha256:
        owners.add(view.default_sha256)
    chains = {o: [cert_sha256(c) for c in view.chain(o)[0]] for o in owners}
    return dependents(sha256, chains, view.default_sha256)


def requests_digest(csrs: Iterable[tuple[str, str | None]]) -> str:
    """The digest of a store's CSRs, ``(id, fulfilled_by)`` pairs: what the primary and its
    backup compare to know whether CSRs must travel (never part of the served set's digest,
    so traffic nodes' digests do not change)."""
    h = hashlib.sha256(b"certsync-requests-v1\n")
    for csr_id, fulfilled in sorted((i, f or "-") for i, f in set(csrs)):
        h.update(f"{csr_id}:{fulfilled}\n".encode("ascii"))
    return h.hexdigest()


# --------------------------------------------------------------------------- one add's links


@dataclass(frozen=True)
class EntryLinks:
    """What :func:`plan_entry_links` decided for one add: the entries as they go on (a
    default name of an entry stored already gives way to the stored name), the batch by
    sha256, and the links planned (their keys still to be fetched by the shell)."""

    entries: list[SetEntry]
    batch: Mapping[str, SetEntry]
    links: list[Link]


def plan_entry_links(
    entries: Sequence[SetEntry],
    view: StoreView,
    csrs: Sequence[tuple[str, bytes]],
    spki_of: Callable[[str, x509.Certificate], bytes],
    stored: tuple[Sequence[KeyHolder], Sequence[LinkCandidate]] | None = None,
) -> EntryLinks:
    """The links an add of ``entries`` to ``view`` makes (:func:`plan_links`): keys of the
    batch, stored certificates' keys, then CSRs' keys (``csrs``: (id, SPKI) oldest first),
    for every certificate of the batch or the store without a key. ``stored`` is
    :func:`stored_links` of ``view`` when the caller keeps it."""
    out = [dataclasses.replace(e, name="") if e.name_is_default and e.name
           and view.get(cert_sha256(e.cert)) is not None else e for e in entries]
    batch: dict[str, SetEntry] = {}
    for e in out:
        sha = cert_sha256(e.cert)
        if batch.get(sha) is None or e.key is not None:
            batch[sha] = e
    holders = [KeyHolder("cert", sha, spki_of(sha, e.cert))
               for sha, e in batch.items() if e.key is not None]
    cert_holders, keyless = stored or stored_links(view, spki_of)
    holders += cert_holders
    holders += [KeyHolder("csr", i, k) for i, k in csrs]
    candidates = [LinkCandidate(sha, spki_of(sha, e.cert)) for sha, e in batch.items()
                  if e.key is None and sha not in view.keyed]
    candidates += [c for c in keyless if c.sha256 not in batch]
    return EntryLinks(out, batch, plan_links(candidates, holders))


def stored_links(
    view: StoreView, spki_of: Callable[[str, x509.Certificate], bytes]
) -> tuple[list[KeyHolder], list[LinkCandidate]]:
    """The stored certificates with a key as holders, and those without one as candidates,
    in the store's order (the same for every add until the rows change)."""
    holders, keyless = [], []
    for c in view.cert_rows.certs:
        if c.has_key:
            holders.append(KeyHolder("cert", c.sha256, spki_of(c.sha256, c.certificate())))
        else:
            keyless.append(LinkCandidate(c.sha256, spki_of(c.sha256, c.certificate())))
    return holders, keyless


def apply_links(
    planned: EntryLinks, view: StoreView, found: Mapping[str, PrivateKey]
) -> tuple[list[SetEntry], list[Link]]:
    """The entries with the keys ``found`` (by certificate sha256) put in, plus an entry for
    each stored certificate that gains one, and the links made."""
    out = [dataclasses.replace(e, key=found[sha]) if e.key is None and sha in found else e
           for e in planned.entries for sha in (cert_sha256(e.cert),)]
    out += [SetEntry(cert=c.certificate(), key=found[c.sha256], name="")
            for c in view.certs if c.sha256 in found and c.sha256 not in planned.batch]
    return out, [k for k in planned.links if k.cert_sha256 in found]
