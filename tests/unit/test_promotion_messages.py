"""sync.promotion: every refusal says exactly why (a mutation run found the messages, the
canonical encoding and the repr unguarded: deploy/mutation.sh sync/promotion.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from node.errors import PermissionDenied
from sync.promotion import (
    Promotion,
    decode_promotion,
    encode_promotion,
    initial_promotion,
    promotion_bytes,
    sign_promotion,
)
from tests.unit.test_promotion import _REFUSED, OTHER, OURS, _signed, _verify

_SAYS = {
    "other-cluster-admin": "the promotion is for cluster {other!r}, not {ours!r}; promote with "
                           "this cluster's admin.toml",
    "other-ca-same-cluster-id": "the promotion to epoch 2 is signed by 'O=certsync {other},"
                                "CN=admin:admin', which this cluster's CA did not issue; "
                                "promote with this cluster's admin.toml",
    "node-identity-signs": "the promotion to epoch 2 is signed by node 'b1'; only an admin may "
                           "promote",
    "epoch-altered": "the signature of the promotion of 'b1' to epoch 3 does not verify; it was "
                     "altered, promote again",
    "primary-altered": "the signature of the promotion of 't1' to epoch 2 does not verify; it "
                       "was altered, promote again",
    "cluster-altered": "the promotion is for cluster {other!r}, not {ours!r}; promote with "
                       "this cluster's admin.toml",
    "signature-dropped": "the signature of the promotion of 'b1' to epoch 2 does not verify; "
                         "it was altered, promote again",
    "signature-of-other-promotion": "the signature of the promotion of 'b1' to epoch 2 does "
                                    "not verify; it was altered, promote again",
    "no-admin-cert": "the promotion to epoch 2 carries no readable admin certificate; promote "
                     "with the admin.toml of this cluster",
    "admin-cert-bad-version": "the promotion to epoch 2 carries no readable admin certificate; "
                              "promote with the admin.toml of this cluster",
    "ca-cert-as-signer": "certificate 'O=certsync {ours},CN=certsync cluster CA' carries 0 "
                         "certsync identity URIs, not one; use a certificate made by 'certsync "
                         "cluster init'",
    "epoch-one-other-primary": "epoch 1 belongs to the topology's primary 'p1', not 'b1'; use "
                               "'certsync promote' to change the primary",
    "epoch-one-signed-copy": "epoch 1 belongs to the topology's primary 'p1', not 'b1'; use "
                             "'certsync promote' to change the primary",
    "epoch-zero": "the promotion's epoch 0 is not a positive integer; it is not a certsync "
                  "promotion",
}


@pytest.mark.parametrize("make", [m for _, m in _REFUSED], ids=[i for i, _ in _REFUSED])
def test_each_refusal_says_exactly_why(make: Callable[[], Promotion],
                                       request: pytest.FixtureRequest) -> None:
    case = request.node.callspec.id
    with pytest.raises(PermissionDenied) as info:
        _verify(make())
    assert str(info.value) == _SAYS[case].format(ours=OURS.cluster_id, other=OTHER.cluster_id)


def _rsa_admin() -> x509.Certificate:
    """The admin certificate again, with an RSA key, issued by the cluster CA."""
    admin = OURS.admin.cert
    builder = (x509.CertificateBuilder().subject_name(admin.subject).issuer_name(admin.issuer)
               .serial_number(admin.serial_number + 1)
               .not_valid_before(admin.not_valid_before_utc)
               .not_valid_after(admin.not_valid_after_utc)
               .public_key(rsa.generate_private_key(65537, 2048).public_key()))
    for ext in admin.extensions:
        if ext.oid not in (x509.SubjectKeyIdentifier.oid, x509.AuthorityKeyIdentifier.oid):
            builder = builder.add_extension(ext.value, ext.critical)
    return builder.sign(OURS.ca.key, hashes.SHA256())


def test_an_admin_certificate_without_an_ec_key_is_refused() -> None:
    der = _rsa_admin().public_bytes(serialization.Encoding.DER)
    with pytest.raises(PermissionDenied) as info:
        _verify(replace(_signed(), admin_cert_der=der))
    assert str(info.value) == ("the admin certificate of the promotion to epoch 2 has no EC "
                               "key; use the admin identity 'certsync cluster init' made")


def test_signing_epoch_one_says_where_promotions_start() -> None:
    with pytest.raises(PermissionDenied) as info:
        _signed(epoch=1)
    assert str(info.value) == ("epoch 1 cannot be signed; promotions start at epoch 2 (epoch 1 "
                               "is the topology's primary)")
    assert _signed(epoch=2).epoch == 2  # twin


@pytest.mark.parametrize(
    ("cluster_id", "epoch", "primary", "message"),
    [
        ("x\0", 2, "p", "the promotion's cluster id 'x\\x00' holds a NUL character; it is not a "
                        "certsync promotion"),
        ("x", 2, "p\0", "the promotion's primary 'p\\x00' holds a NUL character; it is not a "
                        "certsync promotion"),
        ("x", True, "p", "the promotion's epoch True is not a positive integer; it is not a "
                         "certsync promotion"),
        ("x", "2", "p", "the promotion's epoch '2' is not a positive integer; it is not a "
                        "certsync promotion"),
        ("x", 0, "p", "the promotion's epoch 0 is not a positive integer; it is not a certsync "
                      "promotion"),
    ],
)
def test_promotion_bytes_refusals(cluster_id: str, epoch: object, primary: str,
                                  message: str) -> None:
    with pytest.raises(PermissionDenied) as info:
        promotion_bytes(cluster_id, epoch, primary)  # type: ignore[arg-type]  # bad on purpose
    assert str(info.value) == message


def test_promotion_bytes_exact_layout() -> None:
    assert promotion_bytes("c", 1, "p1") == b"certsync-promotion-v1\0c\x001\0p1"
    assert promotion_bytes("c", 12, "b") == b"certsync-promotion-v1\0c\x0012\0b"


def test_encoding_is_canonical_json() -> None:
    p = Promotion(cluster_id="c", epoch=2, primary="b1", admin_cert_der=b"\x01",
                  signature=b"\x02")
    assert encode_promotion(p) == ('{"admin_cert": "AQ==", "cluster_id": "c", "epoch": 2, '
                                   '"primary": "b1", "signature": "Ag=="}')
    assert decode_promotion(encode_promotion(p)) == p


@pytest.mark.parametrize("field", ["admin_cert", "signature"])
def test_decode_refuses_non_base64_in_either_field(field: str) -> None:
    good = {"admin_cert": "AQ==", "signature": "Ag=="}
    good[field] = "A!Q=="
    text = ('{"cluster_id": "c", "epoch": 2, "primary": "b1", '
            f'"admin_cert": "{good["admin_cert"]}", "signature": "{good["signature"]}"}}')
    with pytest.raises(PermissionDenied) as info:
        decode_promotion(text)
    assert str(info.value) == ("the stored promotion is not readable; promote again with "
                               "'certsync promote'")


def test_repr_hides_the_bytes_and_says_signed_or_not() -> None:
    signed = _signed()
    assert repr(signed) == (f"Promotion(cluster_id={OURS.cluster_id!r}, epoch=2, "
                            "primary='b1', signed)")
    assert repr(initial_promotion("c", "p1")) == ("Promotion(cluster_id='c', epoch=1, "
                                                   "primary='p1', unsigned)")
    assert isinstance(OURS.admin.key, ec.EllipticCurvePrivateKey)
    assert sign_promotion(cluster_id="c", epoch=3, primary="t1", admin_cert=OURS.admin.cert,
                          admin_key=OURS.admin.key).signature


def _admin_of_another_cluster_from_our_ca() -> x509.Certificate:
    """An admin certificate our CA signed whose identity URI names another cluster (a CA
    never does this; the check that refuses it is the second line of defence)."""
    admin = OURS.admin.cert
    builder = (x509.CertificateBuilder().subject_name(admin.subject).issuer_name(admin.issuer)
               .serial_number(admin.serial_number + 2)
               .not_valid_before(admin.not_valid_before_utc)
               .not_valid_after(admin.not_valid_after_utc)
               .public_key(OURS.admin.key.public_key()))
    for ext in admin.extensions:
        value = ext.value
        if isinstance(value, x509.SubjectAlternativeName):
            uris = [u.replace(OURS.cluster_id, OTHER.cluster_id)
                    for u in value.get_values_for_type(x509.UniformResourceIdentifier)]
            value = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris])
        if ext.oid not in (x509.SubjectKeyIdentifier.oid, x509.AuthorityKeyIdentifier.oid):
            builder = builder.add_extension(value, ext.critical)
    return builder.sign(OURS.ca.key, hashes.SHA256())


def test_an_admin_of_another_cluster_is_refused_even_from_our_ca() -> None:
    cert = _admin_of_another_cluster_from_our_ca()
    promotion = sign_promotion(cluster_id=OURS.cluster_id, epoch=2, primary="b1",
                               admin_cert=cert, admin_key=OURS.admin.key)
    with pytest.raises(PermissionDenied) as info:
        _verify(promotion)
    assert f"belongs to cluster {OTHER.cluster_id!r}, not {OURS.cluster_id!r}" in str(info.value)
    # twin: the same construction with our own cluster id verifies
    ours = sign_promotion(cluster_id=OURS.cluster_id, epoch=2, primary="b1",
                          admin_cert=OURS.admin.cert, admin_key=OURS.admin.key)
    _verify(ours)
