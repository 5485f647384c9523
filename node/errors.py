"""[core] The one exception hierarchy of certsync.

Errors carry their data as attributes and a message that is one sentence: what was wrong
(the bad value shown with ``!r``) and what to do. Messages never contain key material or a
passphrase: a wrong-passphrase error names the file, not what was tried.

Errors are converted at three edges only: the gRPC servicer (error -> status code, one
table in ``node.service``), the gRPC client (status -> error, ``sync.client``) and the CLI
(error -> one ``certsync: error:`` line and an exit code, ``sync.cli``). Anything else that
escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AcmeError",
    "AlreadyExists",
    "BadInput",
    "CertsyncError",
    "CheckFailed",
    "ConfigError",
    "Conflict",
    "CoverageError",
    "FormatError",
    "HostnameError",
    "IntegrityError",
    "NodeUnreachable",
    "NotFound",
    "NotPrimary",
    "PassphraseError",
    "PermissionDenied",
    "StaleEpoch",
    "StoreBusy",
    "StoreFull",
    "TransferRejected",
]


class CertsyncError(Exception):
    """Base of every error certsync raises on purpose.

    ``exit_code`` follows the CLI contract: 2 bad input or usage, 1 a check that ran and
    failed.
    """

    exit_code: int = 2

    def __init__(self, message: str, **data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def __str__(self) -> str:
        return self.message


class BadInput(CertsyncError):
    """The user gave something unusable (file, flag value, hostname)."""


class FormatError(BadInput):
    """A file's content is not any accepted format, or is damaged."""

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(message, source=source)
        self.source = source


class PassphraseError(BadInput):
    """A passphrase is missing or wrong. The message names the file, never the passphrase."""

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(message, source=source)
        self.source = source


class HostnameError(BadInput):
    """A hostname given to certsync is not a valid DNS name or IP literal."""

    def __init__(self, message: str, *, hostname: str) -> None:
        super().__init__(message, hostname=hostname)
        self.hostname = hostname


class ConfigError(BadInput):
    """A configuration file is missing, unreadable or inconsistent."""


class NotFound(BadInput):
    """A certificate, request or node named by the user does not exist."""


class AlreadyExists(BadInput):
    """The thing to create exists already."""


class Conflict(BadInput):
    """The change is refused because of the current state (e.g. deleting the default)."""


class NotPrimary(Conflict):
    """A store-changing call reached a node that is not the primary of the current epoch;
    ``primary`` and ``epoch`` say which node is (as far as this node knows)."""

    def __init__(self, message: str, *, node: str = "", primary: str = "",
                 epoch: int = 0) -> None:
        super().__init__(message, node=node, primary=primary, epoch=epoch)
        self.node = node
        self.primary = primary
        self.epoch = epoch


class PermissionDenied(CertsyncError):
    """The caller's identity may not do this (roles come from the topology)."""


class NodeUnreachable(CertsyncError):
    """A node did not answer."""

    def __init__(self, message: str, *, node: str | None = None) -> None:
        super().__init__(message, node=node)
        self.node = node


class StaleEpoch(CertsyncError):
    """A push from a lower epoch than the receiver's was refused (fencing)."""

    def __init__(self, message: str, *, epoch: int, current: int) -> None:
        super().__init__(message, epoch=epoch, current=current)
        self.epoch = epoch
        self.current = current


class TransferRejected(CertsyncError):
    """A replication blob was refused: replayed, misdirected, altered or failing a check."""


class IntegrityError(CertsyncError):
    """Stored data failed authentication (a copied or altered row)."""


class CheckFailed(CertsyncError):
    """A check ran and failed (exit status 1)."""

    exit_code = 1


class CoverageError(CheckFailed):
    """A certificate leaves required hostnames uncovered; ``report`` holds the details."""

    def __init__(self, message: str, *, report: Any) -> None:
        super().__init__(message, report=report)
        self.report = report


class AcmeError(CertsyncError):
    """An ACME request failed (directory unreachable, validation or finalisation refused).

    ``hostname`` is the name requested; ``retryable`` is False when asking again cannot help
    (e.g. the CA refuses the name), so the renewer stops backing off and alerts instead.
    """

    def __init__(self, message: str, *, hostname: str, retryable: bool = True) -> None:
        super().__init__(message, hostname=hostname, retryable=retryable)
        self.hostname = hostname
        self.retryable = retryable


class StoreBusy(CertsyncError):
    """The store's write lock stayed held by another connection past the bounded wait; the
    change was not made and asking again may work."""


class StoreFull(CertsyncError):
    """The node's data volume had no space left for a change; the change was not made."""
