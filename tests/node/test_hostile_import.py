"""A hostile import is parsed in the worker process (issue 14): the in-process node keeps
answering gRPC (health, GetState) and completing TLS handshakes meanwhile, and an import that
overruns the worker's deadline is killed and answered with INVALID_ARGUMENT."""

# ruff: noqa: F811 - pytest fixtures imported from test_service are parameters by name

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from grpc_health.v1 import health_pb2, health_pb2_grpc

from node import sandbox
from node.errors import BadInput, PassphraseError
from node.limits import MAX_INPUT_BYTES
from sync._io import read_input_file
from tests.node.test_service import (  # noqa: F401 - the fixtures are used by name
    Node,
    _cert,
    _key,
    _pem,
    _served_sha,
    cluster_dir,
    node,
)
from tests.p12craft import p12, plain_safe, shrouded_bag

PW = b"hostile-import-pw"


def _costly() -> bytes:
    """Passes the pre-check (11.6 M rounds of MAX_KDF_WORK), then keeps OpenSSL busy for
    seconds: the counts are rewritten, so each passphrase tried runs every bag in vain."""
    key = _key()
    return p12(*[plain_safe(shrouded_bag(key, PW, 2_900_000)) for _ in range(2)])


@pytest.fixture
async def shared_sandbox() -> AsyncIterator[sandbox.ParseSandbox]:
    box = sandbox.default()
    deadline = box.deadline
    try:
        yield box
    finally:
        box.deadline = deadline
        await sandbox.close_default()


async def _health(node: Node) -> int:
    target = node.target()
    creds = grpc.ssl_channel_credentials(target.ca_pem, target.key_pem, target.cert_pem)
    async with grpc.aio.secure_channel(
        target.address, creds, options=(("grpc.ssl_target_name_override", target.server_name),)
    ) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="certsync.v1.CertStore"), timeout=5
        )
    return int(answer.status)


async def test_the_node_answers_while_a_hostile_import_is_parsed(
    node: Node, shared_sandbox: sandbox.ParseSandbox
) -> None:
    async with node.client() as c:
        key = _key()
        await c.import_files([("s.pem", _pem(_cert(key, ["s.example.com"]), key))],
                             make_default=True, force=True)  # not the gate's test  # fmt: skip
        served = _served_sha(node.tls_port, "s.example.com")
        importing = asyncio.create_task(c.import_files([("hostile.p12", _costly())],
                                                       passphrase=PW))
        answered: list[float] = []
        while not importing.done() and len(answered) < 3:
            started = time.monotonic()
            assert await _health(node) == health_pb2.HealthCheckResponse.SERVING
            state = await c.get_state()
            assert state.default_sha256 == served
            assert await asyncio.to_thread(_served_sha, node.tls_port, "s.example.com") == served
            answered.append(time.monotonic() - started)
        still_parsing = not importing.done()
        with pytest.raises(PassphraseError):  # the parse ran to its own, typed end
            await importing
    assert still_parsing, "the import ended before the node was asked anything"
    assert len(answered) == 3
    assert max(answered) < 1.5, answered  # health + GetState + a TLS handshake each round


async def test_an_import_over_the_deadline_is_killed_and_invalid(
    node: Node, shared_sandbox: sandbox.ParseSandbox
) -> None:
    shared_sandbox.deadline = 0.5
    async with node.client() as c:
        started = time.monotonic()
        with pytest.raises(BadInput, match="PARSE_DEADLINE_SECONDS") as info:
            await c.import_files([("hostile.p12", _costly())], passphrase=PW)
        assert time.monotonic() - started < 10
        assert "hostile.p12" in str(info.value)
        workers = shared_sandbox.started
        # negative twin: a normal import right after is read by a fresh worker and stored
        key = _key()
        cert = _cert(key, ["after.example.com"])
        blob = pkcs12.serialize_key_and_certificates(
            b"x", key, cert, None, serialization.BestAvailableEncryption(PW)
        )
        shared_sandbox.deadline = 30
        resp = await c.import_files([("ok.p12", blob)], passphrase=PW)
        assert resp.identity_sha256
        assert shared_sandbox.started == workers + 1


async def test_a_six_mib_bundle_is_imported_in_one_message(
    node: Node, shared_sandbox: sandbox.ParseSandbox
) -> None:
    """The CLI and the node share one size limit (node.limits): a 6 MiB file the CLI reads is
    not refused by the node's gRPC message limit (it was 4 MiB)."""
    key = _key()
    cert = _cert(key, ["big.example.com"])
    filler = b"".join(b"comment line %07d of a long bundle text\n" % i for i in range(160_000))
    data = filler + _pem(cert, key)
    assert 6 * 2**20 <= len(data) < MAX_INPUT_BYTES
    async with node.client() as c:
        resp = await c.import_files([("big.pem", data)])
    assert resp.identity_sha256


def test_past_the_limit_the_cli_refuses_in_one_line(tmp_path: Path) -> None:
    """Twin: one byte over MAX_INPUT_BYTES is refused before it is sent, saying so."""
    path = tmp_path / "huge.pem"
    path.write_bytes(b"x" * (MAX_INPUT_BYTES + 1))
    with pytest.raises(BadInput, match="larger than 8 MiB") as info:
        read_input_file(str(path))
    assert "\n" not in str(info.value)
