"""[shell] The composition root: one node (``node.app.NodeApp``) wired into its cluster role.

It opens the store, starts the TLS endpoint, the gRPC server (store operations from
:mod:`node.service`, replication from :mod:`sync.receiver`) and the replicator, the admin
console (:mod:`sync.console`, when node.toml has ``admin_address``) and the
node's renewal/alert monitor; :func:`cluster_of` turns the topology into the plain
:class:`~node.app.NodeCluster` facts the node needs.

:func:`run_node` runs until ``stop`` is set (``certsync node serve`` sets it on SIGTERM or
SIGINT), then stops gRPC with a grace period, the TLS endpoint and the store, in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from node import names, sandbox
from node.acme_client import Http01Responder, start_http01_responder
from node.app import NodeApp, NodeCluster
from node.coverage_gate import RequiredName
from node.errors import ConfigError
from node.renewal import run_monitor
from node.rpc import server_credentials, start_grpc_server
from node.service import CertStoreService, NodeRuntime
from node.store import Store
from node.tls import TlsEndpoint
from sync.cluster_view import gather
from sync.config import AdminConfig, NodeConfig, load_store_key
from sync.console.server import ConsoleSources, console_ssl_context, start_console
from sync.metrics import NodeMetrics
from sync.receiver import NodeStateFn, Replica, ReplicationService, describe_promotion
from sync.replicator import DEFAULT_CONCURRENCY, Peer, Replicator, peers_from_topology
from sync.topology import Topology, split_address

__all__ = [
    "GRACE_SECONDS", "Replication", "cluster_of", "required_of", "run_node",
    "wire_replication",
]

GRACE_SECONDS: Final = 5.0

_log = structlog.get_logger("sync.daemon")


def _push_concurrency() -> int:
    """How many nodes the primary pushes to at once: ``CERTSYNC_PUSH_CONCURRENCY`` (an
    operator's and the benchmark's knob), else the replicator's default."""
    text = os.environ.get("CERTSYNC_PUSH_CONCURRENCY", "")
    if not text:
        return DEFAULT_CONCURRENCY
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(
            f"CERTSYNC_PUSH_CONCURRENCY={text!r} is not a positive whole number; "
            "unset it or give e.g. 16"
        )
    return int(text)


def cluster_of(topology: Topology, name: str) -> NodeCluster:
    """What node ``name`` needs to know of the cluster ``topology`` describes."""
    backup = topology.backup
    return NodeCluster(
        cluster_id=topology.cluster_id,
        node_names=tuple(topology.names),
        role=topology.node(name).role,
        failover_pair=None if backup is None else (topology.primary.name, backup.name),
        required=required_of(topology),
    )


def required_of(topology: Topology) -> tuple[RequiredName, ...]:
    """The topology's required names, each with the nodes clients reach by it."""
    return tuple(
        RequiredName(hostname, tuple(s.name for s in topology.nodes
                                     if hostname in topology.served_names(s.name)))
        for hostname in topology.required_names())


@dataclass(frozen=True)
class Replication:
    """The three replication parts of one node, wired together."""

    replica: Replica
    service: ReplicationService
    replicator: Replicator


async def wire_replication(
    app: NodeRuntime,
    *,
    topology: Topology,
    ca_pem: bytes,
    cert_pem: bytes,
    key_pem: bytes,
    state: NodeStateFn,
    peers: Mapping[str, Peer],
    interval: float,
    concurrency: int = DEFAULT_CONCURRENCY,
    canary: str | None = None,
) -> Replication:
    """Build the replica (loading its epoch from the store), the gRPC servicer and the
    replicator for ``app``, and hook them into it (runtime role, trigger after changes).
    The caller starts ``replicator.run()`` and stops it with ``replicator.stop()``."""
    try:
        node_key = serialization.load_pem_private_key(key_pem, password=None)
        ca_cert = x509.load_pem_x509_certificate(ca_pem)
    except ValueError as err:
        raise ConfigError(f"node {app.name!r}: the mTLS key or CA certificate is not readable "
                          "PEM; restore them from 'certsync cluster init'") from err
    if not isinstance(node_key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"node {app.name!r}: the mTLS key is not an EC key; restore it from "
                          "'certsync cluster init'")
    replica = Replica(name=app.name, topology=topology, store=app.store, ca_cert=ca_cert,
                      node_key=node_key, clock=app.now, refresh=app.refresh,
                      serve=functools.partial(app.refresh, serve=True))
    await replica.load()
    replicator = Replicator(replica=replica, served_for=app.served_for, peers=peers,
                            credentials=(ca_pem, cert_pem, key_pem), interval=interval,
                            concurrency=concurrency, canary=canary, serve_set=app.serve_set)
    service = ReplicationService(replica, state, replicator)
    app.attach_replication(role=lambda: replica.role, on_change=replicator.changed,
                           hold=replicator.holding)
    return Replication(replica=replica, service=service, replicator=replicator)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ConfigError(
            f"cannot read the {what} {str(path)!r}: {err.strerror}; check node.toml"
        ) from err


def tls_endpoint(config: NodeConfig) -> TlsEndpoint:
    """The node's TLS endpoint with the bounds of its config (``tls_*`` keys)."""
    return TlsEndpoint(
        node_name=config.name,
        handshake_timeout=config.tls_handshake_timeout,
        max_connections=config.tls_max_connections,
        max_per_address=config.tls_max_per_address,
        workers=config.tls_loops,
        access_log=config.tls_access_log,
    )


async def _start_console(
    config: NodeConfig,
    app: NodeApp,
    store_service: CertStoreService,
    metrics: NodeMetrics,
    console_started: Callable[[int], None] | None,
) -> web.AppRunner:
    """The admin console on ``config.admin_address``; it sees the cluster as ``status``
    does, asking with this node's own identity (a node may read, never change)."""
    assert config.admin_address is not None
    viewer = AdminConfig(name=config.name, path=config.path, topology=config.topology,
                         ca_cert_path=config.ca_cert_path, cert_path=config.cert_path,
                         key_path=config.key_path)
    sources = ConsoleSources(
        node_name=config.name, topology=config.topology, store=app.store,
        statuses=app.lifecycle.statuses, node_state=store_service.node_state,
        cluster=lambda: gather(viewer), now=app.now, metrics=metrics.render,
    )
    try:
        ctx = console_ssl_context(ca_cert=config.ca_cert_path, cert=config.cert_path,
                                  key=config.key_path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"node {config.name!r}: cannot load the console's TLS identity: "
                          f"{err}; restore it from 'certsync cluster init'") from err
    try:
        host, port = split_address(config.admin_address)
        runner, port = await start_console(sources, host=host, port=port, ssl_context=ctx)
    except OSError as err:
        raise ConfigError(f"node {config.name!r}: cannot listen on admin_address "
                          f"{config.admin_address!r}: {err.strerror}; free the port or change "
                          "node.toml") from err
    if console_started is not None:
        console_started(port)
    return runner


async def run_node(
    config: NodeConfig,
    *,
    stop: asyncio.Event,
    started: Callable[[NodeApp, int, int], None] | None = None,
    on_metrics: Callable[[NodeMetrics], None] | None = None,
    console_started: Callable[[int], None] | None = None,
) -> None:
    """Run the node of ``config`` (a ``NodeConfig``) until ``stop`` is set.

    ``started(app, grpc_port, tls_port)`` is called once both ports listen (tests bind port 0);
    ``on_metrics(metrics)`` once the node's :class:`~sync.metrics.NodeMetrics` exist (the
    admin console serves ``metrics.render()`` at ``/metrics``; tests read it directly);
    ``console_started(port)`` once the admin console listens.
    """
    topology: Topology = config.topology
    store = await Store.open(config.store_path, load_store_key(config.store_key_path))
    endpoint = tls_endpoint(config)
    server = None
    responder: Http01Responder | None = None
    monitor: asyncio.Task[None] | None = None
    replication: Replication | None = None
    pusher: asyncio.Task[None] | None = None
    console: web.AppRunner | None = None
    try:
        if config.acme is not None:
            http_host, http_port = split_address(config.acme.http_listen)
            responder, _ = await start_http01_responder(http_host, http_port)
        app = NodeApp(
            name=config.name,
            cluster=cluster_of(topology, config.name),
            store=store,
            endpoint=endpoint,
            alerts=config.alerts,
            acme=config.acme,
            responder=responder,
            account_key_path=config.data_dir / "acme-account-key.pem",
        )
        await asyncio.to_thread(names.preload)
        tls_host, tls_port = split_address(config.tls_listen)
        tls_bound = await asyncio.to_thread(endpoint.start, tls_host, tls_port)
        await app.refresh()
        creds = server_credentials(
            ca_pem=_read(config.ca_cert_path, "CA certificate"),
            cert_pem=_read(config.cert_path, "node certificate"),
            key_pem=_read(config.key_path, "node key"),
        )
        store_service = CertStoreService(app, describe=describe_promotion)
        replication = await wire_replication(
            app,
            topology=topology,
            ca_pem=_read(config.ca_cert_path, "CA certificate"),
            cert_pem=_read(config.cert_path, "node certificate"),
            key_pem=_read(config.key_path, "node key"),
            state=store_service.node_state,
            peers=peers_from_topology(topology),
            interval=float(topology.sync_interval_seconds),
            concurrency=_push_concurrency(),
            canary=config.rollout_canary,
        )
        metrics = NodeMetrics(store=store, replicator=replication.replicator, endpoint=endpoint)
        if on_metrics is not None:
            on_metrics(metrics)
        server, grpc_port = await start_grpc_server(
            store_service, address=config.grpc_listen, credentials=creds,
            replication=replication.service,
        )
        pusher = asyncio.create_task(replication.replicator.run())
        if config.admin_address is not None:
            console = await _start_console(config, app, store_service, metrics, console_started)
        _log.info("node.started", node=config.name, grpc_port=grpc_port, tls_port=tls_bound)
        if started is not None:
            started(app, grpc_port, tls_bound)
        monitor = asyncio.create_task(
            run_monitor(
                app.lifecycle, clock=app.now, interval=config.monitor_interval, stop=stop,
                observe=metrics.tick,
            )
        )
        await stop.wait()
        _log.info("node.stopping", node=config.name)
        await sandbox.close_default()  # an import being parsed must not hold up the stop
    finally:
        if replication is not None:
            replication.replicator.stop()
        if pusher is not None:
            try:
                async with asyncio.timeout(GRACE_SECONDS):
                    await pusher
            except TimeoutError:
                pusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pusher
        if monitor is not None:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
        if console is not None:
            await console.cleanup()
        if responder is not None:
            await responder.close()
        if server is not None:
            await server.stop(GRACE_SECONDS)
        await asyncio.to_thread(endpoint.stop)
        await store.close()
        _log.info("node.stopped", node=config.name)
