"""The TLS endpoint against idle, slow and junk clients: caps, shedding, deadlines, counts."""

from __future__ import annotations

import hashlib
import resource
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from node.errors import BadInput, ConfigError
from node.tls import TlsEndpoint
from node.tls_conn import ConnLimits
from sync.cli import main as cli_main
from sync.config import load_node_config
from sync.daemon import tls_endpoint
from tests.node.test_tls import WWW, Certs, _client_ctx, _handshake


@pytest.fixture(scope="module")
def certs() -> Certs:
    return Certs()


def _raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.fail(f"this test needs {need} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


@contextmanager
def _endpoint(certs: Certs, tmp_path: Path, **kw: float) -> Iterator[TlsEndpoint]:
    ep = TlsEndpoint(node_name="idle", workers=2, scratch_dir=tmp_path, **kw)  # type: ignore[arg-type]
    ep.update(certs.all, certs.default.sha256)
    ep.start("127.0.0.1", 0)
    try:
        yield ep
    finally:
        ep.stop()


def _until(what: str, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``predicate`` until it holds (fails the test after ``timeout`` seconds)."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)


def _open_is(ep: TlsEndpoint, count: int) -> Callable[[], bool]:
    return lambda: ep.open_connections == count


def _client_hello() -> bytes:
    """The first flight of a real TLS client (its ClientHello record)."""
    ctx = _client_ctx()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=WWW)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def _still_open(sock: socket.socket) -> bool:
    """True while the server has neither closed nor answered ``sock`` (nothing to read)."""
    sock.setblocking(False)
    try:
        sock.recv(1)  # an answer or the end: either way, no longer waiting
        return False
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False


def _closed_by_server(sock: socket.socket, timeout: float = 10.0) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _get(port: int, sni: str | None, source: str = "127.0.0.1") -> tuple[str, bytes]:
    """Handshake + GET /: (sha256 of the served certificate, the status line)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10,
                                 source_address=(source, 0)) as raw,
        _client_ctx().wrap_socket(raw, server_hostname=sni) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while chunk := tls.recv(4096):
            answer += chunk
    return hashlib.sha256(der).hexdigest(), answer.split(b"\r\n", 1)[0]


def _hold_idle(stack: ExitStack, port: int, count: int) -> list[socket.socket]:
    """``count`` hostile connections in four kinds: silent, half a ClientHello, half-closed
    without a byte, junk. Returns the ones the server has to keep waiting on (the first two
    kinds; the server closes the others as failed handshakes)."""
    hello = _client_hello()
    waiting = []
    for i in range(count):
        s = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
        kind = i % 4
        if kind == 1:
            s.sendall(hello[: len(hello) // 2])
        elif kind == 2:
            s.shutdown(socket.SHUT_WR)
        elif kind == 3:
            s.sendall(b"\x00junk, not a TLS record\r\n" * 3)  # random bytes may start one
        if kind < 2:
            waiting.append(s)
    return waiting


def _idle_and_served(certs: Certs, tmp_path: Path, idle: int, good: int) -> None:
    _raise_fd_limit(2 * idle + 512)
    with _endpoint(certs, tmp_path) as ep, ExitStack() as stack:
        port = ep.address[1]
        waiting = _hold_idle(stack, port, idle)
        junk = idle - len(waiting)
        # every hostile connection reached the server: the junk ones failed, the rest wait
        _until("the idle connections to be accepted",
               lambda: (ep.open_connections, ep.handshakes["failed"]) == (len(waiting), junk))
        names = [WWW, "api.example.test", None] * (good // 3 + 1)
        want = [certs.exact.sha256, certs.wildcard.sha256, certs.default.sha256]
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda n: _get(port, n), names[:good]))
        assert results == [(want[i % 3], b"HTTP/1.1 200 OK") for i in range(good)]
        # served alongside them, not by dropping them (the last good ones may still be closing)
        _until("the good connections to close", _open_is(ep, len(waiting)))
        assert all(_still_open(s) for s in waiting[::50])
        assert ep.handshakes["failed"] == junk


def test_thousand_idle_connections_do_not_stop_good_clients(certs: Certs, tmp_path: Path) -> None:
    _idle_and_served(certs, tmp_path, idle=1000, good=60)


def test_thousand_idle_connections_over_the_cap_are_shed_oldest_first(
    certs: Certs, tmp_path: Path
) -> None:
    # the twin: with a cap below the idle count the server does not hold them all
    _raise_fd_limit(2 * 1000 + 512)
    with _endpoint(certs, tmp_path, max_connections=200) as ep, ExitStack() as stack:
        waiting = _hold_idle(stack, ep.address[1], 1000)
        # junk arriving at the cap sheds too, then fails itself: at most 200 are held
        _until("the idle connections to be handled",
               lambda: ep.handshakes["failed"] + ep.open_connections == 1000)
        assert 100 <= ep.open_connections <= 200
        assert _get(ep.address[1], WWW) == (certs.exact.sha256, b"HTTP/1.1 200 OK")
        assert not any(_still_open(s) for s in waiting[:200])  # the oldest went first
        assert all(_still_open(s) for s in waiting[-50:])


@pytest.mark.slow
def test_many_idle_connections_do_not_stop_good_clients(certs: Certs, tmp_path: Path) -> None:
    _idle_and_served(certs, tmp_path, idle=4000, good=600)


def test_handshake_deadline_closes_a_silent_client(certs: Certs, tmp_path: Path) -> None:
    with (
        _endpoint(certs, tmp_path, handshake_timeout=0.3) as short,
        _endpoint(certs, tmp_path, handshake_timeout=60.0) as long,
        socket.create_connection(short.address) as silent_short,
        socket.create_connection(long.address) as silent_long,
        socket.create_connection(short.address) as half,
    ):
        start = time.monotonic()
        half.sendall(_client_hello()[:10])
        assert _closed_by_server(silent_short)
        assert _closed_by_server(half)
        elapsed = time.monotonic() - start
        assert 0.25 <= elapsed < 5
        assert short.handshakes["failed"] == 2
        # the twin: a long deadline keeps the same silent client, a prompt client is served
        _until("the silent client to be accepted", lambda: long.open_connections == 1)
        assert _still_open(silent_long)
        assert long.handshakes["failed"] == 0
        assert _get(short.address[1], WWW) == (certs.exact.sha256, b"HTTP/1.1 200 OK")


def test_at_the_cap_the_oldest_idle_connections_are_shed_first(
    certs: Certs, tmp_path: Path
) -> None:
    with _endpoint(certs, tmp_path, max_connections=5) as ep, ExitStack() as stack:
        held = []
        for i in range(5):
            held.append(stack.enter_context(socket.create_connection(ep.address)))
            _until(f"connection {i} to be accepted", _open_is(ep, i + 1))
        # a sixth sheds the oldest, and only it
        held.append(stack.enter_context(socket.create_connection(ep.address)))
        assert _closed_by_server(held[0])
        assert all(_still_open(s) for s in held[1:])
        # a good client at the cap is served; it sheds the next oldest
        assert _get(ep.address[1], WWW) == (certs.exact.sha256, b"HTTP/1.1 200 OK")
        assert _closed_by_server(held[1])
        assert all(_still_open(s) for s in held[2:])
        _until("the counts", lambda: ep.handshakes["failed"] == 2)


def test_below_the_cap_nothing_is_shed(certs: Certs, tmp_path: Path) -> None:
    with _endpoint(certs, tmp_path, max_connections=6) as ep, ExitStack() as stack:
        held = [stack.enter_context(socket.create_connection(ep.address)) for _ in range(5)]
        _until("the connections to be accepted", lambda: ep.open_connections == 5)
        assert _get(ep.address[1], WWW) == (certs.exact.sha256, b"HTTP/1.1 200 OK")
        assert all(_still_open(s) for s in held)
        assert ep.handshakes["failed"] == 0


def test_per_address_cap_refuses_the_next_connection(certs: Certs, tmp_path: Path) -> None:
    with _endpoint(certs, tmp_path, max_per_address=3) as ep, ExitStack() as stack:
        held = [stack.enter_context(socket.create_connection(ep.address)) for _ in range(3)]
        _until("the connections to be accepted", lambda: ep.open_connections == 3)
        over = stack.enter_context(socket.create_connection(ep.address))
        assert _closed_by_server(over)  # refused: the new one, not an old one
        assert all(_still_open(s) for s in held)
        with pytest.raises((ssl.SSLError, OSError)):
            _get(ep.address[1], WWW)
        # another address is not held up by this one
        assert _get(ep.address[1], WWW, source="127.0.0.2") == (
            certs.exact.sha256, b"HTTP/1.1 200 OK")
        assert ep.handshakes["failed"] == 2


def test_without_a_per_address_cap_one_address_may_hold_many(
    certs: Certs, tmp_path: Path
) -> None:
    with _endpoint(certs, tmp_path, max_per_address=0) as ep, ExitStack() as stack:
        held = [stack.enter_context(socket.create_connection(ep.address)) for _ in range(4)]
        _until("the connections to be accepted", lambda: ep.open_connections == 4)
        assert all(_still_open(s) for s in held)
        assert _get(ep.address[1], WWW) == (certs.exact.sha256, b"HTTP/1.1 200 OK")
        assert ep.handshakes["failed"] == 0


def test_handshakes_are_counted_by_sni_outcome(certs: Certs, tmp_path: Path) -> None:
    with _endpoint(certs, tmp_path) as ep:
        port = ep.address[1]
        assert dict(ep.handshakes) == {"exact": 0, "wildcard": 0, "default": 0, "failed": 0}
        _handshake(port, WWW)
        _handshake(port, "api.example.test")
        _handshake(port, None)
        _handshake(port, "unknown.other.test")
        with socket.create_connection(ep.address) as junk:
            junk.sendall(b"GET / HTTP/1.1\r\n\r\n")
            assert _closed_by_server(junk)
        want = {"exact": 1, "wildcard": 1, "default": 2, "failed": 1}
        _until("the counts", lambda: dict(ep.handshakes) == want)
        counts = ep.handshakes
        with pytest.raises(TypeError):
            counts["exact"] = 5  # type: ignore[index]
        assert dict(ep.handshakes) == want


def test_a_client_rejecting_the_certificate_counts_as_failed(
    certs: Certs, tmp_path: Path
) -> None:
    # the client aborts with an alert instead of its Finished: the handshake did not complete
    with _endpoint(certs, tmp_path) as ep:
        with pytest.raises(ssl.SSLCertVerificationError):
            _handshake(ep.address[1], WWW, _client_ctx(certs.other_ca))
        _until("the counts", lambda: sum(ep.handshakes.values()) == 1)
        assert ep.handshakes["failed"] == 1 and ep.handshakes["exact"] == 0


@pytest.mark.parametrize(
    ("option", "value"),
    [("handshake_timeout", 0), ("io_timeout", -1.0), ("max_connections", 0),
     ("max_per_address", -1)],
)
def test_bad_limits_are_refused(option: str, value: float) -> None:
    with pytest.raises(BadInput, match=option):
        TlsEndpoint(node_name="x", **{option: value})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- config


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cluster") / "c"
    assert cli_main(["cluster", "init", str(d), "--site", "s.example.com",
                     "--primary", "p1=p1.example.com"]) == 0
    return d


def _node_toml(cluster_dir: Path, extra: str) -> Path:
    path = cluster_dir / "p1" / "node-tls.toml"
    path.write_text(extra + (cluster_dir / "p1" / "node.toml").read_text())
    return path


def test_config_bounds_reach_the_endpoint(cluster_dir: Path) -> None:
    path = _node_toml(cluster_dir, "tls_handshake_timeout = 2.5\ntls_max_connections = 300\n"
                                   "tls_max_per_address = 20\ntls_loops = 3\n"
                                   "tls_access_log = true\n")
    endpoint = tls_endpoint(load_node_config(path))
    assert endpoint.limits == ConnLimits(
        handshake_timeout=2.5, io_timeout=10.0, max_connections=300, max_per_address=20)
    assert endpoint.loops == 3
    assert endpoint.access_log is True
    # the twin: without the keys, the defaults (per-address cap off, one loop)
    default = tls_endpoint(load_node_config(cluster_dir / "p1" / "node.toml"))
    assert default.limits == (
        ConnLimits(handshake_timeout=10.0, max_connections=4096, max_per_address=0))
    assert default.loops == 1
    assert default.access_log is False


@pytest.mark.parametrize(
    ("extra", "key"),
    [("tls_handshake_timeout = 0\n", "tls_handshake_timeout"),
     ('tls_handshake_timeout = "10"\n', "tls_handshake_timeout"),
     ("tls_max_connections = 0\n", "tls_max_connections"),
     ("tls_max_per_address = -1\n", "tls_max_per_address"),
     ("tls_max_per_address = true\n", "tls_max_per_address"),
     ("tls_loops = 0\n", "tls_loops"),
     ('tls_loops = "2"\n', "tls_loops"),
     ("tls_access_log = 1\n", "tls_access_log")],
)
def test_bad_config_bounds_are_one_line_errors(cluster_dir: Path, extra: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key) as err:
        load_node_config(_node_toml(cluster_dir, extra))
    assert "\n" not in str(err.value)
