"""sync.transfer: per-recipient blobs round-trip, and every replay/misdirection/tamper fails.

Certificates come from trustme (a real CA with an intermediate); openssl opens a blob with
the passphrase a deterministic ``rng_bytes`` lets us know, and that passphrase must never
show up in what travels or in an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from node.errors import TransferRejected
from node.model import PrivateKey
from sync.transfer import (
    TRANSFER_FORMAT,
    TRANSFER_PKCS12_ROUNDS,
    TransferContext,
    UnwrappedItem,
    WrappedItem,
    unwrap_item,
    wrap_item,
)
from tests.pki import der_with_bad_version

CTX = TransferContext(cluster_id="6f1c1f64-7a0e-4a7e-9d3b-0c4f5f3a9e11", epoch=2, revision=7,
                      sender="p1", recipient="b1")


class Material:
    def __init__(self, key_type: trustme.KeyType) -> None:
        root = trustme.CA(key_type=key_type)
        inter = root.create_child_ca()
        leaf = inter.issue_cert("support.example.com", "*.atlas.example.com", key_type=key_type)
        blob = leaf.private_key_and_cert_chain_pem.bytes()
        self.key: PrivateKey = serialization.load_pem_private_key(  # type: ignore[assignment]
            blob, password=None)  # trustme makes RSA or EC keys, both PrivateKey types
        certs = x509.load_pem_x509_certificates(blob)
        root_cert = x509.load_pem_x509_certificate(root.cert_pem.bytes())
        self.cert, self.chain = certs[0], (*certs[1:], root_cert)
        assert len(self.chain) == 2  # intermediate + root


EC = Material(trustme.KeyType.ECDSA)
RSA = Material(trustme.KeyType.RSA)
RECIPIENT = ec.generate_private_key(ec.SECP256R1())
STRANGER = ec.generate_private_key(ec.SECP256R1())


def deterministic_rng(seed: bytes) -> Callable[[int], bytes]:
    """A reproducible byte stream (sha256 in counter mode), and a log of what it gave."""
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
            counter += 1
        given_out.append(out[:n])
        return out[:n]

    given_out: list[bytes] = []
    rng.given = given_out  # type: ignore[attr-defined]  # test-only log on the function
    return rng


def _wrap(m: Material = EC, *, ctx: TransferContext = CTX, name: str = "site",
          is_default: bool = True, rng: Callable[[int], bytes] | None = None,
          recipient: ec.EllipticCurvePrivateKey = RECIPIENT) -> WrappedItem:
    return wrap_item(ctx, recipient.public_key(), name=name, key=m.key, cert=m.cert,
                     chain=m.chain, is_default=is_default, rng_bytes=rng or os.urandom)


def _same_key(a: PrivateKey, b: PrivateKey) -> bool:
    def der(k: PrivateKey) -> bytes:
        return k.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
    return der(a) == der(b)


def _check(out: UnwrappedItem, m: Material, name: str, is_default: bool) -> None:
    assert out.cert == m.cert
    assert _same_key(out.key, m.key)
    assert out.chain == m.chain
    assert (out.name, out.is_default) == (name, is_default)


@pytest.mark.parametrize("m", [EC, RSA], ids=["ec", "rsa"])
@pytest.mark.parametrize("is_default", [True, False])
def test_round_trip(m: Material, is_default: bool) -> None:
    item = _wrap(m, name="wild", is_default=is_default)
    _check(unwrap_item(CTX, RECIPIENT, item), m, "wild", is_default)


def test_each_transfer_has_a_fresh_passphrase() -> None:
    a, b = _wrap(), _wrap()
    assert a.wrapped_passphrase != b.wrapped_passphrase
    assert a.pkcs12 != b.pkcs12


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1:]


ITEM = _wrap()
OTHER_ITEM = _wrap(RSA, name="other", is_default=False)

REJECTED = [
    pytest.param(CTX, RECIPIENT, replace(ITEM, pkcs12=_flip(ITEM.pkcs12, 100)), id="pkcs12-bit"),
    pytest.param(CTX, RECIPIENT, replace(ITEM, pkcs12=ITEM.pkcs12[:-1]), id="pkcs12-truncated"),
    pytest.param(CTX, RECIPIENT, replace(ITEM, wrapped_passphrase=_flip(
        ITEM.wrapped_passphrase, 10)), id="ephemeral-point-bit"),
    pytest.param(CTX, RECIPIENT, replace(ITEM, wrapped_passphrase=_flip(
        ITEM.wrapped_passphrase, 70)), id="nonce-bit"),
    pytest.param(CTX, RECIPIENT, replace(ITEM, wrapped_passphrase=_flip(
        ITEM.wrapped_passphrase, 100)), id="ciphertext-bit"),
    pytest.param(CTX, RECIPIENT, replace(ITEM, wrapped_passphrase=ITEM.wrapped_passphrase[:-1]),
                 id="wrapped-truncated"),
    pytest.param(CTX, RECIPIENT, replace(ITEM, wrapped_passphrase=b""), id="wrapped-empty"),
    pytest.param(CTX, STRANGER, ITEM, id="wrong-recipient-key"),
    pytest.param(replace(CTX, epoch=3), RECIPIENT, ITEM, id="other-epoch"),
    pytest.param(replace(CTX, revision=8), RECIPIENT, ITEM, id="replayed-next-revision"),
    pytest.param(replace(CTX, revision=6), RECIPIENT, ITEM, id="replayed-old-revision"),
    pytest.param(replace(CTX, recipient="t1"), RECIPIENT, ITEM, id="other-recipient-name"),
    pytest.param(replace(CTX, sender="b1"), RECIPIENT, ITEM, id="other-sender"),
    pytest.param(replace(CTX, cluster_id="0b7e2d35-3f35-4a8f-8c57-3e0d8f6f2a90"), RECIPIENT,
                 ITEM, id="other-cluster"),
    pytest.param(CTX, RECIPIENT, replace(ITEM, pkcs12=OTHER_ITEM.pkcs12), id="swapped-blob"),
    pytest.param(CTX, RECIPIENT, replace(ITEM, wrapped_passphrase=OTHER_ITEM.wrapped_passphrase),
                 id="swapped-passphrase"),
    pytest.param(CTX, RECIPIENT, replace(ITEM, name="other"), id="renamed"),
    pytest.param(CTX, RECIPIENT, replace(ITEM, is_default=False), id="default-flag-flipped"),
]


def test_the_untampered_twin_opens() -> None:
    # the negative cases below all start from ITEM/OTHER_ITEM, which do open as sent
    _check(unwrap_item(CTX, RECIPIENT, ITEM), EC, "site", True)
    _check(unwrap_item(CTX, RECIPIENT, OTHER_ITEM), RSA, "other", False)


@pytest.mark.parametrize(("ctx", "key", "item"), REJECTED)
def test_rejected(ctx: TransferContext, key: ec.EllipticCurvePrivateKey,
                  item: WrappedItem) -> None:
    with pytest.raises(TransferRejected) as info:
        unwrap_item(ctx, key, item)
    message = str(info.value)
    assert "\n" not in message and repr(item.name) in message


def test_a_forged_blob_under_a_genuine_passphrase_is_refused() -> None:
    """An attacker who re-encrypts a different PKCS#12 cannot reuse a captured wrap."""
    forged = _wrap(RSA, name="site", is_default=True)
    with pytest.raises(TransferRejected):
        unwrap_item(CTX, RECIPIENT, replace(ITEM, pkcs12=forged.pkcs12))


def test_non_p256_recipient_is_refused() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(TransferRejected, match="secp384r1"):
        _wrap(recipient=p384)


def test_randomness_is_injected_and_the_passphrase_never_travels(tmp_path: Path) -> None:
    rng = deterministic_rng(b"canary")
    item = _wrap(rng=rng)
    secret = rng.given[0]  # type: ignore[attr-defined]  # first draw: the 32 secret bytes
    assert len(secret) == 32
    passphrase = secret.hex().encode()
    # the passphrase is the one draw taken from rng_bytes, and it is what opens the blob
    # (HPKE's ephemeral key and the PKCS#12 salts are drawn inside the libraries)
    assert rng.given == [secret]  # type: ignore[attr-defined]
    opened = pkcs12.load_pkcs12(item.pkcs12, passphrase)
    assert opened.cert is not None and opened.cert.certificate == EC.cert
    with pytest.raises(ValueError):  # negative twin: another passphrase does not open it
        pkcs12.load_pkcs12(item.pkcs12, passphrase.upper())
    again = _wrap(rng=deterministic_rng(b"canary"))
    assert again.wrapped_passphrase != item.wrapped_passphrase  # a fresh HPKE ephemeral
    assert again.pkcs12 != item.pkcs12
    # canaries: neither form of the passphrase is in anything that travels or is printed
    travelling = [item.pkcs12, item.wrapped_passphrase, repr(item).encode(),
                  item.name.encode()]
    for form in (secret, passphrase, passphrase.upper(), secret.hex().upper().encode()):
        for blob in travelling:
            assert form not in blob
    messages = []
    for ctx, key, bad in [(replace(CTX, revision=99), RECIPIENT, item),
                          (CTX, STRANGER, item),
                          (CTX, RECIPIENT, replace(item, pkcs12=item.pkcs12[:-3]))]:
        with pytest.raises(TransferRejected) as info:
            unwrap_item(ctx, key, bad)
        messages.append(str(info.value) + repr(info.value.data))
    for message in messages:
        assert secret.hex() not in message.lower()
    # and the blob is a standard PKCS#12 a real peer opens with that passphrase
    path = tmp_path / "blob.p12"
    path.write_bytes(item.pkcs12)
    pass_file = tmp_path / "pass"
    pass_file.write_bytes(passphrase)
    proc = subprocess.run(
        ["openssl", "pkcs12", "-in", str(path), "-passin", f"file:{pass_file}", "-info",
         "-nodes"], capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "PBKDF2" in proc.stderr and "AES-256-CBC" in proc.stderr
    assert f"Iteration {TRANSFER_PKCS12_ROUNDS}" in proc.stderr
    assert EC.cert.public_bytes(serialization.Encoding.PEM).decode() in proc.stdout
    # negative twin: a different passphrase does not open it
    pass_file.write_bytes(b"0" * 64)
    wrong = subprocess.run(
        ["openssl", "pkcs12", "-in", str(path), "-passin", f"file:{pass_file}", "-nodes"],
        capture_output=True, text=True, timeout=30, check=False)
    assert wrong.returncode != 0


def test_repr_shows_no_blob_or_key() -> None:
    out = unwrap_item(CTX, RECIPIENT, ITEM)
    assert "bytes>" in repr(ITEM) and "PRIVATE" not in repr(out)
    assert str(len(ITEM.pkcs12)) in repr(ITEM)


@settings(max_examples=15, deadline=None)
@given(
    name=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1,
                 max_size=40),
    is_default=st.booleans(),
    epoch=st.integers(0, 2**40),
    revision=st.integers(0, 2**40),
    recipient=st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=63),
)
def test_round_trip_property(name: str, is_default: bool, epoch: int, revision: int,
                             recipient: str) -> None:
    ctx = replace(CTX, epoch=epoch, revision=revision, recipient=recipient)
    item = _wrap(ctx=ctx, name=name, is_default=is_default)
    _check(unwrap_item(ctx, RECIPIENT, item), EC, name, is_default)
    with pytest.raises(TransferRejected):
        unwrap_item(replace(ctx, revision=revision + 1), RECIPIENT, item)


def test_a_blob_with_an_unreadable_certificate_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PKCS#12 that opens but holds a certificate with an invalid version (cryptography's
    InvalidVersion, not a ValueError) is a TransferRejected, not an internal error."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(EC.cert.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(EC.key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))

    def bad_export(*, passphrase: bytes, **_: object) -> bytes:
        # certificate in clear and no MAC, so its version field can be altered
        blob = subprocess.run(
            ["openssl", "pkcs12", "-export", "-in", str(cert), "-inkey", str(key),
             "-certpbe", "NONE", "-nomac", "-passout", f"pass:{passphrase.decode()}"],
            capture_output=True, check=True, timeout=30).stdout
        good = EC.cert.public_bytes(serialization.Encoding.DER)
        assert good in blob
        return blob.replace(good, der_with_bad_version(EC.cert), 1)

    monkeypatch.setattr("sync.transfer.export_pkcs12", bad_export)
    item = _wrap()
    monkeypatch.undo()
    with pytest.raises(TransferRejected, match="not a PKCS#12 that opens"):
        unwrap_item(CTX, RECIPIENT, item)
    # negative twin: the same wrapping around a sound blob opens
    _check(unwrap_item(CTX, RECIPIENT, _wrap()), EC, "site", True)


def test_wrapped_passphrase_starts_with_the_format_version() -> None:
    item = _wrap()
    assert item.wrapped_passphrase[0] == TRANSFER_FORMAT == 2
    _check(unwrap_item(CTX, RECIPIENT, item), EC, "site", True)
    # negative twin: the same bytes under another version byte are refused, saying why
    old = replace(item, wrapped_passphrase=b"\x01" + item.wrapped_passphrase[1:])
    with pytest.raises(TransferRejected, match="transfer format 1, not 2"):
        unwrap_item(CTX, RECIPIENT, old)


# --------------------------------------------------------------------------- the wire format
# The HPKE ``info`` is what binds a wrap to its context; it is a wire format (two releases
# must agree on it), so it is pinned here by building it independently of sync.transfer.
# The same independent sealing forges items whose PKCS#12 content is wrong in one way each.

PINNED_SUITE = hpke.Suite(hpke.KEM.P256, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def _pinned_info(ctx: TransferContext, name: str, is_default: bool, blob: bytes) -> bytes:
    text = (f'["certsync-transfer-v{TRANSFER_FORMAT}","{ctx.cluster_id}",{ctx.epoch},'
            f'{ctx.revision},"{ctx.sender}","{ctx.recipient}",{json.dumps(name)},'
            f'{"true" if is_default else "false"},"{hashlib.sha256(blob).hexdigest()}"]')
    return text.encode("ascii")


def test_the_info_is_the_pinned_json_with_non_ascii_escaped() -> None:
    item = _wrap(name="café ☃", is_default=False)
    info = _pinned_info(CTX, "café ☃", False, item.pkcs12)
    assert b"\\u00e9" in info  # ensure_ascii: the name travels escaped
    secret = PINNED_SUITE.decrypt(item.wrapped_passphrase[1:], RECIPIENT, info=info)
    assert len(secret) == 32
    # the blob opens with the hex of that secret, as ASCII
    assert pkcs12.load_pkcs12(item.pkcs12, secret.hex().encode()).cert is not None


def _forge(blob: bytes, secret: bytes, *, name: str = "site") -> WrappedItem:
    sealed = PINNED_SUITE.encrypt(secret, RECIPIENT.public_key(),
                                  info=_pinned_info(CTX, name, True, blob))
    return WrappedItem(name=name, is_default=True, pkcs12=blob,
                       wrapped_passphrase=bytes([TRANSFER_FORMAT]) + sealed)


SECRET = bytes(range(32))
PASS = SECRET.hex().encode()


def _p12(key: object, cert: x509.Certificate | None) -> bytes:
    return pkcs12.serialize_key_and_certificates(
        b"site", key, cert, None,  # type: ignore[arg-type]  # deliberately odd content
        serialization.BestAvailableEncryption(PASS))


def test_a_forged_twin_with_the_right_content_opens() -> None:
    out = unwrap_item(CTX, RECIPIENT, _forge(_p12(EC.key, EC.cert), SECRET))
    assert out.cert == EC.cert


@pytest.mark.parametrize("which", ["certificate only", "key only"])
def test_an_item_without_its_key_or_certificate_is_refused_by_its_message(which: str) -> None:
    blob = _p12(None, EC.cert) if which == "certificate only" else _p12(EC.key, None)
    with pytest.raises(TransferRejected) as err:
        unwrap_item(CTX, RECIPIENT, _forge(blob, SECRET))
    assert str(err.value) == ("item 'site' from 'p1' lacks its certificate or its key; only "
                              "certificates with keys are replicated, push again")


def test_an_item_with_a_key_type_certsync_does_not_store_is_refused() -> None:
    dsa_key = dsa.generate_private_key(2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dsa.example.com")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(dsa_key.public_key()).serial_number(1)
            .not_valid_before(EC.cert.not_valid_before_utc)
            .not_valid_after(EC.cert.not_valid_after_utc).sign(dsa_key, hashes.SHA256()))
    with pytest.raises(TransferRejected) as err:
        unwrap_item(CTX, RECIPIENT, _forge(_p12(dsa_key, cert), SECRET))
    assert str(err.value) == ("item 'site' from 'p1' holds a DSAPrivateKey key, which certsync "
                              "does not store")


def test_a_blob_that_does_not_open_with_its_passphrase_is_refused_by_its_message() -> None:
    with pytest.raises(TransferRejected) as err:
        unwrap_item(CTX, RECIPIENT, _forge(_p12(EC.key, EC.cert), bytes(32)))
    assert str(err.value) == ("item 'site' from 'p1' is not a PKCS#12 that opens with its "
                              "wrapped passphrase; push again from the current primary")


def test_a_replayed_item_is_refused_by_its_message() -> None:
    with pytest.raises(TransferRejected) as err:
        unwrap_item(replace(CTX, revision=8), RECIPIENT, ITEM)
    assert str(err.value) == (
        "item 'site' from 'p1' does not open for node 'b1' at epoch 2 revision 8: it was "
        "replayed, sent to another node or altered; push again from the current primary")


def test_a_recipient_off_p256_is_refused_by_its_message() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(TransferRejected) as err:
        _wrap(recipient=p384)
    assert str(err.value) == ("recipient 'b1' has a 'secp384r1' identity key, not P-256; "
                              "re-issue its certificate with 'certsync cluster init'")
