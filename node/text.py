"""[core] Text of certificates and times: the one home of the common name and the time formats.

* :func:`rfc3339` -- ``YYYY-MM-DDTHH:MM:SSZ`` in UTC, the format of the gRPC API and the
  lifecycle state (``""`` for no time);
* :func:`stored_time` / :func:`parse_stored_time` -- the store's column format, UTC with
  microseconds (``...SS.ffffffZ``), which refuses a naive time;
* :func:`common_name` -- the first CN of a certificate's subject (``""`` when it has none).
"""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography import x509
from cryptography.x509.oid import NameOID

__all__ = ["common_name", "parse_stored_time", "rfc3339", "stored_time"]


def rfc3339(when: datetime | None) -> str:
    """``when`` in UTC as ``YYYY-MM-DDTHH:MM:SSZ``; ``""`` for ``None``."""
    if when is None:
        return ""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stored_time(when: datetime) -> str:
    """``when`` as the store writes it (UTC, microseconds, ``Z``); :class:`ValueError` for a
    naive time (a bug of the caller, not bad input)."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"time {when!r} has no time zone; pass an aware UTC datetime")
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_stored_time(text: str) -> datetime:
    """What :func:`stored_time` wrote, as an aware UTC datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def common_name(cert: x509.Certificate) -> str:
    """The first common name of the certificate's subject, ``""`` when there is none."""
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else ""
    return value if isinstance(value, str) else value.decode(errors="replace")
