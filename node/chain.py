"""[core] Classify certificates, find the identity, build and judge its chain.

Pure: no I/O and no clock. Completeness is about names and signatures only; dates never
affect it (DESIGN.md), they are reported beside it.

* **Roles**: BasicConstraints first (``CA:TRUE`` -> intermediate, or root when self-signed;
  ``CA:FALSE`` -> identity); without the extension a self-signed certificate is a root when
  it signed another certificate of the input (as a v1 root does) and an identity otherwise
  (without an input to look at, :func:`classify` keeps the v1 rule: root); anything else
  is an identity.
* **Signatures** are verified whatever their hash, SHA-1 and MD5 too (old roots and chains
  are still met): a chain of verifying signatures is complete, and ``problems`` names each
  weak algorithm on it.
* **Identity** of an input: the end-entity certificate its private key matches; else the
  first end-entity certificate; else, when there is none, the certificate the key matches
  (a self-signed server certificate made by ``openssl req -x509`` carries ``CA:TRUE``).
* **Chain**: from the identity, each next certificate is one whose subject is the current
  issuer and whose key verifies the current signature (every key type, via
  ``verify_directly_issued_by``); complete when it ends at a self-signed certificate that is
  present. A self-signed identity is its own complete chain.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from node.formats import public_key_matches
from node.model import Material, PrivateKey, Role

__all__ = [
    "ChainIndex", "ChainReport", "analyze", "build_chain", "classify", "is_self_signed",
    "weak_signatures",
]  # fmt: skip

#: no real chain is longer; the bound also stops loops of cross-signed certificates
_MAX_CHAIN_LENGTH = 10


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """``issuer``'s subject names ``cert``'s issuer and its key verifies ``cert``'s signature.

    ``verify_directly_issued_by`` refuses legacy hashes (SHA-1, MD5); for those the signature
    is checked directly with the issuer's key, so legacy chains still build (and are named
    weak by :func:`weak_signatures`)."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return cert.issuer == issuer.subject and _legacy_signature_verifies(cert, issuer)
    return True


def _legacy_signature_verifies(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        digest = cert.signature_hash_algorithm
        if not isinstance(digest, _WEAK_HASHES):
            return False
        key = issuer.public_key()
        params = cert.signature_algorithm_parameters
        if isinstance(key, rsa.RSAPublicKey) and isinstance(params, padding.PKCS1v15 |
                                                               padding.PSS):
            key.verify(cert.signature, cert.tbs_certificate_bytes, params, digest)
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(params, ec.ECDSA):
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(digest))
        else:
            return False
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


_WEAK_HASHES = (hashes.SHA1, hashes.MD5)


def weak_signatures(certs: Sequence[x509.Certificate]) -> tuple[str, ...]:
    """One sentence per certificate of ``certs`` signed with a weak hash (SHA-1, MD5)."""
    found = []
    for cert in certs:
        try:
            digest = cert.signature_hash_algorithm
        except UnsupportedAlgorithm:
            continue
        if isinstance(digest, _WEAK_HASHES):
            found.append(
                f"{_name(cert.subject)} is signed with {digest.name.upper()}, a weak algorithm "
                "that browsers refuse; replace it with a SHA-256 certificate"
            )
    return tuple(found)


def is_self_signed(cert: x509.Certificate) -> bool:
    """Issuer equals subject AND the certificate's own key verifies its signature."""
    return cert.issuer == cert.subject and _issued_by(cert, cert)


def _basic_constraints_ca(cert: x509.Certificate) -> bool | None:
    try:
        ext = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return None
    return ext.value.ca


def classify(cert: x509.Certificate, pool: Sequence[x509.Certificate] | None = None) -> Role:
    """identity / intermediate / root from BasicConstraints; without it, a self-signed
    certificate is a root when it signed another certificate of ``pool`` (with no pool: the
    v1 rule, root) and an identity otherwise."""
    ca = _basic_constraints_ca(cert)
    if ca is None:
        if not is_self_signed(cert):
            return "identity"
        if pool is None:
            return "root"
        signed = any(o is not cert and o != cert and _issued_by(o, cert) for o in pool)
        return "root" if signed else "identity"
    if not ca:
        return "identity"
    return "root" if is_self_signed(cert) else "intermediate"


@dataclass(frozen=True)
class ChainReport:
    """What :func:`analyze` found. ``roles`` is parallel to ``ordered``."""

    ordered: tuple[x509.Certificate, ...]
    roles: tuple[Role, ...]
    identity: x509.Certificate | None
    chain: tuple[x509.Certificate, ...]
    complete: bool
    problems: tuple[str, ...]
    key: PrivateKey | None
    key_matches: x509.Certificate | None


def _name(name: x509.Name) -> str:
    return name.rfc4514_string() or "(empty name)"


def build_chain(
    identity: x509.Certificate, pool: Sequence[x509.Certificate]
) -> tuple[tuple[x509.Certificate, ...], tuple[str, ...]]:
    """The identity's issuers, nearest first, and the problems that keep it from a root.

    No problems means complete: the last certificate (or the identity itself) is self-signed
    and every signature on the way verifies. Among several candidate issuers (cross-signed
    CAs) the path that reaches a root wins; otherwise the longest path found.
    """
    if is_self_signed(identity):
        return (), ()
    candidates = [c for c in pool if c != identity]
    best_path: tuple[x509.Certificate, ...] = ()
    best_problem = ""

    def walk(path: tuple[x509.Certificate, ...]) -> bool:
        nonlocal best_path, best_problem
        current = path[-1] if path else identity
        named = [c for c in candidates if c.subject == current.issuer and c not in path]
        issuers = [c for c in named if _issued_by(current, c)]
        if not issuers:
            if named:
                problem = (
                    f"the certificate for issuer {_name(current.issuer)} does not verify "
                    f"the signature of {_name(current.subject)}"
                )
            else:
                problem = f"no certificate for issuer {_name(current.issuer)}"
            if not best_problem or len(path) > len(best_path):
                best_path, best_problem = path, problem
            return False
        for issuer in issuers:
            extended = (*path, issuer)
            if is_self_signed(issuer):
                best_path, best_problem = extended, ""
                return True
            if len(extended) >= _MAX_CHAIN_LENGTH:
                if len(extended) > len(best_path):
                    best_path = extended
                    best_problem = f"the chain is longer than {_MAX_CHAIN_LENGTH} certificates"
                continue
            if walk(extended):
                return True
        return False

    walk(())
    return best_path, ((best_problem,) if best_problem else ())


class ChainIndex:
    """:func:`build_chain` over one fixed pool, indexed by subject.

    ``ChainIndex(pool).build(cert)`` returns exactly ``build_chain(cert, pool)``, but hands
    :func:`build_chain` only the certificates whose subject is an issuer name reachable from
    ``cert`` (in pool order), so building the chains of all N certificates of a store is
    O(N), not O(N^2). :meth:`ordered` takes the pool as (order key, certificate) pairs, and
    :meth:`updated` is the index of that pool with some pairs gone and others added: what
    a store change costs is what changed, not the whole pool again.
    """

    def __init__(self, pool: Sequence[x509.Certificate]) -> None:
        self._by_subject: dict[x509.Name, list[tuple[Any, x509.Certificate]]] = {}
        for i, c in enumerate(pool):
            self._by_subject.setdefault(c.subject, []).append((i, c))

    @classmethod
    def ordered(cls, pool: Iterable[tuple[Any, x509.Certificate]]) -> ChainIndex:
        """The index of the pool ``pool`` sorted by its keys (distinct, comparable)."""
        index = cls(())
        for key, c in sorted(pool, key=lambda pair: pair[0]):
            index._by_subject.setdefault(c.subject, []).append((key, c))
        return index

    def updated(
        self, gone: Iterable[tuple[Any, x509.Certificate]],
        added: Iterable[tuple[Any, x509.Certificate]],
    ) -> ChainIndex:
        """A new index (this one is not changed): the pool without ``gone``, with ``added``,
        in key order (the keys of an :meth:`ordered` index)."""
        out = ChainIndex(())
        by_subject = out._by_subject = dict(self._by_subject)
        touched: set[x509.Name] = set()
        for key, c in gone:
            name = c.subject
            if name not in touched:
                by_subject[name] = list(by_subject.get(name, ()))
                touched.add(name)
            by_subject[name] = [p for p in by_subject[name] if p[0] != key]
        for key, c in added:
            name = c.subject
            if name not in touched:
                by_subject[name] = list(by_subject.get(name, ()))
                touched.add(name)
            bisect.insort(by_subject[name], (key, c), key=lambda pair: pair[0])
        for name in touched:
            if not by_subject[name]:
                del by_subject[name]
        return out

    def build(
        self, identity: x509.Certificate
    ) -> tuple[tuple[x509.Certificate, ...], tuple[str, ...]]:
        return build_chain(identity, self.candidates(identity))

    def candidates(self, identity: x509.Certificate) -> list[x509.Certificate]:
        """The pool's certificates :func:`build_chain` may consider for ``identity``'s chain
        (every answer depends on these alone), in pool order."""
        return self.reach(identity)[0]

    def reach(
        self, identity: x509.Certificate
    ) -> tuple[list[x509.Certificate], frozenset[x509.Name]]:
        """:meth:`candidates`, and the issuer names followed to find them: a certificate
        added to or removed from the pool changes ``identity``'s chain only if its subject
        is one of these names."""
        seen: set[x509.Name] = set()
        todo = [identity.issuer]
        relevant: list[tuple[Any, x509.Certificate]] = []
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            for i, c in self._by_subject.get(name, ()):
                relevant.append((i, c))
                todo.append(c.issuer)
        relevant.sort(key=lambda pair: pair[0])
        return [c for _, c in relevant], frozenset(seen)


def _find_identity(
    certs: Sequence[x509.Certificate], roles: Sequence[Role], key: PrivateKey | None
) -> tuple[x509.Certificate | None, x509.Certificate | None]:
    """(identity, certificate the key matches)."""
    matching = [c for c in certs if key is not None and public_key_matches(key, c)]
    key_match = matching[0] if matching else None
    end_entities = [c for c, r in zip(certs, roles, strict=True) if r == "identity"]
    for cert in end_entities:
        if cert in matching:
            return cert, cert
    if end_entities:
        return end_entities[0], key_match
    if key_match is not None:
        return key_match, key_match
    # `openssl req -x509` makes self-signed server certificates with CA:TRUE. Without an
    # end-entity certificate or a key, such a certificate is the identity when it names
    # hosts (DNS or IP SANs) and signed nothing else in the input; a real root CA that
    # issued something here stays a root.
    for cert in certs:
        if (
            _names_hosts(cert)
            and is_self_signed(cert)
            and not any(o is not cert and _issued_by(o, cert) for o in certs)
        ):
            return cert, None
    return None, None


def _names_hosts(cert: x509.Certificate) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return bool(san.get_values_for_type(x509.DNSName) or san.get_values_for_type(x509.IPAddress))


def analyze(material: Material) -> ChainReport:
    """Find the identity, order everything, judge the chain, link the key."""
    certs = material.certificates
    roles = [classify(c, certs) for c in certs]
    key = material.keys[0] if material.keys else None
    identity, key_match = _find_identity(certs, roles, key)
    if identity is None:
        problem = (
            "no identity (end-entity) certificate in the input"
            if certs
            else "no certificate in the input"
        )
        return ChainReport(
            ordered=tuple(certs),
            roles=tuple(roles),
            identity=None,
            chain=(),
            complete=False,
            problems=(problem,),
            key=key,
            key_matches=key_match,
        )
    chain, missing = build_chain(identity, certs)
    head = (identity, *chain)
    problems = (*missing, *weak_signatures(head))
    rest = [c for c in certs if c not in head]
    ordered = (*head, *rest)
    role_of = dict(zip(certs, roles, strict=True))
    # the identity is reported as such even when its BasicConstraints say CA (see module doc)
    ordered_roles: tuple[Role, ...] = (
        "identity",
        *(role_of[c] for c in ordered[1:]),
    )
    return ChainReport(
        ordered=ordered,
        roles=ordered_roles,
        identity=identity,
        chain=chain,
        complete=not missing,
        problems=problems,
        key=key,
        key_matches=key_match,
    )
