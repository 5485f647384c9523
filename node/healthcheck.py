"""[shell] Container health check: ask a node's standard gRPC health service whether it serves.

Docker's HEALTHCHECK runs ``python -m node.healthcheck --config /etc/certsync/node.toml``
inside the node's container. It reads the node's own config (keys ``name``, ``grpc_listen``,
``ca_cert``, ``cert``, ``key``; paths relative to the TOML file), connects to the node's gRPC
port over mutual TLS with the node's own identity, checks the server certificate against the
cluster CA for ``<name>.node.certsync``, and calls ``grpc.health.v1.Health/Check``.

Exit status follows Docker's HEALTHCHECK contract: 0 healthy (SERVING), 1 anything else. It
prints one line either way; the line never contains key material.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.errors import CertsyncError, ConfigError, NodeUnreachable

__all__ = ["HealthTarget", "check", "health_target", "local_address", "main"]

#: the name every node's certificate carries, per the cluster CA that ``cluster init`` makes
SERVER_NAME_TEMPLATE = "{name}.node.certsync"
DEFAULT_TIMEOUT = 5.0

_WILDCARD_V4 = {"", "0.0.0.0", "*"}  # noqa: S104 -- these are bind addresses we translate, not bind to
_WILDCARD_V6 = {"::", "[::]"}


@dataclass(frozen=True)
class HealthTarget:
    """Where and as whom to ask: plain values read from a node.toml."""

    address: str  # host:port to dial
    server_name: str  # name the node's certificate must carry
    ca_cert: Path
    cert: Path
    key: Path


def local_address(listen: str) -> str:
    """The address to dial for a listen address: a wildcard host becomes loopback.

    >>> local_address("0.0.0.0:7000"), local_address("[::]:7000"), local_address("n1:7000")
    ('127.0.0.1:7000', '[::1]:7000', 'n1:7000')
    """
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"grpc_listen {listen!r} is not HOST:PORT with a port from 1 to 65535; fix node.toml"
        )
    if host in _WILDCARD_V4:
        return f"127.0.0.1:{port}"
    if host in _WILDCARD_V6:
        return f"[::1]:{port}"
    return listen


def health_target(config: Mapping[str, Any], base_dir: Path) -> HealthTarget:
    """Turn a parsed node.toml into a :class:`HealthTarget` (pure: no file is opened)."""
    values: dict[str, str] = {}
    for key in ("name", "grpc_listen", "ca_cert", "cert", "key"):
        value = config.get(key)
        if not isinstance(value, str) or not value:
            raise ConfigError(
                f"node config has no usable {key!r} (found {value!r}); "
                "write it with 'certsync cluster init'"
            )
        values[key] = value
    return HealthTarget(
        address=local_address(values["grpc_listen"]),
        server_name=SERVER_NAME_TEMPLATE.format(name=values["name"]),
        ca_cert=base_dir / values["ca_cert"],
        cert=base_dir / values["cert"],
        key=base_dir / values["key"],
    )


def load_target(config_path: Path) -> HealthTarget:
    """Read node.toml and return where to ask."""
    try:
        with config_path.open("rb") as fh:
            config = tomllib.load(fh)
    except OSError as err:
        raise ConfigError(
            f"cannot read node config {str(config_path)!r}: {err.strerror}; check the path"
        ) from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"node config {str(config_path)!r} is not valid TOML: {err}") from err
    return health_target(config, config_path.parent)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ConfigError(
            f"cannot read the {what} {str(path)!r}: {err.strerror}; check node.toml and permissions"
        ) from err


def check(target: HealthTarget, *, service: str = "", timeout: float = DEFAULT_TIMEOUT) -> str:
    """Call Health/Check over mTLS; return the serving status name (e.g. ``"SERVING"``).

    Raises :class:`NodeUnreachable` when no answer comes (refused, TLS failure, timeout).
    """
    # imported here so `--help` and config errors do not pay for loading grpc
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(target.ca_cert, "CA certificate"),
        private_key=_read(target.key, "private key"),
        certificate_chain=_read(target.cert, "certificate"),
    )
    options = [("grpc.ssl_target_name_override", target.server_name)]
    with grpc.secure_channel(target.address, credentials, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else None
            detail = err.details() if isinstance(err, grpc.Call) else None
            raise NodeUnreachable(
                f"node at {target.address!r} did not answer the health check "
                f"({code.name if code else 'error'}: {detail}); "
                "check that 'certsync node serve' runs and uses this config",
                node=target.server_name,
            ) from err
    status: str = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m node.healthcheck",
        description="Exit 0 when the node of this config answers SERVING on gRPC health, else 1.",
    )
    parser.add_argument("--config", required=True, type=Path, help="the node's node.toml")
    parser.add_argument("--service", default="", help="service name to check (default: server)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds")
    args = parser.parse_args(argv)
    try:
        target = load_target(args.config)
        status = check(target, service=args.service, timeout=args.timeout)
    except CertsyncError as err:
        print(f"unhealthy: {err}", file=sys.stderr)
        return 1
    if status != "SERVING":
        print(
            f"unhealthy: {target.server_name} at {target.address} reports {status}",
            file=sys.stderr,
        )
        return 1
    print(f"healthy: {target.server_name} at {target.address} is SERVING")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
