"""[core] The cluster description: nodes, roles, addresses, required names, identities.

Pure: no file is read here. :mod:`sync.config` reads the TOML files and hands the parsed
tables to :func:`topology_from_dict`; :mod:`sync.cluster_init` builds a :class:`Topology`
and writes :func:`topology_to_dict`.

Identities are the mTLS certificates the cluster CA issues (see :mod:`sync.pki`). Who a
peer *is* comes from the certificate's SAN URI ``certsync://<cluster_id>/<kind>/<name>``;
what it may *do* comes from the topology, never from the certificate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias

from node.errors import BadInput, ConfigError, NotFound
from node.identity import (
    check_node_name,
    is_uuid,
)
from node.names import parse_hostname

__all__ = [
    "DEFAULT_STALE_AFTER_SECONDS",
    "DEFAULT_SYNC_INTERVAL_SECONDS",
    "ROLES",
    "NodeRole",
    "NodeSpec",
    "Topology",
    "format_address",
    "normalise_hostname",
    "split_address",
    "topology_from_dict",
    "topology_to_dict",
    "validate_nodes",
]

NodeRole: TypeAlias = Literal["primary", "backup", "traffic"]
ROLES: tuple[NodeRole, ...] = ("primary", "backup", "traffic")

DEFAULT_SYNC_INTERVAL_SECONDS = 30
DEFAULT_STALE_AFTER_SECONDS = 300



def normalise_hostname(text: str) -> str:
    """A node or site hostname as stored in the topology: validated (HostnameError, exit 2)
    and normalised (lower-case A-labels, no trailing dot; IPs in compressed form)."""
    return parse_hostname(text).value


def split_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` or ``[v6]:port`` into ``(host, port)``; :class:`BadInput` if odd."""
    host, sep, port_text = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        sep = ""  # an IPv6 literal must be in brackets when a port follows
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise BadInput(
            f"address {address!r} is not HOST:PORT with a port from 1 to 65535; "
            "write e.g. '127.0.0.1:7400' or '[::1]:7400'"
        )
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 literal in brackets (as gRPC and ssl expect)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class NodeSpec:
    """One node of the cluster as ``cluster.toml`` describes it.

    ``grpc_address``/``tls_address`` are where *others* reach the node (HOST:PORT);
    ``cert_path`` is the node's public mTLS certificate (its key wraps transfer blobs);
    ``admin_address`` is where admins reach its console (HTTPS), None when it has none.
    """

    name: str
    role: NodeRole
    hostname: str
    grpc_address: str
    tls_address: str
    cert_path: Path
    admin_address: str | None = None

    @property
    def admin_url(self) -> str | None:
        """The console's URL (``https://HOST:PORT/``), None without an admin address."""
        return None if self.admin_address is None else f"https://{self.admin_address}/"


@dataclass(frozen=True)
class Topology:
    """The cluster: site hostname and nodes in order primary, backup, traffic..."""

    cluster_id: str
    site: str
    nodes: tuple[NodeSpec, ...]
    ca_cert_path: Path
    sync_interval_seconds: int = DEFAULT_SYNC_INTERVAL_SECONDS
    stale_after_seconds: int = DEFAULT_STALE_AFTER_SECONDS

    def node(self, name: str) -> NodeSpec:
        for spec in self.nodes:
            if spec.name == name:
                return spec
        known = ", ".join(spec.name for spec in self.nodes)
        raise NotFound(f"node {name!r} is not in cluster {self.cluster_id!r}; known nodes: {known}")

    @property
    def primary(self) -> NodeSpec:
        """The node ``cluster.toml`` names primary (a promotion is tracked by epoch, not here)."""
        return next(spec for spec in self.nodes if spec.role == "primary")

    @property
    def backup(self) -> NodeSpec | None:
        return next((spec for spec in self.nodes if spec.role == "backup"), None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.nodes)

    def required_names(self) -> tuple[str, ...]:
        """The hostnames the default certificate must cover: site + every node, de-duplicated."""
        return tuple(dict.fromkeys((self.site, *(spec.hostname for spec in self.nodes))))

    def served_names(self, name: str) -> tuple[str, ...]:
        """The hostnames clients use to reach node ``name``: the site and its own hostname.

        These are the names a probe of that node's TLS endpoint asks for (with one handshake
        without SNI): nobody asks node A for node B's hostname, so probing every required name
        on every node would cost N x N handshakes for nothing.
        """
        return tuple(dict.fromkeys((self.site, self.node(name).hostname)))


def validate_nodes(nodes: tuple[NodeSpec, ...]) -> None:
    """Raise :class:`BadInput` unless ``nodes`` is one primary first, at most one backup
    next, then traffic nodes, with unique names and addresses."""
    if not nodes:
        raise BadInput("a cluster needs at least a primary node; give --primary NAME=HOST")
    roles = [spec.role for spec in nodes]
    if roles[0] != "primary" or roles.count("primary") != 1:
        raise BadInput(f"node roles {roles!r} must start with exactly one 'primary'")
    if roles.count("backup") > 1 or ("backup" in roles and roles[1] != "backup"):
        raise BadInput(f"node roles {roles!r} may hold one 'backup', right after the primary")
    for role in roles:
        if role not in ROLES:
            raise BadInput(f"node role {role!r} is not one of {', '.join(ROLES)}")
    seen: set[str] = set()
    for spec in nodes:
        check_node_name(spec.name)
        if spec.name == "admin":
            # not a technical clash (kinds differ in the URI) but confusing in audit logs
            raise BadInput("node name 'admin' is reserved for the admin identity; pick another")
        for value in (spec.name, spec.grpc_address, spec.tls_address,
                      *([spec.admin_address] if spec.admin_address else [])):
            key = value if value == spec.name else f"address {value}"
            if key in seen:
                raise BadInput(f"{value!r} is used by more than one node; each needs its own")
            seen.add(key)


# --------------------------------------------------------------------------- identities


# --------------------------------------------------------------------------- (de)serialise


def topology_to_dict(topology: Topology, base: Path) -> dict[str, Any]:
    """The ``cluster.toml`` table for ``topology``, with paths relative to ``base``."""
    return {
        "cluster_id": topology.cluster_id,
        "site": topology.site,
        "ca_cert": _relative(topology.ca_cert_path, base),
        "sync_interval_seconds": topology.sync_interval_seconds,
        "stale_after_seconds": topology.stale_after_seconds,
        "nodes": [
            {
                "name": spec.name,
                "role": spec.role,
                "hostname": spec.hostname,
                "grpc_address": spec.grpc_address,
                "tls_address": spec.tls_address,
                "cert": _relative(spec.cert_path, base),
                **({} if spec.admin_address is None else {"admin_address": spec.admin_address}),
            }
            for spec in topology.nodes
        ],
    }


def _relative(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


_TOP_KEYS = {"cluster_id", "site", "ca_cert", "sync_interval_seconds", "stale_after_seconds",
             "nodes"}
_NODE_KEYS = {"name", "role", "hostname", "grpc_address", "tls_address", "cert",
              "admin_address"}


def topology_from_dict(data: Mapping[str, Any], *, base: Path, source: str) -> Topology:
    """Build and validate a :class:`Topology` from a parsed ``cluster.toml``.

    Relative paths are resolved against ``base`` (the file's directory); ``source`` names
    the file in messages. Any problem raises :class:`ConfigError`.
    """
    table = _Table(data, source, "")
    table.reject_unknown(_TOP_KEYS)
    cluster_id = table.text("cluster_id")
    if not is_uuid(cluster_id):
        raise ConfigError(f"{source}: cluster_id {cluster_id!r} is not a lower-case UUID")
    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, list) or not all(isinstance(n, dict) for n in raw_nodes):
        raise ConfigError(f"{source}: [[nodes]] tables are missing; run 'certsync cluster init'")
    nodes: list[NodeSpec] = []
    try:
        site = normalise_hostname(table.text("site"))
        for i, raw in enumerate(raw_nodes):
            node = _Table(raw, source, f"nodes[{i}].")
            node.reject_unknown(_NODE_KEYS)
            role = node.text("role")
            if role not in ROLES:
                raise ConfigError(f"{source}: nodes[{i}].role {role!r} is not one of {ROLES}")
            grpc_address, tls_address = node.text("grpc_address"), node.text("tls_address")
            split_address(grpc_address)
            split_address(tls_address)
            admin_address = node.text("admin_address") if "admin_address" in node.data else None
            if admin_address is not None:
                split_address(admin_address)
            nodes.append(NodeSpec(
                name=check_node_name(node.text("name")),
                role=role,
                hostname=normalise_hostname(node.text("hostname")),
                grpc_address=grpc_address,
                tls_address=tls_address,
                cert_path=base / node.text("cert"),
                admin_address=admin_address,
            ))
        validate_nodes(tuple(nodes))
    except ConfigError:
        raise
    except BadInput as err:
        raise ConfigError(f"{source}: {err}") from err
    return Topology(
        cluster_id=cluster_id,
        site=site,
        nodes=tuple(nodes),
        ca_cert_path=base / table.text("ca_cert"),
        sync_interval_seconds=table.positive_int("sync_interval_seconds",
                                                 DEFAULT_SYNC_INTERVAL_SECONDS),
        stale_after_seconds=table.positive_int("stale_after_seconds",
                                               DEFAULT_STALE_AFTER_SECONDS),
    )


class _Table:
    """Typed access to one parsed TOML table; every problem is a one-line ConfigError."""

    def __init__(self, data: Mapping[str, Any], source: str, prefix: str) -> None:
        self.data, self.source, self.prefix = data, source, prefix

    def reject_unknown(self, known: set[str]) -> None:
        unknown = sorted(set(self.data) - known)
        if unknown:
            raise ConfigError(
                f"{self.source}: unknown key {self.prefix + unknown[0]!r}; "
                f"known keys are {', '.join(sorted(known))}"
            )

    def text(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str) or not value:
            raise ConfigError(
                f"{self.source}: {self.prefix}{key} must be a non-empty string, got {value!r}"
            )
        return value

    def positive_int(self, key: str, default: int) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(
                f"{self.source}: {self.prefix}{key} must be a positive integer, got {value!r}"
            )
        return value
