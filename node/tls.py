"""[shell] The node's public TLS endpoint: serves the right certificate by SNI.

A shell around the pure SNI index of :mod:`node.selection`. One :class:`ssl.SSLContext`
is prepared per certificate; the listening socket's context has an SNI callback that looks
the requested name up in the index and switches the connection to the chosen context (no
SNI, or a name nothing covers: the default certificate). :meth:`TlsEndpoint.update` builds a
new set of contexts (reusing those of certificates whose chain did not change) and index,
then swaps it in with one assignment: the next
handshake uses the new set and connections already open are not touched.

Connections are served by :mod:`node.tls_conn`: a few event-loop threads drive
non-blocking handshakes (OpenSSL's crypto releases the GIL, so the loops use every core),
with a handshake deadline, a cap on open connections in total (the oldest idle or
handshaking ones are shed first) and optionally per client address, so idle, slow or junk
clients cannot stop the endpoint. After the handshake the endpoint answers one plain
HTTP/1.1 ``GET`` with a tiny page naming the node, anything else with 400, then closes
(``GET /.well-known/certsync/trust-bundle.pem`` gets the trust bundle set with
:meth:`TlsEndpoint.set_trust_bundle`, certificates only, or 404); reads are bounded in size
and time. :attr:`TlsEndpoint.handshakes` counts handshakes by SNI outcome.

Private keys never reach the disk: :mod:`ssl` loads keys only from files, so on Linux each
key is handed to OpenSSL through an anonymous in-memory file (``memfd_create``, read back
through ``/proc/self/fd``) that is closed at once. Where that is missing, the key is written
PKCS#8-encrypted under a random one-time password into a private (0700) temporary
directory, loaded, and removed at once.
"""

from __future__ import annotations

import concurrent.futures
import html
import os
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from node.certkeys import cert_sha256
from node.errors import BadInput, NotFound
from node.logging import get_logger
from node.model import PrivateKey
from node.names import sans_of
from node.selection import Selection, SniBuilder, SniEntry, SniIndex
from node.tls_conn import OUTCOMES, ChoiceSlot, ConnLimits, ConnServer

__all__ = ["DEFAULT_LOOPS", "TRUST_BUNDLE_PATH", "ServedCert", "TlsEndpoint"]

#: distinct server names remembered per certificate set; random names cannot grow it further
_LOOKUP_CACHE_SIZE: Final = 4096
_LISTEN_BACKLOG: Final = 1024
#: event-loop threads serving connections. One by default: a second loop lets OpenSSL's
#: crypto use a second core (it runs without the GIL), but every other step of a connection
#: then waits for the GIL the other loop holds, which cost 12-18 % more CPU per handshake
#: in benchmarks/bench_idle.py; ``tls_loops`` in node.toml raises it for throughput.
DEFAULT_LOOPS: Final = 1
#: from this many new contexts in one update, they are loaded on two threads
_PARALLEL_LOADS: Final = 64


@dataclass(frozen=True)
class ServedCert:
    """One certificate the endpoint may serve: the certificate, its chain and its key."""

    sha256: str
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    key: PrivateKey


@dataclass(frozen=True)
class _Snapshot:
    """One certificate set, swapped in as a whole.

    ``cache`` maps a raw SNI value to the context and selection it gets; it only ever grows
    (bounded) and is thread-safe because single dict operations are atomic under the GIL.
    """

    index: SniIndex
    contexts: Mapping[str, ssl.SSLContext]
    cache: dict[str | None, tuple[ssl.SSLContext | None, Selection]]

    def choose(self, server_name: str | None) -> tuple[ssl.SSLContext | None, Selection]:
        hit = self.cache.get(server_name)
        if hit is not None:
            return hit
        selection = self.index.lookup(server_name)
        ctx = self.contexts.get(selection.key) if selection.key is not None else None
        if len(self.cache) < _LOOKUP_CACHE_SIZE:
            self.cache[server_name] = (ctx, selection)
        return ctx, selection


def _new_server_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # client-initiated TLS 1.2 renegotiation only costs the server CPU; no client needs it
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


_O = TypeVar("_O")
_V = TypeVar("_V")


def _public_half(key: PrivateKey) -> bytes:
    """The key's public half (SubjectPublicKeyInfo DER): which key it is, no secret."""
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _once_per_object(cache: dict[int, tuple[_O, _V]], obj: _O, compute: Callable[[_O], _V]) -> _V:
    """``compute(obj)``, remembered by ``id(obj)``; the entry holds ``obj`` itself, so the id
    cannot be reused by another object while it is there."""
    known = cache.get(id(obj))
    if known is None or known[0] is not obj:
        known = cache[id(obj)] = (obj, compute(obj))
    return known[1]


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _write_encrypted_key(directory: Path, stem: str, key: PrivateKey) -> tuple[Path, bytes]:
    """Write ``key`` as encrypted PKCS#8 PEM (mode 0600); return the path and its password."""
    password = secrets.token_urlsafe(32).encode("ascii")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    path = directory / f"{stem}.key.pem"
    _write_private(path, pem)
    return path, password


#: anonymous in-memory files and a way to open them by path (Linux)
_MEMFD: Final = hasattr(os, "memfd_create") and Path("/proc/self/fd").is_dir()


def _memfd(name: str, data: bytes) -> int:
    """An anonymous in-memory file holding ``data`` (close-on-exec); the caller closes it."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        rest = memoryview(data)
        while rest:
            rest = rest[os.write(fd, rest):]
    except BaseException:
        os.close(fd)
        raise
    return fd


def _chain_pem(served: ServedCert) -> bytes:
    return b"".join(
        c.public_bytes(serialization.Encoding.PEM) for c in (served.cert, *served.chain)
    )


def _load_chain(ctx: ssl.SSLContext, served: ServedCert, cert: str, key: str,
                password: bytes | None = None) -> None:
    try:
        ctx.load_cert_chain(cert, key, password=password)
    except ssl.SSLError as err:
        raise BadInput(
            f"certificate {served.sha256!r} cannot be served with its key "
            f"({err.reason or 'rejected by OpenSSL'}); import the key that belongs to it"
        ) from err


def _load_in_memory(served: ServedCert) -> ssl.SSLContext:
    """One server context holding ``served``'s certificate, chain and key, loaded through
    in-memory files (nothing is written to a file system)."""
    key_pem = served.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_fd = _memfd("certsync-cert", _chain_pem(served))
    try:
        key_fd = _memfd("certsync-key", key_pem)
        try:
            ctx = _new_server_context()
            _load_chain(ctx, served, f"/proc/self/fd/{cert_fd}", f"/proc/self/fd/{key_fd}")
            return ctx
        finally:
            os.close(key_fd)
    finally:
        os.close(cert_fd)


def _load_context(directory: Path, stem: str, served: ServedCert) -> ssl.SSLContext:
    """One server context holding ``served``'s certificate, chain and key (through an
    encrypted key file in ``directory``: for systems without ``memfd_create``)."""
    cert_path = directory / f"{stem}.crt.pem"
    key_path: Path | None = None
    try:
        _write_private(cert_path, _chain_pem(served))
        key_path, password = _write_encrypted_key(directory, stem, served.key)
        ctx = _new_server_context()
        _load_chain(ctx, served, str(cert_path), str(key_path), password)
        return ctx
    finally:
        cert_path.unlink(missing_ok=True)
        if key_path is not None:
            key_path.unlink(missing_ok=True)


def _http_response(status: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def _page(node_name: str) -> bytes:
    name = html.escape(node_name)
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        f"<title>certsync node {name}</title></head>\n"
        f"<body><h1>certsync node {name}</h1></body></html>\n"
    ).encode()


_BAD_REQUEST: Final = _http_response(
    "400 Bad Request", b"bad request\n", "text/plain; charset=utf-8"
)
#: where clients fetch the chains to trust ahead of a CA change (issue 6)
TRUST_BUNDLE_PATH: Final = b"/.well-known/certsync/trust-bundle.pem"
_NO_BUNDLE: Final = _http_response(
    "404 Not Found", b"no trust bundle published\n", "text/plain; charset=utf-8"
)


def _target(head: bytes) -> bytes:
    """The request target of a GET (without a query), as sent."""
    return head.split(b"\r\n", 1)[0].split(b" ")[1].split(b"?", 1)[0]


def _is_get(head: bytes) -> bool:
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    return (
        len(parts) == 3
        and parts[0] == b"GET"
        and parts[1][:1] == b"/"
        and parts[2] in (b"HTTP/1.1", b"HTTP/1.0")
    )


class TlsEndpoint:
    """The node's TLS endpoint; see the module docstring.

    ``workers`` event-loop threads serve the connections within the bounds of
    :class:`node.tls_conn.ConnLimits` (``handshake_timeout``, ``io_timeout``,
    ``max_connections``, ``max_per_address``; see :mod:`node.tls_conn`).

    Thread-safety: :meth:`update` may be called from any thread while serving (callers in
    async code run it with ``asyncio.to_thread``; it is CPU-heavy); updates are serialised.
    :meth:`start` and :meth:`stop` are called once each, in that order.
    """

    def __init__(
        self,
        *,
        node_name: str,
        workers: int = DEFAULT_LOOPS,
        io_timeout: float = 10.0,
        handshake_timeout: float = 10.0,
        max_connections: int = 4096,
        max_per_address: int = 0,
        access_log: bool = False,
        scratch_dir: Path | None = None,
    ) -> None:
        if workers < 1:
            raise BadInput(f"workers must be at least 1, not {workers!r}; give a positive count")
        self._node_name = node_name
        self._workers = workers
        self._limits = ConnLimits(
            handshake_timeout=handshake_timeout, io_timeout=io_timeout,
            max_connections=max_connections, max_per_address=max_per_address,
        )
        self._access_log = access_log
        self._scratch_dir = scratch_dir
        self._log = get_logger(__name__).bind(node_name=node_name)
        self._page = _http_response("200 OK", _page(node_name), "text/html; charset=utf-8")
        self._snapshot = _Snapshot(SniIndex.build((), None), {}, {})
        #: contexts of the set served now, by (sha256, chain sha256s, public key); see update()
        self._built: dict[tuple[str, tuple[str, ...], bytes], ssl.SSLContext] = {}
        self._entries: dict[str, SniEntry] = {}  # by sha256, for the SNI index
        self._sni = SniBuilder()
        #: the last update's certificates with their context's identity, by sha256
        self._served: dict[str, tuple[ServedCert, tuple[str, tuple[str, ...], bytes]]] = {}
        # by id of the object, holding it so the id stays its own; pruned on each update
        self._publics: dict[int, tuple[PrivateKey, bytes]] = {}
        self._fingerprints: dict[int, tuple[x509.Certificate, str]] = {}
        #: keys reach OpenSSL through memfds (tests turn it off to cover the fallback)
        self._in_memory = _MEMFD
        self._trust_bundle: bytes = _NO_BUNDLE
        self._update_lock = threading.Lock()
        self._slot = ChoiceSlot()
        self._listen_ctx = _new_server_context()
        self._listen_ctx.sni_callback = self._on_sni
        self._listener: socket.socket | None = None
        self._server: ConnServer | None = None
        self._stopped = False

    # -- certificate set -------------------------------------------------------------

    def _public(self, key: PrivateKey) -> bytes:
        """:func:`_public_half` of ``key``, once per key object (an update looks at every
        served key: serialising each again made updates O(served))."""
        return _once_per_object(self._publics, key, _public_half)

    def _fingerprint(self, cert: x509.Certificate) -> str:
        """:func:`node.certkeys.cert_sha256` of ``cert``, once per certificate object."""
        return _once_per_object(self._fingerprints, cert, cert_sha256)

    def update(self, certs: Sequence[ServedCert], default: str | None) -> None:
        """Serve ``certs`` from the next handshake on; ``default`` for no SNI or no match.

        Builds every context first; on any error nothing changes and the old set keeps
        being served. CPU-heavy: run it off the event loop.
        """
        by_sha = {c.sha256: c for c in certs}
        if default is not None and default not in by_sha:
            raise NotFound(
                f"default certificate {default!r} is not among the {len(by_sha)} certificates "
                "to serve; choose one of them as default"
            )
        with self._update_lock:
            # a context is reused while its certificate, chain and key stay the same, so an
            # update costs O(changed), not O(all); the very ServedCert of the last update
            # keeps its context without a look at its chain and key
            previous, last = self._built, self._served
            built: dict[tuple[str, tuple[str, ...], bytes], ssl.SSLContext] = {}
            contexts: dict[str, ssl.SSLContext] = {}
            served_now: dict[str, tuple[ServedCert, tuple[str, tuple[str, ...], bytes]]] = {}
            directory: Path | None = None
            fresh = self._load_many(by_sha, last, previous)
            try:
                for i, served in enumerate(by_sha.values()):
                    seen = last.get(served.sha256)
                    if seen is not None and seen[0] is served:
                        ident = seen[1]
                    else:
                        ident = (
                            served.sha256,
                            tuple(self._fingerprint(c) for c in served.chain),
                            self._public(served.key),
                        )
                    ctx = previous.get(ident)
                    if ctx is None and self._in_memory:
                        ctx = fresh.get(served.sha256) or _load_in_memory(served)
                    elif ctx is None:
                        if directory is None:
                            directory = Path(
                                tempfile.mkdtemp(prefix="certsync-tls-", dir=self._scratch_dir)
                            )
                            directory.chmod(0o700)
                        ctx = _load_context(directory, f"c{i}", served)
                    built[ident] = ctx
                    contexts[served.sha256] = ctx
                    served_now[served.sha256] = (served, ident)
            finally:
                if directory is not None:
                    shutil.rmtree(directory, ignore_errors=True)
            self._built, self._served = built, served_now
            if len(self._publics) > 2 * len(by_sha) + 64:  # forget keys no longer served
                keep_keys = {id(c.key) for c in by_sha.values()}
                self._publics = {i: v for i, v in self._publics.items() if i in keep_keys}
            if len(self._fingerprints) > 4 * len(by_sha) + 64:
                keep_certs = {id(x) for c in by_sha.values() for x in c.chain}
                self._fingerprints = {i: v for i, v in self._fingerprints.items()
                                      if i in keep_certs}
            # names are parsed once per certificate (IDNA normalisation is not cheap), and
            # the index redoes only the names of certificates that came or went
            known = self._entries
            self._entries = {
                sha: known.get(sha) or SniEntry(key=sha, sans=sans_of(c.cert),
                                                not_after=c.cert.not_valid_after_utc)
                for sha, c in by_sha.items()
            }
            self._sni.update(self._entries)
            self._snapshot = _Snapshot(self._sni.index(default), contexts, {})
        self._log.info("tls.updated", certificates=len(contexts), default_sha256=default)

    def _load_many(
        self, by_sha: Mapping[str, ServedCert],
        last: Mapping[str, tuple[ServedCert, tuple[str, tuple[str, ...], bytes]]],
        previous: Mapping[tuple[str, tuple[str, ...], bytes], ssl.SSLContext],
    ) -> dict[str, ssl.SSLContext]:
        """Contexts for the certificates of a big update that have none yet (a start with a
        full store), loaded on two threads: OpenSSL loads the chain and key without the GIL,
        so the second core shares the work. Small updates load theirs one by one."""
        todo = [c for sha, c in by_sha.items() if (sha not in last or last[sha][0] is not c)
                and (c.sha256, tuple(self._fingerprint(x) for x in c.chain),
                     self._public(c.key)) not in previous]
        if not self._in_memory or len(todo) < _PARALLEL_LOADS:
            return {}
        with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="tls-load") as pool:
            return dict(zip((c.sha256 for c in todo), pool.map(_load_in_memory, todo),
                            strict=True))

    def set_trust_bundle(self, pem: bytes | None) -> None:
        """Serve ``pem`` (certificates only) at the trust-bundle path; ``None``: 404."""
        if pem is not None and b"PRIVATE KEY" in pem:
            raise BadInput("a trust bundle holds certificates only, never a private key")
        self._trust_bundle = (
            _NO_BUNDLE
            if pem is None
            else _http_response("200 OK", pem, "application/x-pem-file")
        )
        self._log.debug("tls.trust_bundle", published=pem is not None)

    def served_for(self, server_name: str | None) -> Selection:
        """What a handshake with this SNI value (None: no SNI) gets now."""
        return self._snapshot.choose(server_name)[1]

    def _on_sni(
        self, conn: ssl.SSLSocket | ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext
    ) -> int | None:
        """SNI callback, on the loop thread during a handshake step. Never raises."""
        try:
            ctx, selection = self._snapshot.choose(server_name)
            self._slot.choice = (server_name, selection)
            if ctx is None:
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
            conn.context = ctx
            return None
        except Exception:  # an exception here would be printed by ssl and abort the handshake
            self._log.exception("tls.sni_callback_failed", server_name=server_name)
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR

    # -- serving ---------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); only after :meth:`start`."""
        if self._listener is None:
            raise RuntimeError("TLS endpoint is not started; call start() first")
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    def start(self, host: str, port: int) -> int:
        """Bind ``host``:``port`` (IPv4 or IPv6 per host; 0: any port); serve; return the port."""
        if self._listener is not None:
            raise RuntimeError("TLS endpoint already started")
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, _, _, _, sockaddr = infos[0]
            listener = socket.create_server(sockaddr[:2], family=family, backlog=_LISTEN_BACKLOG)
        except OSError as err:
            raise BadInput(
                f"cannot listen for TLS on {host!r} port {port!r}: {err.strerror or err}; "
                "choose a free port and a local address"
            ) from err
        self._listener = listener
        self._server = ConnServer(
            listener=listener, context=self._listen_ctx, slot=self._slot,
            respond=self._respond, limits=self._limits, loops=self._workers, log=self._log,
            access_log=self._access_log,
        )
        self._server.start()
        bound = self.address
        self._log.info("tls.listening", host=bound[0], port=bound[1], loops=self._workers,
                       max_connections=self._limits.max_connections,
                       max_per_address=self._limits.max_per_address,
                       access_log=self._access_log,
                       handshake_timeout=self._limits.handshake_timeout)
        return bound[1]

    def stop(self) -> None:
        """Stop accepting, close the connections still open, close the listener."""
        listener, server = self._listener, self._server
        if listener is None or server is None or self._stopped:
            return
        self._stopped = True
        server.stop()
        listener.close()
        self._log.info("tls.stopped")

    @property
    def handshakes(self) -> Mapping[str, int]:
        """Handshakes since start by outcome: ``exact``, ``wildcard``, ``default`` (the SNI
        selection of a completed handshake) and ``failed`` (every accepted connection that
        did not complete one: refused or shed at a cap, timed out, cut off, rejected).
        A read-only snapshot; all four keys are always there."""
        if self._server is None:
            return MappingProxyType(dict.fromkeys(OUTCOMES, 0))
        return self._server.handshakes

    @property
    def limits(self) -> ConnLimits:
        """The bounds on this endpoint's connections."""
        return self._limits

    @property
    def access_log(self) -> bool:
        """Whether every answered request is logged (``tls.request``, INFO)."""
        return self._access_log

    @property
    def loops(self) -> int:
        """The event-loop threads serving its connections."""
        return self._workers

    @property
    def open_connections(self) -> int:
        """Client connections open now."""
        return self._server.open_connections if self._server is not None else 0

    def _respond(self, head: bytes) -> tuple[bytes, int]:
        """The answer to a request head (b"": too big) and its status."""
        if not _is_get(head):
            return _BAD_REQUEST, 400
        if _target(head) == TRUST_BUNDLE_PATH:
            bundle = self._trust_bundle
            return bundle, 404 if bundle is _NO_BUNDLE else 200
        return self._page, 200
