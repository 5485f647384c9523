"""Only the primary of the current epoch changes the store: every changing RPC elsewhere is
refused with NotPrimary (FAILED_PRECONDITION, exit 2) naming the primary and the epoch, and
nothing changes; reads work on every node. Three real nodes in one process (the fixtures of
test_replication_inproc)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from node.api import certsync_pb2
from node.errors import NotPrimary
from node.formats import cert_sha256
from sync.client import NodeClient
from tests.node import test_replication_inproc as inproc

cluster_dir = inproc.cluster_dir
cluster = inproc.cluster

Cluster = inproc.Cluster
_Change = Callable[[NodeClient], Awaitable[Any]]


def _changes(sha: str) -> dict[str, _Change]:
    """One call per store-changing RPC (each would change the store if accepted)."""
    other = inproc._chain()
    subject = certsync_pb2.Subject(common_name="x.example.com")
    return {
        "import": lambda c: c.import_files([("c.pem", inproc._pem(other))], make_default=True),
        "default": lambda c: c.set_default(sha),
        "delete": lambda c: c.delete(sha, force=True),
        "create": lambda c: c.create_self_signed(certsync_pb2.CreateSelfSignedRequest(
            name="x", key_type="ec-p256", subject=subject, sans=["x.example.com"])),
        "request": lambda c: c.create_request(certsync_pb2.CreateRequestRequest(
            name="x", key_type="ec-p256", subject=subject, sans=["x.example.com"])),
        "stage-ca": lambda c: c.stage_ca_change(sha, "48h"),
    }


async def _store_of(c: Cluster, node: str) -> tuple[Any, ...]:
    state = await inproc._state(c, node)
    certs = sorted(x.sha256 for x in await c.call(node, lambda cl: cl.list_certificates()))
    csrs = await c.call(node, lambda cl: cl.list_requests())
    return (state.set_digest, state.revision, state.default_sha256, tuple(certs), len(csrs),
            state.pending_ca_change.sha256)


@pytest.mark.parametrize("change", list(_changes("0" * 64)))
async def test_a_change_on_a_traffic_node_is_refused_and_changes_nothing(
        cluster: Cluster, change: str) -> None:
    sha = await inproc._import(cluster, inproc._chain())
    assert all(p.in_sync for p in await inproc._replicate(cluster))
    before = await _store_of(cluster, "t1")
    with pytest.raises(NotPrimary) as err:
        await cluster.call("t1", _changes(sha)[change])
    assert err.value.exit_code == 2
    assert (err.value.primary, err.value.epoch) == ("p1", 1)
    assert "'t1' is not the primary of epoch 1" in str(err.value) and "'p1'" in str(err.value)
    assert await _store_of(cluster, "t1") == before
    # reads still work there
    assert (await cluster.call("t1", lambda cl: cl.sni_lookup(None))).sha256 == sha


@pytest.mark.parametrize("change", ["import", "create", "request", "stage-ca"])
async def test_the_same_change_on_the_primary_is_applied(cluster: Cluster, change: str) -> None:
    """Twin: the primary takes it."""
    sha = await inproc._import(cluster, inproc._chain())
    before = await _store_of(cluster, "p1")
    await cluster.call("p1", _changes(sha)[change])
    assert await _store_of(cluster, "p1") != before


async def test_a_demoted_primary_refuses_changes_and_the_new_one_takes_them(
        cluster: Cluster) -> None:
    await inproc._import(cluster, inproc._chain())
    assert all(p.in_sync for p in await inproc._replicate(cluster))
    promotion = inproc._admin_promotion(cluster, epoch=2, primary="b1")
    await cluster.call("b1", lambda cl: cl.promote(promotion))
    await cluster.call("p1", lambda cl: cl.announce(promotion))
    assert (await inproc._state(cluster, "p1")).role == "backup"
    before = await _store_of(cluster, "p1")
    late = inproc._chain()
    with pytest.raises(NotPrimary) as err:
        await inproc._import(cluster, late, "p1")
    assert (err.value.primary, err.value.epoch) == ("b1", 2)
    assert "primary is 'b1'" in str(err.value)
    assert await _store_of(cluster, "p1") == before
    # the new primary takes the change
    assert await inproc._import(cluster, late, "b1") == cert_sha256(late.leaf.cert)
