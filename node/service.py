"""[shell] The node's gRPC servicer (``certsync.v1.CertStore``): errors -> status codes.

Every call is mutually authenticated (the server factory requires a client certificate from
the cluster CA). The caller's identity is read from its certificate's SAN URI; an admin may
change the store, an admin or a node of the topology may read; anything else is refused with
PERMISSION_DENIED and an audit row.

A :class:`certsync.CertsyncError` raised while serving becomes a status through
:data:`node.rpc.STATUS_TABLE` (first matching class wins). The trailing metadata ``certsync-error``
carries the error's class name and ``certsync-error-data`` its scalar attributes as JSON, so
:mod:`sync.client` rebuilds the same error (and the CLI the same exit code). Any other
exception is a bug: it is logged with its traceback and the caller gets INTERNAL with a
message that says nothing about the data.

CPU-heavy work (key generation, PKCS#12, parsing inputs) runs in ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import grpc
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from node import create, formats, keygen, sandbox
from node.api import certsync_pb2, certsync_pb2_grpc
from node.audit_rpc import read_audit
from node.cert_views import cert_infos, import_warnings
from node.coverage_gate import RequiredName
from node.errors import (
    BadInput,
    CheckFailed,
    Conflict,
    PermissionDenied,
)
from node.export_rpc import export
from node.guard import gate_default, gate_import, require_primary
from node.identity import Identity
from node.importing import plan_import
from node.linking import dependents_in, describe_link
from node.messages import (
    csr_info,
    key_type_of_text,
    pending_msg,
    sans_of_request,
    subject_of,
)
from node.model import PrivateKey
from node.names import parse_hostname
from node.refusals import authenticate, record_refusal
from node.renewal import Lifecycle
from node.rpc import run_rpc
from node.sealing import spki
from node.selection import Selection
from node.store import Store
from node.store_view import SetEntry, StoredCert, StoreView
from node.text import rfc3339

__all__ = ["CertStoreService", "DescribeState", "NodeRuntime"]


_log = structlog.get_logger("node.service")


class NodeRuntime(Protocol):
    """The running node (``node.app.NodeApp``), as the servicer and the cluster layer see it.

    ``refresh`` is awaited after every change to the store: it rebuilds what the TLS
    endpoint serves (off the event loop) and must not raise for a store that holds no
    certificate. ``now`` is the clock (a parameter so tests can fix it).
    """

    @property
    def name(self) -> str: ...

    @property
    def role(self) -> str: ...

    @property
    def cluster_id(self) -> str: ...

    @property
    def node_names(self) -> Sequence[str]: ...

    @property
    def store(self) -> Store: ...

    @property
    def required_names(self) -> Sequence[RequiredName]: ...

    def now(self) -> dt.datetime: ...

    async def refresh(self, *, serve: bool = False) -> None: ...

    async def serve_set(
        self, certs: Sequence[tuple[x509.Certificate, Sequence[x509.Certificate], PrivateKey]],
        default: str | None,
    ) -> None: ...

    def served_for(self, server_name: str | None) -> Selection: ...

    @property
    def lifecycle(self) -> Lifecycle: ...

    def attach_replication(self, *, role: Callable[[], str], on_change: Callable[[], None],
                           hold: Callable[[], bool] | None = None) -> None: ...


#: fills the cluster layer's fields of a node's state (the promotion that proves its epoch)
#: from the store's meta values; given by the composition root
DescribeState = Callable[[certsync_pb2.NodeState, Mapping[str, str]], None]

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_Context = grpc.aio.ServicerContext[Any, Any]
_Handler = Callable[["CertStoreService", _Req, _Context, Identity], Awaitable[_Resp]]
_Wrapped = Callable[["CertStoreService", _Req, _Context], Awaitable[_Resp]]


def _rpc(*, change: bool) -> Callable[[_Handler[_Req, _Resp]], _Wrapped[_Req, _Resp]]:
    """Authenticate, authorise, bind log context, and turn errors into statuses."""

    def decorate(fn: _Handler[_Req, _Resp]) -> _Wrapped[_Req, _Resp]:
        method = fn.__name__

        @functools.wraps(fn)
        async def wrapper(self: CertStoreService, request: _Req, context: _Context) -> _Resp:
            async def call() -> _Resp:
                identity = await self._authenticate(context, method)
                structlog.contextvars.bind_contextvars(caller=f"{identity.kind}:{identity.name}")
                await self._authorize(identity, method, change=change)
                if change:  # only the primary of the current epoch changes the set
                    await require_primary(self._rt, method)
                return await fn(self, request, context, identity)

            return await run_rpc(context, method, call)

        return wrapper

    return decorate


class CertStoreService(certsync_pb2_grpc.CertStoreServicer):
    """The servicer; see the module docstring."""

    def __init__(self, runtime: NodeRuntime, *, describe: DescribeState | None = None) -> None:
        self._rt = runtime
        self._describe = describe

    # -- authentication and authorisation ----------------------------------------------

    async def _authenticate(self, context: _Context, method: str) -> Identity:
        """The caller's identity; a certificate naming none of this cluster's is audited."""
        return await authenticate(context, cluster_id=self._rt.cluster_id,
                                  sink=self._rt.store, now=self._rt.now, method=method)

    async def _authorize(self, identity: Identity, method: str, *, change: bool) -> None:
        if identity.kind == "admin":
            return
        if not change and identity.kind == "node" and identity.name in self._rt.node_names:
            return
        why = (
            "only an admin identity may change the store"
            if change
            else "a monitor identity may only read /metrics"
            if identity.kind == "monitor"
            else f"node {identity.name!r} is not in this cluster's topology"
        )
        await record_refusal(self._rt.store, actor=self._actor(identity), method=method,
                             why=why, now=self._rt.now())
        raise PermissionDenied(
            f"{identity.kind} {identity.name!r} may not call {method}: {why}; "
            "use the admin configuration (admin.toml)"
        )

    @staticmethod
    def _actor(identity: Identity) -> str:
        return f"{identity.kind}:{identity.name}"

    # -- helpers -----------------------------------------------------------------------

    async def _stored(self, sha256: str) -> StoredCert:
        sha = sha256.strip().lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise BadInput(
                f"certificate id {sha256!r} is not a SHA-256 (64 hex digits); "
                "see 'certsync cert list'"
            )
        return await self._rt.store.get(sha)

    async def _info(self, sha256: str) -> certsync_pb2.CertificateInfo:
        return (await cert_infos(self._rt.store, self._rt.lifecycle, self._rt.now(), [sha256]))[0]

    async def _pool(self) -> list[x509.Certificate]:
        return [c.certificate() for c in await self._rt.store.list_certificates()]

    def _expired(self, stored: StoredCert) -> bool:
        return stored.not_after <= self._rt.now()

    # -- creating ----------------------------------------------------------------------

    @_rpc(change=True)
    async def CreateSelfSigned(
        self,
        request: certsync_pb2.CreateSelfSignedRequest,
        context: _Context,
        identity: Identity,
    ) -> certsync_pb2.CreateSelfSignedResponse:
        key_type = key_type_of_text(request.key_type)
        subject = subject_of(request.subject)
        sans = sans_of_request(request.sans)
        days = request.days or 365
        now = self._rt.now()
        key = await asyncio.to_thread(keygen.generate_key, key_type)
        cert = await asyncio.to_thread(
            create.create_self_signed, key, subject, sans, now=now, days=days,
            serial=keygen.random_serial(),
        )
        name = request.name or subject.common_name
        sha = formats.cert_sha256(cert)
        warnings = [] if not request.make_default else await gate_default(
            self._rt, cert, what=f"making the new certificate {sha} the default",
            force=request.force, method="CreateSelfSigned", actor=self._actor(identity),
            target=sha)
        notices = create.subject_notices(subject, sans)
        await self._rt.store.add(
            [SetEntry(cert=cert, key=key, name=name)],
            make_default=sha if request.make_default else None,
            actor=self._actor(identity),
            now=now,
        )
        await self._rt.refresh()
        _log.info("cert.created", sha256=sha, key_type=key_type)
        return certsync_pb2.CreateSelfSignedResponse(certificate=await self._info(sha),
                                                     warnings=warnings, notices=notices)

    @_rpc(change=True)
    async def CreateRequest(
        self,
        request: certsync_pb2.CreateRequestRequest,
        context: _Context,
        identity: Identity,
    ) -> certsync_pb2.CsrInfo:
        key_type = key_type_of_text(request.key_type)
        subject = subject_of(request.subject)
        sans = sans_of_request(request.sans)
        key = await asyncio.to_thread(keygen.generate_key, key_type)
        csr = await asyncio.to_thread(create.create_csr, key, subject, sans)
        stored = await self._rt.store.add_csr(
            name=request.name or subject.common_name,
            pem=csr.public_bytes(serialization.Encoding.PEM),
            key=key,
            actor=self._actor(identity),
            now=self._rt.now(),
        )
        _log.info("csr.created", csr_id=stored.id, key_type=key_type)
        # a certificate stored before its request's key (a replica's, say) is linked now
        await self._rt.store.link_stored(actor=self._actor(identity), now=self._rt.now())
        await self._rt.refresh()  # and the replicator sends the request to the backup
        info = csr_info(await self._rt.store.get_csr(stored.id))
        info.notices.extend(create.subject_notices(subject, sans))
        return info

    @_rpc(change=False)
    async def ListRequests(
        self,
        request: certsync_pb2.ListRequestsRequest,
        context: _Context,
        identity: Identity,
    ) -> certsync_pb2.ListRequestsResponse:
        csrs = await self._rt.store.list_csrs()
        return certsync_pb2.ListRequestsResponse(requests=[csr_info(c) for c in csrs])

    @_rpc(change=False)
    async def ShowRequest(
        self,
        request: certsync_pb2.ShowRequestRequest,
        context: _Context,
        identity: Identity,
    ) -> certsync_pb2.CsrInfo:
        return csr_info(await self._rt.store.get_csr(request.id))

    # -- import ------------------------------------------------------------------------

    @_rpc(change=True)
    async def Import(
        self,
        request: certsync_pb2.ImportRequest,
        context: _Context,
        identity: Identity,
    ) -> certsync_pb2.ImportResponse:
        if not request.files:
            raise BadInput("nothing to import; give at least one file")
        sources = [(f.name or f"file {i + 1}", f.content) for i, f in enumerate(request.files)]
        passphrase = request.passphrase if request.HasField("passphrase") else None
        material = await sandbox.read_material(sources, passphrase)  # a worker process
        linkable = frozenset(h.spki for h in await self._rt.store.key_holders())
        entries, identity_sha, warnings = await asyncio.to_thread(
            plan_import, material, request.name, self._rt.now(),
            request.make_default, request.force, linkable,
        )
        notices: list[str] = []
        make_default = await self._lifecycle_import(
            request, entries, identity_sha, warnings, linkable, notices)
        if make_default:
            make_default = await gate_import(
                self._rt, entries, identity_sha, warnings, make_default=request.make_default,
                force=request.force, actor=self._actor(identity))
        links = await self._rt.store.add(
            entries,
            make_default=identity_sha if make_default else None,
            actor=self._actor(identity),
            now=self._rt.now(),
        )
        await self._rt.refresh()
        shas = [formats.cert_sha256(e.cert) for e in entries]
        infos = await cert_infos(self._rt.store, self._rt.lifecycle, self._rt.now(), shas)
        warnings = await import_warnings(material, warnings, infos, identity_sha)  # the store's
        _log.info("cert.imported", sha256=identity_sha or "", certificates=len(entries))
        return certsync_pb2.ImportResponse(
            identity_sha256=identity_sha or "", certificates=infos, warnings=warnings,
            notices=[describe_link(k) for k in links] + notices,
        )

    # -- reading -----------------------------------------------------------------------

    @_rpc(change=False)
    async def List(
        self,
        request: certsync_pb2.ListRequest,
        context: _Context,
        identity: Identity,
    ) -> certsync_pb2.ListResponse:
        return certsync_pb2.ListResponse(  # chains over the whole store (issue 11)
            certificates=await cert_infos(self._rt.store, self._rt.lifecycle, self._rt.now()))

    @_rpc(change=False)
    async def Export(
        self,
        request: certsync_pb2.ExportRequest,
        context: _Context,
        identity: Identity,
    ) -> certsync_pb2.ExportResponse:
        return await export(self._rt.store, request, lookup=self._stored, pool=self._pool,
                            actor=self._actor(identity), admin=identity.kind == "admin",
                            now=self._rt.now())

    @_rpc(change=False)
    async def SniLookup(
        self,
        request: certsync_pb2.SniLookupRequest,
        context: _Context,
        identity: Identity,
    ) -> certsync_pb2.SniLookupResponse:
        name: str | None = None
        if request.HasField("server_name"):
            name = request.server_name
            parse_hostname(name)
        selection = self._rt.served_for(name)
        return certsync_pb2.SniLookupResponse(sha256=selection.key or "", reason=selection.reason)

    @_rpc(change=False)
    async def GetState(
        self,
        request: certsync_pb2.GetStateRequest,
        context: _Context,
        identity: Identity,
    ) -> certsync_pb2.NodeState:
        return await self.node_state()

    async def node_state(self, *, lifecycle: bool = True) -> certsync_pb2.NodeState:
        """The node's replication state (GetState; also the answer of Activate/Promote).
        ``lifecycle=False`` leaves out each certificate's renewal state and the pending CA
        change (Activate's answer: the primary reads the replication fields only)."""
        view = await self._rt.store.view()  # one consistent reading, one trip
        meta = view.meta
        keyed = view.keyed
        state = certsync_pb2.NodeState(
            name=self._rt.name,
            role=self._rt.role,
            epoch=int(meta.get("epoch") or 0),
            revision=int(meta.get("revision") or 0),
            set_digest=view.digest,
            default_sha256=meta.get("default_sha256") or "",
            last_sync=meta.get("last_sync") or "",
            cluster_id=self._rt.cluster_id,
            primary=meta.get("primary") or "",
            held_sha256=[str(r[0]) for r in view.rows if str(r[0]) in keyed],
            requests_digest=await self._rt.store.requests_digest(),
        )
        if self._describe is not None:  # the cluster layer's fields (the promotion)
            self._describe(state, meta)
        if lifecycle:
            await self._lifecycle_state(state, view)
        return state

    # -- changing ----------------------------------------------------------------------

    @_rpc(change=True)
    async def SetDefault(
        self,
        request: certsync_pb2.SetDefaultRequest,
        context: _Context,
        identity: Identity,
    ) -> certsync_pb2.SetDefaultResponse:
        stored = await self._stored(request.sha256)
        warnings: list[str] = []
        if not stored.has_key:
            raise Conflict(
                f"certificate {stored.sha256!r} has no private key and cannot be served; "
                "import it with its key first"
            )
        if self._expired(stored):
            when = rfc3339(stored.not_after)
            if not request.force:
                raise Conflict(
                    f"certificate {stored.sha256!r} expired on {when}; choose a valid one, "
                    "or pass --force to serve it anyway"
                )
            warnings.append(f"certificate {stored.sha256} expired on {when}; serving it anyway")
            _log.warning("cert.default_expired", sha256=stored.sha256, not_after=when)
        await self._rt.lifecycle.check_default_change(
            stored.sha256, confirm_ca_change=request.confirm_ca_change
        )
        warnings += await gate_default(
            self._rt, x509.load_der_x509_certificate(stored.der),
            what=f"making {stored.sha256} the default", force=request.force,
            method="SetDefault", actor=self._actor(identity), target=stored.sha256,
            overrode=("expiry",) if self._expired(stored) else ())
        await self._rt.store.set_default(
            stored.sha256, actor=self._actor(identity), now=self._rt.now()
        )
        await self._rt.refresh()
        return certsync_pb2.SetDefaultResponse(warnings=warnings)

    @_rpc(change=True)
    async def Delete(
        self,
        request: certsync_pb2.DeleteRequest,
        context: _Context,
        identity: Identity,
    ) -> certsync_pb2.DeleteResponse:
        stored = await self._stored(request.sha256)
        # the coverage gate first (it names the uncovered names), then what else depends on it
        warnings = [] if not stored.is_default else await gate_default(
            self._rt, None, what=f"deleting {stored.sha256}, which is the default,",
            force=request.force, method="Delete", actor=self._actor(identity), target="")
        needs = dependents_in(await self._rt.store.view(), stored.sha256)
        if needs and not request.force:
            raise CheckFailed(
                f"certificate {stored.sha256!r} cannot be deleted: {'; '.join(needs)}; choose "
                "another default or delete what depends on it first, or pass --force",
                sha256=stored.sha256,
            )
        await self._rt.store.delete(stored.sha256, actor=self._actor(identity), now=self._rt.now(),
                                    force=request.force, dependents=needs)
        await self._rt.refresh()
        return certsync_pb2.DeleteResponse(warnings=warnings)

    @_rpc(change=True)
    async def DeleteCsr(
        self,
        request: certsync_pb2.DeleteCsrRequest,
        context: _Context,
        identity: Identity,
    ) -> certsync_pb2.DeleteCsrResponse:
        await self._rt.store.delete_csr(request.id, actor=self._actor(identity),
                                        now=self._rt.now())
        await self._rt.refresh()  # the replicator follows on the backup
        return certsync_pb2.DeleteCsrResponse()

    # -- certificate lifecycle (issue 6; the rules live in node.renewal) -----------------

    async def _lifecycle_import(
        self,
        request: certsync_pb2.ImportRequest,
        entries: Sequence[SetEntry],
        identity_sha: str | None,
        warnings: list[str],
        linkable: frozenset[bytes] = frozenset(),
        notices: list[str] | None = None,
    ) -> bool:
        """Whether the import makes its identity certificate default: asked for (and not a
        CA change unless confirmed), or a renewal of the current default."""
        ident = next(
            (e for e in entries if identity_sha and formats.cert_sha256(e.cert) == identity_sha),
            None,
        )
        if ident is None:
            return request.make_default
        # the chain is judged over the input and the store together (in that order), not
        # the input alone: the store's index with the input's certificates put first
        view = await self._rt.store.view()
        index = view.chain_index.updated(
            [], [(("", f"{i:08d}"), e.cert) for i, e in enumerate(entries)])
        has_key = ident.key is not None or spki(ident.cert.public_key()) in linkable
        if request.make_default:
            chain, _problems = await asyncio.to_thread(index.build, ident.cert)
            await self._rt.lifecycle.check_default_change(
                formats.cert_sha256(ident.cert),
                confirm_ca_change=request.confirm_ca_change,
                new_chain=(ident.cert, *(c for c in chain if c != ident.cert)),
            )
            return True
        renews, notes = await self._rt.lifecycle.renewal_default(
            ident.cert, [e.cert for e in entries], has_key=has_key
        )
        # a renewal that takes over is news (a notice); one that cannot is a warning
        (notices if renews and notices is not None else warnings).extend(notes)
        return renews

    async def _lifecycle_state(self, state: certsync_pb2.NodeState, view: StoreView) -> None:
        """Add every certificate's days left and renewal state, and the pending CA change."""
        lifecycle = self._rt.lifecycle
        for st in (await lifecycle.statuses(self._rt.now(), view)).values():
            state.certificates.append(
                certsync_pb2.CertificateLifecycle(
                    sha256=st.sha256,
                    days_left=st.days_left,
                    renewal_state=st.renewal_state,
                    next_attempt=rfc3339(st.next_attempt),
                )
            )
        pending = await lifecycle.pending(view)
        if pending is not None:
            state.pending_ca_change.CopyFrom(pending_msg(pending))

    @_rpc(change=True)
    async def RequestAcmeCertificate(
        self,
        request: certsync_pb2.AcmeRequest,
        context: _Context,
        identity: Identity,
    ) -> certsync_pb2.AcmeResponse:
        parse_hostname(request.hostname)
        sha, warnings = await self._rt.lifecycle.request(
            hostname=request.hostname,
            key_type=request.key_type or "ec-p256",
            make_default=request.make_default,
            accept_failover_risk=request.accept_failover_risk,
            confirm_ca_change=request.confirm_ca_change,
            force=request.force,
            name=request.name,
            actor=self._actor(identity),
            now=self._rt.now(),
        )
        return certsync_pb2.AcmeResponse(certificate=await self._info(sha), warnings=warnings)

    @_rpc(change=True)
    async def StageCaChange(
        self,
        request: certsync_pb2.StageCaChangeRequest,
        context: _Context,
        identity: Identity,
    ) -> certsync_pb2.StageCaChangeResponse:
        stored = await self._stored(request.sha256)
        staged = await self._rt.lifecycle.stage(
            stored.sha256, request.after or "48h", actor=self._actor(identity),
            now=self._rt.now(),
        )
        return certsync_pb2.StageCaChangeResponse(pending=pending_msg(staged))

    @_rpc(change=False)  # the detail view (issue 11)
    async def ShowCertificate(
        self,
        request: certsync_pb2.ShowCertificateRequest,
        context: _Context,
        identity: Identity,
    ) -> certsync_pb2.CertificateInfo:
        return await self._info((await self._stored(request.sha256)).sha256)
    @_rpc(change=False)
    async def ReadAudit(self, request: certsync_pb2.ReadAuditRequest, context: _Context,
                        identity: Identity) -> certsync_pb2.ReadAuditResponse:
        return await read_audit(self._rt.store, request, identity, now=self._rt.now())
