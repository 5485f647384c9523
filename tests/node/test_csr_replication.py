"""``sync.csr_replication.receive_requests``: who may send CSRs, and to whom (issue 11).

The receiver here is a real store behind the few replica fields the function reads; every
refusal leaves the CSRs as they were and writes an audit row, and its twin is accepted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from node.api import certsync_pb2
from node.errors import PermissionDenied, StaleEpoch, TransferRejected
from node.identity import Identity
from node.linking import requests_digest
from node.model import PrivateKey
from node.store import Store
from node.text import stored_time
from sync.csr_replication import pair_targets, receive_requests
from sync.receiver import Replica
from sync.topology import Topology
from sync.transfer import TransferContext, unwrap_csr_key, wrap_csr_key

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CLUSTER = "c-1"
NODE_KEY = ec.generate_private_key(ec.SECP256R1())


@dataclass
class _Spec:
    role: str


@dataclass
class _Topology:
    cluster_id: str
    roles: dict[str, str]

    def node(self, name: str) -> _Spec:
        return _Spec(self.roles[name])


@dataclass
class _Replica:
    """The fields of :class:`sync.receiver.Replica` that ``receive_requests`` reads."""

    name: str
    store: Store
    topology: _Topology
    epoch: int = 2
    primary: str = "p1"
    now: datetime = T0

    def open_csr_key(self, ctx: TransferContext, **kw: object) -> PrivateKey:
        return unwrap_csr_key(ctx, NODE_KEY, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "s.sqlite3", bytes(32))
    try:
        yield s
    finally:
        await s.close()


def _push(recipient: str = "b1", *, epoch: int = 2, sender: str = "p1"
          ) -> certsync_pb2.PushRequestsRequest:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "a.test")]))
           .sign(key, hashes.SHA256())).public_bytes(serialization.Encoding.PEM)
    digest = requests_digest([("r1", None)])
    ctx = TransferContext(cluster_id=CLUSTER, epoch=epoch, revision=1, sender=sender,
                          recipient=recipient)
    return certsync_pb2.PushRequestsRequest(
        epoch=epoch, revision=1, sender=sender, requests_digest=digest,
        requests=[certsync_pb2.ReplicatedRequest(
            id="r1", name="site", pem=pem.decode(), created_at=stored_time(T0),
            wrapped_key=wrap_csr_key(ctx, NODE_KEY.public_key(), csr_id="r1", pem=pem,
                                     key=key, set_digest=digest))])


def _replica(store: Store, name: str = "b1") -> Replica:
    topology = _Topology(CLUSTER, {"p1": "primary", "b1": "backup", "t1": "traffic"})
    return cast(Replica, _Replica(name=name, store=store, topology=topology))


P1 = Identity(kind="node", name="p1", cluster_id=CLUSTER)


async def test_the_backup_stores_the_primarys_requests(store: Store) -> None:
    digest = await receive_requests(_replica(store), _push(), P1)
    assert [c.id for c in await store.list_csrs()] == ["r1"]
    assert digest == await store.requests_digest()


@pytest.mark.parametrize(
    ("name", "identity", "push", "error"),
    [
        ("t1", P1, _push("t1"), PermissionDenied),  # a traffic node holds no requests
        ("b1", Identity("node", "t1", CLUSTER), _push(sender="t1"), PermissionDenied),
        ("b1", Identity("admin", "ops", CLUSTER), _push(), PermissionDenied),
        ("b1", Identity("node", "t1", CLUSTER), _push(), PermissionDenied),  # as another
        ("b1", P1, _push(epoch=1), StaleEpoch),  # a replaced primary
        ("b1", P1, _push("t1"), TransferRejected),  # sealed for another node
    ],
)
async def test_refused_pushes_change_nothing_and_are_audited(
    store: Store, name: str, identity: Identity, push: certsync_pb2.PushRequestsRequest,
    error: type[Exception],
) -> None:
    with pytest.raises(error):
        await receive_requests(_replica(store, name), push, identity)
    assert await store.list_csrs() == []
    assert (await store.audit_log())[0].action == "replication.refused"


def test_the_pair_is_the_primary_and_the_backup() -> None:
    # pair_targets reads the topology's primary and backup only
    spec_p = _Named("p1")
    spec_b = _Named("b1")
    fake = cast(Topology, _Pair(spec_p, spec_b))
    assert pair_targets(fake, "p1") == ("b1",)
    assert pair_targets(fake, "b1") == ("p1",)
    assert pair_targets(fake, "t1") == ("p1", "b1")
    assert pair_targets(cast(Topology, _Pair(spec_p, None)), "p1") == ()


@dataclass
class _Named:
    name: str


@dataclass
class _Pair:
    primary: _Named
    backup: _Named | None
