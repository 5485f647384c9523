"""``sync.transfer.wrap_csr_key`` / ``unwrap_csr_key``: a CSR's key sealed for one node
(issue 11); every binding has a twin that fails to open."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, hpke, serialization
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


# --------------------------------------------------------------------------- exact words, edges

PINNED = hpke.Suite(hpke.KEM.P256, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def test_the_csr_info_is_the_pinned_json_with_non_ascii_escaped() -> None:
    """The wire format, built independently: a JSON list, non-ASCII escaped."""
    wrapped = wrap_csr_key(CTX, RECIPIENT.public_key(), csr_id="réq-1", pem=PEM, key=KEY,
                           set_digest="d1")
    info = (f'["certsync-csr-key-v1","c-1",3,9,"p1","b1","r\\u00e9q-1",'
            f'"{hashlib.sha256(PEM).hexdigest()}","d1"]').encode()
    assert wrapped[0] == 1
    assert PINNED.decrypt(wrapped[1:], RECIPIENT, info=info) == _der(KEY)


@pytest.mark.parametrize("size", [1 + 65 + 16, 1 + 65 + 16 + 1])
def test_a_blob_at_the_length_edge_says_which_failure(size: int) -> None:
    """82 bytes (format, encapsulated key, tag, no ciphertext) is damaged; one byte more
    gets as far as opening, which fails."""
    blob = bytes([1]) + bytes(size - 1)
    with pytest.raises(TransferRejected) as err:
        unwrap_csr_key(CTX, RECIPIENT, csr_id="r1", pem=PEM, wrapped=blob, set_digest="d1")
    if size == 82:
        assert str(err.value) == ("the key of request 'r1' from 'p1' is damaged or in another "
                                  "format; run the same certsync release on every node and push "
                                  "again")
    else:
        assert str(err.value) == ("the key of request 'r1' from 'p1' does not open for node "
                                  "'b1' at epoch 3: it was replayed, sent to another node or "
                                  "altered; push again from the current primary")


def test_another_format_byte_is_damaged_and_the_mismatch_names_the_store() -> None:
    with pytest.raises(TransferRejected, match="is damaged or in another format"):
        unwrap_csr_key(CTX, RECIPIENT, csr_id="r1", pem=PEM, wrapped=b"\x02" + WRAPPED[1:],
                       set_digest="d1")
    pem = _csr(OTHER_KEY)
    wrapped = wrap_csr_key(CTX, RECIPIENT.public_key(), csr_id="r1", pem=pem, key=KEY,
                           set_digest="d1")
    with pytest.raises(TransferRejected) as err:
        unwrap_csr_key(CTX, RECIPIENT, csr_id="r1", pem=pem, wrapped=wrapped, set_digest="d1")
    assert str(err.value) == ("the key of request 'r1' from 'p1' does not match the request; "
                              "the primary's store is inconsistent")
