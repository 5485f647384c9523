"""A certsync cluster of containers, driven from the host like the process harness.

:class:`ContainerCluster` is a :class:`sync.localcluster.LocalCluster` whose nodes are
containers instead of processes, so every helper of ``tests/cluster`` (``wait_served``,
``create_default``, ``status``, ...) works on it unchanged:

* the directory is laid out by ``deploy/cluster-for-compose.sh`` -- the same files a
  ``docker-compose`` user gets: each node listens on 0.0.0.0 in its container and is reached
  by its network alias (its node name), ``DIR/compose/NAME`` is mounted read-only at
  ``/etc/certsync``, the secrets at ``/run/secrets``, a labelled named volume at
  ``/var/lib/certsync``;
* each node's gRPC and TLS ports are published on fixed host ports (chosen free when the
  cluster is made, so a restarted container keeps them), and ``DIR/admin-host.toml`` points
  the host CLI and the probes at them;
* every container, network and volume comes from the test's :class:`Tracker`, which removes
  them even when the test fails.

Containers start in parallel; readiness is the node answering ``GetState`` over mTLS through
its published port, polled with a deadline (a published port accepts TCP before the node
listens, so only an answer counts).
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import docker.errors
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

from sync.config import load_admin_config, load_topology
from sync.localcluster import (
    DEFAULT_READY_TIMEOUT,
    STOP_GRACE,
    LocalCluster,
    free_port_range,
)
from sync.topology import split_address
from tests.containers.conftest import ROOT, Tracker

__all__ = ["ContainerCluster", "host_view"]

LAYOUT_SCRIPT = ROOT / "deploy" / "cluster-for-compose.sh"
_POLL = 0.25


def host_view(directory: Path) -> LocalCluster:
    """The cluster in ``directory`` as the host sees it (``admin-host.toml``): for containers
    something else started (docker-compose); its process methods have nothing to act on."""
    view = LocalCluster(directory)
    view.admin_toml = view.directory / "admin-host.toml"
    view.config = load_admin_config(view.admin_toml)
    return view


class ContainerCluster(LocalCluster):
    """Nodes of one cluster as containers on one Docker network; see the module docstring."""

    def __init__(self, directory: Path, *, tracker: Tracker, image: str,
                 network: Network) -> None:
        super().__init__(directory)
        self.admin_toml = self.directory / "admin-host.toml"
        self.config = load_admin_config(self.admin_toml)
        self.tracker, self.image, self.network = tracker, image, network
        inside = load_topology(self.directory / "cluster.toml")
        #: (gRPC, TLS) port inside each node's container
        self.inside_ports = {
            spec.name: (split_address(spec.grpc_address)[1], split_address(spec.tls_address)[1])
            for spec in inside.nodes
        }
        self.volumes: dict[str, str] = {}
        #: nodes whose data directory is a tmpfs with these mount options, not a volume
        self.tmpfs_data: dict[str, str] = {}
        self.containers: dict[str, DockerContainer] = {}
        #: time.monotonic() of each node's last `docker start`
        self.started_at: dict[str, float] = {}

    @classmethod
    def make(cls, tracker: Tracker, image: str, directory: Path, *,
             init_args: Sequence[str] = (), sync_interval: int = 2,
             network: Network | None = None, host_port_base: int | None = None,
             ) -> ContainerCluster:
        """Lay out a cluster with ``deploy/cluster-for-compose.sh`` (nothing started).

        ``init_args`` go to ``cluster init`` (default: p1, b1, t1, t2 as in compose.yaml);
        ``network`` joins another cluster's network instead of making a new one.
        """
        count = sum(a in ("--primary", "--backup", "--traffic") for a in init_args) or 4
        base = host_port_base if host_port_base is not None else free_port_range(2 * count)
        proc = subprocess.run(
            ["bash", str(LAYOUT_SCRIPT), str(directory), "--host-port-base", str(base),
             "--sync-interval", str(sync_interval), "--stale-after", "60", *init_args],
            capture_output=True, text=True, timeout=120, check=False,
        )
        if proc.returncode != 0:
            raise AssertionError(f"cluster-for-compose.sh failed: {proc.stderr}")
        return cls(directory, tracker=tracker, image=image,
                   network=network if network is not None else tracker.network())

    # -- containers ----------------------------------------------------------------------

    def _new_container(self, name: str) -> DockerContainer:
        node_dir = self.directory / name
        container = (
            self.tracker.container(self.image, labels={"org.certsync.node": name})
            .with_network(self.network)
            .with_network_aliases(name)
            .with_volume_mapping(self.directory / "compose" / name, "/etc/certsync", "ro")
            .with_volume_mapping(node_dir / "node-key.pem", "/run/secrets/node-key", "ro")
            .with_volume_mapping(node_dir / "store.key", "/run/secrets/store-key", "ro")
        )
        if name in self.tmpfs_data:  # options as for mount(8): size=4m,uid=...,mode=...
            container.with_tmpfs_mount("/var/lib/certsync", self.tmpfs_data[name])
        else:
            container.with_volume_mapping(self.volumes[name], "/var/lib/certsync", "rw")
        spec = self.spec(name)
        for inside, host_address in zip(self.inside_ports[name],
                                        (spec.grpc_address, spec.tls_address), strict=True):
            container.with_bind_ports(inside, split_address(host_address)[1])
        return container

    def recreate(self, name: str, *, fresh_volume: bool = False) -> None:
        """Remove node ``name``'s container (its volume stays, unless ``fresh_volume``) and
        make a new one in its place; :meth:`start` starts it."""
        old = self.containers.pop(name, None)
        if old is not None:
            old.get_wrapped_container().remove(force=True)
        if fresh_volume:
            self.volumes[name] = self.tracker.volume()

    def container(self, name: str) -> DockerContainer:
        return self.containers[name]

    def spawn(self, name: str, *, env: Mapping[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        raise NotImplementedError("a container cluster has no node processes; use start()")

    def _docker_start(self, name: str) -> None:
        if name not in self.volumes:
            self.volumes[name] = self.tracker.volume()
        existing = self.containers.get(name)
        self.started_at[name] = time.monotonic()
        if existing is None:
            self.containers[name] = self._new_container(name).start()
        elif not self.is_running(name):
            existing.get_wrapped_container().start()

    def start(self, name: str, *, wait: bool = True, timeout: float = DEFAULT_READY_TIMEOUT,
              env: Mapping[str, str] | None = None) -> None:
        """Create or `docker start` node ``name``'s container; with ``wait``, until it answers."""
        if env:
            raise NotImplementedError("per-start environments are not supported for containers")
        self._docker_start(name)
        if wait:
            self.wait_ready(name, timeout)

    def start_all(self, names: Iterable[str] | None = None, *,
                  timeout: float = DEFAULT_READY_TIMEOUT) -> None:
        """Start every node (or ``names``) in parallel, then wait until each answers."""
        chosen = list(names) if names is not None else list(self.names)
        for name in chosen:  # volumes first: the tracker is not shared across threads
            if name not in self.volumes:
                self.volumes[name] = self.tracker.volume()
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(chosen)) as pool:
            list(pool.map(self._docker_start, chosen))
            deadline = time.monotonic() + timeout
            list(pool.map(lambda n: self.wait_ready(n, max(0.0, deadline - time.monotonic())),
                          chosen))

    def is_running(self, name: str) -> bool:
        container = self.containers.get(name)
        if container is None:
            return False
        try:
            wrapped = container.get_wrapped_container()
            wrapped.reload()
        except docker.errors.NotFound:
            return False
        return bool(wrapped.attrs["State"]["Running"])

    def pid(self, name: str) -> int | None:
        return None  # the node runs in the container's namespace; use kill()/stop()

    def kill(self, name: str) -> int | None:
        """`docker kill` (SIGKILL, no graceful stop); the exit status."""
        wrapped = self.containers[name].get_wrapped_container()
        wrapped.kill()
        return int(wrapped.wait(timeout=30)["StatusCode"])

    def stop(self, name: str, *, grace: float = STOP_GRACE) -> int | None:
        """`docker stop` (SIGTERM, SIGKILL after ``grace``); the exit status."""
        if not self.is_running(name):
            return None
        wrapped = self.containers[name].get_wrapped_container()
        wrapped.stop(timeout=int(grace))
        return int(wrapped.wait(timeout=grace + 30)["StatusCode"])

    def stop_all(self, *, grace: float = STOP_GRACE) -> None:
        """Nothing to do here: the tracker removes the containers at teardown."""

    def disconnect(self, name: str) -> None:
        """Cut node ``name`` off its network (and so from its published ports too)."""
        self.tracker.client.networks.get(self.network.name).disconnect(
            self.containers[name].get_wrapped_container())

    def connect(self, name: str) -> None:
        """Put node ``name`` back on its network under its alias."""
        self.tracker.client.networks.get(self.network.name).connect(
            self.containers[name].get_wrapped_container(), aliases=[name])

    def served_inside(self, name: str) -> str | None:
        """sha256 of what node ``name`` serves (no SNI) asked from inside its own container,
        through its loopback: works while it is cut off its network. None: no handshake."""
        port = self.inside_ports[name][1]
        script = (
            "import hashlib, socket, ssl\n"
            "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n"
            "ctx.check_hostname = False\n"
            "ctx.verify_mode = ssl.CERT_NONE\n"
            f"with socket.create_connection(('127.0.0.1', {port}), timeout=10) as raw, "
            "ctx.wrap_socket(raw) as tls:\n"
            "    print(hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest())\n"
        )
        result = self.containers[name].get_wrapped_container().exec_run(
            ["python", "-c", script])
        output = result.output
        assert isinstance(output, bytes)  # exec_run without stream=True returns bytes
        return output.decode().strip() if result.exit_code == 0 else None

    def logs(self, name: str) -> str:
        try:
            data: bytes = self.containers[name].get_wrapped_container().logs()
        except (KeyError, docker.errors.NotFound):
            return ""
        return data.decode(errors="replace")

    def _log_tail(self, name: str) -> str:
        return self.logs(name)[-1500:].strip()

    def _exited(self, name: str) -> str | None:
        return None if self.is_running(name) else "stopped (its container)"

    def _where(self, name: str) -> str:
        return f"container log: {self._log_tail(name)!r}"
