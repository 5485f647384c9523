"""The probe (sync.probe): a real handshake per question, bounded by its timeout.

A node that accepts a connection but never answers (a stopped process: the kernel still
completes the TCP handshake) must come back as unreachable, and one stuck node must not make
the probes of healthy nodes queued behind it fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest

from node.certkeys import cert_sha256
from node.errors import NodeUnreachable
from sync import probe
from tests import pki


def _silent_listener() -> socket.socket:
    """A listening socket nobody accepts from: connects succeed, no byte ever comes back."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


async def test_a_node_that_never_answers_is_unreachable_within_its_timeout() -> None:
    with _silent_listener() as silent:
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(NodeUnreachable, match="no TLS handshake"):
            await probe.served_sha256(address, None, timeout=0.3)
        assert time.monotonic() - started < 3.0


async def test_a_refused_connection_is_unreachable() -> None:
    with _silent_listener() as closed:
        port = closed.getsockname()[1]
    with pytest.raises(NodeUnreachable, match="is the node running"):
        await probe.served_sha256(f"127.0.0.1:{port}", "example.com", timeout=2)


def _tls_server(tmp_path: Path) -> tuple[socket.socket, str, threading.Thread]:
    """A TLS server answering one handshake (a healthy node); the sha256 of its leaf."""
    chain = pki.make_chain()
    pem = tmp_path / "leaf.pem"
    pem.write_bytes(pki.pem_bundle(chain.leaf.cert, chain.intermediate.cert,
                                   key=chain.leaf.key))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pem)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)

    def serve() -> None:
        conn, _ = sock.accept()
        with contextlib.suppress(OSError), ctx.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)  # until the client closes

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return sock, cert_sha256(chain.leaf.cert), thread


async def test_stuck_nodes_do_not_fail_the_probes_queued_behind_them(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # both probe threads are held by a node that accepts and never answers; the healthy
    # node's probe waits in line for a thread longer than its own timeout, which starts
    # only when it runs: it succeeds (a wait in line is no node's fault)
    monkeypatch.setattr(probe, "PROBE_THREADS", 2)
    monkeypatch.setattr(probe, "_PROBES", None)
    server, sha, thread = _tls_server(tmp_path)
    with _silent_listener() as silent, server:
        stuck = f"127.0.0.1:{silent.getsockname()[1]}"
        healthy = f"127.0.0.1:{server.getsockname()[1]}"
        first = [asyncio.ensure_future(probe.served_sha256(stuck, None, timeout=1.0))
                 for _ in range(2)]
        await asyncio.sleep(0)  # the stuck probes take both threads first
        served = await probe.served_sha256(healthy, None, timeout=0.5)
        results = await asyncio.gather(*first, return_exceptions=True)
    thread.join(timeout=5)
    assert served == sha
    assert all(isinstance(r, NodeUnreachable) for r in results), results
