"""node.logging's redaction processor, rule by rule as a table on the pure processor (a
mutation run asked for each boundary: deploy/mutation.sh node/logging.py). Every masked case
has a kept twin.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest
import structlog

from node import logging as node_logging
from node.logging import REDACTED, configure_logging, get_logger, processors, redact

HEX64 = "0123456789abcdef" * 4


@pytest.fixture(autouse=True)
def _cold_name_caches() -> None:
    """The name rules are cached per process; start each case cold so the rules themselves
    decide (and not what an earlier test left in the cache)."""
    node_logging._is_secret_name.cache_clear()
    node_logging._names_fingerprint.cache_clear()


def _one(name: str, value: Any) -> Any:
    return redact(None, "info", {name: value})[name]


@pytest.mark.parametrize(
    "name",
    ["passphrase", "PassPhrase", "password", "passwd", "secret", "key", "keys", "token", "p12",
     "pkcs12", "pfx", "ca-key", "tls.key", "node key", "store_key_path", "KEY"],
)
def test_secret_names_are_masked(name: str) -> None:
    assert _one(name, "short") == REDACTED


@pytest.mark.parametrize(
    "name", ["key_type", "has_key", "key_types", "key_matches", "Key_Type", "keyring", "monkey",
             "hostname", "p12s"],
)
def test_names_about_keys_or_merely_containing_the_letters_are_kept(name: str) -> None:
    assert _one(name, "short") == "short"


@pytest.mark.parametrize(
    "run",
    ["Ab" * 16,  # lower + upper, exactly 32: the shortest run checked
     "a1" * 16,  # lower + digit
     "A1" * 16,  # upper + digit
     "a" * 31 + "+",  # lower + base64 punctuation
     "a" * 32 + "==",
     "aaaa/" * 7],
)
def test_blob_like_runs_are_masked(run: str) -> None:
    assert _one("note", run) == REDACTED
    assert _one("note", f"see {run} here") == f"see {REDACTED} here"


@pytest.mark.parametrize(
    "run",
    ["a" * 40,  # one class only
     "A" * 40,
     "X" * 40,  # an upper-case letter is not base64 punctuation
     "1" * 40,
     "/usr/local/lib/python/site/packages",  # a path: '/' first does not count
     "Ab" * 15 + "A",  # 31 characters: too short to be a secret
     "Ab1/" * 7 + "Ab1"[:-1] + "-x"],  # broken by '-': runs of 30 and 1
)
def test_ordinary_runs_are_kept(run: str) -> None:
    assert _one("note", run) == run


def test_fingerprints_only_under_fingerprint_names() -> None:
    for name in ("sha256", "digest", "fingerprint", "set_digest", "leaf.sha256"):
        assert _one(name, HEX64) == HEX64
        assert _one(name, HEX64.upper()) == HEX64.upper()
    assert _one("note", HEX64) == REDACTED
    mixed = HEX64[:32] + HEX64[32:].upper()
    assert _one("sha256", mixed) == REDACTED  # not one fingerprint: a blob
    assert redact(None, "info", {"event": f"got {HEX64}"})["event"] == f"got {REDACTED}"


def test_fingerprint_leave_reaches_into_lists_and_reprs() -> None:
    assert _one("sha256", [HEX64, ("x", HEX64)]) == [HEX64, ["x", HEX64]]
    assert _one("note", [HEX64]) == [REDACTED]  # twin

    class Fp:
        def __repr__(self) -> str:
            return HEX64

    assert _one("digest", Fp()) == HEX64
    assert _one("note", Fp()) == REDACTED  # twin


def test_pem_private_and_encrypted_blocks_are_masked_whole() -> None:
    for label in ("PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "RSA PRIVATE KEY"):
        text = f"a -----BEGIN {label}-----\nabc\n-----END {label}----- b"
        assert _one("note", text) == f"a {REDACTED} b"
    cert = "-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE----- and more text"
    assert _one("note", cert) == cert  # twin: a certificate is public


@pytest.mark.parametrize("value", [b"\x00" * 5, bytearray(b"12345"), memoryview(b"12345")])
def test_byte_values_say_only_their_length(value: bytes | bytearray | memoryview) -> None:
    assert _one("note", value) == "[redacted 5 bytes]"


def test_nested_values_are_scrubbed_by_their_own_names() -> None:
    got = _one("detail", {"passphrase": "pw", "name": "web", 3: "Ab" * 16,
                          "sha256": HEX64, "inner": {"token": "t", "n": 1}})
    assert got == {"passphrase": REDACTED, "name": "web", 3: REDACTED, "sha256": HEX64,
                   "inner": {"token": REDACTED, "n": 1}}
    assert _one("items", ("x", "Ab" * 16, 5)) == ["x", REDACTED, 5]
    assert _one("items", ["Ab" * 16]) == [REDACTED]
    assert _one("items", frozenset({"y"})) == ["y"]


@pytest.mark.parametrize("value", [0, 7, 2.5, True, False, None])
def test_plain_scalars_are_kept_as_they_are(value: object) -> None:
    got = _one("count", value)
    assert got is value or (got == value and type(got) is type(value))


class _Holder:
    def __repr__(self) -> str:
        return f"Holder(secret={'Ab' * 20})"


def test_other_objects_are_scrubbed_as_their_repr() -> None:
    assert _one("obj", _Holder()) == f"Holder(secret={REDACTED})"
    assert _one("obj", dict) == repr(dict)  # twin: a harmless repr is kept


def test_the_event_itself_is_scrubbed_without_fingerprint_leave() -> None:
    out = redact(None, "info", {"event": "Ab" * 16, "sha256": HEX64, "n": 1})
    assert out == {"event": REDACTED, "sha256": HEX64, "n": 1}


def test_processor_chain_order_and_renderers() -> None:
    for fmt, renderer in (("json", structlog.processors.JSONRenderer),
                          ("console", structlog.dev.ConsoleRenderer)):
        chain = processors(fmt)  # type: ignore[arg-type]  # both literals
        assert isinstance(chain[-1], renderer)
        assert chain[-2] is redact
        assert chain[0] is structlog.contextvars.merge_contextvars
        assert chain.index(structlog.processors.format_exc_info) < chain.index(redact)


def test_configured_json_lines_are_redacted_filtered_and_named() -> None:
    stream = io.StringIO()
    try:
        configure_logging("json", stream=stream, level=logging.INFO)
        log = get_logger("certsync.test")
        log.debug("hidden", n=1)  # below the level: not written
        log.info("shown", passphrase="hunter2", sha256=HEX64)
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        structlog.reset_defaults()
    assert [line["event"] for line in lines] == ["shown"]
    line = lines[0]
    assert (line["passphrase"], line["sha256"], line["logger"], line["level"]) == (
        REDACTED, HEX64, "certsync.test", "info")
    assert line["timestamp"].endswith("Z")
    assert "hunter2" not in stream.getvalue()
    assert list(line) != sorted(line)  # keys in the order logged, not sorted


def test_configured_console_lines_go_to_the_stream_plain() -> None:
    stream = io.StringIO()
    try:
        configure_logging("console", stream=stream)
        get_logger("c").warning("hello", token="abc")
    finally:
        structlog.reset_defaults()
    text = stream.getvalue()
    assert "hello" in text and REDACTED in text and "abc" not in text
    assert "\x1b[" not in text  # no colours
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)  # console lines, not JSON


def test_json_is_the_default_format() -> None:
    stream = io.StringIO()
    try:
        configure_logging(stream=stream)
        get_logger("d").info("hi", n=1)
    finally:
        structlog.reset_defaults()
    assert json.loads(stream.getvalue())["event"] == "hi"


def test_a_logger_follows_a_later_configuration() -> None:
    """Loggers are not cached on first use: a module-level ``structlog.get_logger()`` proxy
    (how node and sync modules log) used before a reconfiguration writes where the new
    configuration says."""
    first, second = io.StringIO(), io.StringIO()
    try:
        configure_logging("json", stream=first)
        log = structlog.get_logger("moving")
        log.info("one")
        configure_logging("json", stream=second)
        log.info("two")
    finally:
        structlog.reset_defaults()
    assert [json.loads(x)["event"] for x in first.getvalue().splitlines()] == ["one"]
    assert [json.loads(x)["event"] for x in second.getvalue().splitlines()] == ["two"]
