"""[shell] structlog set-up for a node: JSON or console output and a redaction processor.

The redaction processor is the last line of defence: certsync code never logs key material
or a passphrase, and if it did, :func:`redact` would mask it before rendering.

* a field named like a secret (``passphrase``, ``password``, ``secret``, ``key``, ``token``,
  ``p12`` ..., matched per ``_``-separated word, so ``key_type`` and ``has_key`` stay) is
  replaced by ``"[redacted]"``;
* any ``bytes`` value is replaced by ``"[redacted N bytes]"``;
* inside every string (the event, tracebacks, nested values): PEM ``PRIVATE KEY`` and
  ``ENCRYPTED`` blocks, and long base64 or hex runs (32+ characters mixing letter cases or
  letters and digits), are replaced by ``"[redacted]"``. A 64-hex SHA-256 fingerprint is kept
  only under a field whose name says it is one (``sha256``, ``digest``, ``fingerprint``).
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Final, Literal, TextIO

import structlog

__all__ = ["REDACTED", "configure_logging", "get_logger", "redact"]

REDACTED = "[redacted]"

_SECRET_WORDS = frozenset(
    {"passphrase", "password", "passwd", "secret", "key", "keys", "token", "p12", "pkcs12", "pfx"}
)
#: words that are about a key without being one
_SAFE_NAMES = frozenset({"key_type", "has_key", "key_types", "key_matches"})
_FINGERPRINT_WORDS = frozenset({"sha256", "digest", "fingerprint"})

_PEM_SECRET = re.compile(
    r"-----BEGIN ([A-Z0-9 ]*(?:PRIVATE KEY|ENCRYPTED)[A-Z0-9 ]*)-----.*?(?:-----END \1-----|\Z)",
    re.DOTALL,
)
_BLOB = re.compile(r"[A-Za-z0-9+/]{32,}={0,2}")
_HEX_FINGERPRINT = re.compile(r"[0-9a-f]{64}|[0-9A-F]{64}")
#: no PEM block and no blob run fits in fewer characters than this
_SHORTEST_SECRET: Final = 32


def _words(name: str) -> set[str]:
    return set(re.split(r"[_\-.\s]+", name.lower()))


@functools.lru_cache(maxsize=1024)  # field names repeat: decide each once
def _is_secret_name(name: str) -> bool:
    lowered = name.lower()
    if lowered in _SAFE_NAMES:
        return False
    return bool(_words(lowered) & _SECRET_WORDS)


def _looks_like_blob(run: str) -> bool:
    classes = sum(
        (
            any(c.islower() for c in run),
            any(c.isupper() for c in run),
            any(c.isdigit() for c in run),
            any(c in "+/=" for c in run) and not run.startswith("/"),
        )
    )
    return classes >= 2


def _scrub_text(text: str, *, fingerprints_ok: bool) -> str:
    if len(text) < _SHORTEST_SECRET:  # most values: names, states, short messages
        return text
    text = _PEM_SECRET.sub(REDACTED, text)

    def blob(match: re.Match[str]) -> str:
        run = match.group(0)
        if fingerprints_ok and _HEX_FINGERPRINT.fullmatch(run):
            return run
        return REDACTED if _looks_like_blob(run) else run

    return _BLOB.sub(blob, text)


def _scrub(value: Any, *, fingerprints_ok: bool) -> Any:
    if isinstance(value, str):
        return _scrub_text(value, fingerprints_ok=fingerprints_ok)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"[redacted {len(value)} bytes]"
    if isinstance(value, Mapping):
        return {k: _scrub_field(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v, fingerprints_ok=fingerprints_ok) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    # anything else is rendered with repr() later; scrub that text now
    return _scrub_text(repr(value), fingerprints_ok=fingerprints_ok)


@functools.lru_cache(maxsize=1024)
def _names_fingerprint(name: str) -> bool:
    return bool(_words(name) & _FINGERPRINT_WORDS)


def _scrub_field(name: str, value: Any) -> Any:
    if _is_secret_name(name):
        return REDACTED
    return _scrub(value, fingerprints_ok=_names_fingerprint(name))


#: values that cannot hold a secret whatever their field (a string may, when long enough)
_PLAIN_TYPES: Final = frozenset({int, float, bool, type(None)})


@functools.lru_cache(maxsize=1024)
def _field_rule(name: str) -> tuple[bool, bool]:
    """(is a secret's name, may hold a fingerprint) for a field name; ``event`` is neither."""
    if name == "event":
        return False, False
    return _is_secret_name(name), _names_fingerprint(name)


def redact(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask secrets by field name and key-like content by value.

    Per field, the cheap cases first (a line per TLS request goes through here): a short
    string or a number stays as it is unless its field is named like a secret; so does a
    64-hex fingerprint under a fingerprint's name. Everything else is scrubbed in full.
    """
    for name, value in event_dict.items():  # values replaced in place: no key added or removed
        secret, fingerprints_ok = _field_rule(str(name))
        if secret:
            event_dict[name] = REDACTED
            continue
        kind = type(value)
        if kind is str:
            if len(value) < _SHORTEST_SECRET or (
                fingerprints_ok and len(value) == 64 and _HEX_FINGERPRINT.fullmatch(value)
            ):
                continue
        elif kind in _PLAIN_TYPES:
            continue
        event_dict[name] = _scrub(value, fingerprints_ok=fingerprints_ok)
    return event_dict


def processors(fmt: Literal["json", "console"]) -> list[Any]:
    """The processor chain; redaction runs after tracebacks are formatted, before rendering."""
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact,
        renderer,
    ]


def configure_logging(
    fmt: Literal["json", "console"] = "json",
    *,
    stream: TextIO | None = None,
    level: int = logging.INFO,
) -> None:
    """Configure structlog for a node process: one line per event on ``stream`` (stderr)."""
    structlog.configure(
        processors=processors(fmt),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A structlog logger with ``logger=name`` bound."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger().bind(logger=name)
    return logger
