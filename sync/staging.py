"""[core] The receiver's staging checks, as a pure function over a push.

:func:`check_push` unwraps every item of a push with the recipient's key and checks it:
each chain link signed by the next, every certificate valid at ``now``, exactly one default
and the one announced, the digest of what arrived equal to the announced one, and (unless the
push is forced) the default covering every name this node must serve. Its answer,
:class:`CheckedSet`, is what :meth:`sync.receiver.Replica.activate` stores. Time is a
parameter; the CPU work (PKCS#12, signatures) is the caller's to move off the event loop.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from node.errors import CoverageError, TransferRejected
from node.formats import cert_sha256
from node.names import check_all, sans_of
from node.store_view import SetEntry, set_digest
from node.text import common_name, rfc3339
from sync.promotion import Promotion
from sync.transfer import TransferContext, UnwrappedItem, WrappedItem, unwrap_item

__all__ = ["CheckedSet", "KeptItem", "Push", "check_dates", "check_push"]


@dataclass(frozen=True)
class Push:
    """A Stage call as plain values."""

    promotion: Promotion
    epoch: int
    revision: int
    sender: str
    items: tuple[WrappedItem, ...]
    default_sha256: str | None
    digest: str
    force: bool = False
    kept: tuple[KeptItem, ...] = ()


@dataclass(frozen=True)
class KeptItem:
    """A member of the pushed set that the receiver already holds (it does not travel)."""

    sha256: str
    name: str
    is_default: bool


@dataclass(frozen=True)
class CheckedSet:
    """A set that passed the receiver's checks, ready for ``Store.replace_all``."""

    epoch: int
    revision: int
    digest: str
    sender: str
    entries: tuple[SetEntry, ...]
    default_sha256: str | None
    forced: bool

    @property
    def certificates(self) -> tuple[x509.Certificate, ...]:
        return tuple(e.cert for e in self.entries)


def check_dates(certs: Sequence[x509.Certificate], now: dt.datetime, *, sender: str) -> None:
    """:class:`TransferRejected` unless every certificate is valid at ``now``."""
    for cert in certs:
        if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
            raise TransferRejected(
                f"certificate {cert_sha256(cert)!r} ({cert.subject.rfc4514_string()}) from "
                f"{sender!r} is not valid at {rfc3339(now)} (valid "
                f"{rfc3339(cert.not_valid_before_utc)} to {rfc3339(cert.not_valid_after_utc)}); "
                "replace it on the primary, this node keeps serving what it had"
            )


def _check_links(item: UnwrappedItem, sender: str) -> None:
    """Each certificate of the item's chain must have signed the one before it."""
    current = item.cert
    for issuer in item.chain:
        try:
            current.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature) as err:
            raise TransferRejected(
                f"item {item.name!r} from {sender!r}: {issuer.subject.rfc4514_string()!r} did "
                f"not sign {current.subject.rfc4514_string()!r}; the chain is broken, fix it "
                "on the primary"
            ) from err
        current = issuer


def check_push(
    push: Push,
    *,
    cluster_id: str,
    recipient: str,
    recipient_key: ec.EllipticCurvePrivateKey,
    required_names: Sequence[str],
    now: dt.datetime,
    held: Sequence[UnwrappedItem] = (),
) -> CheckedSet:
    """Unwrap and check a push (pure and CPU-bound: call it off the event loop).

    Raises :class:`TransferRejected` (replayed/misdirected/altered blob, broken chain, bad
    dates, digest mismatch, default missing) or :class:`CoverageError` (the default leaves
    one of ``required_names`` uncovered and the push is not forced).
    """
    ctx = TransferContext(cluster_id=cluster_id, epoch=push.epoch, revision=push.revision,
                          sender=push.sender, recipient=recipient)
    keyed: dict[str, SetEntry] = {}
    chain_certs: dict[str, x509.Certificate] = {}
    default_item: UnwrappedItem | None = None
    # members the receiver already holds (checked when they arrived) and the new ones
    items: list[UnwrappedItem] = list(held)
    for wrapped in push.items:
        item = unwrap_item(ctx, recipient_key, wrapped)
        _check_links(item, push.sender)
        items.append(item)
    for item in items:
        sha = cert_sha256(item.cert)
        keyed[sha] = SetEntry(cert=item.cert, key=item.key, name=item.name)
        for extra in item.chain:
            chain_certs.setdefault(cert_sha256(extra), extra)
        if item.is_default:
            if default_item is not None:
                raise TransferRejected(
                    f"the push from {push.sender!r} marks more than one certificate default; "
                    "push again from the primary"
                )
            default_item = item
    default_sha = cert_sha256(default_item.cert) if default_item is not None else None
    if default_sha != push.default_sha256:
        raise TransferRejected(
            f"the push from {push.sender!r} names default {push.default_sha256!r} but its items "
            f"mark {default_sha!r}; push again from the primary"
        )
    entries = list(keyed.values())
    entries += [SetEntry(cert=c, key=None, name=common_name(c) or sha[:16])
                for sha, c in chain_certs.items() if sha not in keyed]
    check_dates([e.cert for e in entries], now, sender=push.sender)
    members = [(sha, True) for sha in keyed] + [(sha, False) for sha in chain_certs
                                                 if sha not in keyed]
    digest = set_digest(members, default_sha)
    if digest != push.digest:
        raise TransferRejected(
            f"the set from {push.sender!r} has digest {digest!r}, not the announced "
            f"{push.digest!r}; an item is missing or extra, push again"
        )
    if not push.force:
        if default_item is None:
            raise CoverageError(
                f"the push from {push.sender!r} has no default certificate, so "
                f"{', '.join(required_names)} would be uncovered; set a default on the primary",
                report=", ".join(required_names),
            )
        report = check_all(sans_of(default_item.cert), list(required_names))
        if not report.all_covered:
            missing = [i.hostname for i in report.items if not i.covered]
            raise CoverageError(
                f"the default certificate {default_sha!r} from {push.sender!r} does not cover "
                f"{', '.join(missing)}; replace it on the primary or replicate --force",
                report=", ".join(missing),  # text, so it survives the trip to the primary
            )
    return CheckedSet(epoch=push.epoch, revision=push.revision, digest=digest,
                      sender=push.sender, entries=tuple(entries), default_sha256=default_sha,
                      forced=push.force)
