"""The coverage gate at the point of change, on the primary (the fixtures of test_service:
one real node p1 of a cluster p1 + b1, gRPC with mTLS, TLS endpoint).

A change that would leave the default not covering every required name is refused (exit 1,
each uncovered name with its nodes), and nothing changes; --force applies it, says and audits
every check it overrode, and marks the set to be pushed forced. A background change (a staged
CA change falling due) that would break coverage is skipped and audited."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import pytest
import structlog

from node.api import certsync_pb2
from node.errors import CoverageError
from node.guard import FORCED_DEFAULT_KEY, NO_DEFAULT
from tests.node import test_service as svc

cluster_dir = svc.cluster_dir
node = svc.node
Node = svc.Node

COVERING = ["support.example.com", "*.example.com"]
NARROW = ["support.example.com", "p1.example.com"]  # b1.example.com is left out


async def _with_default(n: Node, names: list[str] = COVERING) -> str:
    key = svc._key()
    cert = svc._cert(key, names)
    async with n.client() as c:
        await c.import_files([("d.pem", svc._pem(cert, key))], make_default=True,
                             confirm_ca_change=True)
    return svc._sha(cert)


async def _stored_narrow(n: Node, **kwargs: int) -> str:
    key = svc._key()
    cert = svc._cert(key, NARROW, **kwargs)  # type: ignore[arg-type]
    async with n.client() as c:
        await c.import_files([("n.pem", svc._pem(cert, key))])
    return svc._sha(cert)


async def _forced_audit(n: Node) -> list[Mapping[str, Any]]:
    return [e.detail for e in await n.app.store.audit_log() if e.action == "change.forced"]


async def test_an_uncovering_default_is_refused_and_nothing_changes(node: Node) -> None:
    good = await _with_default(node)
    narrow = await _stored_narrow(node)
    async with node.client() as c:
        with pytest.raises(CoverageError) as err:
            await c.set_default(narrow, confirm_ca_change=True)
        assert err.value.exit_code == 1
        assert "b1.example.com (node b1)" in str(err.value)
        assert "p1.example.com" not in str(err.value)
        assert (await c.sni_lookup(None)).sha256 == good
    assert svc._served_sha(node.tls_port, None) == good
    assert await _forced_audit(node) == []


async def test_a_covering_default_passes_the_gate_without_audit(node: Node) -> None:
    """Twin: nothing to override, nothing audited as forced."""
    await _with_default(node)
    other = await _with_default(node, ["support.example.com", "p1.example.com",
                                       "b1.example.com"])
    assert svc._served_sha(node.tls_port, None) == other
    assert await _forced_audit(node) == []


async def test_force_names_every_check_it_overrode_and_marks_the_set(node: Node) -> None:
    await _with_default(node)
    old = await _stored_narrow(node, days=10)
    node.app._clock = lambda: svc.NOW + dt.timedelta(days=30)
    async with node.client() as c:
        warnings = await c.set_default(old, force=True, confirm_ca_change=True)
    assert any("--force overrode the expiry, coverage checks" in w and "b1.example.com" in w
               for w in warnings), warnings
    assert svc._served_sha(node.tls_port, None) == old
    [detail] = await _forced_audit(node)
    assert detail["overrode"] == ["expiry", "coverage"]
    assert detail["uncovered"] == ["b1.example.com"]
    assert await node.app.store.get_meta(FORCED_DEFAULT_KEY) == old


@pytest.mark.parametrize("force", [False, True])
async def test_create_self_signed_default_goes_through_the_gate(node: Node, force: bool) -> None:
    good = await _with_default(node)
    req = certsync_pb2.CreateSelfSignedRequest(
        name="n", key_type="ec-p256", subject=certsync_pb2.Subject(common_name="n"),
        sans=NARROW, make_default=True, force=force)
    async with node.client() as c:
        if not force:
            with pytest.raises(CoverageError, match=r"b1\.example\.com"):
                await c.create_self_signed(req)
            assert len(await c.list_certificates()) == 1
            assert (await c.sni_lookup(None)).sha256 == good
        else:
            resp = await c.create_self_signed(req)
            assert any("coverage" in w for w in resp.warnings)
            assert (await c.sni_lookup(None)).sha256 == resp.certificate.sha256


@pytest.mark.parametrize("force", [False, True])
async def test_deleting_the_default_goes_through_the_gate(node: Node, force: bool) -> None:
    sha = await _with_default(node)
    async with node.client() as c:
        if not force:
            with pytest.raises(CoverageError) as err:
                await c.delete(sha)
            for name in ("support.example.com", "p1.example.com", "b1.example.com"):
                assert name in str(err.value)
            assert [x.sha256 for x in await c.list_certificates()] == [sha]
        else:
            warnings = await c.delete(sha, force=True)
            assert warnings and "coverage" in warnings[0]
            assert await c.list_certificates() == []
            assert await node.app.store.get_meta(FORCED_DEFAULT_KEY) == NO_DEFAULT


async def test_a_renewal_of_a_forced_default_breaks_nothing_and_becomes_default(
        node: Node) -> None:
    """A default forced past the gate is renewed by an import without --default (same names,
    later expiry): the renewal uncovers nothing the current default covers, so it passes."""
    key = svc._key()
    first = svc._cert(key, NARROW)
    async with node.client() as c:
        await c.import_files([("a.pem", svc._pem(first, key))], make_default=True, force=True)
        renewal = svc._cert(key, NARROW, days=200)
        resp = await c.import_files([("r.pem", svc._pem(renewal, key))])
        assert (await c.sni_lookup(None)).sha256 == svc._sha(renewal)
    assert any("renews" in w for w in [*resp.warnings, *resp.notices])


@pytest.mark.parametrize("covers", [False, True])
async def test_a_staged_ca_change_that_would_uncover_is_skipped(node: Node, covers: bool) -> None:
    good = await _with_default(node)
    names = COVERING if covers else NARROW
    key = svc._key()
    cert = svc._cert(key, names, days=200)
    async with node.client() as c:
        await c.import_files([("s.pem", svc._pem(cert, key))])
    staged = svc._sha(cert)
    now = dt.datetime.now(dt.UTC)
    await node.app.lifecycle.stage(staged, "1h", actor="test", now=now)
    with structlog.testing.capture_logs() as logs:
        report = await node.app.lifecycle.tick(now + dt.timedelta(hours=2))
    audit = [e for e in await node.app.store.audit_log() if e.action == "lifecycle.change_skipped"]
    if covers:
        assert report.switched == staged and audit == []
        assert svc._served_sha(node.tls_port, None) == staged
    else:
        assert report.switched is None
        assert audit and audit[0].detail["uncovered"] == ["b1.example.com"]
        assert any(e["event"] == "lifecycle.change_skipped" for e in logs)
        assert svc._served_sha(node.tls_port, None) == good
        assert await node.app.lifecycle.pending() is None
