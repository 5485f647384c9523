"""[shell] Parse untrusted material in a worker process that cannot hurt the caller.

``node.formats.read_material`` runs in a separate Python process with ``resource.setrlimit``
limits on CPU time (per input) and address space, behind a wall-clock deadline. A worker that
overruns is killed and a fresh one is started for the next input; the caller gets a typed
``FormatError`` naming the file. The node's event loop only awaits a pipe meanwhile, so it
keeps answering gRPC and serving TLS, and cancelling the await (a stopping server) kills the
worker at once, so nothing being parsed can hold up SIGTERM.

Results travel back as plain bytes — DER certificates and unencrypted PKCS#8 keys, in
length-prefixed frames, never pickled — and are loaded again here; they are never logged.
The worker's stdout/stderr go to /dev/null (a Rust panic message cannot reach the log).

Protocol: a message is a 4-byte count, then that many fields, each a 4-byte length and its
bytes. Request: ``has-passphrase, passphrase, name1, data1, ...``; reply ``ok, n-certs,
cert..., key...`` or ``err, kind, message, source``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import warnings
from collections.abc import Sequence
from typing import IO, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from node.errors import CertsyncError, FormatError, PassphraseError
from node.limits import PARSE_CPU_SECONDS, PARSE_DEADLINE_SECONDS, PARSE_MEMORY_BYTES
from node.model import Material, PrivateKey

__all__ = ["ParseSandbox", "close_default", "default", "read_material"]

_COUNT = struct.Struct(">I")


def _frame(fields: Sequence[bytes]) -> bytes:
    out = [_COUNT.pack(len(fields))]
    for f in fields:
        out += [_COUNT.pack(len(f)), f]
    return b"".join(out)


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            raise EOFError("the worker is gone")
        data += chunk
    return data


def _read_frame(stream: IO[bytes]) -> list[bytes]:
    (count,) = _COUNT.unpack(_read_exactly(stream, 4))
    return [_read_exactly(stream, _COUNT.unpack(_read_exactly(stream, 4))[0])
            for _ in range(count)]  # fmt: skip


def _exchange(proc: _Worker, request: bytes | None) -> list[bytes]:
    """Blocking: send ``request`` (if any), read one reply. Runs in a thread."""
    assert proc.stdin is not None and proc.stdout is not None
    if request is not None:
        proc.stdin.write(request)
        proc.stdin.flush()
    return _read_frame(proc.stdout)


def _close_pipes(proc: _Worker) -> None:
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def _names(sources: Sequence[tuple[str, bytes]]) -> str:
    return ", ".join(repr(n) for n, _ in sources) or "the input"


class _Forked:
    """A worker forked from this process (its modules are imported already, so it starts in
    milliseconds); the ``subprocess.Popen`` methods the sandbox uses. For single-threaded
    callers only (the CLI): a node, with its threads, spawns a fresh interpreter instead."""

    def __init__(self, cpu_seconds: int, memory_bytes: int) -> None:
        to_child, from_parent = os.pipe()[::-1]
        from_child, to_parent = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.dup2(from_parent, 0)
                os.dup2(to_parent, 1)
                for fd in (to_child, from_parent, from_child, to_parent):
                    os.close(fd)
                _worker_main(cpu_seconds, memory_bytes)
            finally:
                os._exit(0)
        os.close(from_parent)
        os.close(to_parent)
        self.pid = pid
        self.stdin: IO[bytes] = os.fdopen(to_child, "wb")
        self.stdout: IO[bytes] = os.fdopen(from_child, "rb")
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)


_Worker = subprocess.Popen[bytes] | _Forked


class ParseSandbox:
    """One worker process, reused input after input; one input at a time.

    Safe to share between tasks (they queue) and between event loops: the worker is a plain
    ``subprocess.Popen`` whose pipes are read in a thread, so no loop owns it. ``close()``
    kills the worker; a cancelled read kills it too, which ends the thread's read at once.
    """

    def __init__(
        self,
        *,
        cpu_seconds: int = PARSE_CPU_SECONDS,
        memory_bytes: int = PARSE_MEMORY_BYTES,
        deadline: float = PARSE_DEADLINE_SECONDS,
        fork: bool = False,
    ) -> None:
        self.fork = fork
        self.cpu_seconds = cpu_seconds
        self.memory_bytes = memory_bytes
        self.deadline = deadline
        self._proc: _Worker | None = None
        self._lock = threading.Lock()
        #: workers started so far (a killed worker is replaced by a new one)
        self.started = 0

    def _worker(self) -> _Worker:
        """The running worker, started (and waited for) when there is none. Blocking."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._proc = (
            _Forked(self.cpu_seconds, self.memory_bytes) if self.fork else subprocess.Popen(
                [sys.executable, "-m", "node.sandbox", "--worker", str(self.cpu_seconds),
                 str(self.memory_bytes)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
        self.started += 1
        try:
            ready = _exchange(self._proc, None)
        except (EOFError, OSError, struct.error) as err:
            self.kill()
            raise FormatError("the parser process did not start; check the node's "
                              "Python installation") from err
        if ready != [b"ready"]:
            self.kill()
            raise FormatError("the parser process did not start properly")
        return self._proc

    def kill(self) -> None:
        """Kill the worker now (a read in progress fails with a FormatError)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
            if self._lock.acquire(blocking=False):  # no thread is reading its pipes
                try:
                    _close_pipes(proc)
                finally:
                    self._lock.release()

    async def close(self) -> None:
        """Kill the worker (an input being parsed fails with a FormatError)."""
        self.kill()

    def _start(self) -> None:
        with self._lock:
            self._worker()

    def _parse(self, request: bytes) -> list[bytes]:
        with self._lock:
            proc = self._worker()
            try:
                return _exchange(proc, request)
            except BaseException:
                if proc.poll() is not None:  # killed or dead: its pipes are done with
                    _close_pipes(proc)
                raise

    async def read_material(
        self, sources: Sequence[tuple[str, bytes]], passphrase: bytes | None = None
    ) -> Material:
        """``node.formats.read_material`` in the worker; same errors, plus a FormatError
        when the worker overruns its deadline or its CPU/memory limit."""
        await asyncio.to_thread(self._start)  # the deadline covers parsing, not the start
        request = _request(sources, passphrase)
        job = asyncio.ensure_future(asyncio.to_thread(self._parse, request))
        job.add_done_callback(lambda f: f.cancelled() or f.exception())  # always retrieved
        try:
            async with asyncio.timeout(self.deadline):
                reply = await asyncio.shield(job)
        except TimeoutError as err:
            raise self._overran(sources) from err
        except (EOFError, OSError, struct.error) as err:
            raise self._died(sources) from err
        except BaseException:  # cancelled (the server is stopping): no worker left behind
            self.kill()
            raise
        return await asyncio.to_thread(_decode, reply, sources)

    def read_material_blocking(
        self, sources: Sequence[tuple[str, bytes]], passphrase: bytes | None = None
    ) -> Material:
        """:meth:`read_material` for a single-threaded caller without an event loop (the
        CLI): the same worker, limits and errors; the deadline is kept with ``select``."""
        with self._lock:
            proc = self._worker()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(_request(sources, passphrase))
                proc.stdin.flush()
                readable, _, _ = select.select([proc.stdout], [], [], self.deadline)
                if not readable:
                    raise self._overran(sources)
                reply = _read_frame(proc.stdout)
            except (EOFError, OSError, struct.error) as err:
                raise self._died(sources) from err
        return _decode(reply, sources)

    def _overran(self, sources: Sequence[tuple[str, bytes]]) -> FormatError:
        self.kill()
        return FormatError(
            f"reading {_names(sources)} took longer than {self.deadline:g} s "
            "(limit PARSE_DEADLINE_SECONDS) and was stopped; the file is hostile or far "
            "too costly: re-export it with normal settings "
            "(e.g. `openssl pkcs12 -export -iter 600000 ...`)",
            source=sources[0][0] if sources else None,
        )

    def _died(self, sources: Sequence[tuple[str, bytes]]) -> FormatError:
        proc = self._proc
        status = proc.wait() if proc is not None else None
        self.kill()
        return FormatError(
            f"reading {_names(sources)} went over the parser's CPU or memory limit "
            f"(the worker ended with status {status}; PARSE_CPU_SECONDS = "
            f"{self.cpu_seconds}, PARSE_MEMORY_BYTES = {self.memory_bytes}) and was "
            "stopped; the file is hostile or far too costly: re-export it with normal "
            "settings",
            source=sources[0][0] if sources else None,
        )


def _request(sources: Sequence[tuple[str, bytes]], passphrase: bytes | None) -> bytes:
    fields = [b"1" if passphrase is not None else b"0", passphrase or b""]
    for name, data in sources:
        fields += [name.encode("utf-8", "replace"), data]
    return _frame(fields)


def _decode(reply: list[bytes], sources: Sequence[tuple[str, bytes]]) -> Material:
    if reply and reply[0] == b"err" and len(reply) == 4:
        kind, message, source = (f.decode("utf-8", "replace") for f in reply[1:])
        error = PassphraseError if kind == "PassphraseError" else FormatError
        raise error(message, source=source or None)
    if len(reply) < 2 or reply[0] != b"ok":
        raise FormatError(f"the parser gave no answer for {_names(sources)}; try again",
                          source=sources[0][0] if sources else None)
    count = int(reply[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. a negative serial number: read as it is
        certs = tuple(x509.load_der_x509_certificate(d) for d in reply[2 : 2 + count])
        keys = tuple(
            cast(PrivateKey, serialization.load_der_private_key(d, password=None))
            for d in reply[2 + count :]
        )
    return Material(certificates=certs, keys=keys)


# --------------------------------------------------------------------------- defaults

_default = ParseSandbox()
# a process that never called close_default() (a CLI command, a test run) still reaps its
# worker when it exits, instead of leaving a child and its pipes to the interpreter's teardown
atexit.register(_default.kill)


def default() -> ParseSandbox:
    """The process's shared sandbox (the node's imports, the CLI's offline commands)."""
    return _default


async def read_material(
    sources: Sequence[tuple[str, bytes]], passphrase: bytes | None = None
) -> Material:
    """:meth:`ParseSandbox.read_material` of the shared sandbox."""
    return await _default.read_material(sources, passphrase)


async def close_default() -> None:
    """Kill the shared sandbox's worker (the node calls this when it stops)."""
    await _default.close()


# --------------------------------------------------------------------------- the worker


def _worker_main(cpu_seconds: int, memory_bytes: int) -> None:  # pragma: no cover - child
    import math
    import resource

    from node.formats import read_material as parse

    channel_in = os.fdopen(os.dup(0), "rb", buffering=0)
    channel_out = os.fdopen(os.dup(1), "wb", buffering=0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    warnings.simplefilter("ignore")
    channel_out.write(_frame([b"ready"]))

    def read_exactly(size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = channel_in.read(size - len(data))
            if not chunk:
                raise SystemExit(0)  # the parent is gone
            data += chunk
        return data

    while True:
        (count,) = _COUNT.unpack(read_exactly(4))
        fields = [read_exactly(_COUNT.unpack(read_exactly(4))[0]) for _ in range(count)]
        usage = resource.getrusage(resource.RUSAGE_SELF)
        used = math.ceil(usage.ru_utime + usage.ru_stime)
        # only the soft limit moves (SIGXCPU ends the worker); raising a hard limit needs
        # privileges, and the parent's deadline stands behind it anyway
        hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        soft = used + cpu_seconds
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
        passphrase = fields[1] if fields[0] == b"1" else None
        names = [f.decode("utf-8", "replace") for f in fields[2::2]]
        sources = list(zip(names, fields[3::2], strict=True))
        try:
            material = parse(sources, passphrase)
        except CertsyncError as err:
            source = getattr(err, "source", None) or ""
            reply = [b"err", type(err).__name__.encode(), str(err).encode(), source.encode()]
        except BaseException as err:
            reply = [b"err", b"FormatError",
                     f"reading {sources[0][0] if sources else 'the input'!r} failed in the "
                     f"parser ({type(err).__name__}); get a fresh copy of the file".encode(),
                     (sources[0][0] if sources else "").encode()]  # fmt: skip
        else:
            der = serialization.Encoding.DER
            reply = [b"ok", str(len(material.certificates)).encode()]
            reply += [c.public_bytes(der) for c in material.certificates]
            reply += [
                k.private_bytes(der, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
                for k in material.keys
            ]  # fmt: skip
        channel_out.write(_frame(reply))


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:  # pragma: no cover - child
    _worker_main(int(sys.argv[2]), int(sys.argv[3]))
