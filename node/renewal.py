"""[shell] The node's certificate lifecycle: ACME orders, renewal, expiry alerts, CA changes.

:class:`Lifecycle` wires the pure rules of :mod:`node.lifecycle` to one node's store:

* **State** per certificate lives in the store's meta as ``lifecycle:<sha256>`` -> JSON
  (``acme``, ``hostname``, ``key_type``, ``failures``, ``last_failure_at``,
  ``last_alert_at``); a pending CA change as ``pending_ca_change`` -> JSON (``""``: none).
  Meta is local to the node: every node keeps its own alert clock.
* **Replaced** is computed from the set, not stored: a certificate with a key is replaceable
  when another certificate with a key has the same names, a later ``not_after`` and the same
  CA by the stored chains (:func:`replaced_by`), and it is not the default (served to
  clients without SNI, so alerted on until the default moves). That holds on every node
  after replication.
* :meth:`Lifecycle.tick` is one round of the monitor, "decide, then act": it takes a
  snapshot, plans with :func:`plan_tick` (pure), then renews due ACME certificates (primary
  only, back-off through :func:`~node.lifecycle.record_failure`), delivers expiry alerts
  (every node, every certificate, once a day) and switches a staged CA change whose wait is
  over (primary only). The daemon calls it on an interval; tests call it with a fixed ``now``.
* Every change to the certificate set goes through ``on_change`` -- the same post-change
  hook the gRPC servicer uses (rebuild what is served, replicate).

Nothing here logs or raises key material: keys go from the ACME result into the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import replace
from pathlib import Path

import structlog
from cryptography import x509

from node.acme_client import (
    ACME_KEY_TYPES,
    AcmeSettings,
    Http01Responder,
    load_account_key,
    request_certificate,
    save_account_key,
)
from node.alerts import AlertConfig, ExpiryAlert, deliver_alert
from node.chain import build_chain
from node.coverage_gate import RequiredName, broken_by, describe, gate_refusal, uncovered_by
from node.errors import AcmeError, BadInput, Conflict
from node.formats import cert_sha256
from node.guard import record_forced
from node.lifecycle import (
    CertState,
    StagedCaChange,
    changes_ca,
    check_default_change,
    record_alert,
    record_failure,
    renewal_decision,
    root_of,
    stage_ca_change,
    supersedes,
)
from node.linking import issuer_of, takes_over
from node.model import KeyType, PrivateKey
from node.names import SanSet, sans_of
from node.renewal_plan import (
    ACTOR,
    PENDING_KEY,
    CertStatus,
    LifecycleRecord,
    Replacements,
    TickReport,
    chain_pem,
    common_name,
    format_time,
    pending_from_json,
    pending_to_json,
    plan_tick,
    state_key,
)
from node.store import Store
from node.store_rows import CertRows
from node.store_view import SetEntry, StoredCert, StoreView

__all__ = ["Lifecycle", "run_monitor"]

_log = structlog.get_logger("certnode.renewal")


def _read_record(text: str | None) -> LifecycleRecord:
    try:
        return LifecycleRecord.from_json(text)
    except ValueError:
        _log.warning("lifecycle.state_unreadable")  # start over rather than stop the monitor
        return LifecycleRecord()


def _read_pending(text: str | None) -> StagedCaChange | None:
    try:
        return pending_from_json(text)
    except ValueError:
        _log.warning("lifecycle.pending_unreadable")
        return None


# --- the shell ----------------------------------------------------------------------------


class Lifecycle:
    """One node's lifecycle: see the module docstring.

    ``role`` tells the node's current role (it changes on promotion); ``on_change`` is
    awaited after every change to the certificate set (the servicer's post-change hook);
    ``publish_trust_bundle`` receives the PEM bundle (or ``None``) the
    TLS endpoint serves at ``/.well-known/certsync/trust-bundle.pem``. ``acme`` and
    ``responder`` are set when the node has an ``[acme]`` table; the ACME account key is
    kept in ``account_key_path`` (mode 0600) so renewals reuse the account.
    Methods are safe to call concurrently from the event loop: renewals and ACME requests
    are serialised by one lock.
    """

    def __init__(
        self,
        *,
        node: str,
        role: Callable[[], str],
        failover_pair: tuple[str, str] | None = None,
        store: Store,
        on_change: Callable[[], Awaitable[None]],
        publish_trust_bundle: Callable[[bytes | None], None] | None = None,
        alerts: AlertConfig | None = None,
        acme: AcmeSettings | None = None,
        responder: Http01Responder | None = None,
        account_key_path: Path | None = None,
        required: Sequence[RequiredName] = (),
    ) -> None:
        self._node = node
        self._required = tuple(required)
        self._role = role
        self._failover_pair = failover_pair
        self._store = store
        self._on_change = on_change
        self._publish = publish_trust_bundle
        self.alerts = alerts or AlertConfig()
        self.acme = acme
        self.responder = responder
        self._account_key_path = account_key_path
        self._acme_lock = asyncio.Lock()
        self._replaced: tuple[CertRows, Replacements] | None = None

    # -- snapshot -------------------------------------------------------------------------

    async def _is_primary(self) -> bool:
        return self._role() == "primary"

    async def _record(self, sha256: str) -> LifecycleRecord:
        return _read_record(await self._store.get_meta(state_key(sha256)))

    async def _save(self, sha256: str, record: LifecycleRecord) -> None:
        await self._store.set_meta({state_key(sha256): record.to_json()})

    async def _snapshot(
        self, view: StoreView | None = None
    ) -> tuple[Sequence[StoredCert], Callable[[str], LifecycleRecord], dict[str, str]]:
        """The certificates, each one's record (read when asked for), and which are
        replaced (redone since the last call only where the rows changed)."""
        view = view or await self._store.view()
        rows, memo = view.cert_rows, self._replaced
        if memo is None or memo[0] is not rows:
            memo = self._replaced = (rows, memo[1].updated(rows.changes_from(memo[0]), rows.get)
                                     if memo is not None else Replacements.of(rows.certs))
        meta, default, replaced = view.meta, view.default_sha256, memo[1].replaced
        # the default is served to every client without SNI: it is not superseded (and stays
        # alerted on) until the default moves to its replacement
        if default in replaced:
            replaced = {k: v for k, v in replaced.items() if k != default}
        return view.certs, lambda sha: _read_record(meta.get(state_key(sha))), replaced

    async def pending(self, view: StoreView | None = None) -> StagedCaChange | None:
        """The staged CA change, if any (in ``view``, a view of the store just read, when
        given)."""
        view = view or await self._store.view()
        return _read_pending(view.meta.get(PENDING_KEY))

    async def statuses(
        self, now: dt.datetime, view: StoreView | None = None,
        only: Collection[str] | None = None,
    ) -> dict[str, CertStatus]:
        """Every stored certificate's lifecycle at ``now``, by sha256 (``only``: just these)."""
        view = view or await self._store.view()
        certs, record_of, replaced = await self._snapshot(view)
        out: dict[str, CertStatus] = {}
        if only is not None:  # in the store's order, as every certificate would be
            certs = sorted((c for sha in only if (c := view.get(sha)) is not None),
                           key=lambda c: (c.added_at, c.sha256))
        for c in certs:
            record = record_of(c.sha256)
            decision = renewal_decision(record.state(c, c.sha256 in replaced), now)
            out[c.sha256] = CertStatus(
                sha256=c.sha256,
                days_left=decision.days_left,
                renewal_state=decision.state,
                next_attempt=decision.next_attempt if record.acme else None,
                replaceable=c.sha256 in replaced and not c.is_default,
                acme=record.acme,
            )
        return out

    # -- CA change guard and renewed certificates -----------------------------------------

    async def _default(self, view: StoreView | None = None) -> StoredCert | None:
        return (view or await self._store.view()).default

    async def _chain_of(
        self, sha256: str, view: StoreView | None = None
    ) -> tuple[x509.Certificate, ...]:
        view = view or await self._store.view()
        cert = view.require(sha256).certificate()
        chain, _problems = view.chain(sha256)
        return (cert, *(c for c in chain if c != cert))

    async def check_default_change(
        self,
        sha256: str,
        *,
        confirm_ca_change: bool,
        new_chain: Sequence[x509.Certificate] | None = None,
    ) -> None:
        """Refuse making ``sha256`` default when its root differs from the current default's
        and the change is not confirmed (:class:`Conflict` saying why). ``new_chain``
        (identity first) is for a certificate not stored yet."""
        current = await self._default()
        if current is None or current.sha256 == sha256:
            return
        chain = new_chain if new_chain is not None else await self._chain_of(sha256)
        check_default_change(
            sha256,
            await self._chain_of(current.sha256),
            chain,
            confirm_ca_change=confirm_ca_change,
        )

    async def renewal_default(
        self, cert: x509.Certificate, pool: Sequence[x509.Certificate], *, has_key: bool
    ) -> tuple[bool, list[str]]:
        """Whether an imported ``cert`` should become the default because it renews the
        current default (same names, later ``not_after``, same CA), with what to tell the
        admin. ``pool`` holds the certificates imported with it (its chain)."""
        current = await self._default()
        if current is None or not has_key:
            return False, []
        sha = cert_sha256(cert)
        names = sans_of(cert).dns_names
        if sha == current.sha256 or not supersedes(
            names, cert.not_valid_after_utc, current.dns_names, current.not_after
        ):
            return False, []
        stored_pool = [c.certificate() for c in await self._store.list_certificates()]
        chain, _problems = await asyncio.to_thread(build_chain, cert, [*pool, *stored_pool])
        new_chain = (cert, *(c for c in chain if c != cert))
        if changes_ca(await self._chain_of(current.sha256), new_chain):
            root = root_of(new_chain).describe()
            return False, [
                f"certificate {sha} renews the default {current.sha256} but ends in another "
                f"root CA ({root}); it is not made default: use 'cert default {sha} "
                "--confirm-ca-change' or 'cert stage-ca-change'"
            ]
        if not takes_over(names, cert.not_valid_after_utc, issuer_of(cert),
                          current.dns_names, current.not_after, issuer_of(current.certificate())):
            return False, [
                f"certificate {sha} has the names of the default {current.sha256} but another "
                f"issuing CA ({issuer_of(cert).name}); it is not made default: use "
                f"'cert default {sha}'"
            ]
        _log.info("lifecycle.renewal_imported", sha256=sha, replaces=current.sha256)
        return True, [
            f"certificate {sha} renews the default {current.sha256} (same names, later "
            f"expiry) and is now the default; {current.sha256} is replaceable and can be deleted"
        ]

    # -- staged CA change and trust bundle ------------------------------------------------

    async def stage(
        self, sha256: str, after: str, *, actor: str, now: dt.datetime
    ) -> StagedCaChange:
        """Stage making ``sha256`` the default after ``after`` (e.g. ``"48h"``); publish the
        trust bundle with its chain at once."""
        if not await self._is_primary():
            raise Conflict(
                f"node {self._node!r} is not the primary; stage a CA change on the primary, "
                "which replicates the switch"
            )
        stored = await self._store.get(sha256)
        if not stored.has_key:
            raise Conflict(
                f"certificate {sha256!r} has no private key and cannot be served; "
                "import it with its key first"
            )
        if stored.not_after <= now:
            raise Conflict(f"certificate {sha256!r} has expired; stage a valid certificate")
        staged = stage_ca_change(sha256, after, now)
        if stored.not_after <= staged.switch_at:
            raise BadInput(
                f"certificate {sha256!r} expires before the switch at "
                f"{format_time(staged.switch_at)}; "
                "give a shorter wait or a newer certificate"
            )
        await self._store.set_meta({PENDING_KEY: pending_to_json(staged)}, actor=actor, now=now)
        _log.info(
            "lifecycle.ca_change_staged", sha256=sha256, switch_at=format_time(staged.switch_at)
        )
        await self.publish_trust_bundle()
        return staged

    async def trust_bundle(self, view: StoreView | None = None) -> bytes | None:
        """The chains clients should trust now: the default's and, while a CA change is
        pending, the new certificate's (certificates only, PEM); ``None`` with no default."""
        view = view or await self._store.view()
        chains: list[tuple[x509.Certificate, ...]] = []
        current = view.default
        if current is not None:
            chains.append(await self._chain_of(current.sha256, view))
        staged = await self.pending(view)
        if staged is not None:
            with contextlib.suppress(BadInput):  # deleted meanwhile: nothing to publish
                chains.append(await self._chain_of(staged.sha256, view))
        return chain_pem(chains) if chains else None

    async def publish_trust_bundle(self, view: StoreView | None = None) -> None:
        """Hand the trust bundle to the TLS endpoint (of ``view`` when given)."""
        if self._publish is not None:
            self._publish(await self.trust_bundle(view))

    # -- ACME -----------------------------------------------------------------------------

    def _failover_warning(self) -> str | None:
        if self._failover_pair is None:
            return None
        primary, backup = self._failover_pair
        return (
            f"this cluster is a failover pair ({primary} + {backup}); "
            "DNS can point at one appliance only, so HTTP-01 renewal can fail after a failover"
        )

    async def _order(
        self, hostname: str, key_type: KeyType, now: dt.datetime
    ) -> tuple[x509.Certificate, tuple[x509.Certificate, ...], PrivateKey]:
        acme, responder = self.acme, self.responder
        if acme is None or responder is None:
            raise Conflict(
                f"node {self._node!r} has no [acme] table in its node.toml, so it cannot "
                "order certificates; add one (directory_url, email, http_listen) and restart"
            )
        account_key = await asyncio.to_thread(load_account_key, self._account_key_path)
        result = await request_certificate(
            directory_url=acme.directory_url,
            email=acme.email,
            hostname=hostname,
            key_type=key_type,
            responder=responder,
            account_key=account_key,
            ca_bundle=acme.ca_bundle,
            now=now,
        )
        await asyncio.to_thread(save_account_key, self._account_key_path,
                                result.account_key)
        return result.cert, result.chain, result.key

    async def request(
        self,
        *,
        hostname: str,
        key_type: str,
        make_default: bool,
        accept_failover_risk: bool,
        confirm_ca_change: bool,
        name: str,
        actor: str,
        now: dt.datetime,
        force: bool = False,
    ) -> tuple[str, list[str]]:
        """Order a certificate for ``hostname`` over ACME and store it (primary only).

        Returns its sha256 and warnings. A failover pair is refused without
        ``accept_failover_risk``; with ``make_default`` a certificate whose root differs
        from the current default's is stored but made default only when confirmed.
        """
        kt = next((k for k in ACME_KEY_TYPES if k == key_type), None)
        if kt is None:
            raise BadInput(
                f"key type {key_type!r} cannot be requested through ACME; "
                f"use one of {', '.join(ACME_KEY_TYPES)}"
            )
        warnings: list[str] = []
        risk = self._failover_warning()
        if risk is not None:
            if not accept_failover_risk:
                raise Conflict(
                    f"{risk}; pass --accept-failover-risk to request {hostname!r} anyway"
                )
            warnings.append(risk)
        if not await self._is_primary():
            raise Conflict(
                f"node {self._node!r} is not the primary; request ACME certificates on the "
                "primary, which replicates them"
            )
        # the names are known before ordering: the coverage gate refuses before anything is
        # ordered, unless forced
        missing = uncovered_by(SanSet(dns_names=(hostname,)), self._required)
        if make_default and missing and not force:
            raise gate_refusal(f"making the certificate for {hostname!r} the default", missing)
        async with self._acme_lock:
            cert, chain, key = await self._order(hostname, kt, now)
            sha = cert_sha256(cert)
            default = make_default
            if make_default:
                try:
                    await self.check_default_change(
                        sha, confirm_ca_change=confirm_ca_change, new_chain=(cert, *chain)
                    )
                except Conflict as err:
                    default = False
                    warnings.append(f"stored but not made default: {err.message}")
            await self._store_issued(
                cert, chain, key, name=name or hostname, make_default=default, actor=actor,
                now=now,
            )
            await self._save(sha, LifecycleRecord(acme=True, hostname=hostname, key_type=kt))
            if default and missing:
                warnings.append(await record_forced(self._store, ["coverage"], missing, now=now,
                                                    method="RequestAcmeCertificate", actor=actor,
                                                    target=sha))
        await self._on_change()
        return sha, warnings

    async def _store_issued(
        self,
        cert: x509.Certificate,
        chain: Sequence[x509.Certificate],
        key: PrivateKey,
        *,
        name: str,
        make_default: bool,
        actor: str,
        now: dt.datetime,
    ) -> None:
        entries = [SetEntry(cert=cert, key=key, name=name)]
        entries += [
            SetEntry(cert=c, key=None, name=common_name(c) or cert_sha256(c)[:16]) for c in chain
        ]
        await self._store.add(
            entries,
            make_default=cert_sha256(cert) if make_default else None,
            actor=actor,
            now=now,
        )

    async def _breaks_coverage(self, current: StoredCert | None, new: x509.Certificate,
                               what: str, now: dt.datetime) -> bool:
        """A background change making ``new`` the default instead of ``current`` that would
        leave a name uncovered that ``current`` covers is skipped: logged, audited and alerted
        (the expiry alert of the default kept). True when it is skipped."""
        old = current.certificate() if current is not None else None
        broken = broken_by(old, new, self._required)
        if not broken:
            return False
        sha = cert_sha256(new)
        _log.error("lifecycle.change_skipped", change=what, sha256=sha, uncovered=describe(broken))
        await self._store.record_audit(
            actor=ACTOR, action="lifecycle.change_skipped",
            detail={"change": what, "sha256": sha, "uncovered": [r.hostname for r in broken]},
            now=now)
        if old is not None:
            await deliver_alert(ExpiryAlert.for_certificate(old, now, node=self._node), self.alerts)
        return True

    # -- one round of the monitor ---------------------------------------------------------

    async def tick(self, now: dt.datetime) -> TickReport:
        """One round at ``now``: renew, alert, switch; see the module docstring."""
        certs, record_of, replaced = await self._snapshot()
        records = {c.sha256: record_of(c.sha256) for c in certs}
        by_sha = {c.sha256: c for c in certs}
        states = {c.sha256: records[c.sha256].state(c, c.sha256 in replaced) for c in certs}
        plan = plan_tick(
            states.values(),
            await self.pending(),
            primary=await self._is_primary(),
            can_renew=self.acme is not None and self.responder is not None,
            now=now,
        )
        renewed: dict[str, str] = {}
        failed: list[str] = []
        changed = False
        for sha in plan.renew:
            new = await self._renew(by_sha[sha], records[sha], states[sha], now)
            if new is None:
                failed.append(sha)
            else:
                renewed[sha] = new
                changed = True
        alerted: list[str] = []
        for sha in plan.alert:
            if sha in renewed:  # renewed this round: the new one is served, no alert
                continue
            alert = ExpiryAlert.for_certificate(by_sha[sha].certificate(), now, node=self._node)
            await deliver_alert(alert, self.alerts)
            # reread: a renewal attempt above may have updated the failure counters
            record = await self._record(sha)
            await self._save(sha, record.with_state(record_alert(record.state(
                by_sha[sha], sha in replaced), now)))
            alerted.append(sha)
        switched = await self._switch(plan.switch, now) if plan.switch is not None else None
        if switched is not None:
            changed = True
        if changed:
            await self._on_change()
        return TickReport(renewed, tuple(failed), tuple(alerted), switched)

    async def _renew(
        self, old: StoredCert, record: LifecycleRecord, state: CertState, now: dt.datetime
    ) -> str | None:
        assert record.hostname is not None  # plan_tick renews ACME certificates only
        kt: KeyType = next((k for k in ACME_KEY_TYPES if k == record.key_type), "ec-p256")
        try:
            async with self._acme_lock:
                cert, chain, key = await self._order(record.hostname, kt, now)
                sha = cert_sha256(cert)
                current = await self._default()
                make_default = current is not None and current.sha256 == old.sha256
                if make_default and await self._breaks_coverage(current, cert, "renewal", now):
                    raise AcmeError(f"the renewal of {old.sha256} would leave required names "
                                    "uncovered; it was not stored", hostname=record.hostname)
                await self._store_issued(cert, chain, key, name=old.name,
                                         make_default=make_default, actor=ACTOR, now=now)
                await self._save(
                    sha, LifecycleRecord(acme=True, hostname=record.hostname, key_type=kt))
                await self._save(old.sha256, replace(record, failures=0, last_failure_at=None))
        except AcmeError as err:
            failed = record_failure(state, now)
            await self._save(old.sha256, record.with_state(failed))
            retry = renewal_decision(failed, now).next_attempt
            _log.warning(
                "lifecycle.renewal_failed",
                sha256=old.sha256,
                hostname=record.hostname,
                failures=failed.failures,
                next_attempt=format_time(retry),
                error=err.message,
            )
            return None
        _log.info("lifecycle.renewed", sha256=old.sha256, new_sha256=sha)
        return sha

    async def _switch(self, staged: StagedCaChange, now: dt.datetime) -> str | None:
        try:
            stored = await self._store.get(staged.sha256)
        except BadInput:
            stored = None
        if stored is None or not stored.has_key or await self._breaks_coverage(
                await self._default(), stored.certificate(), "staged CA change", now):
            _log.error("lifecycle.ca_change_dropped", sha256=staged.sha256)
            await self._store.set_meta({PENDING_KEY: ""}, actor=ACTOR, now=now)
            return None
        await self._store.set_default(staged.sha256, actor=ACTOR, now=now)
        await self._store.set_meta({PENDING_KEY: ""}, actor=ACTOR, now=now)
        _log.info("lifecycle.ca_change_switched", sha256=staged.sha256)
        return staged.sha256


async def run_monitor(
    lifecycle: Lifecycle,
    *,
    clock: Callable[[], dt.datetime],
    interval: float,
    stop: asyncio.Event,
    observe: Callable[[TickReport], None] | None = None,
) -> None:
    """Call ``lifecycle.tick(clock())`` now and then every ``interval`` seconds until
    ``stop`` is set; ``observe`` gets each round's report (the node's metrics). A round
    that fails is logged with its traceback; the next one runs."""
    while not stop.is_set():
        try:
            report = await lifecycle.tick(clock())
            if observe is not None:
                observe(report)
            _log.info(
                "lifecycle.tick",
                renewed=len(report.renewed),
                failed=len(report.failed),
                alerted=len(report.alerted),
                switched=report.switched,
            )
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug in one round must not end the monitor; it keeps the trace
            _log.exception("lifecycle.tick_failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
