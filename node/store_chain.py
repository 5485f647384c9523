"""[core] Each stored certificate's chain, built over the whole store, and its state.

A certificate's chain is built from *every* certificate the store holds
(:meth:`node.store_view.StoreView.chain`, rebuilt only when a certificate whose subject is
one of its issuer names comes or goes), never from the files of one import: an intermediate
imported a week before the leaf completes the leaf's chain. Since the state is computed from
the view, it follows the store by itself: deleting the intermediate makes the leaf's chain
incomplete again.

:func:`chain_state` judges one certificate: its chain as stored (the certificate first, then
its issuers nearest first, each with its sha256, subject and role), whether it is complete
(ends at a stored self-signed root, every signature verifying), and the problems in one
sentence each:

* a missing **root** is its own kind (:attr:`ChainState.missing_root`): the chain reaches a
  CA whose issuer is not stored -- common, since ACME and many CAs send no root; clients
  that trust that root still verify what the endpoint sends;
* a missing **issuer** of a certificate that is not a CA (the intermediate is not stored):
  clients cannot verify what is served;
* an issuer that does not verify the signature, a chain longer than the bound;
* every **weak signature** on the chain (SHA-1, MD5: they verify, and are named).

:attr:`ChainState.sent` is what the TLS endpoint sends after the leaf: every certificate of
the chain that is not self-signed (:mod:`node.app` serves exactly these).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509

from node.chain import classify, weak_signatures
from node.formats import cert_sha256
from node.model import Role
from node.store_view import StoreView

__all__ = [
    "ChainLink", "ChainState", "chain_state", "chain_states", "over_the_store", "sent_chain",
]


@dataclass(frozen=True)
class ChainLink:
    """One certificate of a chain: ``{sha256, subject, role}`` of ``cert show``."""

    sha256: str
    subject: str
    role: Role


@dataclass(frozen=True)
class ChainState:
    """A stored certificate's chain over the store, and what keeps it from complete."""

    sha256: str
    #: the certificate itself first, then its issuers, nearest first
    links: tuple[ChainLink, ...]
    complete: bool
    #: the chain reaches a CA whose issuer (its root) is not stored; ``problems`` says so
    missing_root: bool
    problems: tuple[str, ...]
    #: sha256 of what the TLS endpoint sends after the leaf (the issuers, roots left out)
    sent: tuple[str, ...]

    @property
    def root_sha256(self) -> str | None:
        """The stored root the chain ends at (``None`` unless complete)."""
        return self.links[-1].sha256 if self.complete else None


def _name(name: x509.Name) -> str:
    return name.rfc4514_string() or "(empty name)"


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _self_signed_name(cert: x509.Certificate) -> bool:
    """As :mod:`node.app` decides what is sent: a root (issuer == subject) is never sent."""
    return cert.issuer == cert.subject


def sent_chain(chain: tuple[x509.Certificate, ...], cert: x509.Certificate
               ) -> tuple[x509.Certificate, ...]:
    """The issuers of ``cert`` a TLS endpoint sends after it: the chain without roots."""
    return tuple(c for c in chain if c != cert and not _self_signed_name(c))


class _Pool:
    """What judging chains needs of the whole store, worked out once for many certificates
    (each lazily): sha256 by parsed certificate, every stored subject, the links named."""

    def __init__(self, view: StoreView) -> None:
        self._view = view
        self.links: dict[str, ChainLink] = {}

    @functools.cached_property
    def sha_of(self) -> Mapping[int, str]:
        return {id(c.certificate()): c.sha256 for c in self._view.certs}

    @functools.cached_property
    def subjects(self) -> frozenset[x509.Name]:
        return frozenset(c.certificate().subject for c in self._view.certs)

    def link(self, cert: x509.Certificate) -> ChainLink:
        sha = self.sha_of.get(id(cert)) or cert_sha256(cert)
        found = self.links.get(sha)
        if found is None:
            row = self._view.get(sha)
            role = row.role if row is not None else classify(cert)
            found = self.links[sha] = ChainLink(sha, _name(cert.subject), role)
        return found


def chain_state(view: StoreView, sha256: str, pool: _Pool | None = None) -> ChainState:
    """The chain of the stored certificate ``sha256`` over every stored certificate, judged
    (:class:`~node.errors.NotFound` when it is not stored); ``pool`` is shared by the calls
    of :func:`chain_states`."""
    pool = pool or _Pool(view)
    stored = view.require(sha256)
    cert = stored.certificate()
    chain, build_problems = view.chain(sha256)
    chain = tuple(c for c in chain if c != cert)
    links = (ChainLink(sha256, _name(cert.subject), stored.role), *map(pool.link, chain))
    head = (cert, *chain)
    top = head[-1]
    problems: list[str] = []
    missing_root = False
    if build_problems:
        if top.issuer in pool.subjects:
            problems.extend(build_problems)  # a signature that does not verify, a loop
        elif _is_ca(top):
            missing_root = True
            problems.append(
                f"the root CA {_name(top.issuer)} that issued {_name(top.subject)} is not "
                "stored: clients that trust it verify the chain, but it is not complete; "
                "import the root to complete it"
            )
        else:
            problems.append(
                f"no certificate for issuer {_name(top.issuer)} is stored, so clients cannot "
                f"verify {_name(top.subject)}; import that CA certificate"
            )
    problems.extend(weak_signatures(head))
    return ChainState(
        sha256=sha256,
        links=links,
        complete=not build_problems,
        missing_root=missing_root,
        problems=tuple(problems),
        sent=tuple(pool.link(c).sha256 for c in sent_chain(chain, cert)),
    )


def chain_states(view: StoreView) -> dict[str, ChainState]:
    """:func:`chain_state` of every stored certificate, by sha256."""
    pool = _Pool(view)
    return {c.sha256: chain_state(view, c.sha256, pool) for c in view.certs}


def over_the_store(warnings: Sequence[str], file_problems: Sequence[str],
                   stored: Sequence[str] | None) -> list[str]:
    """An import's warnings with its chain judged over the whole store: the problems of the
    chain of the imported files alone (``file_problems``) give way to the problems of the
    identity's chain as stored now (``stored``; ``None``: the import has no identity)."""
    if stored is None:
        return list(warnings)
    drop = set(file_problems)
    return [*stored, *(w for w in warnings if w not in drop)]
