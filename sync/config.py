"""[shell] Read the cluster's TOML files: ``cluster.toml``, ``NAME/node.toml``, ``admin.toml``.

The format is what ``certsync cluster init`` writes (see :mod:`sync.cluster_init`). Paths in
a file are relative to that file's directory; the loaders resolve them to absolute paths.
Every problem -- a missing or unreadable file, bad TOML, a missing, mistyped or unknown
key -- is a one-line :class:`~node.errors.ConfigError` naming the file (exit 2).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

from node.acme_client import LETS_ENCRYPT_DIRECTORY, AcmeSettings
from node.alerts import AlertConfig, SmtpConfig
from node.errors import BadInput, ConfigError
from node.identity import check_node_name
from node.tls import DEFAULT_LOOPS
from sync.topology import NodeSpec, Topology, _Table, split_address, topology_from_dict

__all__ = [
    "DEFAULT_MONITOR_INTERVAL",
    "LOG_FORMATS",
    "STORE_KEY_LEN",
    "AcmeSettings",
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
#: seconds between two rounds of the lifecycle monitor (renewal, alerts, staged CA change)
DEFAULT_MONITOR_INTERVAL = 3600
#: seconds a TLS client has from connect to a completed handshake
DEFAULT_TLS_HANDSHAKE_TIMEOUT = 10.0
#: open TLS connections at most; at the cap the oldest idle/handshaking ones are shed
DEFAULT_TLS_MAX_CONNECTIONS = 4096


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
    # --- lifecycle (issue 6) ---
    acme: AcmeSettings | None = None
    alerts: AlertConfig = field(default_factory=AlertConfig)
    monitor_interval: int = DEFAULT_MONITOR_INTERVAL
    # --- the admin console (issue 13): where it listens (HTTPS), None: no console
    admin_address: str | None = None
    # --- rollouts (issue 12): the canary this node picks while it is the primary ---
    rollout_canary: str | None = None
    # --- TLS endpoint bounds (issue 14) ---
    tls_handshake_timeout: float = DEFAULT_TLS_HANDSHAKE_TIMEOUT
    tls_max_connections: int = DEFAULT_TLS_MAX_CONNECTIONS
    tls_max_per_address: int = 0
    tls_loops: int = DEFAULT_LOOPS
    tls_access_log: bool = False

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
              "key", "store_key", "log_format", "acme", "alerts", "monitor_interval",
              "admin_address", "rollout_canary", "tls_handshake_timeout", "tls_max_connections",
              "tls_max_per_address", "tls_loops", "tls_access_log"}
_ACME_KEYS = {"directory_url", "email", "http_listen", "ca_bundle"}
_ALERT_KEYS = {"smtp_host", "smtp_port", "smtp_from", "smtp_to", "starttls", "webhook_url"}
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
        admin_address = table.text("admin_address") if "admin_address" in table.data else None
        if admin_address is not None:
            split_address(admin_address)
    except ConfigError:
        raise
    except BadInput as err:
        raise ConfigError(f"{path}: {err}") from err
    log_format = table.text("log_format", "json")
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"{path}: log_format {log_format!r} is not one of "
                          f"{', '.join(LOG_FORMATS)}")
    acme = _acme_settings(_subtable(table, "acme"), base)
    alerts = _alert_config(_subtable(table, "alerts"))
    canary = table.text("rollout_canary") if "rollout_canary" in table.data else None
    if canary is not None and canary not in topology.names:
        raise ConfigError(f"{path}: rollout_canary {canary!r} is not a node of the cluster "
                          f"({', '.join(topology.names)}); name one of them or remove it")
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
        acme=acme,
        alerts=alerts,
        monitor_interval=table.positive_int("monitor_interval", DEFAULT_MONITOR_INTERVAL),
        admin_address=admin_address,
        rollout_canary=canary,
        tls_handshake_timeout=_positive_seconds(table, "tls_handshake_timeout",
                                                DEFAULT_TLS_HANDSHAKE_TIMEOUT),
        tls_max_connections=table.positive_int("tls_max_connections",
                                               DEFAULT_TLS_MAX_CONNECTIONS),
        tls_max_per_address=_count_or_off(table, "tls_max_per_address"),
        tls_loops=table.positive_int("tls_loops", DEFAULT_LOOPS),
        tls_access_log=_flag(table, "tls_access_log"),
    )


def _positive_seconds(table: _Table, key: str, default: float) -> float:
    value = table.data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e6:
        raise ConfigError(f"{table.source}: {key} must be a positive number of seconds, "
                          f"got {value!r}")
    return float(value)


def _flag(table: _Table, key: str) -> bool:
    value = table.data.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{table.source}: {key} must be true or false, got {value!r}")
    return value


def _count_or_off(table: _Table, key: str) -> int:
    value = table.data.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{table.source}: {key} must be 0 (off) or a positive integer, "
                          f"got {value!r}")
    return value


# --- lifecycle tables (issue 6) ---------------------------------------------------------


def _subtable(table: _Table, key: str) -> _Table | None:
    value = table.data.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"{table.source}: {key} must be a table ([{key}]), got {value!r}")
    return _Table(value, table.source, f"{key}.")


def _optional_text(table: _Table, key: str) -> str | None:
    return table.text(key) if key in table.data else None


def _acme_settings(table: _Table | None, base: Path) -> AcmeSettings | None:
    if table is None:
        return None
    table.reject_unknown(_ACME_KEYS)
    directory_url = table.text("directory_url", LETS_ENCRYPT_DIRECTORY)
    if not directory_url.startswith(("https://", "http://")):
        raise ConfigError(f"{table.source}: acme.directory_url {directory_url!r} is not an "
                          "http(s) URL; give the CA's ACME directory, e.g. "
                          f"{LETS_ENCRYPT_DIRECTORY!r}")
    http_listen = table.text("http_listen", "0.0.0.0:80")
    try:
        split_address(http_listen)
    except BadInput as err:
        raise ConfigError(f"{table.source}: acme.http_listen: {err}") from err
    bundle = _optional_text(table, "ca_bundle")
    return AcmeSettings(
        directory_url=directory_url,
        email=_optional_text(table, "email"),
        http_listen=http_listen,
        ca_bundle=_absolute(base / bundle) if bundle is not None else None,
    )


def _alert_config(table: _Table | None) -> AlertConfig:
    if table is None:
        return AlertConfig()
    table.reject_unknown(_ALERT_KEYS)
    smtp: SmtpConfig | None = None
    if "smtp_host" in table.data:
        recipients = table.data.get("smtp_to")
        if isinstance(recipients, str):
            recipients = [recipients]
        if (
            not isinstance(recipients, list)
            or not recipients
            or not all(isinstance(r, str) and r for r in recipients)
        ):
            raise ConfigError(f"{table.source}: alerts.smtp_to must be a non-empty list of "
                              f"addresses, got {recipients!r}")
        starttls = table.data.get("starttls", False)
        if not isinstance(starttls, bool):
            raise ConfigError(f"{table.source}: alerts.starttls must be true or false, "
                              f"got {starttls!r}")
        try:
            smtp = SmtpConfig(
                host=table.text("smtp_host"),
                port=table.positive_int("smtp_port", 25),
                sender=table.text("smtp_from"),
                recipients=tuple(recipients),
                starttls=starttls,
            )
        except ConfigError as err:
            raise ConfigError(f"{table.source}: {err}") from err
    else:
        extra = sorted(k for k in table.data if k.startswith("smtp_") or k == "starttls")
        if extra:
            raise ConfigError(f"{table.source}: alerts.{extra[0]} is set but alerts.smtp_host "
                              "is not; set smtp_host too or remove it")
    try:
        return AlertConfig(smtp=smtp, webhook_url=_optional_text(table, "webhook_url"))
    except ConfigError as err:
        raise ConfigError(f"{table.source}: {err}") from err


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
