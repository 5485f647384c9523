"""[shell] The TLS endpoint's connections: non-blocking handshakes on event loops, bounded.

:class:`ConnServer` serves the listening socket of :class:`node.tls.TlsEndpoint` with a few
event-loop threads ("loops", one ``epoll`` each). Every loop watches the shared listener
(``EPOLLEXCLUSIVE``: the kernel wakes one loop per new connection) and drives the
connections it accepted through their phases without ever blocking on a client:

    first byte -> handshake -> read the request head -> send the answer -> [linger] -> closed

A connection gets its TLS layer only when its first byte starts a TLS handshake record
(anything else is closed at once, without OpenSSL). A handshake step is one non-blocking
``do_handshake`` (OpenSSL releases the GIL for the crypto, so two loops use two cores); a
client that sends nothing, half a ClientHello or junk costs at most one idle socket, never
a thread. Bounds, all per :class:`ConnLimits`:

* a **handshake deadline** from accept (``handshake_timeout``, capped by ``io_timeout``),
  and ``io_timeout`` for the whole connection;
* a **cap on open connections in total** (``max_connections``): when a new connection
  arrives at the cap, the OLDEST connections that are still handshaking or waiting for
  their request are shed (closed) to make room; connections being answered are never shed;
  when nothing can be shed the new connection is refused (closed at once);
* an optional **cap per client address** (``max_per_address``, 0: off): a connection over
  it is refused, older ones of that address are kept.

Every accepted connection ends in exactly one handshake outcome, counted per loop and
summed on read (:attr:`ConnServer.handshakes`): ``exact`` / ``wildcard`` / ``default`` (the
SNI selection of a completed handshake) or ``failed`` (refused at the cap, shed, timed out,
cut off or rejected by OpenSSL before the handshake completed).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import select
import socket
import ssl
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import structlog

from node.errors import BadInput
from node.selection import Selection

__all__ = ["OUTCOMES", "ChoiceSlot", "ConnLimits", "ConnServer"]

#: the handshake outcomes counted, in export order
OUTCOMES: Final = ("exact", "wildcard", "default", "failed")
#: a request head (request line + headers) larger than this is refused with 400
MAX_REQUEST_HEAD: Final = 8 * 1024
#: largest single read from a client
_READ_CHUNK: Final = 4 * 1024
#: after a refused request, how long and how much unread input is drained before closing
_LINGER_SECONDS: Final = 2.0
_LINGER_BYTES: Final = 256 * 1024
#: connections accepted per wake-up of a loop (then the loop serves the others again)
_ACCEPT_BATCH: Final = 64
#: how long a loop stops accepting after accept() failed (e.g. out of file descriptors)
_ACCEPT_PAUSE: Final = 0.1
_EXCLUSIVE: Final = getattr(select, "EPOLLEXCLUSIVE", 0)
_IN: Final = select.EPOLLIN
_OUT: Final = select.EPOLLOUT

_HELLO, _HANDSHAKE, _REQUEST, _RESPOND, _LINGER, _CLOSED = range(6)
#: phases in which a connection waits for its client and may be shed at the cap
_SHEDDABLE: Final = frozenset({_HELLO, _HANDSHAKE, _REQUEST})
#: phases that end as a failed handshake when the connection closes
_UNSHAKEN: Final = frozenset({_HELLO, _HANDSHAKE})
#: the first byte of a TLS handshake record (a ClientHello starts with it)
_HANDSHAKE_RECORD: Final = b"\x16"

Choice = tuple[str | None, Selection]
#: what the endpoint answers to a request head (b"": too big): (bytes to send, status)
Responder = Callable[[bytes], tuple[bytes, int]]


class ChoiceSlot(threading.local):
    """Where the SNI callback leaves its choice for the loop that runs the handshake step."""

    choice: Choice | None = None


@dataclass(frozen=True)
class ConnLimits:
    """Bounds on the endpoint's connections; see the module docstring."""

    handshake_timeout: float = 10.0
    io_timeout: float = 10.0
    max_connections: int = 4096
    max_per_address: int = 0

    def __post_init__(self) -> None:
        for name in ("handshake_timeout", "io_timeout"):
            value = getattr(self, name)
            if not value > 0:
                raise BadInput(f"{name} must be a positive number of seconds, not {value!r}")
        if self.max_connections < 1:
            raise BadInput(f"max_connections must be at least 1, not {self.max_connections!r}")
        if self.max_per_address < 0:
            raise BadInput(f"max_per_address must be 0 (off) or more, not "
                           f"{self.max_per_address!r}")


class _Conn:
    __slots__ = ("born", "choice", "deadline", "drained", "events", "fd", "gen", "head",
                 "loop", "out", "peer", "phase", "seq", "sock", "status", "tls")

    #: the TLS layer, from the first byte of a ClientHello on
    tls: ssl.SSLSocket

    def __init__(self, seq: int, sock: socket.socket, peer: str, loop: _Loop, now: float) -> None:
        self.seq = seq
        self.sock = sock  # the raw socket, then its TLS layer: what to close
        self.fd = sock.fileno()
        self.peer = peer
        self.loop = loop
        self.born = now
        self.deadline = now
        self.gen = 0
        self.phase = _HELLO
        self.events = 0
        self.head = b""
        self.out = b""
        self.status = 0
        self.drained = 0
        self.choice: Choice | None = None


class _Registry:
    """Every open connection of all loops, oldest first, and the count per address."""

    def __init__(self, limits: ConnLimits) -> None:
        self._limits = limits
        self._lock = threading.Lock()
        self._live: OrderedDict[int, _Conn] = OrderedDict()
        self._per_address: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._live)

    def admit(self, conn: _Conn) -> list[_Conn] | None:
        """Register ``conn``: the connections shed for it, or None when it is refused."""
        cap, per = self._limits.max_connections, self._limits.max_per_address
        with self._lock:
            if per and self._per_address.get(conn.peer, 0) >= per:
                return None
            victims: list[_Conn] = []
            excess = len(self._live) + 1 - cap
            if excess > 0:
                for old in self._live.values():  # oldest first
                    if old.phase in _SHEDDABLE:
                        victims.append(old)
                        if len(victims) == excess:
                            break
                if len(victims) < excess:
                    return None
                for old in victims:
                    self._drop(old)
            self._live[conn.seq] = conn
            self._per_address[conn.peer] = self._per_address.get(conn.peer, 0) + 1
            return victims

    def forget(self, conn: _Conn) -> None:
        with self._lock:
            self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        if self._live.pop(conn.seq, None) is None:
            return
        left = self._per_address[conn.peer] - 1
        if left:
            self._per_address[conn.peer] = left
        else:
            del self._per_address[conn.peer]


class _Loop:
    """One event-loop thread: its epoll, its connections, their deadlines."""

    def __init__(self, server: ConnServer, index: int) -> None:
        self._server = server
        self._ep = select.epoll()
        self._conns: dict[int, _Conn] = {}
        self._timers: list[tuple[float, int, int, _Conn]] = []
        self._inbox: deque[_Conn] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._ep.register(self._wake_r.fileno(), _IN)
        self._listen_fd = server.listener.fileno()
        self._ep.register(self._listen_fd, _IN | _EXCLUSIVE)
        self._accept_paused_until = 0.0
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.thread = threading.Thread(target=self._run, name=f"tls-worker-{index}", daemon=True)

    # -- cross-thread ------------------------------------------------------------------

    def shed(self, conn: _Conn) -> None:
        """Close ``conn`` (shed at the cap) on this loop's thread, soon."""
        self._inbox.append(conn)
        self.wake()

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    # -- the loop ----------------------------------------------------------------------

    def _run(self) -> None:
        server = self._server
        try:
            while not server.stopping.is_set():
                timeout = -1.0
                if self._timers:
                    timeout = max(self._timers[0][0] - time.monotonic(), 0.0)
                if self._accept_paused_until:
                    pause = max(self._accept_paused_until - time.monotonic(), 0.0)
                    timeout = pause if timeout < 0 else min(timeout, pause)
                for fd, _ev in self._ep.poll(timeout):
                    if fd == self._listen_fd:
                        self._accept()
                    elif fd == self._wake_r.fileno():
                        with contextlib.suppress(BlockingIOError):
                            self._wake_r.recv(4096)
                    else:
                        conn = self._conns.get(fd)
                        if conn is not None:
                            self._guarded_step(conn)
                while self._inbox:
                    conn = self._inbox.popleft()
                    if conn.phase != _CLOSED:
                        server.log.debug("tls.shed", peer=conn.peer,
                                         age=round(time.monotonic() - conn.born, 3))
                        self._close(conn)
                self._expire()
                self._resume_accepting()
        finally:
            for conn in list(self._conns.values()):
                self._close(conn, count=False)
            self._ep.close()
            self._wake_r.close()
            self._wake_w.close()

    def _resume_accepting(self) -> None:
        if self._accept_paused_until and time.monotonic() >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            self._ep.register(self._listen_fd, _IN | _EXCLUSIVE)

    def _expire(self) -> None:
        now = time.monotonic()
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, gen, conn = heapq.heappop(timers)
            if conn.phase == _CLOSED or gen != conn.gen:
                continue
            if conn.phase in _UNSHAKEN:
                self._server.log.debug("tls.handshake_timeout", peer=conn.peer)
            self._close(conn)

    def _set_deadline(self, conn: _Conn, deadline: float) -> None:
        conn.gen += 1
        conn.deadline = deadline
        heapq.heappush(self._timers, (deadline, conn.seq, conn.gen, conn))

    def _want(self, conn: _Conn, events: int) -> None:
        if conn.events != events:
            self._ep.modify(conn.fd, events)
            conn.events = events

    def _accept(self) -> None:
        server = self._server
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, addr = server.listener.accept()
            except BlockingIOError:
                return
            except OSError as err:
                if server.stopping.is_set():
                    return
                # e.g. out of file descriptors: say so and stop accepting for a moment
                server.log.warning("tls.accept_failed", error=str(err))
                self._ep.unregister(self._listen_fd)
                self._accept_paused_until = time.monotonic() + _ACCEPT_PAUSE
                return
            try:
                self._admit(sock, str(addr[0]))
            except Exception:  # a bug must not kill the loop; it keeps its traceback in the log
                server.log.exception("tls.connection_failed", peer=str(addr[0]))
                sock.close()

    def _admit(self, sock: socket.socket, peer: str) -> None:
        server = self._server
        now = time.monotonic()
        sock.setblocking(False)
        conn = _Conn(next(server.seq), sock, peer, self, now)
        victims = server.registry.admit(conn)
        if victims is None:
            sock.close()
            self.counts["failed"] += 1
            server.log.debug("tls.refused", peer=peer, open=len(server.registry))
            return
        for old in victims:
            if old.loop is self:
                server.log.debug("tls.shed", peer=old.peer, age=round(now - old.born, 3))
                self._close(old)
            else:
                old.loop.shed(old)
        self._conns[conn.fd] = conn
        conn.events = _IN
        try:
            self._ep.register(conn.fd, _IN)
        except OSError:
            self._close(conn)
            raise
        limits = server.limits
        self._set_deadline(conn, now + min(limits.handshake_timeout, limits.io_timeout))
        self._guarded_step(conn)  # the ClientHello may already be there

    def _close(self, conn: _Conn, *, count: bool = True) -> None:
        if conn.phase == _CLOSED:
            return
        if count and conn.phase in _UNSHAKEN:
            self.counts["failed"] += 1
        conn.phase = _CLOSED
        self._conns.pop(conn.fd, None)
        with contextlib.suppress(OSError, ValueError):
            self._ep.unregister(conn.fd)
        with contextlib.suppress(OSError):
            conn.sock.close()
        self._server.registry.forget(conn)

    # -- one connection ----------------------------------------------------------------

    def _guarded_step(self, conn: _Conn) -> None:
        try:
            self._step(conn)
        except Exception:  # a bug must not kill the loop; it keeps its traceback in the log
            self._server.log.exception("tls.connection_failed", peer=conn.peer)
            self._close(conn)

    def _step(self, conn: _Conn) -> None:
        if conn.phase == _HELLO and not self._hello(conn):
            return
        if conn.phase == _HANDSHAKE and not self._handshake(conn):
            return
        if conn.phase == _REQUEST and not self._read_head(conn):
            return
        if conn.phase == _RESPOND and not self._send(conn):
            return
        if conn.phase == _LINGER:
            self._drain(conn)

    def _hello(self, conn: _Conn) -> bool:
        """Wait for the first byte; only a TLS handshake record gets a TLS layer (junk and
        silent clients cost no OpenSSL state)."""
        try:
            first = conn.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        except OSError:
            first = b""
        if first != _HANDSHAKE_RECORD:
            self._server.log.debug("tls.handshake_failed", peer=conn.peer, server_name=None,
                                   error="not a TLS handshake" if first else "closed")
            self._close(conn)
            return False
        try:
            conn.tls = self._server.context.wrap_socket(
                conn.sock, server_side=True, do_handshake_on_connect=False)
        except (ssl.SSLError, OSError):
            self._close(conn)
            return False
        conn.sock = conn.tls
        conn.phase = _HANDSHAKE
        return True

    def _handshake(self, conn: _Conn) -> bool:
        slot = self._server.slot
        slot.choice = None
        try:
            conn.tls.do_handshake()
        except ssl.SSLWantReadError:
            self._want(conn, _IN)
            return False
        except ssl.SSLWantWriteError:
            self._want(conn, _OUT)
            return False
        except (ssl.SSLError, OSError) as err:
            choice = slot.choice or conn.choice
            self._server.log.debug(
                "tls.handshake_failed", peer=conn.peer,
                server_name=choice[0] if choice else None,
                error=getattr(err, "reason", None) or type(err).__name__,
            )
            self._close(conn)
            return False
        finally:
            if slot.choice is not None:
                conn.choice = slot.choice
        server_name, selection = conn.choice or (None, None)
        self.counts[selection.reason if selection else "default"] += 1
        self._server.log.debug(
            "tls.handshake", peer=conn.peer, server_name=server_name,
            sha256=selection.key if selection else None,
            reason=selection.reason if selection else None, version=conn.tls.version(),
        )
        conn.phase = _REQUEST
        self._set_deadline(conn, conn.born + self._server.limits.io_timeout)
        return True

    def _read_head(self, conn: _Conn) -> bool:
        while b"\r\n\r\n" not in conn.head:
            if len(conn.head) > MAX_REQUEST_HEAD:
                conn.head = b""
                break
            try:
                chunk = conn.tls.recv(_READ_CHUNK)
            except ssl.SSLWantReadError:
                self._want(conn, _IN)
                return False
            except ssl.SSLWantWriteError:
                self._want(conn, _OUT)
                return False
            except (ssl.SSLError, OSError):
                self._close(conn)
                return False
            if not chunk:
                self._close(conn)
                return False
            conn.head += chunk
        conn.out, conn.status = self._server.respond(conn.head)
        conn.phase = _RESPOND
        return True

    def _send(self, conn: _Conn) -> bool:
        while conn.out:
            try:
                sent = conn.tls.send(conn.out)
            except ssl.SSLWantWriteError:
                self._want(conn, _OUT)
                return False
            except ssl.SSLWantReadError:
                self._want(conn, _IN)
                return False
            except (ssl.SSLError, OSError):
                self._close(conn)
                return False
            conn.out = conn.out[sent:]
        if self._server.access_log:
            server_name, selection = conn.choice or (None, None)
            self._server.log.info(
                "tls.request", peer=conn.peer, server_name=server_name,
                sha256=selection.key if selection else None,
                reason=selection.reason if selection else None, status=conn.status,
            )
        # send close_notify without waiting for the client's
        with contextlib.suppress(ssl.SSLError, OSError):
            conn.tls.unwrap()
        if conn.status != 400:
            self._close(conn)
            return False
        # Closing with unread input makes the kernel send RST, which can destroy the answer
        # before the client reads it: half-close, then discard what the client still sends,
        # briefly (shutdown drops the TLS layer, so the reads are raw TCP).
        try:
            conn.tls.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return False
        conn.phase = _LINGER
        self._want(conn, _IN)
        self._set_deadline(conn, min(conn.deadline, time.monotonic() + _LINGER_SECONDS))
        return True

    def _drain(self, conn: _Conn) -> None:
        while conn.drained < _LINGER_BYTES:
            try:
                chunk = conn.tls.recv(_READ_CHUNK)
            except (BlockingIOError, ssl.SSLWantReadError):
                return
            except OSError:
                break
            if not chunk:
                break
            conn.drained += len(chunk)
        self._close(conn)


class ConnServer:
    """Serves ``listener`` with ``loops`` event-loop threads; see the module docstring.

    ``context`` is the listening context (its SNI callback leaves its choice in ``slot``);
    ``respond`` answers a request head; with ``access_log`` every answered request is an
    INFO line ``tls.request`` (off: the handshake counts are the only record, as nginx's
    ``access_log off``; the line costs about 8 % of a handshake's CPU). :meth:`start` and
    :meth:`stop` once each, in order.
    """

    def __init__(
        self,
        *,
        listener: socket.socket,
        context: ssl.SSLContext,
        slot: ChoiceSlot,
        respond: Responder,
        limits: ConnLimits,
        loops: int,
        log: structlog.typing.FilteringBoundLogger,
        access_log: bool = False,
    ) -> None:
        listener.setblocking(False)
        self.listener = listener
        self.context = context
        self.slot = slot
        self.respond = respond
        self.limits = limits
        self.log = log
        self.access_log = access_log
        self.registry = _Registry(limits)
        self.seq = itertools.count()
        self.stopping = threading.Event()
        self._loops = [_Loop(self, i) for i in range(loops)]

    @property
    def open_connections(self) -> int:
        """Connections open now (handshaking, waiting or being answered)."""
        return len(self.registry)

    @property
    def handshakes(self) -> Mapping[str, int]:
        """Handshakes so far by outcome (``OUTCOMES``); a read-only snapshot."""
        total = dict.fromkeys(OUTCOMES, 0)
        for loop in self._loops:
            for key, value in list(loop.counts.items()):
                total[key] += value
        return MappingProxyType(total)

    def start(self) -> None:
        for loop in self._loops:
            loop.thread.start()

    def stop(self) -> None:
        """Stop the loops; connections still open are closed."""
        self.stopping.set()
        for loop in self._loops:
            loop.wake()
        for loop in self._loops:
            loop.thread.join()
