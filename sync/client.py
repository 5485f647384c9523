"""[shell] gRPC client for one node: mutual TLS, and status codes -> :mod:`node.errors` (one table).

The node sends its error's class name in the trailing metadata ``certsync-error`` (and
its scalar attributes as JSON in ``certsync-error-data``); the client rebuilds that error
so the CLI prints the node's one-line message with the right exit code. Without that
metadata the status code decides (:data:`CODE_TABLE`). A node that does not answer, or a
call past its deadline, is :class:`NodeUnreachable`; a TLS handshake refused because one
side's certificate is not from the other's CA is :class:`PermissionDenied` with a plain
message.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

import grpc

from node import errors
from node.api import certsync_pb2, certsync_pb2_grpc
from node.errors import CertsyncError, ConfigError, NodeUnreachable, PermissionDenied
from node.limits import GRPC_MAX_MESSAGE_BYTES
from sync.config import AdminConfig, load_admin_config
from sync.diagnose import Verdict, tls_verdict
from sync.topology import split_address

__all__ = [
    "CODE_TABLE",
    "NodeClient",
    "NodeTarget",
    "admin_config",
    "admin_target",
    "call_node",
    "error_from_status",
]

DEFAULT_TIMEOUT: Final = 30.0

#: status code -> error class when the node sent no ``certsync-error`` metadata
CODE_TABLE: Final[dict[grpc.StatusCode, type[CertsyncError]]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.BadInput,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: errors.Conflict,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: errors.PermissionDenied,
    grpc.StatusCode.ABORTED: errors.TransferRejected,
    grpc.StatusCode.DATA_LOSS: errors.IntegrityError,
}

#: error classes the node may name in its metadata (only these are rebuilt)
_KNOWN: Final[dict[str, type[CertsyncError]]] = {
    name: cls
    for name in errors.__all__
    if isinstance(cls := getattr(errors, name), type) and issubclass(cls, CertsyncError)
}

_KIND_KEY: Final = "certsync-error"  # the node named its own error: nothing to diagnose
_HANDSHAKE_MARKERS = ("handshake", "certificate_verify_failed", "ssl_error", "tsi_", "alert")


@dataclass(frozen=True)
class NodeTarget:
    """Where a node is and how to authenticate to it (PEM bytes of the cluster CA and our
    own certificate and key)."""

    name: str
    address: str
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    @property
    def server_name(self) -> str:
        return f"{self.name}.node.certsync"

    @classmethod
    def from_files(
        cls, *, name: str, address: str, ca_cert: Path, cert: Path, key: Path
    ) -> NodeTarget:
        def read(path: Path, what: str) -> bytes:
            try:
                return path.read_bytes()
            except OSError as err:
                raise ConfigError(
                    f"cannot read the {what} {str(path)!r}: {err.strerror}; check the config"
                ) from err

        return cls(
            name=name,
            address=address,
            ca_pem=read(ca_cert, "CA certificate"),
            cert_pem=read(cert, "client certificate"),
            key_pem=read(key, "client key"),
        )


def error_from_status(
    code: grpc.StatusCode,
    details: str,
    metadata: Sequence[tuple[str, str | bytes]],
    *,
    node: str,
    address: str,
) -> CertsyncError:
    """The certsync error for a failed call (the one status -> error table is here)."""
    meta = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in metadata}
    kind = meta.get("certsync-error")
    if kind in _KNOWN:
        cls = _KNOWN[kind]
        try:
            data = json.loads(meta.get("certsync-error-data", "{}"))
            return cls(details, **data)
        except (TypeError, ValueError):
            try:
                return cls(details)
            except TypeError:
                pass
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        lowered = details.lower()
        if any(marker in lowered for marker in _HANDSHAKE_MARKERS):
            return PermissionDenied(
                f"node {node!r} at {address} refused the TLS handshake: the certificates in "
                "the config are not from this cluster's CA (or the node's are not); use the "
                "admin.toml that 'certsync cluster init' wrote for this cluster"
            )
        why = "timed out" if code == grpc.StatusCode.DEADLINE_EXCEEDED else "did not answer"
        return NodeUnreachable(
            f"node {node!r} at {address} is unreachable: it {why}; is it running?", node=node
        )
    cls = CODE_TABLE.get(code, CertsyncError)
    return cls(f"node {node!r} answered {code.name}: {details}")


_T = TypeVar("_T")


class NodeClient:
    """An open mTLS channel to one node; use as ``async with NodeClient(target) as c``."""

    def __init__(self, target: NodeTarget, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._target = target
        self._timeout = timeout
        creds = grpc.ssl_channel_credentials(
            root_certificates=target.ca_pem,
            private_key=target.key_pem,
            certificate_chain=target.cert_pem,
        )
        self._channel = grpc.aio.secure_channel(
            target.address,
            creds,
            options=(
                ("grpc.ssl_target_name_override", target.server_name),
                # a node that was down (or not yet up) is reconnected to within seconds, not
                # after gRPC's default back-off of up to two minutes
                ("grpc.initial_reconnect_backoff_ms", 250),
                ("grpc.min_reconnect_backoff_ms", 250),
                ("grpc.max_reconnect_backoff_ms", 3000),
                ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
            ),
        )
        self._stub = certsync_pb2_grpc.CertStoreStub(self._channel)
        self._repl = certsync_pb2_grpc.ReplicationStub(self._channel)

    async def __aenter__(self) -> NodeClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close(None)

    @property
    def target(self) -> NodeTarget:
        return self._target

    async def _call(self, fn: Callable[[], Awaitable[_T]]) -> _T:
        try:
            return await fn()
        except grpc.aio.AioRpcError as err:
            raise await self._error(err) from err

    async def _error(self, err: grpc.aio.AioRpcError) -> CertsyncError:
        # grpc.aio.Metadata at run time (pairs); grpc-stubs types it as the sync API's
        trailing: Any = err.trailing_metadata() or ()
        target = self._target
        error = error_from_status(err.code(), err.details() or "",
                                  [(str(k), v) for k, v in trailing],
                                  node=target.name, address=target.address)
        if not isinstance(error, NodeUnreachable | PermissionDenied) or (
                isinstance(error, PermissionDenied) and _KIND_KEY in dict(trailing)):
            return error
        # no answer, or a refused handshake: one handshake by hand tells which it was
        host, port = split_address(target.address)
        verdict = await asyncio.to_thread(
            tls_verdict, host, port, server_name=target.server_name, ca_pem=target.ca_pem,
            cert_pem=target.cert_pem, key_pem=target.key_pem)
        if verdict is Verdict.CLIENT_CERT:
            return PermissionDenied(
                f"node {target.name!r} at {target.address} did not accept this client's "
                "certificate (not from this cluster's CA, or not a certsync identity); use "
                "the admin.toml that 'certsync cluster init' wrote for this cluster")
        if verdict is Verdict.SERVER_CERT:
            return PermissionDenied(
                f"the certificate of node {target.name!r} at {target.address} is not from "
                "the CA in this config; use the admin.toml that 'certsync cluster init' wrote "
                "for this cluster")
        if verdict is Verdict.ACCEPTED and isinstance(error, PermissionDenied):  # transient
            return NodeUnreachable(
                f"node {target.name!r} at {target.address} is unreachable: the connection "
                "failed and then worked again; try again", node=target.name)
        return error

    # -- one method per RPC ------------------------------------------------------------

    async def create_self_signed(
        self, request: certsync_pb2.CreateSelfSignedRequest
    ) -> certsync_pb2.CreateSelfSignedResponse:
        return await self._call(lambda: self._stub.CreateSelfSigned(request, timeout=self._timeout))

    async def create_request(
        self, request: certsync_pb2.CreateRequestRequest
    ) -> certsync_pb2.CsrInfo:
        return await self._call(lambda: self._stub.CreateRequest(request, timeout=self._timeout))

    async def list_requests(self) -> list[certsync_pb2.CsrInfo]:
        resp = await self._call(
            lambda: self._stub.ListRequests(
                certsync_pb2.ListRequestsRequest(), timeout=self._timeout
            )
        )
        return list(resp.requests)

    async def show_request(self, csr_id: str) -> certsync_pb2.CsrInfo:
        req = certsync_pb2.ShowRequestRequest(id=csr_id)
        return await self._call(lambda: self._stub.ShowRequest(req, timeout=self._timeout))

    async def import_files(
        self,
        files: Sequence[tuple[str, bytes]],
        *,
        passphrase: bytes | None = None,
        name: str = "",
        make_default: bool = False,
        force: bool = False,
        confirm_ca_change: bool = False,
    ) -> certsync_pb2.ImportResponse:
        req = certsync_pb2.ImportRequest(
            files=[certsync_pb2.SourceFile(name=n, content=c) for n, c in files],
            name=name,
            make_default=make_default,
            force=force,
            confirm_ca_change=confirm_ca_change,
        )
        if passphrase is not None:
            req.passphrase = passphrase
        return await self._call(lambda: self._stub.Import(req, timeout=self._timeout))

    async def list_certificates(self) -> list[certsync_pb2.CertificateInfo]:
        resp = await self._call(
            lambda: self._stub.List(certsync_pb2.ListRequest(), timeout=self._timeout)
        )
        return list(resp.certificates)

    async def export(
        self,
        sha256: str,
        fmt: certsync_pb2.ExportFormat.ValueType,
        *,
        passphrase: bytes | None = None,
    ) -> bytes:
        req = certsync_pb2.ExportRequest(sha256=sha256, format=fmt)
        if passphrase is not None:
            req.passphrase = passphrase
        resp = await self._call(lambda: self._stub.Export(req, timeout=self._timeout))
        return resp.data

    async def set_default(
        self, sha256: str, *, force: bool = False, confirm_ca_change: bool = False
    ) -> list[str]:
        req = certsync_pb2.SetDefaultRequest(
            sha256=sha256, force=force, confirm_ca_change=confirm_ca_change
        )
        resp = await self._call(lambda: self._stub.SetDefault(req, timeout=self._timeout))
        return list(resp.warnings)

    async def delete(self, sha256: str, *, force: bool = False) -> list[str]:
        req = certsync_pb2.DeleteRequest(sha256=sha256, force=force)
        resp = await self._call(lambda: self._stub.Delete(req, timeout=self._timeout))
        return list(resp.warnings)

    async def delete_request(self, csr_id: str) -> None:
        req = certsync_pb2.DeleteCsrRequest(id=csr_id)
        await self._call(lambda: self._stub.DeleteCsr(req, timeout=self._timeout))

    async def sni_lookup(self, server_name: str | None) -> certsync_pb2.SniLookupResponse:
        req = certsync_pb2.SniLookupRequest()
        if server_name is not None:
            req.server_name = server_name
        return await self._call(lambda: self._stub.SniLookup(req, timeout=self._timeout))

    async def get_state(self) -> certsync_pb2.NodeState:
        return await self._call(
            lambda: self._stub.GetState(certsync_pb2.GetStateRequest(), timeout=self._timeout)
        )

    # -- certificate lifecycle (issue 6) -------------------------------------------------

    async def request_acme(self, request: certsync_pb2.AcmeRequest) -> certsync_pb2.AcmeResponse:
        """Order a certificate through the node's ACME CA; an order takes tens of seconds,
        so the deadline is at least 3 minutes."""
        timeout = max(self._timeout, 180.0)
        return await self._call(
            lambda: self._stub.RequestAcmeCertificate(request, timeout=timeout)
        )

    async def stage_ca_change(self, sha256: str, after: str) -> certsync_pb2.PendingCaChange:
        req = certsync_pb2.StageCaChangeRequest(sha256=sha256, after=after)
        resp = await self._call(lambda: self._stub.StageCaChange(req, timeout=self._timeout))
        return resp.pending

    async def show_certificate(self, sha256: str) -> certsync_pb2.CertificateInfo:
        req = certsync_pb2.ShowCertificateRequest(sha256=sha256)
        return await self._call(lambda: self._stub.ShowCertificate(req, timeout=self._timeout))
    async def read_audit(self, *, since: str = "", actor: str = "", limit: int = 0
                         ) -> certsync_pb2.ReadAuditResponse:
        """The node's audit log, newest first (``since``: RFC 3339; admin identities only)."""
        req = certsync_pb2.ReadAuditRequest(since=since, actor=actor, limit=limit)
        return await self._call(lambda: self._stub.ReadAudit(req, timeout=self._timeout))

    # -- service Replication -------------------------------------------------------------

    async def push_requests(
        self, request: certsync_pb2.PushRequestsRequest
    ) -> certsync_pb2.PushRequestsResponse:
        return await self._call(lambda: self._repl.PushRequests(request, timeout=self._timeout))

    async def stage(self, request: certsync_pb2.StageRequest) -> certsync_pb2.StageResponse:
        return await self._call(lambda: self._repl.Stage(request, timeout=self._timeout))

    async def activate(
        self, *, epoch: int, revision: int, set_digest: str, confirm_within_ms: int = 0
    ) -> certsync_pb2.NodeState:
        req = certsync_pb2.ActivateRequest(epoch=epoch, revision=revision, set_digest=set_digest,
                                           confirm_within_ms=confirm_within_ms)
        return await self._call(lambda: self._repl.Activate(req, timeout=self._timeout))

    async def confirm(self, *, epoch: int, revision: int, set_digest: str) -> None:
        req = certsync_pb2.ConfirmRequest(epoch=epoch, revision=revision, set_digest=set_digest)
        await self._call(lambda: self._repl.Confirm(req, timeout=self._timeout))

    async def announce(self, promotion: certsync_pb2.Promotion) -> certsync_pb2.NodeState:
        req = certsync_pb2.AnnounceRequest(promotion=promotion)
        return await self._call(lambda: self._repl.Announce(req, timeout=self._timeout))

    async def promote(self, promotion: certsync_pb2.Promotion) -> certsync_pb2.NodeState:
        req = certsync_pb2.PromoteRequest(promotion=promotion)
        return await self._call(lambda: self._repl.Promote(req, timeout=self._timeout))

    async def replicate(
        self, nodes: Sequence[str] = (), *, force: bool = False
    ) -> AsyncIterator[certsync_pb2.ReplicateProgress]:
        """Progress messages as the primary finishes each node (the whole call shares the
        client's timeout)."""
        req = certsync_pb2.ReplicateRequest(nodes=list(nodes), force=force)
        call = self._repl.Replicate(req, timeout=self._timeout)
        try:
            async for progress in call:
                yield progress
        except grpc.aio.AioRpcError as err:
            raise await self._error(err) from err

    async def rollback(self, to_revision: int = 0) -> certsync_pb2.RollbackResponse:
        """Admin, on the primary: propose an earlier activated set as a new revision."""
        req = certsync_pb2.RollbackRequest(to_revision=to_revision)
        return await self._call(lambda: self._repl.Rollback(req, timeout=self._timeout))


# --------------------------------------------------------------------------- CLI helpers


def admin_config(path: str | None) -> AdminConfig:
    """The admin config the CLI's global ``--config`` names (ConfigError when absent)."""
    if not path:
        raise ConfigError(
            "this command talks to a node and needs the admin config; give "
            "--config DIR/admin.toml (written by 'certsync cluster init')"
        )
    return load_admin_config(Path(path))


def admin_target(config: AdminConfig, node: str | None) -> NodeTarget:
    """Where node ``node`` (default: the primary) is, with the admin's credentials."""
    spec = config.topology.node(node) if node else config.topology.primary
    return NodeTarget.from_files(
        name=spec.name,
        address=spec.grpc_address,
        ca_cert=config.ca_cert_path,
        cert=config.cert_path,
        key=config.key_path,
    )


def call_node(
    config_path: str | None,
    node: str | None,
    fn: Callable[[NodeClient], Awaitable[_T]],
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> _T:
    """Run ``fn`` with a client for ``node`` on a fresh event loop (the CLI's one call)."""
    target = admin_target(admin_config(config_path), node)

    async def run() -> _T:
        async with NodeClient(target, timeout=timeout) as client:
            return await fn(client)

    return asyncio.run(run())
