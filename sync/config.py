"""[shell] Read the cluster's TOML files: ``cluster.toml``, ``NAME/node.toml``, ``admin.toml``.

The format is what ``certsync cluster init`` writes (see :mod:`sync.cmd_cluster`). Paths in
a file are relative to that file's directory; the loaders resolve them to absolute paths.
Every problem -- a missing or unreadable file, bad TOML, a missing, mistyped or unknown
key -- is a one-line :class:`~node.errors.ConfigError` naming the file (exit 2).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias

from node.errors import BadInput, ConfigError
from sync.topology import (
    NodeSpec,
    Topology,
    _Table,
    check_node_name,
    split_address,
    topology_from_dict,
)

__all__ = [
    "LOG_FORMATS",
    "STORE_KEY_LEN",
    "AdminConfig",
    "LogFormat",
    "NodeConfig",
    "load_admin_config",
    "load_node_config",
    "load_store_key",
    "load_topology",
]

LogFormat: TypeAlias = Literal["json", "console"]
LOG_FORMATS: tuple[LogFormat, ...] = ("json", "console")
STORE_KEY_LEN = 32
_MAX_CONFIG_BYTES = 1024 * 1024


@dataclass(frozen=True)
class NodeConfig:
    """One node's configuration (``DIR/NAME/node.toml``) with its cluster's topology."""

    name: str
    path: Path
    topology: Topology
    data_dir: Path
    grpc_listen: str
    tls_listen: str
    ca_cert_path: Path
    cert_path: Path
    key_path: Path
    store_key_path: Path
    log_format: LogFormat

    @property
    def store_path(self) -> Path:
        return self.data_dir / "store.sqlite3"

    @property
    def spec(self) -> NodeSpec:
        return self.topology.node(self.name)


@dataclass(frozen=True)
class AdminConfig:
    """The admin CLI's configuration (``DIR/admin.toml``) with the cluster's topology."""

    name: str
    path: Path
    topology: Topology
    ca_cert_path: Path
    cert_path: Path
    key_path: Path


def _absolute(path: Path) -> Path:
    """Absolute and without '..' segments (symlinks are kept as they are)."""
    return Path(os.path.normpath(path.absolute()))


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            raw = fh.read(_MAX_CONFIG_BYTES + 1)
    except FileNotFoundError as err:
        raise ConfigError(f"{what} {str(path)!r} does not exist; run 'certsync cluster init' "
                          "or check the path") from err
    except OSError as err:
        raise ConfigError(f"cannot read {what} {str(path)!r}: {err.strerror}; check the path "
                          "and permissions") from err
    if len(raw) > _MAX_CONFIG_BYTES:
        raise ConfigError(f"{what} {str(path)!r} is larger than 1 MiB; check that this is the "
                          "right file")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{what} {str(path)!r} is not valid TOML ({err}); fix or regenerate "
                          "it") from err


def load_topology(path: Path) -> Topology:
    """Read ``cluster.toml``."""
    path = _absolute(path)
    return topology_from_dict(_read_toml(path, "cluster file"), base=path.parent,
                              source=str(path))


def _cluster_of(table: _Table, base: Path) -> Topology:
    return load_topology(_absolute(base / table.text("cluster")))


_NODE_KEYS = {"name", "cluster", "data_dir", "grpc_listen", "tls_listen", "ca_cert", "cert",
              "key", "store_key", "log_format"}
_ADMIN_KEYS = {"name", "cluster", "ca_cert", "cert", "key"}


def load_node_config(path: Path) -> NodeConfig:
    """Read ``NAME/node.toml`` and the ``cluster.toml`` it names; the node must be in it."""
    path = _absolute(path)
    base = path.parent
    table = _Table(_read_toml(path, "node config"), str(path), "")
    table.reject_unknown(_NODE_KEYS)
    topology = _cluster_of(table, base)
    try:
        name = check_node_name(table.text("name"))
        topology.node(name)
        grpc_listen, tls_listen = table.text("grpc_listen"), table.text("tls_listen")
        split_address(grpc_listen)
        split_address(tls_listen)
    except ConfigError:
        raise
    except BadInput as err:
        raise ConfigError(f"{path}: {err}") from err
    log_format = table.text("log_format", "json")
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"{path}: log_format {log_format!r} is not one of "
                          f"{', '.join(LOG_FORMATS)}")
    return NodeConfig(
        name=name,
        path=path,
        topology=topology,
        data_dir=_absolute(base / table.text("data_dir", ".")),
        grpc_listen=grpc_listen,
        tls_listen=tls_listen,
        ca_cert_path=_absolute(base / table.text("ca_cert")),
        cert_path=_absolute(base / table.text("cert")),
        key_path=_absolute(base / table.text("key")),
        store_key_path=_absolute(base / table.text("store_key")),
        log_format=log_format,
    )


def load_admin_config(path: Path) -> AdminConfig:
    """Read ``admin.toml`` and the ``cluster.toml`` it names."""
    path = _absolute(path)
    base = path.parent
    table = _Table(_read_toml(path, "admin config"), str(path), "")
    table.reject_unknown(_ADMIN_KEYS)
    topology = _cluster_of(table, base)
    try:
        name = check_node_name(table.text("name", "admin"))
    except BadInput as err:
        raise ConfigError(f"{path}: {err}") from err
    return AdminConfig(
        name=name,
        path=path,
        topology=topology,
        ca_cert_path=_absolute(base / table.text("ca_cert")),
        cert_path=_absolute(base / table.text("cert")),
        key_path=_absolute(base / table.text("key")),
    )


def load_store_key(path: Path) -> bytes:
    """The node's 32-byte at-rest key from ``store_key``: 64 hex digits (one trailing newline
    allowed) or 32 raw bytes. The message never shows the file's content."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read store key {str(path)!r}: {err.strerror}; check the "
                          "path and permissions") from err
    if len(raw) == STORE_KEY_LEN:
        return raw
    text = raw.strip()
    if len(text) == 2 * STORE_KEY_LEN:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    raise ConfigError(
        f"store key {str(path)!r} is neither {STORE_KEY_LEN} raw bytes nor "
        f"{2 * STORE_KEY_LEN} hex digits; restore it from backup (without it the stored "
        "keys cannot be read)"
    )
