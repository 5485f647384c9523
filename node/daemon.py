"""One running node: store + TLS endpoint + gRPC server, wired together; graceful stop.

:class:`NodeApp` is what the gRPC servicer sees (:class:`node.service.NodeRuntime`): after
every change it calls :meth:`NodeApp.refresh`, which reads the store, builds the list of
certificates to serve (each with its key and chain) and hands it to the TLS endpoint off the
event loop, so the next handshake serves the change without a restart.

:func:`run_node` runs until ``stop`` is set (``certsync node serve`` sets it on SIGTERM or
SIGINT), then stops gRPC with a grace period, the TLS endpoint and the store, in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import structlog
from cryptography import x509

from node import names
from node.errors import ConfigError
from node.rpc import server_credentials, start_grpc_server
from node.selection import Selection
from node.service import CertStoreService
from node.store import Store
from node.store_view import StoreView
from node.tls import ServedCert, TlsEndpoint
from sync.acme_client import Http01Responder, start_http01_responder
from sync.alerts import AlertConfig
from sync.config import AcmeSettings, NodeConfig, load_store_key
from sync.monitor import Lifecycle, run_monitor
from sync.replicator import (
    DEFAULT_CONCURRENCY,
    Replication,
    peers_from_topology,
    wire_replication,
)
from sync.topology import Topology, split_address

__all__ = ["GRACE_SECONDS", "NodeApp", "run_node"]

GRACE_SECONDS: Final = 5.0

_log = structlog.get_logger("node.daemon")


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


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class NodeApp:
    """The running node as the servicer sees it; see the module docstring."""

    def __init__(
        self,
        *,
        name: str,
        topology: Topology,
        store: Store,
        endpoint: TlsEndpoint,
        clock: Callable[[], dt.datetime] = _utcnow,
        alerts: AlertConfig | None = None,
        acme: AcmeSettings | None = None,
        responder: Http01Responder | None = None,
        account_key_path: Path | None = None,
    ) -> None:
        self._name = name
        self._topology = topology
        self._role = topology.node(name).role
        self._store = store
        self._endpoint = endpoint
        self._clock = clock
        self._refresh_lock = asyncio.Lock()
        # --- replication (issue 4): runtime role and "store changed" hook; see attach_replication
        self._runtime_role: Callable[[], str] | None = None
        self._on_change: Callable[[], None] | None = None
        # --- lifecycle (issue 6): renewal, alerts, CA changes; see sync.monitor ---
        self._lifecycle = Lifecycle(
            node=name,
            role=lambda: self.role,
            topology=topology,
            store=store,
            on_change=self.refresh,
            publish_trust_bundle=endpoint.set_trust_bundle,
            alerts=alerts,
            acme=acme,
            responder=responder,
            account_key_path=account_key_path,
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def role(self) -> str:
        """At run time: ``primary`` while this node is the primary of its epoch (see
        :class:`sync.receiver.Replica`); the topology role until replication is attached."""
        return self._runtime_role() if self._runtime_role is not None else self._role

    def attach_replication(self, *, role: Callable[[], str], on_change: Callable[[], None]) -> None:
        """``role`` answers the runtime role; ``on_change`` is called after every refresh
        (that is, after every store change) -- the replicator's trigger, which coalesces."""
        self._runtime_role = role
        self._on_change = on_change

    @property
    def cluster_id(self) -> str:
        return self._topology.cluster_id

    @property
    def node_names(self) -> Sequence[str]:
        return self._topology.names

    @property
    def store(self) -> Store:
        return self._store

    @property
    def endpoint(self) -> TlsEndpoint:
        return self._endpoint

    @property
    def lifecycle(self) -> Lifecycle:
        return self._lifecycle

    def now(self) -> dt.datetime:
        return self._clock()

    def served_for(self, server_name: str | None) -> Selection:
        return self._endpoint.served_for(server_name)

    async def served_certs(
        self, view: StoreView | None = None
    ) -> tuple[list[ServedCert], str | None]:
        """What the endpoint should serve now: every certificate with a key, and the default
        (of ``view``, a view of the store just read, when given)."""
        view = view or await self._store.view()
        keys = await self._store.keys(view.keyed, view=view)
        served: list[ServedCert] = []
        for s in view.certs:
            key = keys.get(s.sha256)
            if key is None:
                continue
            cert = s.certificate()
            chain, _problems = view.chain(s.sha256)  # rebuilt only when its issuers change
            served.append(
                ServedCert(
                    sha256=s.sha256,
                    cert=cert,
                    chain=tuple(c for c in chain if c != cert and not _self_signed(c)),
                    key=key,
                )
            )
        default = view.default_sha256
        return served, default if default in keys else None

    async def refresh(self) -> None:
        """Serve what the store holds from the next handshake on (serialised)."""
        async with self._refresh_lock:
            view = await self._store.view()  # one reading for the endpoint and the bundle
            served, default = await self.served_certs(view)
            await asyncio.to_thread(self._endpoint.update, served, default)
            await self._lifecycle.publish_trust_bundle(view)
            _log.debug("node.refreshed", certificates=len(served), default_sha256=default)
        if self._on_change is not None:
            self._on_change()


def _self_signed(cert: x509.Certificate) -> bool:
    """Roots are not sent in a handshake (the client has them or it does not)."""
    return cert.issuer == cert.subject


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ConfigError(
            f"cannot read the {what} {str(path)!r}: {err.strerror}; check node.toml"
        ) from err


async def run_node(
    config: NodeConfig,
    *,
    stop: asyncio.Event,
    started: Callable[[NodeApp, int, int], None] | None = None,
) -> None:
    """Run the node of ``config`` (a ``NodeConfig``) until ``stop`` is set.

    ``started(app, grpc_port, tls_port)`` is called once both ports listen (tests bind port 0).
    """
    topology: Topology = config.topology
    store = await Store.open(config.store_path, load_store_key(config.store_key_path))
    endpoint = TlsEndpoint(node_name=config.name)
    server = None
    responder: Http01Responder | None = None
    monitor: asyncio.Task[None] | None = None
    replication: Replication | None = None
    pusher: asyncio.Task[None] | None = None
    try:
        if config.acme is not None:
            http_host, http_port = split_address(config.acme.http_listen)
            responder, _ = await start_http01_responder(http_host, http_port)
        app = NodeApp(
            name=config.name,
            topology=topology,
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
        store_service = CertStoreService(app)
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
        )
        server, grpc_port = await start_grpc_server(
            store_service, address=config.grpc_listen, credentials=creds,
            replication=replication.service,
        )
        pusher = asyncio.create_task(replication.replicator.run())
        _log.info("node.started", node=config.name, grpc_port=grpc_port, tls_port=tls_bound)
        if started is not None:
            started(app, grpc_port, tls_bound)
        monitor = asyncio.create_task(
            run_monitor(
                app.lifecycle, clock=app.now, interval=config.monitor_interval, stop=stop
            )
        )
        await stop.wait()
        _log.info("node.stopping", node=config.name)
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
        if responder is not None:
            await responder.close()
        if server is not None:
            await server.stop(GRACE_SECONDS)
        await asyncio.to_thread(endpoint.stop)
        await store.close()
        _log.info("node.stopped", node=config.name)
