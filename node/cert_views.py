"""[shell] The store API's certificate answers, with each chain judged over the whole store.

:func:`cert_infos` reads the store once and answers ``CertificateInfo`` messages with the
lifecycle and the chain (:mod:`node.store_chain`) of each certificate; :func:`import_warnings`
judges an import's chain over the store instead of over the imported files alone (issue 11).
Signature checks run off the event loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence

from node import chain as chain_mod
from node.api import certsync_pb2
from node.messages import cert_info
from node.model import Material
from node.renewal import Lifecycle
from node.store import Store
from node.store_chain import chain_state, chain_states, over_the_store

__all__ = ["cert_infos", "import_warnings"]


async def cert_infos(
    store: Store, lifecycle: Lifecycle, now: dt.datetime, shas: Sequence[str] | None = None
) -> list[certsync_pb2.CertificateInfo]:
    """The certificates ``shas`` (``None``: every one, oldest first) as one reading of the
    store: lifecycle and chain over the whole store."""
    view = await store.view()
    statuses = await lifecycle.statuses(now, view, only=None if shas is None else set(shas))
    if shas is None:
        chains = await asyncio.to_thread(chain_states, view)
        return [cert_info(s, statuses.get(s.sha256), chains.get(s.sha256)) for s in view.certs]
    return [cert_info(view.require(sha), statuses.get(sha),
                      await asyncio.to_thread(chain_state, view, sha)) for sha in shas]


async def import_warnings(
    material: Material, warnings: Sequence[str],
    infos: Sequence[certsync_pb2.CertificateInfo], identity_sha: str | None,
) -> list[str]:
    """An import's ``warnings`` with the problems of its files' chain replaced by those of
    the identity's chain as stored now (an intermediate stored before completes it)."""
    alone = await asyncio.to_thread(lambda: chain_mod.analyze(material).problems)
    stored = next((list(i.chain_problems) for i in infos if i.sha256 == identity_sha), None)
    return over_the_store(warnings, alone, stored)
