"""[core] Promotions: who the primary is at which epoch, signed by an admin.

Epoch 1 belongs to the primary that ``cluster.toml`` names; it is implicit and unsigned
(:func:`initial_promotion`). Every higher epoch comes from ``certsync promote``: an admin
signs ``(cluster_id, epoch, primary)`` with the private key of its mTLS identity
(ECDSA-SHA256), and ships its certificate along, so any node can check the promotion with
nothing but the cluster CA certificate. No consensus: a promotion is the admin's decision;
nodes only refuse what is not signed by an admin of their cluster, and prefer the higher epoch.

Pure: no I/O, no clock. :func:`encode_promotion` / :func:`decode_promotion` turn a promotion
into the text kept in a node's store meta.

The admin certificate's dates are not checked: a promotion is a record of a decision that
stays valid after the admin's certificate expires (the mTLS layer checks dates on live calls).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from node.errors import CertsyncError, Conflict, PermissionDenied, StaleEpoch
from node.formats import BAD_CERTIFICATE
from node.identity import identity_from_certificate

__all__ = [
    "INITIAL_EPOCH",
    "Promotion",
    "decode_promotion",
    "encode_promotion",
    "highest_verified",
    "initial_promotion",
    "is_newer",
    "promotion_bytes",
    "sender_refusal",
    "sign_promotion",
    "verify_promotion",
]

INITIAL_EPOCH = 1
_DOMAIN = b"certsync-promotion-v1\0"


@dataclass(frozen=True)
class Promotion:
    """``primary`` is the primary of ``cluster_id`` from ``epoch`` on.

    ``admin_cert_der`` and ``signature`` are empty for the implicit epoch 1.
    """

    cluster_id: str
    epoch: int
    primary: str
    admin_cert_der: bytes = b""
    signature: bytes = b""

    def __repr__(self) -> str:  # certificates and signatures are opaque; keep logs short
        signed = "signed" if self.signature else "unsigned"
        return (f"Promotion(cluster_id={self.cluster_id!r}, epoch={self.epoch!r}, "
                f"primary={self.primary!r}, {signed})")


def promotion_bytes(cluster_id: str, epoch: int, primary: str) -> bytes:
    """The canonical bytes an admin signs (fields NUL-separated; none may hold a NUL)."""
    for what, value in (("cluster id", cluster_id), ("primary", primary)):
        if "\0" in value:
            raise PermissionDenied(f"the promotion's {what} {value!r} holds a NUL character; "
                                   "it is not a certsync promotion")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < INITIAL_EPOCH:
        raise PermissionDenied(f"the promotion's epoch {epoch!r} is not a positive integer; "
                               "it is not a certsync promotion")
    return b"%s%s\0%d\0%s" % (_DOMAIN, cluster_id.encode(), epoch, primary.encode())


def initial_promotion(cluster_id: str, primary: str) -> Promotion:
    """Epoch 1: the topology's primary, unsigned."""
    return Promotion(cluster_id=cluster_id, epoch=INITIAL_EPOCH, primary=primary)


def sign_promotion(
    *,
    cluster_id: str,
    epoch: int,
    primary: str,
    admin_cert: x509.Certificate,
    admin_key: ec.EllipticCurvePrivateKey,
) -> Promotion:
    """Sign ``primary`` as the primary from ``epoch`` (> 1) on with an admin's mTLS key."""
    if epoch <= INITIAL_EPOCH:
        raise PermissionDenied(f"epoch {epoch!r} cannot be signed; promotions start at epoch "
                               f"{INITIAL_EPOCH + 1} (epoch 1 is the topology's primary)")
    data = promotion_bytes(cluster_id, epoch, primary)
    signature = admin_key.sign(data, ec.ECDSA(hashes.SHA256()))
    return Promotion(cluster_id=cluster_id, epoch=epoch, primary=primary,
                     admin_cert_der=admin_cert.public_bytes(serialization.Encoding.DER),
                     signature=signature)


def verify_promotion(
    promotion: Promotion,
    *,
    ca_cert: x509.Certificate,
    cluster_id: str,
    initial_primary: str | None = None,
) -> None:
    """Raise :class:`PermissionDenied` unless ``promotion`` is valid for ``cluster_id``.

    Valid: epoch 1 naming ``initial_primary`` (the topology's primary) unsigned; or a higher
    epoch signed by an admin identity of this cluster whose certificate the cluster CA issued
    directly.
    """
    if promotion.cluster_id != cluster_id:
        raise PermissionDenied(
            f"the promotion is for cluster {promotion.cluster_id!r}, not {cluster_id!r}; "
            "promote with this cluster's admin.toml"
        )
    data = promotion_bytes(promotion.cluster_id, promotion.epoch, promotion.primary)
    if promotion.epoch == INITIAL_EPOCH:
        if promotion.primary != initial_primary or promotion.signature:
            raise PermissionDenied(
                f"epoch 1 belongs to the topology's primary {initial_primary!r}, not "
                f"{promotion.primary!r}; use 'certsync promote' to change the primary"
            )
        return
    try:
        admin = x509.load_der_x509_certificate(promotion.admin_cert_der)
    except BAD_CERTIFICATE as err:
        raise PermissionDenied(
            f"the promotion to epoch {promotion.epoch} carries no readable admin certificate; "
            "promote with the admin.toml of this cluster"
        ) from err
    try:
        admin.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as err:
        raise PermissionDenied(
            f"the promotion to epoch {promotion.epoch} is signed by "
            f"{admin.subject.rfc4514_string()!r}, which this cluster's CA did not issue; "
            "promote with this cluster's admin.toml"
        ) from err
    identity = identity_from_certificate(admin, cluster_id=cluster_id)
    if identity.kind != "admin":
        raise PermissionDenied(
            f"the promotion to epoch {promotion.epoch} is signed by {identity.kind} "
            f"{identity.name!r}; only an admin may promote"
        )
    public_key = admin.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise PermissionDenied(
            f"the admin certificate of the promotion to epoch {promotion.epoch} has no EC key; "
            "use the admin identity 'certsync cluster init' made"
        )
    try:
        public_key.verify(promotion.signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as err:
        raise PermissionDenied(
            f"the signature of the promotion of {promotion.primary!r} to epoch "
            f"{promotion.epoch} does not verify; it was altered, promote again"
        ) from err


def highest_verified(
    promotions: Sequence[Promotion],
    *,
    ca_cert: x509.Certificate,
    cluster_id: str,
    initial_primary: str,
) -> Promotion | None:
    """The promotion of the highest epoch among ``promotions`` that verifies (see
    :func:`verify_promotion`); the others are ignored. None when none verifies."""
    best: Promotion | None = None
    for promotion in promotions:
        try:
            verify_promotion(promotion, ca_cert=ca_cert, cluster_id=cluster_id,
                             initial_primary=initial_primary)
        except PermissionDenied:
            continue
        if best is None or promotion.epoch > best.epoch:
            best = promotion
    return best


def encode_promotion(promotion: Promotion) -> str:
    """Text for store meta (JSON with base64 fields)."""
    return json.dumps({
        "cluster_id": promotion.cluster_id,
        "epoch": promotion.epoch,
        "primary": promotion.primary,
        "admin_cert": base64.b64encode(promotion.admin_cert_der).decode("ascii"),
        "signature": base64.b64encode(promotion.signature).decode("ascii"),
    }, sort_keys=True)


def decode_promotion(text: str) -> Promotion:
    """Inverse of :func:`encode_promotion`; :class:`PermissionDenied` if it is not one."""
    try:
        raw = json.loads(text)
        return Promotion(
            cluster_id=str(raw["cluster_id"]),
            epoch=int(raw["epoch"]),
            primary=str(raw["primary"]),
            admin_cert_der=base64.b64decode(raw["admin_cert"], validate=True),
            signature=base64.b64decode(raw["signature"], validate=True),
        )
    except (ValueError, KeyError, TypeError) as err:
        raise PermissionDenied(
            "the stored promotion is not readable; promote again with 'certsync promote'"
        ) from err


# --------------------------------------------------------------------------- fencing


def is_newer(promotion: Promotion, *, epoch: int, primary: str) -> bool:
    """Whether a node at ``epoch`` (primary ``primary``) should adopt ``promotion`` (once it
    verifies): only a strictly higher epoch is. A lower epoch is ignored (fencing: a former
    primary never takes the cluster back); the same epoch naming another primary is a
    :class:`Conflict` (an epoch has one primary).
    """
    if promotion.epoch < epoch:
        return False
    if promotion.epoch == epoch:
        if promotion.primary != primary:
            raise Conflict(
                f"epoch {promotion.epoch} already belongs to {primary!r}, not "
                f"{promotion.primary!r}; promote again (a new promotion takes a higher epoch)"
            )
        return False
    return True


def sender_refusal(
    kind: str, name: str, method: str, epoch: int, *, current_epoch: int, current_primary: str
) -> CertsyncError | None:
    """Why a push call (``method``) from ``kind:name`` at ``epoch`` is refused by a node at
    ``current_epoch`` whose primary is ``current_primary``; None when it is the primary of
    that epoch. A lower epoch is :class:`StaleEpoch`; anyone else :class:`PermissionDenied`.
    """
    if kind != "node":
        return PermissionDenied(
            f"{kind} {name!r} may not call {method}: only the primary node pushes; use "
            "'certsync replicate'")
    if epoch < current_epoch:
        return StaleEpoch(
            f"node {name!r} pushes at epoch {epoch}, but this node is at epoch "
            f"{current_epoch} (primary {current_primary!r}); it was replaced, let it step down",
            epoch=epoch, current=current_epoch)
    if name != current_primary or epoch != current_epoch:
        return PermissionDenied(
            f"node {name!r} is not the primary of epoch {current_epoch} (that is "
            f"{current_primary!r}); only the primary may call {method}")
    return None
