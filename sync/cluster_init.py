"""[shell] Write a ready local cluster into a new directory (``certsync cluster init``).

Everything the user gave is validated before anything is written; the files are then
built in a temporary sibling directory and moved into place, so a refused or failed run
leaves ``DIR`` as it was. Keys and the store key are created with mode 0600 from the
start (``O_EXCL``), never widened later.

Layout (paths in the files are relative to the file that names them)::

    DIR/cluster.toml          topology (public)
    DIR/ca.pem, ca-key.pem    cluster CA (key 0600; only needed to add nodes)
    DIR/admin.toml, admin.pem, admin-key.pem
    DIR/admin.p12, admin.p12.pass   the admin identity for a browser (both 0600)
    DIR/monitor.pem, monitor-key.pem the metrics scraper's identity (key 0600)
    DIR/NAME/node.toml, node.pem, node-key.pem, store.key

Ports: node *i* of N gets gRPC ``base + 2i``, TLS ``base + 2i + 1`` and its admin console
(HTTPS) ``base + 2N + i``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from node.errors import BadInput
from node.exports import export_pkcs12
from node.identity import check_node_name
from sync import pki
from sync.topology import (
    DEFAULT_STALE_AFTER_SECONDS,
    DEFAULT_SYNC_INTERVAL_SECONDS,
    NodeRole,
    NodeSpec,
    Topology,
    format_address,
    normalise_hostname,
    topology_to_dict,
    validate_nodes,
)

__all__ = [
    "ADMIN_NAME",
    "DEFAULT_BASE_PORT",
    "DEFAULT_LISTEN",
    "MONITOR_NAME",
    "InitRequest",
    "admin_port",
    "build_topology",
    "init_cluster",
    "plan_init",
    "ports_needed",
]

DEFAULT_BASE_PORT = 7400
DEFAULT_LISTEN = "127.0.0.1"
ADMIN_NAME = "admin"
MONITOR_NAME = "monitor"
#: PBKDF2 rounds of admin.p12: its passphrase is 32 random hex digits (128 bits), so the
#: rounds add nothing against guessing; a browser opens it at once
_ADMIN_P12_ROUNDS = 10_000


def ports_needed(count: int) -> int:
    """How many consecutive ports from ``--base-port`` a cluster of ``count`` nodes uses."""
    return 3 * count


@dataclass(frozen=True)
class InitRequest:
    """Validated ``cluster init`` input; build it with :func:`plan_init`."""

    directory: Path
    site: str
    nodes: tuple[tuple[str, NodeRole, str], ...]  # (name, role, hostname) in node order
    listen: str
    base_port: int
    advertise: dict[str, str]
    sync_interval_seconds: int
    stale_after_seconds: int


def _split_pair(text: str, flag: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise BadInput(f"{flag} {text!r} is not NAME=VALUE; write e.g. {flag} p1=p1.example.com")
    return check_node_name(name), value


def _check_directory(directory: Path) -> None:
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise BadInput(f"{str(directory)!r} exists and is not a directory; give a new or "
                       "empty directory")
    if directory.is_dir() and any(directory.iterdir()):
        raise BadInput(f"directory {str(directory)!r} is not empty; give a new or empty "
                       "directory (cluster init never overwrites a cluster)")


def plan_init(
    directory: Path,
    *,
    site: str,
    primary: str,
    backup: str | None = None,
    traffic: Sequence[str] = (),
    listen: str = DEFAULT_LISTEN,
    base_port: int = DEFAULT_BASE_PORT,
    advertise: Sequence[str] = (),
    sync_interval_seconds: int = DEFAULT_SYNC_INTERVAL_SECONDS,
    stale_after_seconds: int = DEFAULT_STALE_AFTER_SECONDS,
) -> InitRequest:
    """Validate everything ``cluster init`` was given (BadInput, exit 2); write nothing."""
    pairs: list[tuple[str, NodeRole, str]] = []
    groups: list[tuple[NodeRole, str, list[str]]] = [
        ("primary", "--primary", [primary]),
        ("backup", "--backup", [backup] if backup else []),
        ("traffic", "--traffic", list(traffic)),
    ]
    for role, flag, values in groups:
        for text in values:
            name, host = _split_pair(text, flag)
            pairs.append((name, role, normalise_hostname(host)))
    names = [name for name, _, _ in pairs]
    hosts = [host for _, _, host in pairs]
    for what, values in (("node name", names), ("node hostname", hosts)):
        dup = next((v for i, v in enumerate(values) if v in values[:i]), None)
        if dup is not None:
            raise BadInput(f"{what} {dup!r} is given twice; every node needs its own")
    if ADMIN_NAME in names:
        raise BadInput("node name 'admin' is reserved for the admin identity; pick another")
    if MONITOR_NAME in names:
        raise BadInput("node name 'monitor' is reserved for the metrics identity; pick another")
    if not base_port > 0 or base_port + ports_needed(len(pairs)) - 1 > 65535:
        raise BadInput(f"--base-port {base_port!r} leaves no room for "
                       f"{ports_needed(len(pairs))} ports "
                       "below 65536; choose a port from 1024 to about 60000")
    for flag, value in (("--sync-interval", sync_interval_seconds),
                        ("--stale-after", stale_after_seconds)):
        if value <= 0:
            raise BadInput(f"{flag} {value!r} must be a positive number of seconds")
    advertised: dict[str, str] = {}
    for text in advertise:
        name, host = _split_pair(text, "--advertise")
        if name not in names:
            raise BadInput(f"--advertise {text!r} names no node; nodes are {', '.join(names)}")
        if name in advertised:
            raise BadInput(f"--advertise gives node {name!r} twice; give one address per node")
        advertised[name] = normalise_hostname(host)
    site = normalise_hostname(site)
    listen = normalise_hostname(listen)
    directory = Path(directory)
    _check_directory(directory)
    return InitRequest(
        directory=directory, site=site, nodes=tuple(pairs), listen=listen,
        base_port=base_port, advertise=advertised,
        sync_interval_seconds=sync_interval_seconds, stale_after_seconds=stale_after_seconds,
    )


def _reach_address(listen: str) -> str:
    """Where others connect when a node listens on ``listen`` and nothing is advertised."""
    try:
        ip = ipaddress.ip_address(listen)
    except ValueError:
        return listen
    if ip.is_unspecified:  # 0.0.0.0 / :: accept everywhere; peers on this host use loopback
        return "::1" if ip.version == 6 else "127.0.0.1"
    return listen


def build_topology(req: InitRequest, cluster_id: str, base: Path) -> Topology:
    nodes = []
    for i, (name, role, host) in enumerate(req.nodes):
        reach = req.advertise.get(name, _reach_address(req.listen))
        nodes.append(NodeSpec(
            name=name, role=role, hostname=host,
            grpc_address=format_address(reach, req.base_port + 2 * i),
            tls_address=format_address(reach, req.base_port + 2 * i + 1),
            cert_path=base / name / "node.pem",
            admin_address=format_address(reach, admin_port(req, i)),
        ))
    validate_nodes(tuple(nodes))
    return Topology(
        cluster_id=cluster_id, site=req.site, nodes=tuple(nodes),
        ca_cert_path=base / "ca.pem", sync_interval_seconds=req.sync_interval_seconds,
        stale_after_seconds=req.stale_after_seconds,
    )


def admin_port(req: InitRequest, index: int) -> int:
    """Node ``index``'s admin console port: after the 2N gRPC and TLS ports."""
    return req.base_port + 2 * len(req.nodes) + index


def _write(path: Path, data: bytes, *, secret: bool = False) -> None:
    # O_EXCL + mode at creation: a secret is never readable by others, not even briefly
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    path.chmod(0o600 if secret else 0o644)  # umask may have narrowed the public ones


def _toml(table: dict[str, Any]) -> bytes:
    return tomli_w.dumps(table).encode()


def init_cluster(req: InitRequest, *, now: dt.datetime) -> Topology:
    """Write the cluster described by ``req`` (validated by :func:`plan_init`)."""
    cluster_id = str(uuid.uuid4())
    final = req.directory.absolute()
    topology = build_topology(req, cluster_id, final)
    ca = pki.make_ca(cluster_id, now=now, key=pki.new_key())
    nodes = {spec.name: pki.issue_node(ca, spec.name, now=now, key=pki.new_key())
             for spec in topology.nodes}
    admin = pki.issue_admin(ca, ADMIN_NAME, now=now, key=pki.new_key())
    monitor = pki.issue_monitor(ca, MONITOR_NAME, now=now, key=pki.new_key())
    p12_pass = secrets.token_hex(16)
    admin_p12 = export_pkcs12(name="certsync admin", key=admin.key, cert=admin.cert,
                              chain=[ca.cert], passphrase=p12_pass.encode(),
                              rounds=_ADMIN_P12_ROUNDS)

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.init-", dir=final.parent))
    try:
        tmp.chmod(0o755)
        _write(tmp / "cluster.toml", _toml(topology_to_dict(topology, final)))
        _write(tmp / "ca.pem", ca.cert_pem)
        _write(tmp / "ca-key.pem", ca.key_pem, secret=True)
        _write(tmp / "admin.pem", admin.cert_pem)
        _write(tmp / "admin-key.pem", admin.key_pem, secret=True)
        _write(tmp / "admin.toml", _toml({
            "cluster": "cluster.toml", "ca_cert": "ca.pem", "cert": "admin.pem",
            "key": "admin-key.pem", "name": ADMIN_NAME,
        }))
        _write(tmp / "admin.p12", admin_p12, secret=True)
        _write(tmp / "admin.p12.pass", p12_pass.encode() + b"\n", secret=True)
        _write(tmp / "monitor.pem", monitor.cert_pem)
        _write(tmp / "monitor-key.pem", monitor.key_pem, secret=True)
        for spec in topology.nodes:
            index = topology.nodes.index(spec)
            port = req.base_port + 2 * index
            node_dir = tmp / spec.name
            node_dir.mkdir(mode=0o755)
            _write(node_dir / "node.pem", nodes[spec.name].cert_pem)
            _write(node_dir / "node-key.pem", nodes[spec.name].key_pem, secret=True)
            _write(node_dir / "store.key", os.urandom(32).hex().encode() + b"\n", secret=True)
            _write(node_dir / "node.toml", _toml({
                "name": spec.name,
                "cluster": "../cluster.toml",
                "data_dir": ".",
                "grpc_listen": format_address(req.listen, port),
                "tls_listen": format_address(req.listen, port + 1),
                "admin_address": format_address(req.listen, admin_port(req, index)),
                "ca_cert": "../ca.pem",
                "cert": "node.pem",
                "key": "node-key.pem",
                "store_key": "store.key",
                "log_format": "json",
            }))
        _move_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return topology


def _move_into_place(tmp: Path, final: Path) -> None:
    if not final.exists():
        try:
            tmp.rename(final)
            return
        except OSError:
            if not final.is_dir():
                raise
    _check_directory(final)  # an empty directory made by the user: keep it, fill it
    for entry in sorted(tmp.iterdir()):
        entry.rename(final / entry.name)
    tmp.rmdir()
