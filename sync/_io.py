"""[shell] Small shell helpers for the CLI: bounded file reads, passphrase files, JSON output."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from node import limits
from node.errors import BadInput

__all__ = ["MAX_INPUT_BYTES", "print_json", "read_input_file", "read_passphrase_file"]

#: no certificate, key, bundle or PKCS#12 an admin meets is anywhere near this; a larger
#: file is refused before it is read, so memory stays bounded. Shared with the node's gRPC
#: message limit (node.limits), so what the CLI reads the node accepts.
MAX_INPUT_BYTES = limits.MAX_INPUT_BYTES
_MAX_PASSPHRASE_BYTES = 64 * 1024


def _read_bounded(path: str, limit: int, what: str) -> bytes:
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError as err:
        raise BadInput(f"{what} {path!r} does not exist; check the path") from err
    except IsADirectoryError as err:
        raise BadInput(f"{what} {path!r} is a directory; give a file") from err
    except OSError as err:
        raise BadInput(
            f"cannot read {what} {path!r}: {err.strerror}; check the path and permissions"
        ) from err
    if len(data) > limit:
        raise BadInput(
            f"{what} {path!r} is larger than {limit // (1024 * 1024) or limit} "
            f"{'MiB' if limit >= 1024 * 1024 else 'bytes'}; "
            "no certificate or key file is that big, "
            "check that this is the right file"
        )
    return data


def read_input_file(path: str) -> bytes:
    """Read a certificate/key/bundle file, refusing anything over ``MAX_INPUT_BYTES``."""
    return _read_bounded(path, MAX_INPUT_BYTES, "file")


def read_passphrase_file(path: str) -> bytes:
    """Read a passphrase file: its content, minus one trailing ``\\n`` or ``\\r\\n``."""
    data = _read_bounded(path, _MAX_PASSPHRASE_BYTES, "passphrase file")
    if data.endswith(b"\r\n"):
        return data[:-2]
    if data.endswith(b"\n"):
        return data[:-1]
    return data


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
