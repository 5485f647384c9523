"""node.sealing in-process: a sealed key opens only under its store key and for its row, and
every refusal says what failed and what to do (its words are checked, so a changed message
is a failing test)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from node.errors import IntegrityError
from node.sealing import (
    NONCE_BYTES,
    STORE_KEY_BYTES,
    csr_aad,
    key_aad,
    key_check,
    key_check_opens,
    key_der,
    load_key,
    seal,
    unseal,
)

STORE_KEY = bytes(range(STORE_KEY_BYTES))
NONCE = bytes(NONCE_BYTES)
SHA = "ab" * 32
UNSEAL_ADVICE = ("fails authentication (the row was copied, swapped or altered, or the store "
                 "key is wrong); restore the store from a backup or re-import it")


def test_the_row_names_are_bound_in_the_associated_data() -> None:
    assert key_aad(SHA) == b"certsync-key-v1|" + SHA.encode()
    assert csr_aad("req-é1") == b"certsync-csr-key-v1|req-\xc3\xa91"
    assert key_aad(SHA) != csr_aad(SHA)


def test_a_sealed_key_opens_for_its_row_only() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    nonce, ct = seal(STORE_KEY, key_aad(SHA), key_der(key), NONCE)
    opened = load_key(unseal(STORE_KEY, key_aad(SHA), nonce, ct, what="x"), what="x")
    assert key_der(opened) == key_der(key)  # twin of the refusals below
    with pytest.raises(IntegrityError) as err:
        unseal(STORE_KEY, key_aad("cd" * 32), nonce, ct, what="certificate 'cd…'")
    assert str(err.value) == f"the stored key of certificate 'cd…' {UNSEAL_ADVICE}"
    with pytest.raises(IntegrityError) as err:
        unseal(bytes(STORE_KEY_BYTES), key_aad(SHA), nonce, ct, what="request 'r1'")
    assert str(err.value) == f"the stored key of request 'r1' {UNSEAL_ADVICE}"


def test_unsealed_bytes_that_are_no_key_say_so() -> None:
    with pytest.raises(IntegrityError) as err:
        load_key(b"\x30\x03\x02\x01\x00", what="certificate 'ab…'")
    assert str(err.value) == ("the stored key of certificate 'ab…' is not a readable PKCS#8 "
                              "key; restore the store from a backup")


def test_an_rsa_key_round_trips() -> None:
    key = rsa.generate_private_key(65537, 2048)
    assert key_der(load_key(key_der(key), what="x")) == key_der(key)


def test_the_store_key_check_opens_with_its_key_only() -> None:
    text = key_check(STORE_KEY, NONCE)
    assert key_check_opens(STORE_KEY, text)
    assert not key_check_opens(bytes(STORE_KEY_BYTES), text)
