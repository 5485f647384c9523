"""The redaction processor: canaries planted in log calls never reach the rendered output."""

from __future__ import annotations

import io
import json
import secrets
from collections.abc import Iterator

import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from node.logging import REDACTED, configure_logging, get_logger, redact

CANARY_PASSPHRASE = "canary-passphrase-7f3a"


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging("json", stream=out)
    yield out
    structlog.reset_defaults()


def _key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _canary_blob() -> str:
    return secrets.token_urlsafe(48).replace("-", "A").replace("_", "b") + "Q9"


def _events(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize(
    "field",
    ["passphrase", "store_key", "private_key", "secret", "p12_password", "key", "api-token"],
)
def test_secret_named_fields_are_masked(json_lines: io.StringIO, field: str) -> None:
    get_logger("t").info("import", **{field: CANARY_PASSPHRASE})
    assert CANARY_PASSPHRASE not in json_lines.getvalue()
    assert _events(json_lines)[0][field] == REDACTED


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("key_type", "ec-p256"),
        ("has_key", True),
        ("name", "support cert"),
        ("sha256", "ab" * 32),
        ("set_digest", "cd" * 32),
        ("path", "/work/main/tests/node/some/deep/directory/file.pem"),
        ("cluster_id", "6f1c2a8e-52b4-4c1f-9b1e-2f5d1e0a9c77"),
    ],
)
def test_ordinary_fields_are_kept(json_lines: io.StringIO, field: str, value: object) -> None:
    """Negative twin: what is not a secret is logged as given."""
    get_logger("t").info("event", **{field: value})
    assert _events(json_lines)[0][field] == value


def test_private_key_pem_in_any_value_is_masked(json_lines: io.StringIO) -> None:
    pem = _key_pem()
    body = pem.splitlines()[1]
    get_logger("t").info(f"got {pem}", detail={"note": f"x {pem} y"}, items=[pem])
    text = json_lines.getvalue()
    assert "PRIVATE KEY" not in text
    assert body not in text


def test_long_blobs_are_masked_even_in_the_event(json_lines: io.StringIO) -> None:
    blob = _canary_blob()
    hexblob = secrets.token_hex(40)
    get_logger("t").warning(f"bad thing {blob}", where=f"in {hexblob}")
    text = json_lines.getvalue()
    assert blob not in text
    assert hexblob not in text


def test_a_fingerprint_outside_a_fingerprint_field_is_masked(json_lines: io.StringIO) -> None:
    """A 64-hex value could be a raw store key; only fingerprint-named fields keep one."""
    value = secrets.token_hex(32)
    get_logger("t").info("e", note=value, sha256=value)
    event = _events(json_lines)[0]
    assert event["note"] == REDACTED
    assert event["sha256"] == value


def test_bytes_values_are_never_rendered(json_lines: io.StringIO) -> None:
    raw = secrets.token_bytes(32)
    get_logger("t").info("e", blob=raw)
    assert _events(json_lines)[0]["blob"] == "[redacted 32 bytes]"


def test_tracebacks_are_scrubbed(json_lines: io.StringIO) -> None:
    pem = _key_pem()
    try:
        raise ValueError(pem)
    except ValueError:
        get_logger("t").exception("failed")
    text = json_lines.getvalue()
    assert "ValueError" in text
    assert "PRIVATE KEY" not in text


def test_context_variables_are_merged_and_scrubbed(json_lines: io.StringIO) -> None:
    with structlog.contextvars.bound_contextvars(peer="admin:root", passphrase=CANARY_PASSPHRASE):
        get_logger("t").info("rpc")
    event = _events(json_lines)[0]
    assert event["peer"] == "admin:root"
    assert CANARY_PASSPHRASE not in json_lines.getvalue()


def test_console_format_is_redacted_too() -> None:
    out = io.StringIO()
    configure_logging("console", stream=out)
    try:
        get_logger("t").info("import", passphrase=CANARY_PASSPHRASE, name="web")
    finally:
        structlog.reset_defaults()
    text = out.getvalue()
    assert "import" in text and "web" in text
    assert CANARY_PASSPHRASE not in text


def test_redact_is_a_plain_processor() -> None:
    event = redact(None, "info", {"event": "x", "passphrase": "p", "n": 1})
    assert event == {"event": "x", "passphrase": REDACTED, "n": 1}
