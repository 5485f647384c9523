"""[shell] The gRPC edge of a node: errors -> statuses in one table, the RPC runner, the server.

A :class:`node.errors.CertsyncError` raised while serving becomes a status through
:data:`STATUS_TABLE` (first matching class wins); the trailing metadata ``certsync-error``
carries the error's class name and ``certsync-error-data`` its scalar attributes as JSON, so
the client rebuilds the same error. Any other exception is a bug: logged with its traceback,
INTERNAL for the caller with a message that says nothing about the data.
:func:`start_grpc_server` serves the store, health and reflection services over mTLS only.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, Final, NoReturn, TypeVar

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer as AsyncHealthServicer
from grpc_reflection.v1alpha import reflection

from node.api import SERVICE_NAME, certsync_pb2, certsync_pb2_grpc
from node.errors import (
    AlreadyExists,
    BadInput,
    CertsyncError,
    CheckFailed,
    Conflict,
    IntegrityError,
    NodeUnreachable,
    NotFound,
    PermissionDenied,
    StaleEpoch,
    StoreBusy,
    StoreFull,
    TransferRejected,
)
from node.limits import GRPC_MAX_MESSAGE_BYTES

__all__ = [
    "ERROR_DATA_KEY",
    "ERROR_KIND_KEY",
    "STATUS_TABLE",
    "abort_for",
    "run_rpc",
    "server_credentials",
    "start_grpc_server",
    "status_for",
]

_log = structlog.get_logger("node.service")
_Resp = TypeVar("_Resp")
_Context = grpc.aio.ServicerContext[Any, Any]

ERROR_KIND_KEY: Final = "certsync-error"
ERROR_DATA_KEY: Final = "certsync-error-data"

#: certsync error class -> gRPC status code; the first class the error is an instance of wins
STATUS_TABLE: Final[tuple[tuple[type[CertsyncError], grpc.StatusCode], ...]] = (
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (Conflict, grpc.StatusCode.FAILED_PRECONDITION),
    (BadInput, grpc.StatusCode.INVALID_ARGUMENT),
    (CheckFailed, grpc.StatusCode.FAILED_PRECONDITION),
    (StaleEpoch, grpc.StatusCode.ABORTED),
    (TransferRejected, grpc.StatusCode.FAILED_PRECONDITION),
    (IntegrityError, grpc.StatusCode.DATA_LOSS),
    (NodeUnreachable, grpc.StatusCode.UNAVAILABLE),
    (StoreBusy, grpc.StatusCode.UNAVAILABLE),
    (StoreFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (CertsyncError, grpc.StatusCode.UNKNOWN),
)

def status_for(err: CertsyncError) -> grpc.StatusCode:
    """The status code for ``err`` per :data:`STATUS_TABLE`."""
    for cls, code in STATUS_TABLE:
        if isinstance(err, cls):
            return code
    return grpc.StatusCode.UNKNOWN  # pragma: no cover -- CertsyncError is the last row


def _error_data(err: CertsyncError) -> str:
    """The error's scalar attributes as JSON (file names, hostnames, epochs; never secrets)."""
    data = {
        k: v
        for k, v in err.data.items()
        if isinstance(v, str | int | bool) or v is None
    }
    return json.dumps(data, sort_keys=True)


async def abort_for(context: grpc.aio.ServicerContext[Any, Any], err: CertsyncError) -> NoReturn:
    """End the call with ``err``'s status per :data:`STATUS_TABLE` and its class as metadata."""
    code = status_for(err)
    _log.info("rpc.refused", code=code.name, error=type(err).__name__)
    await context.abort(
        code,
        err.message,
        trailing_metadata=(
            (ERROR_KIND_KEY, type(err).__name__),
            (ERROR_DATA_KEY, _error_data(err)),
        ),
    )


async def run_rpc(context: _Context, method: str, call: Callable[[], Awaitable[_Resp]]) -> _Resp:
    """Run one RPC with its log context bound; the one place (with :func:`abort_for`) where
    errors become statuses: our errors by :data:`STATUS_TABLE`, anything else INTERNAL with
    its traceback in the node's log (a bug), never in the status."""
    with structlog.contextvars.bound_contextvars(method=method, peer=context.peer(), caller=None):
        try:
            result = await call()
            _log.info("rpc.ok")
            return result
        except CertsyncError as err:
            await abort_for(context, err)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            if isinstance(err, grpc.aio.AbortError):
                raise
            _log.exception("rpc.failed")
            await context.abort(
                grpc.StatusCode.INTERNAL, f"internal error in {method}; see the node's log"
            )



# --------------------------------------------------------------------------- server factory


async def start_grpc_server(
    service: certsync_pb2_grpc.CertStoreServicer,
    *,
    address: str,
    credentials: grpc.ServerCredentials,
    replication: certsync_pb2_grpc.ReplicationServicer | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Start a grpc.aio server with the store, health and reflection services (and the
    replication service when given) on ``address`` (port 0: any) over mutual TLS only;
    return it and its port."""
    limit = GRPC_MAX_MESSAGE_BYTES  # one bound with the CLI's file reading (node.limits)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", limit)])
    certsync_pb2_grpc.add_CertStoreServicer_to_server(service, server)
    names = [SERVICE_NAME]
    if replication is not None:
        certsync_pb2_grpc.add_ReplicationServicer_to_server(replication, server)
        names.append(certsync_pb2.DESCRIPTOR.services_by_name["Replication"].full_name)
    health_servicer = AsyncHealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_secure_port(address, credentials)
    if port == 0:
        raise BadInput(
            f"cannot listen for gRPC on {address!r}; choose a free port and a local address"
        )
    await server.start()
    for svc in ("", SERVICE_NAME):
        await health_servicer.set(svc, health_pb2.HealthCheckResponse.SERVING)
    return server, port


def server_credentials(*, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> grpc.ServerCredentials:
    """mTLS server credentials: the node's identity; clients must present a cluster cert."""
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=ca_pem, require_client_auth=True
    )


