"""[shell] The other nodes as the replicator sees them: addresses and the public key their
transfer blobs are wrapped for (read from each node's ``node.pem``); and :func:`follow`, how a
non-primary learns of a higher epoch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from node.errors import CertsyncError, ConfigError, NotFound, PermissionDenied
from sync.receiver import Replica, promotion_from_msg
from sync.topology import Topology

__all__ = ["Peer", "follow", "peers_from_topology"]

_log = structlog.get_logger("sync.replicator")


@dataclass(frozen=True)
class Peer:
    """Where another node is, and the public key its transfer blobs are wrapped for."""

    name: str
    grpc_address: str
    tls_address: str
    public_key: ec.EllipticCurvePublicKey = field(repr=False)


def _public_key(path: Path, name: str) -> ec.EllipticCurvePublicKey:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read node {name!r}'s certificate {str(path)!r}; check "
                          "cluster.toml (run 'certsync cluster init' again if it is lost)") from err
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError(f"node {name!r}'s certificate {str(path)!r} has no EC key; "
                          "re-issue it with 'certsync cluster init'")
    return key


def peers_from_topology(topology: Topology) -> dict[str, Peer]:
    """Every node of ``topology`` as a :class:`Peer` (reads each ``node.pem``)."""
    return {
        spec.name: Peer(spec.name, spec.grpc_address, spec.tls_address,
                        _public_key(spec.cert_path, spec.name))
        for spec in topology.nodes
    }



async def follow(replica: Replica, client_for: Callable[[str], Any],
                 peers: Mapping[str, Peer]) -> None:
    """Not the primary: adopt a verified higher epoch from the nodes that may be primary
    (the topology's primary and backup, and the primary we know). Everyone else is
    fenced by the new primary's pushes, which carry its promotion."""
    topology = replica.topology
    candidates = {topology.primary.name, replica.primary}
    if topology.backup is not None:
        candidates.add(topology.backup.name)
    candidates.discard(replica.name)

    async def ask(name: str) -> None:
        try:
            state = await client_for(name).get_state()
            if state.epoch > replica.epoch and state.HasField("promotion"):
                await replica.adopt(promotion_from_msg(state.promotion), actor=f"node:{name}")
        except (CertsyncError, NotFound, PermissionDenied) as err:
            _log.debug("replication.follow_skipped", node=name, error=type(err).__name__)

    await asyncio.gather(*(ask(n) for n in sorted(candidates) if n in peers))
