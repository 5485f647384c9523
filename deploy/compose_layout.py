"""Lay out a certsync cluster for containers: ``cluster init`` + one directory per container.

Run through ``deploy/cluster-for-compose.sh DIR [options] [cluster init options]``. It runs
``certsync cluster init DIR --listen 0.0.0.0 --advertise NAME=NAME ...`` (every node listens on
all of its container's addresses and is reached by its service name on the Docker network; the
mTLS target name ``NAME.node.certsync`` makes the name in the address irrelevant for TLS), then
adds, next to what ``cluster init`` wrote::

    DIR/compose/NAME/          mounted read-only at /etc/certsync in NAME's container
        node.toml              data_dir /var/lib/certsync (the volume), keys from /run/secrets
        cluster.toml           the topology, with paths inside this directory
        ca.pem node.pem nodes/*.pem   public certificates only
    DIR/NAME/node-key.pem, DIR/NAME/store.key
                               the node's secrets (from cluster init), mounted as
                               /run/secrets/node-key and /run/secrets/store-key
    DIR/cluster-host.toml      the topology as the host sees it: published ports on HOST_ADDRESS
    DIR/admin-host.toml        the admin CLI's config for the host:
                                   certsync --config DIR/admin-host.toml status
    DIR/compose.env            for docker-compose --env-file: where DIR is, the published ports

The container runs as uid 10001 (user certsync in the image), so the secrets (mode 0600) are
given to that uid when this runs as root (``--owner``); otherwise it prints
the one ``chown`` to run. Secrets stay mode 0600 throughout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

CONTAINER_ETC = "/etc/certsync"
CONTAINER_DATA = "/var/lib/certsync"
KEY_MOUNT = "/run/secrets/node-key"
STORE_KEY_MOUNT = "/run/secrets/store-key"
DEFAULT_OWNER = "10001:10001"
DEFAULT_NODES = [
    "--site", "support.example.com",
    "--primary", "p1=p1.example.com",
    "--backup", "b1=b1.example.com",
    "--traffic", "t1=t1.atlas.example.com",
    "--traffic", "t2=t2.atlas.example.com",
]


def _fail(message: str) -> int:
    print(f"cluster-for-compose: error: {message}", file=sys.stderr)
    return 2


def _node_names(init_args: list[str]) -> list[str]:
    """Node names from the --primary/--backup/--traffic NAME=HOST options, in order."""
    names: list[str] = []
    for flag, value in zip(init_args, [*init_args[1:], ""], strict=True):
        if flag in ("--primary", "--backup", "--traffic"):
            names.append(value.partition("=")[0])
        elif flag.startswith(("--primary=", "--backup=", "--traffic=")):
            names.append(flag.partition("=")[2].partition("=")[0])
    return names


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


def _env_name(node: str, what: str) -> str:
    return f"{node.upper().replace('-', '_')}_{what}_PORT"


def _write_toml(path: Path, table: dict[str, Any]) -> None:
    path.write_text(tomli_w.dumps(table))
    path.chmod(0o644)


def _container_dir(directory: Path, topology: dict[str, Any], node: dict[str, Any]) -> Path:
    """DIR/compose/NAME: what NAME's container sees at /etc/certsync (no secrets)."""
    name: str = node["name"]
    out = directory / "compose" / name
    (out / "nodes").mkdir(parents=True, mode=0o755)
    shutil.copyfile(directory / topology["ca_cert"], out / "ca.pem")
    shutil.copyfile(directory / node["cert"], out / "node.pem")
    peers = []
    for peer in topology["nodes"]:
        shutil.copyfile(directory / peer["cert"], out / "nodes" / f"{peer['name']}.pem")
        peers.append({**peer, "cert": f"nodes/{peer['name']}.pem"})
    _write_toml(out / "cluster.toml", {**topology, "ca_cert": "ca.pem", "nodes": peers})
    with (directory / name / "node.toml").open("rb") as fh:
        node_toml = tomllib.load(fh)
    _write_toml(out / "node.toml", {
        **node_toml,
        "cluster": "cluster.toml",
        "data_dir": CONTAINER_DATA,
        "ca_cert": "ca.pem",
        "cert": "node.pem",
        "key": KEY_MOUNT,
        "store_key": STORE_KEY_MOUNT,
    })
    for path in (out, *out.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return out


def _chown(paths: list[Path], owner: str) -> None:
    uid_text, _, gid_text = owner.partition(":")
    uid, gid = int(uid_text), int(gid_text or uid_text)
    for path in paths:
        os.chown(path, uid, gid, follow_symlinks=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cluster-for-compose.sh",
        description="certsync cluster init for containers (see deploy/compose.yaml); options "
                    "this script does not know go to 'certsync cluster init' (default: "
                    f"{' '.join(DEFAULT_NODES)})",
    )
    parser.add_argument("dir", metavar="DIR", help="new or empty directory")
    parser.add_argument("--host-address", default="127.0.0.1", metavar="ADDR",
                        help="where the host reaches the published ports (default %(default)s)")
    parser.add_argument("--host-port-base", type=int, metavar="PORT",
                        help="published port of the first node's gRPC port; the others follow "
                             "in the same order as inside (default: the same as inside)")
    parser.add_argument("--owner", metavar="UID:GID",
                        help="give the nodes' secrets to this owner "
                             f"(default when run as root: {DEFAULT_OWNER}, the image's user)")
    args, init_args = parser.parse_known_args(argv)
    if not any(a == "--primary" or a.startswith("--primary=") for a in init_args):
        init_args = [*DEFAULT_NODES, *init_args]
    if not any(a == "--listen" or a.startswith("--listen=") for a in init_args):
        init_args += ["--listen", "0.0.0.0"]  # noqa: S104 -- inside a container, on its network
    if not any(a == "--advertise" or a.startswith("--advertise=") for a in init_args):
        init_args += [arg for name in _node_names(init_args)
                      for arg in ("--advertise", f"{name}={name}")]
    directory = Path(args.dir).absolute()

    init = subprocess.run(
        [sys.executable, "-m", "sync.cli", "cluster", "init", str(directory), *init_args],
        check=False,
    )
    if init.returncode != 0:
        return init.returncode

    with (directory / "cluster.toml").open("rb") as fh:
        topology = tomllib.load(fh)
    nodes: list[dict[str, Any]] = topology["nodes"]
    inside_base = _port(nodes[0]["grpc_address"])
    host_base = args.host_port_base if args.host_port_base is not None else inside_base
    shift = host_base - inside_base
    host_nodes = []
    env = [f"CERTSYNC_CLUSTER={directory}", f"CERTSYNC_HOST_ADDRESS={args.host_address}"]
    for node in nodes:
        grpc, tls = _port(node["grpc_address"]) + shift, _port(node["tls_address"]) + shift
        if not 0 < grpc < 65536 or not 0 < tls < 65536:
            return _fail(f"--host-port-base {host_base!r} puts node {node['name']!r} on port "
                         f"{max(grpc, tls)!r}; choose a lower one")
        host = f"[{args.host_address}]" if ":" in args.host_address else args.host_address
        host_nodes.append({**node, "grpc_address": f"{host}:{grpc}",
                           "tls_address": f"{host}:{tls}"})
        env += [f"{_env_name(node['name'], 'GRPC')}={grpc}",
                f"{_env_name(node['name'], 'TLS')}={tls}"]

    owned: list[Path] = []
    for node in nodes:
        _container_dir(directory, topology, node)  # public files: 0644, readable by any uid
        owned += [directory / node["name"] / "node-key.pem", directory / node["name"] / "store.key"]
    _write_toml(directory / "cluster-host.toml", {**topology, "nodes": host_nodes})
    with (directory / "admin.toml").open("rb") as fh:
        admin = tomllib.load(fh)
    _write_toml(directory / "admin-host.toml", {**admin, "cluster": "cluster-host.toml"})
    (directory / "compose.env").write_text("\n".join(env) + "\n")

    owner = args.owner or (DEFAULT_OWNER if os.geteuid() == 0 else None)
    if owner is not None:
        try:
            _chown(owned, owner)
        except (OSError, ValueError) as err:
            return _fail(f"cannot give the container files to {owner!r}: {err}; run as root "
                         "or pass --owner with your container user")
    print(f"containers: mount {directory}/compose/NAME at {CONTAINER_ETC} "
          f"(docker-compose --env-file {directory}/compose.env -f deploy/compose.yaml up -d)")
    print(f"host CLI:   certsync --config {directory}/admin-host.toml status")
    if owner is None:
        print("the containers run as uid 10001 and must read their files; run:\n"
              f"  sudo chown {DEFAULT_OWNER} "
              + " ".join(f"{directory}/{n['name']}/node-key.pem {directory}/{n['name']}/store.key"
                         for n in nodes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
