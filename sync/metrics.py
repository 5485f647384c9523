"""[shell] A node's Prometheus metrics: one :class:`NodeMetrics` per running node.

Most series are read from live state at scrape time (custom collectors), so they cannot
drift from what ``status`` and ``cert list`` report:

* ``certsync_certificate_not_after_seconds{sha256,name,default}`` -- every stored
  certificate's not-after (Unix seconds), ``default`` ``"true"``/``"false"``;
* ``certsync_epoch``, ``certsync_revision`` -- this node's, from its store (``GetState``'s);
* ``certsync_node_in_sync{node}``, ``certsync_node_last_sync_timestamp_seconds{node}`` -- as
  seen by the primary, so only a node that is the primary of its epoch has them: a node is
  in sync when the primary's last probe saw it serve the primary's epoch, revision and digest
  (the primary itself always is); its last sync is when the primary last confirmed that
  (the primary's own: its ``last_sync``, the last round that found every node in sync);
* ``certsync_tls_handshakes_total{outcome}`` -- ``exact``, ``wildcard``, ``default``,
  ``failed``, read from the TLS endpoint's ``handshakes`` mapping (outcome -> count). An
  endpoint without that attribute yields the family with no samples (the hook is
  :func:`handshake_counts`).

What only happens as an event is counted or timed here, fed by the parts that see it:

* ``certsync_push_seconds`` and ``certsync_converge_seconds`` (histograms) from the
  replicator's ``on_push`` / ``on_converge`` hooks: one push (stage, activate, probe,
  confirm) to one node, and a store change until every node served it;
* ``certsync_acme_renewal_attempts_total``, ``certsync_acme_renewal_failures_total`` and
  ``certsync_alerts_sent_total`` from each renewal monitor round (:meth:`NodeMetrics.tick`).

:meth:`NodeMetrics.render` gives the Prometheus text format (``CONTENT_TYPE`` is its media
type); the admin listener serves it at ``/metrics``. Nothing here reads key material.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from node.renewal_plan import TickReport
from node.store import Store
from sync.replicator import Replicator

__all__ = [
    "CONTENT_TYPE",
    "HANDSHAKE_OUTCOMES",
    "Live",
    "NodeMetrics",
    "handshake_counts",
]

#: the media type of :meth:`NodeMetrics.render`'s output
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
#: the label values of ``certsync_tls_handshakes_total``
HANDSHAKE_OUTCOMES: Final = ("exact", "wildcard", "default", "failed")
#: push and converge durations: from a loopback push (tens of ms) to a slow WAN round
_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


def handshake_counts(endpoint: object) -> Mapping[str, int] | None:
    """The endpoint's handshakes by SNI outcome (``exact``/``wildcard``/``default``/
    ``failed`` -> count), or None while the endpoint does not count them."""
    counts = getattr(endpoint, "handshakes", None)
    if counts is None:
        return None
    return {outcome: int(counts.get(outcome, 0)) for outcome in HANDSHAKE_OUTCOMES}


def _timestamp(text: str | None) -> float | None:
    """Unix seconds of an RFC 3339 meta value (``2027-01-01T00:00:00Z``); None when unset."""
    if not text:
        return None
    return dt.datetime.fromisoformat(text).timestamp()


@dataclass(frozen=True)
class Live:
    """One reading of the live state a scrape reports (plain values)."""

    #: (sha256, name, default, not_after Unix seconds) per stored certificate
    certificates: tuple[tuple[str, str, bool, float], ...] = ()
    epoch: int = 0
    revision: int = 0
    #: node -> in sync, as seen by the primary (empty on any other node)
    in_sync: Mapping[str, bool] = field(default_factory=dict)
    #: node -> last sync (Unix seconds), as seen by the primary
    last_sync: Mapping[str, float] = field(default_factory=dict)
    handshakes: Mapping[str, int] | None = None


class _LiveCollector(Collector):
    """Yields the families of the :class:`Live` reading it is given before each scrape."""

    def __init__(self) -> None:
        self.live = Live()

    def collect(self) -> Iterator[Metric]:
        live = self.live
        not_after = GaugeMetricFamily(
            "certsync_certificate_not_after_seconds",
            "Each stored certificate's not-after, in Unix seconds.",
            labels=("sha256", "name", "default"),
        )
        for sha256, name, default, seconds in live.certificates:
            not_after.add_metric((sha256, name, "true" if default else "false"), seconds)
        yield not_after
        yield GaugeMetricFamily("certsync_epoch", "This node's epoch.", value=live.epoch)
        yield GaugeMetricFamily("certsync_revision", "This node's revision of the replicated set.",
                                value=live.revision)
        in_sync = GaugeMetricFamily(
            "certsync_node_in_sync",
            "1 when the primary last saw the node serve its set, else 0 (on the primary only).",
            labels=("node",),
        )
        for node, ok in sorted(live.in_sync.items()):
            in_sync.add_metric((node,), 1.0 if ok else 0.0)
        yield in_sync
        last = GaugeMetricFamily(
            "certsync_node_last_sync_timestamp_seconds",
            "When the primary last confirmed the node served its set (on the primary only).",
            labels=("node",),
        )
        for node, seconds in sorted(live.last_sync.items()):
            last.add_metric((node,), seconds)
        yield last
        handshakes = CounterMetricFamily(
            "certsync_tls_handshakes",
            "TLS handshakes of the endpoint by SNI outcome (exact, wildcard, default, failed).",
            labels=("outcome",),
        )
        for outcome, count in (live.handshakes or {}).items():
            handshakes.add_metric((outcome,), count)
        yield handshakes


class NodeMetrics:
    """The metrics of one running node; see the module docstring.

    ``replicator`` is the node's (None: a node without replication, e.g. in a unit test);
    ``endpoint`` is its TLS endpoint, read for ``handshakes``.
    """

    def __init__(self, *, store: Store, replicator: Replicator | None = None,
                 endpoint: object = None) -> None:
        self._store = store
        self.replicator = replicator
        self.endpoint = endpoint
        self.registry = CollectorRegistry(auto_describe=False)
        self._live = _LiveCollector()
        self.registry.register(self._live)
        self.push_seconds = Histogram(
            "certsync_push_seconds", "One push (stage, activate, probe, confirm) to one node.",
            buckets=_BUCKETS, registry=self.registry)
        self.converge_seconds = Histogram(
            "certsync_converge_seconds",
            "From a change on the primary until every node served it.",
            buckets=_BUCKETS, registry=self.registry)
        self.renewal_attempts = Counter(
            "certsync_acme_renewal_attempts", "ACME renewals this node attempted.",
            registry=self.registry)
        self.renewal_failures = Counter(
            "certsync_acme_renewal_failures", "ACME renewals that failed.",
            registry=self.registry)
        self.alerts_sent = Counter(
            "certsync_alerts_sent", "Expiry alerts this node sent.", registry=self.registry)
        if replicator is not None:
            replicator.on_push.append(lambda _node, seconds: self.push_seconds.observe(seconds))
            replicator.on_converge.append(self.converge_seconds.observe)

    def tick(self, report: TickReport) -> None:
        """Count one renewal monitor round (``node.renewal.run_monitor``'s ``observe``)."""
        self.renewal_attempts.inc(len(report.renewed) + len(report.failed))
        self.renewal_failures.inc(len(report.failed))
        self.alerts_sent.inc(len(report.alerted))

    async def live(self) -> Live:
        """Read the live state (one store view; the replicator's view of its peers)."""
        view = await self._store.view()
        meta = view.meta
        epoch = int(meta.get("epoch") or 0)
        revision = int(meta.get("revision") or 0)
        certificates = tuple(
            (c.sha256, c.name, c.is_default, c.not_after.timestamp()) for c in view.certs)
        in_sync: dict[str, bool] = {}
        last_sync: dict[str, float] = {}
        rep = self.replicator
        if rep is not None and rep.replica.is_primary:
            current = (rep.replica.epoch, revision, view.digest)
            in_sync[rep.name] = True
            own = _timestamp(meta.get("last_sync"))
            if own is not None:
                last_sync[rep.name] = own
            for node in rep.targets:
                in_sync[node] = rep.served.get(node) == current
                when = rep.synced.get(node)
                if when is not None:
                    last_sync[node] = when.timestamp()
        return Live(certificates=certificates, epoch=epoch, revision=revision,
                    in_sync=in_sync, last_sync=last_sync,
                    handshakes=handshake_counts(self.endpoint))

    async def render(self) -> bytes:
        """The Prometheus text format of every series, live state read now."""
        live = await self.live()
        # no await between setting and generating: concurrent scrapes each see their own
        self._live.live = live
        return generate_latest(self.registry)
