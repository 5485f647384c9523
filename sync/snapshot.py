"""[core] The primary's replicated set at one moment.

A :class:`Snapshot` is what one rollout pushes: every certificate with its key and chain
(:class:`SetItem`), which one is default, the epoch, revision and digest, and the promotion
that proves the sender is the primary. The replicator (shell) reads it from the store once
per round; coverage of the default is judged here, on plain values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509

from node.formats import cert_sha256
from node.model import PrivateKey
from node.names import CoverageReport, check_all, sans_of
from node.selection import SniEntry
from node.store_rows import cached
from sync.promotion import Promotion

__all__ = ["SetItem", "Snapshot"]


@dataclass(frozen=True)
class SetItem:
    name: str
    cert: x509.Certificate
    key: PrivateKey = field(repr=False)
    chain: tuple[x509.Certificate, ...]
    is_default: bool

    @cached
    def sha256(self) -> str:
        return cert_sha256(self.cert)

    @cached
    def sni_entry(self) -> SniEntry:
        """The item as the SNI index sees it (once per item: a snapshot reuses the items
        of certificates that did not change)."""
        return SniEntry(key=self.sha256, sans=sans_of(self.cert),
                        not_after=self.cert.not_valid_after_utc)


@dataclass(frozen=True)
class Snapshot:
    """The primary's replicated set at one moment."""

    epoch: int
    revision: int
    digest: str
    items: tuple[SetItem, ...]
    default: SetItem | None
    promotion: Promotion

    def coverage(self, required: Sequence[str]) -> CoverageReport | None:
        """The default's coverage of ``required`` (None: there is no default)."""
        if self.default is None:
            return None
        return check_all(sans_of(self.default.cert), list(required))

    def uncovered(self, required: Sequence[str]) -> list[str]:
        report = self.coverage(required)
        if report is None:
            return list(required)
        return [i.hostname for i in report.items if not i.covered]
