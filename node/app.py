"""[shell] The running node as its gRPC servicer sees it: store + TLS endpoint + lifecycle.

:class:`NodeApp` implements :class:`node.service.NodeRuntime`: after every change it calls
:meth:`NodeApp.refresh`, which reads the store, builds the list of certificates to serve
(each with its key and chain) and hands it to the TLS endpoint off the event loop, so the
next handshake serves the change without a restart.

What the node knows of its cluster arrives as plain values (:class:`NodeCluster`); the
cluster layer (``sync.daemon``) builds them from the topology and wires replication in
through :meth:`NodeApp.attach_replication`. Nothing here imports ``sync``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography import x509

from node.acme_client import AcmeSettings, Http01Responder
from node.alerts import AlertConfig
from node.coverage_gate import RequiredName
from node.formats import cert_sha256
from node.model import PrivateKey
from node.renewal import Lifecycle
from node.selection import Selection
from node.store import Store
from node.store_rows import CertRows
from node.store_view import StoreView
from node.tls import ServedCert, TlsEndpoint

__all__ = ["NodeApp", "NodeCluster"]

_log = structlog.get_logger("node.app")


@dataclass(frozen=True)
class NodeCluster:
    """What one node knows of its cluster: the cluster's id, every node's name, this node's
    configured role, and ``(primary, backup)`` when the cluster is a failover pair;
    ``required`` the names the default must cover (empty: nothing to check)."""

    cluster_id: str
    node_names: tuple[str, ...]
    role: str
    failover_pair: tuple[str, str] | None = None
    required: tuple[RequiredName, ...] = ()


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class NodeApp:
    """The running node as the servicer sees it; see the module docstring."""

    def __init__(
        self,
        *,
        name: str,
        cluster: NodeCluster,
        store: Store,
        endpoint: TlsEndpoint,
        clock: Callable[[], dt.datetime] = _utcnow,
        alerts: AlertConfig | None = None,
        acme: AcmeSettings | None = None,
        responder: Http01Responder | None = None,
        account_key_path: Path | None = None,
    ) -> None:
        self._name = name
        self._cluster = cluster
        self._role = cluster.role
        self._store = store
        self._endpoint = endpoint
        self._clock = clock
        self._refresh_lock = asyncio.Lock()
        #: what served_certs answered last, by sha256, with the chain it was made from
        self._served: tuple[CertRows | None,
                            dict[str, tuple[tuple[x509.Certificate, ...], ServedCert]]] = (None, {})
        # --- replication (issue 4): runtime role and "store changed" hook; see attach_replication
        self._runtime_role: Callable[[], str] | None = None
        self._on_change: Callable[[], None] | None = None
        self._hold: Callable[[], bool] | None = None  # rollouts (issue 12)
        # --- lifecycle (issue 6): renewal, alerts, CA changes; see node.renewal ---
        self._lifecycle = Lifecycle(
            node=name,
            role=lambda: self.role,
            failover_pair=cluster.failover_pair,
            store=store,
            on_change=self.refresh,
            publish_trust_bundle=endpoint.set_trust_bundle,
            alerts=alerts,
            acme=acme,
            responder=responder,
            account_key_path=account_key_path,
            required=cluster.required,
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def role(self) -> str:
        """At run time: ``primary`` while this node is the primary of its epoch (see
        the cluster layer's replica); the topology role until replication is attached."""
        return self._runtime_role() if self._runtime_role is not None else self._role

    def attach_replication(self, *, role: Callable[[], str], on_change: Callable[[], None],
                           hold: Callable[[], bool] | None = None) -> None:
        """``role`` answers the runtime role; ``on_change`` is called after every refresh
        (that is, after every store change) -- the replicator's trigger, which coalesces.
        While ``hold()`` is true a refresh leaves the TLS endpoint as it is (a primary
        serves the cluster's current set until a rollout switches it: ``refresh(serve=True)``)."""
        self._runtime_role = role
        self._on_change = on_change
        self._hold = hold

    @property
    def cluster_id(self) -> str:
        return self._cluster.cluster_id

    @property
    def node_names(self) -> Sequence[str]:
        return self._cluster.node_names

    @property
    def store(self) -> Store:
        return self._store

    @property
    def required_names(self) -> tuple[RequiredName, ...]:
        """The names the default must cover, with the nodes each belongs to."""
        return self._cluster.required

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
        rows, (before, last) = view.cert_rows, self._served
        if before is None:  # the first time: look at every certificate
            redo: Iterable[str] = (c.sha256 for c in view.certs)
            kept: dict[str, tuple[tuple[x509.Certificate, ...], ServedCert]] = {}
        else:  # what changed since, or may be chained otherwise, and no more
            redo, kept = rows.changes_from(before) | rows.rechained_from(before), dict(last)
        for sha in redo:
            key, s = keys.get(sha), rows.get(sha)
            if key is None or s is None:
                kept.pop(sha, None)
                continue
            cert = s.certificate()
            chain, _problems = view.chain(sha)  # rebuilt only when its issuers change
            seen = last.get(sha)
            if seen is not None and seen[0] is chain and seen[1].key is key \
                    and seen[1].cert is cert:
                kept[sha] = seen  # the same object: the endpoint keeps its context unlooked at
            else:
                kept[sha] = (chain, ServedCert(sha256=sha, cert=cert, key=key, chain=tuple(
                    c for c in chain if c != cert and not _self_signed(c))))
        self._served = (rows, kept)
        default = view.default_sha256
        return [item for _chain, item in kept.values()], default if default in keys else None

    async def serve_set(
        self, certs: Sequence[tuple[x509.Certificate, Sequence[x509.Certificate], PrivateKey]],
        default: str | None,
    ) -> None:
        """Serve ``certs`` (certificate, chain, key) rather than what the store holds, until
        the next refresh that is not held: a primary that starts while a rollout is
        pending serves the cluster's current set, not its proposal."""
        served = [ServedCert(sha256=cert_sha256(c), cert=c, key=k,
                             chain=tuple(x for x in chain if x != c and not _self_signed(x)))
                  for c, chain, k in certs]
        async with self._refresh_lock:
            await asyncio.to_thread(self._endpoint.update, served, default)
        _log.info("node.serving_set", certificates=len(served), default_sha256=default)

    async def refresh(self, *, serve: bool = False) -> None:
        """Serve what the store holds from the next handshake on (serialised); while held
        (see :meth:`attach_replication`) only when ``serve``."""
        async with self._refresh_lock:
            view = await self._store.view()  # one reading for the endpoint and the bundle
            if serve or self._hold is None or not self._hold():
                served, default = await self.served_certs(view)
                await asyncio.to_thread(self._endpoint.update, served, default)
            await self._lifecycle.publish_trust_bundle(view)
            _log.debug("node.refreshed", held=not serve and self._hold is not None
                       and self._hold())
        if self._on_change is not None:
            self._on_change()


def _self_signed(cert: x509.Certificate) -> bool:
    """Roots are not sent in a handshake (the client has them or it does not)."""
    return cert.issuer == cert.subject
