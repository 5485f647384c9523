"""``sync.transfer.wrap_csr_key`` / ``unwrap_csr_key``: a CSR's key sealed for one node
(issue 11); every binding has a twin that fails to open."""

from __future__ import annotations

from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from node.errors import TransferRejected
from sync.transfer import TransferContext, unwrap_csr_key, wrap_csr_key

CTX = TransferContext(cluster_id="c-1", epoch=3, revision=9, sender="p1", recipient="b1")
RECIPIENT = ec.generate_private_key(ec.SECP256R1())
STRANGER = ec.generate_private_key(ec.SECP256R1())
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())


def _csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "a.test")]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


PEM = _csr(KEY)
WRAPPED = wrap_csr_key(CTX, RECIPIENT.public_key(), csr_id="r1", pem=PEM, key=KEY,
                       set_digest="d1")


def _der(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def test_the_recipient_opens_the_key_and_it_is_not_in_the_blob() -> None:
    opened = unwrap_csr_key(CTX, RECIPIENT, csr_id="r1", pem=PEM, wrapped=WRAPPED,
                            set_digest="d1")
    assert isinstance(opened, ec.EllipticCurvePrivateKey)
    assert _der(opened) == _der(KEY)
    assert _der(KEY) not in WRAPPED


@pytest.mark.parametrize(
    ("ctx", "csr_id", "digest", "who"),
    [
        (CTX, "r1", "d1", STRANGER),  # another node's key
        (replace(CTX, recipient="t1"), "r1", "d1", RECIPIENT),  # sent to another node
        (replace(CTX, epoch=4), "r1", "d1", RECIPIENT),  # replayed at another epoch
        (replace(CTX, revision=8), "r1", "d1", RECIPIENT),  # another revision
        (replace(CTX, sender="b1"), "r1", "d1", RECIPIENT),  # another sender
        (CTX, "r2", "d1", RECIPIENT),  # swapped with another request
        (CTX, "r1", "d2", RECIPIENT),  # from another set of requests
    ],
)
def test_every_binding_is_checked(ctx: TransferContext, csr_id: str, digest: str,
                                  who: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(TransferRejected, match="does not open"):
        unwrap_csr_key(ctx, who, csr_id=csr_id, pem=PEM, wrapped=WRAPPED, set_digest=digest)


def test_an_altered_or_truncated_blob_and_another_csr_are_refused() -> None:
    flipped = WRAPPED[:-1] + bytes([WRAPPED[-1] ^ 1])
    with pytest.raises(TransferRejected, match="does not open"):
        unwrap_csr_key(CTX, RECIPIENT, csr_id="r1", pem=PEM, wrapped=flipped, set_digest="d1")
    with pytest.raises(TransferRejected, match="damaged"):
        unwrap_csr_key(CTX, RECIPIENT, csr_id="r1", pem=PEM, wrapped=WRAPPED[:40],
                       set_digest="d1")
    # the PEM is bound too: another request's PEM with this key does not open
    with pytest.raises(TransferRejected, match="does not open"):
        unwrap_csr_key(CTX, RECIPIENT, csr_id="r1", pem=_csr(OTHER_KEY), wrapped=WRAPPED,
                       set_digest="d1")


def test_a_key_that_does_not_belong_to_its_request_is_refused() -> None:
    pem = _csr(OTHER_KEY)
    wrapped = wrap_csr_key(CTX, RECIPIENT.public_key(), csr_id="r1", pem=pem, key=KEY,
                           set_digest="d1")
    with pytest.raises(TransferRejected, match="does not match the request"):
        unwrap_csr_key(CTX, RECIPIENT, csr_id="r1", pem=pem, wrapped=wrapped, set_digest="d1")
