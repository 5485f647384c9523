"""[shell] Where a changing command goes: the primary of the highest verified epoch.

Only the primary of the current epoch changes the replicated set (any other node refuses
with :class:`~node.errors.NotPrimary`). Without ``--node``, :func:`call_primary` asks every
node of the topology for its state (concurrently, short deadline), keeps the promotions that
verify against the cluster CA (:func:`sync.promotion.highest_verified`: a node claiming an
epoch it cannot prove is ignored) and sends the call to the primary of the highest epoch --
after ``promote b1`` that is b1, not the primary ``cluster.toml`` names. When it differs from
the configured primary, one ``certsync: note:`` line on stderr says which node was used.
``--node NAME`` still picks a node explicitly (and that node refuses if it is not the
primary). No node answering is :class:`~node.errors.NodeUnreachable` (exit 2).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from cryptography import x509

from node.api import certsync_pb2
from node.errors import CertsyncError, ConfigError, NodeUnreachable
from sync.client import DEFAULT_TIMEOUT, NodeClient, admin_config, admin_target
from sync.config import AdminConfig
from sync.promotion import Promotion, highest_verified, initial_promotion
from sync.receiver import promotion_from_msg

__all__ = ["STATE_TIMEOUT", "call_primary", "locate_primary"]

STATE_TIMEOUT: Final = 5.0

_T = TypeVar("_T")


async def _state(config: AdminConfig, name: str,
                 rpc_timeout: float) -> certsync_pb2.NodeState | None:
    try:
        async with NodeClient(admin_target(config, name), timeout=rpc_timeout) as client:
            return await client.get_state()
    except CertsyncError:
        return None


def _ca_cert(config: AdminConfig) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(config.ca_cert_path.read_bytes())
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read the cluster CA certificate "
                          f"{str(config.ca_cert_path)!r} named in {str(config.path)!r}; use "
                          "the files 'certsync cluster init' wrote") from err


async def locate_primary(config: AdminConfig, *,
                         rpc_timeout: float = STATE_TIMEOUT) -> Promotion:
    """The verified promotion of the highest epoch the reachable nodes report (epoch 1: the
    topology's primary); :class:`NodeUnreachable` when no node answers."""
    topology = config.topology
    states = await asyncio.gather(*(_state(config, n, rpc_timeout) for n in topology.names))
    answered = [s for s in states if s is not None]
    if not answered:
        raise NodeUnreachable(
            f"no node of cluster {topology.cluster_id!r} answered, so the primary is unknown; "
            "start the nodes or name one with --node NAME")
    initial = initial_promotion(topology.cluster_id, topology.primary.name)
    reported = [promotion_from_msg(s.promotion) for s in answered if s.HasField("promotion")]
    best = highest_verified([initial, *reported], ca_cert=_ca_cert(config),
                            cluster_id=topology.cluster_id,
                            initial_primary=topology.primary.name)
    return best if best is not None else initial


def call_primary(
    config_path: str | None,
    node: str | None,
    fn: Callable[[NodeClient], Awaitable[_T]],
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> _T:
    """Run the changing call ``fn`` against ``node``, or without one against the primary of
    the highest verified epoch (a stderr note when that is not the configured primary)."""
    config = admin_config(config_path)

    async def run() -> _T:
        name = node
        if name is None:
            found = await locate_primary(config)
            name = found.primary
            configured = config.topology.primary.name
            if name != configured:
                sys.stderr.write(f"certsync: note: using node {name!r}, the primary of epoch "
                                 f"{found.epoch} (cluster.toml names {configured!r})\n")
        async with NodeClient(admin_target(config, name), timeout=timeout) as client:
            return await fn(client)

    return asyncio.run(run())
