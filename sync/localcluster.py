"""[shell] A whole cluster on this machine: ``cluster init`` + one ``node serve`` process per node.

Used by the multi-process tests, the converge benchmark and the README demo::

    with LocalCluster.create(tmp / "c", site="support.example.com",
                             primary=("p1", "p1.example.com"),
                             backup=("b1", "b1.example.com"),
                             traffic=[("t1", "t1.atlas.example.com")],
                             sync_interval=2) as cluster:
        cluster.start_all()                      # spawns and waits until every node answers
        cluster.cli("cert", "create-self-signed", ...)
        cluster.served_sha256("t1", "t1.atlas.example.com")   # what its TLS endpoint serves

Every node is a real ``certsync node serve --config DIR/NAME/node.toml`` process whose
stdout and stderr go to ``DIR/NAME/node.log``. Readiness is the node answering ``GetState``
over mutual TLS with the admin identity (gRPC waits for the connection; the loop only wakes
up to notice a node process that died), bounded by a deadline -- never a blind sleep.
Leaving the ``with`` block stops every node it started (SIGTERM, then SIGKILL after a grace
period), also when the block raised.

Ports: node *i* uses ``base_port + 2i`` (gRPC), ``+ 2i + 1`` (TLS) and ``+ 2N + i`` (admin
console), as ``cluster init`` lays them out. Without ``base_port`` a range below the
kernel's ephemeral range is chosen at random and checked free on the listen address, so
parallel test runs rarely collide and outgoing connections never take one of its ports. A
node that still finds its port taken exits, and :meth:`LocalCluster.wait_ready` raises
with the tail of its log.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final

import grpc

from node.api import certsync_pb2, certsync_pb2_grpc
from node.errors import BadInput, CertsyncError, NodeUnreachable
from node.identity import node_dns_name
from sync.cluster_init import DEFAULT_LISTEN, init_cluster, plan_init, ports_needed
from sync.config import AdminConfig, load_admin_config
from sync.topology import (
    DEFAULT_STALE_AFTER_SECONDS,
    DEFAULT_SYNC_INTERVAL_SECONDS,
    NodeSpec,
    split_address,
)

__all__ = [
    "DEFAULT_READY_TIMEOUT",
    "LocalCluster",
    "NodeProcessError",
    "certsync_command",
    "free_port_range",
    "served_certificate",
]

DEFAULT_READY_TIMEOUT: Final = 60.0
STOP_GRACE: Final = 15.0  # the daemon's own gRPC grace is 5 s; SIGKILL after this
_POLL: Final = 0.25  # how often a wait wakes up to see whether the node process died
_LOG_TAIL: Final = 600


class NodeProcessError(CertsyncError):
    """A node process did not come up (it exited, or did not answer before the deadline)."""

    def __init__(self, message: str, *, node: str) -> None:
        super().__init__(message, node=node)
        self.node = node


def certsync_command() -> list[str]:
    """argv prefix that runs this installation's ``certsync`` (the venv's console script
    when present, else ``python -m sync.cli`` with this interpreter)."""
    script = Path(sys.executable).parent / "certsync"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "sync.cli"]


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port_range(count: int, *, host: str = DEFAULT_LISTEN, attempts: int = 200) -> int:
    """A base port ``p`` with ``p .. p+count-1`` all free on ``host`` right now (checked by
    binding each, then released), below the ephemeral range when there is room for it."""
    if count < 1:
        raise BadInput(f"port count {count!r} must be at least 1")
    low_eph, high_eph = _ephemeral_range()
    low, high = (10000, low_eph - count) if low_eph - count > 10000 else (
        high_eph + 1, 65535 - count)
    if high <= low:
        raise BadInput(f"no room for {count!r} consecutive ports; use fewer nodes")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    rng = random.Random()  # noqa: S311 -- spreading port choices, not crypto
    for _ in range(attempts):
        base = rng.randrange(low, high)
        held: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(family, socket.SOCK_STREAM)
                held.append(sock)
                sock.bind((host, port))
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
        return base
    raise BadInput(f"found no {count!r} consecutive free ports on {host!r} after {attempts} "
                   "tries; stop other clusters or give base_port")


@functools.cache
def _probe_context() -> ssl.SSLContext:
    """One client context for every probe: loading the system CAs per probe costs more than
    the handshake, and a probe trusts nothing anyway."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # we read the served certificate, we do not trust it
    return ctx


def served_certificate(
    address: str, server_name: str | None, *, timeout: float = 10.0
) -> bytes:
    """The DER leaf certificate the TLS endpoint at ``address`` serves for ``server_name``
    (``None``: a ClientHello without SNI). Nothing is verified: this asks *what* is served."""
    host, port = split_address(address)
    ctx = _probe_context()
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        ctx.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if der is None:
        raise NodeUnreachable(f"TLS endpoint {address!r} sent no certificate; is it a certsync "
                              "node?")
    return der


class LocalCluster:
    """Processes of one local cluster; see the module docstring."""

    def __init__(self, directory: Path, *, env: Mapping[str, str] | None = None) -> None:
        """Drive the cluster ``cluster init`` wrote into ``directory`` (nothing is started)."""
        self.directory = Path(directory).absolute()
        self.admin_toml = self.directory / "admin.toml"
        self.config: AdminConfig = load_admin_config(self.admin_toml)
        self.env: dict[str, str] = dict(env or {})
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._creds: grpc.ChannelCredentials | None = None

    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        site: str,
        primary: tuple[str, str],
        backup: tuple[str, str] | None = None,
        traffic: Sequence[tuple[str, str]] = (),
        base_port: int | None = None,
        listen: str = DEFAULT_LISTEN,
        sync_interval: int = DEFAULT_SYNC_INTERVAL_SECONDS,
        stale_after: int = DEFAULT_STALE_AFTER_SECONDS,
        env: Mapping[str, str] | None = None,
        now: dt.datetime | None = None,
    ) -> LocalCluster:
        """Write a cluster with ``cluster init``'s code into ``directory`` (new or empty).

        Nodes are ``(name, hostname)`` pairs. ``env`` is added to every node's and every
        :meth:`cli` call's environment.
        """
        count = 1 + (backup is not None) + len(traffic)
        req = plan_init(
            Path(directory),
            site=site,
            primary=f"{primary[0]}={primary[1]}",
            backup=f"{backup[0]}={backup[1]}" if backup else None,
            traffic=[f"{name}={host}" for name, host in traffic],
            listen=listen,
            base_port=base_port if base_port is not None
            else free_port_range(ports_needed(count), host=listen),
            sync_interval_seconds=sync_interval,
            stale_after_seconds=stale_after,
        )
        init_cluster(req, now=now or dt.datetime.now(dt.UTC))
        return cls(req.directory, env=env)

    # -- the nodes -----------------------------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        return self.config.topology.names

    def spec(self, name: str) -> NodeSpec:
        return self.config.topology.node(name)

    def node_toml(self, name: str) -> Path:
        return self.directory / self.spec(name).name / "node.toml"

    def log_path(self, name: str) -> Path:
        return self.directory / self.spec(name).name / "node.log"

    def is_running(self, name: str) -> bool:
        proc = self._procs.get(name)
        return proc is not None and proc.poll() is None

    def pid(self, name: str) -> int | None:
        proc = self._procs.get(name)
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self, name: str, *, wait: bool = True, timeout: float = DEFAULT_READY_TIMEOUT,
              env: Mapping[str, str] | None = None) -> None:
        """Spawn node ``name`` (no-op when it runs); with ``wait``, return once it answers.
        ``env`` is added to the cluster's environment for this process only."""
        self.spawn(name, env=env)
        if wait:
            self.wait_ready(name, timeout)

    def spawn(self, name: str, *, env: Mapping[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        """Start node ``name``'s process without waiting for it (no-op when it runs)."""
        current = self._procs.get(name)
        if current is not None and current.poll() is None:
            return current
        log = self.log_path(name)
        with log.open("ab") as fh:
            proc = subprocess.Popen(
                [*certsync_command(), "node", "serve", "--config", str(self.node_toml(name))],
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env, **(env or {})},
                start_new_session=True,  # a Ctrl-C in the demo's terminal goes to us first
            )
        self._procs[name] = proc
        return proc

    def start_all(self, names: Iterable[str] | None = None, *,
                  timeout: float = DEFAULT_READY_TIMEOUT) -> None:
        """Spawn every node (or ``names``) at once, then wait until each answers."""
        chosen = list(names) if names is not None else list(self.names)
        for name in chosen:
            self.spawn(name)
        deadline = time.monotonic() + timeout
        for name in chosen:
            self.wait_ready(name, max(0.0, deadline - time.monotonic()))

    def wait_ready(self, name: str, timeout: float = DEFAULT_READY_TIMEOUT
                   ) -> certsync_pb2.NodeState:
        """Wait until node ``name`` answers ``GetState`` over mTLS; return what it reports.

        Raises :class:`NodeProcessError` when its process exits first or the deadline passes.
        """
        deadline = time.monotonic() + timeout
        spec = self.spec(name)
        with self._channel(spec) as channel:
            stub = certsync_pb2_grpc.CertStoreStub(channel)
            while True:
                gone = self._exited(name)
                if gone is not None:
                    raise NodeProcessError(
                        f"node {name!r} {gone} before it answered; {self._where(name)}",
                        node=name)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NodeProcessError(
                        f"node {name!r} did not answer at {spec.grpc_address} within "
                        f"{timeout:.0f} s; {self._where(name)}", node=name)
                try:
                    # wait_for_ready: gRPC itself waits for the connection (an event), we
                    # only wake every _POLL seconds to notice a dead process
                    state: certsync_pb2.NodeState = stub.GetState(
                        certsync_pb2.GetStateRequest(), timeout=min(left, _POLL * 4),
                        wait_for_ready=True)
                    return state
                except grpc.RpcError as err:
                    code = err.code() if isinstance(err, grpc.Call) else None
                    if code not in (grpc.StatusCode.DEADLINE_EXCEEDED,
                                    grpc.StatusCode.UNAVAILABLE):
                        raise NodeProcessError(
                            f"node {name!r} answered GetState with {code}; "
                            f"{self._where(name)}", node=name) from err

    def _exited(self, name: str) -> str | None:
        """How node ``name`` is gone (e.g. "exited with status 1"), or None while it runs
        (or was never started here)."""
        proc = self._procs.get(name)
        if proc is not None and proc.poll() is not None:
            return f"exited with status {proc.returncode}"
        return None

    def _where(self, name: str) -> str:
        """Where to look when node ``name`` misbehaves: its log file and its last lines."""
        return f"see {str(self.log_path(name))!r}: {self._log_tail(name)!r}"

    def state(self, name: str, *, timeout: float = 5.0) -> certsync_pb2.NodeState:
        """Node ``name``'s ``GetState`` answer (admin identity); NodeUnreachable if none."""
        spec = self.spec(name)
        with self._channel(spec) as channel:
            try:
                answer: certsync_pb2.NodeState = certsync_pb2_grpc.CertStoreStub(
                    channel).GetState(certsync_pb2.GetStateRequest(), timeout=timeout)
                return answer
            except grpc.RpcError as err:
                raise NodeUnreachable(
                    f"node {name!r} at {spec.grpc_address} did not answer GetState; is it "
                    "running?", node=name) from err

    def stop(self, name: str, *, grace: float = STOP_GRACE) -> int | None:
        """SIGTERM node ``name`` and wait for it (SIGKILL after ``grace``); its exit status,
        or None when it was not running."""
        proc = self._procs.get(name)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        return self._reap(proc, grace)

    def kill(self, name: str) -> int | None:
        """SIGKILL node ``name`` (a crash: no graceful stop) and reap it."""
        proc = self._procs.get(name)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        return proc.wait()

    def stop_all(self, *, grace: float = STOP_GRACE) -> None:
        """SIGTERM every node this object started, then wait for all (SIGKILL stragglers)."""
        procs = [p for p in self._procs.values() if p.poll() is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            self._reap(proc, max(0.1, deadline - time.monotonic()))

    @staticmethod
    def _reap(proc: subprocess.Popen[bytes], grace: float) -> int:
        try:
            return proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    # -- talking to it -------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 120.0,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``certsync --config DIR/admin.toml ARGS...``; the caller checks returncode."""
        return subprocess.run(
            [*certsync_command(), "--config", str(self.admin_toml), *args],
            capture_output=True, text=True, timeout=timeout, check=False, input=input,
            env={**os.environ, **self.env},
        )

    def served_sha256(self, name: str, server_name: str | None = None) -> str | None:
        """sha256 (hex) of the leaf node ``name``'s TLS endpoint serves for ``server_name``;
        None when the endpoint refuses the handshake (it has nothing to serve for it).

        Raises :class:`NodeUnreachable` when nothing listens at its TLS address.
        """
        address = self.spec(name).tls_address
        try:
            der = served_certificate(address, server_name)
        except ssl.SSLError:
            return None
        except OSError as err:
            raise NodeUnreachable(f"node {name!r} has no TLS endpoint at {address}: "
                                  f"{err.strerror or err}; is it running?", node=name) from err
        return hashlib.sha256(der).hexdigest()

    def _channel(self, spec: NodeSpec) -> grpc.Channel:
        if self._creds is None:
            self._creds = grpc.ssl_channel_credentials(
                root_certificates=self.config.ca_cert_path.read_bytes(),
                private_key=self.config.key_path.read_bytes(),
                certificate_chain=self.config.cert_path.read_bytes(),
            )
        return grpc.secure_channel(spec.grpc_address, self._creds, options=[
            ("grpc.ssl_target_name_override", node_dns_name(spec.name)),
            # a node that is still starting is retried quickly, not after gRPC's 1 s+ backoff
            ("grpc.initial_reconnect_backoff_ms", 50),
            ("grpc.min_reconnect_backoff_ms", 50),
            ("grpc.max_reconnect_backoff_ms", 250),
        ])

    def _log_tail(self, name: str) -> str:
        try:
            data = self.log_path(name).read_bytes()
        except OSError:
            return ""
        return data[-_LOG_TAIL:].decode(errors="replace").strip()

    def remove(self) -> None:
        """Stop everything and delete the cluster directory (keys included)."""
        self.stop_all()
        shutil.rmtree(self.directory, ignore_errors=True)
