"""[shell] ``certsync support-bundle --out FILE.zip``: what support needs, never a key.

The zip holds:

* ``status.json`` -- ``status --json`` (what every node reports and serves);
* ``coverage.json`` -- the cluster ``coverage --json`` of the primary's default certificate;
* ``certificates.json`` -- ``cert list --json`` of the primary;
* ``chains/SHA256.pem`` -- every certificate of the primary with its chain, from a PEM
  ``Export`` (certificates only: that export never carries a key);
* ``cluster.toml`` -- the topology (public: names, addresses, certificate paths);
* ``audit/NODE.json`` -- each node's audit log (``ReadAudit``, newest first, the newest
  :data:`AUDIT_LIMIT` entries), or ``{"error": ...}`` for a node that did not answer;
* ``README.txt`` -- when, for which cluster, from which node, and what is left out.

No private key, passphrase, node key or store key is read by this command at all (audit
details never hold one: the store redacts them); as a second line of defence, every member
is checked for PEM key markers and the bundle is refused if one shows up.

The file is written atomically (a temporary file in the same directory, then a rename),
with mode 0600, and an existing ``--out`` is refused unless ``--force``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import tomli_w

from node.api import certsync_pb2
from node.errors import AlreadyExists, BadInput, CertsyncError
from node.text import rfc3339
from sync.client import NodeClient, admin_config, admin_target
from sync.cluster_view import collect_status, utcnow
from sync.cmd_audit import entry_json
from sync.cmd_cert import cert_json
from sync.cmd_coverage import collect_cluster_coverage
from sync.config import AdminConfig
from sync.topology import topology_to_dict

__all__ = ["AUDIT_LIMIT", "build_members", "collect_bundle", "register", "write_zip_atomically"]

#: the newest audit entries taken from each node
AUDIT_LIMIT: Final = 5000

#: the PEM label part of every private key kind (PKCS#8 plain and encrypted, RSA, EC)
_KEY_MARKERS: Final = (b"PRIVATE KEY",)


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def build_members(
    *,
    config: AdminConfig,
    status: dict[str, Any],
    coverage: dict[str, Any] | str,
    node: str,
    certificates: Sequence[dict[str, Any]],
    chains: dict[str, bytes],
    now: dt.datetime,
    audit: Mapping[str, list[dict[str, Any]] | str] | None = None,
) -> dict[str, bytes]:
    """The zip's members, name -> content (pure). ``coverage`` is the JSON object or, when
    it could not be made, the sentence saying why; ``audit`` likewise per node."""
    topology = config.topology
    members: dict[str, bytes] = {
        "README.txt": (
            f"certsync support bundle\n"
            f"created: {rfc3339(now)}\n"
            f"cluster: {topology.cluster_id}\n"
            f"site: {topology.site}\n"
            f"certificates from node: {node}\n"
            "contents: status.json, coverage.json, certificates.json, chains/*.pem "
            "(certificates only), cluster.toml, audit/NODE.json (each node's audit log, "
            "newest first)\n"
            "not included: private keys, passphrases, node and store keys\n"
        ).encode(),
        "status.json": _json(status),
        "coverage.json": _json(coverage if isinstance(coverage, dict)
                               else {"error": coverage}),
        "certificates.json": _json(list(certificates)),
        "cluster.toml": tomli_w.dumps(topology_to_dict(topology, config.path.parent)).encode(),
    }
    for sha256, pem in sorted(chains.items()):
        members[f"chains/{sha256}.pem"] = pem
    for name, entries in sorted((audit or {}).items()):
        members[f"audit/{name}.json"] = _json(entries if isinstance(entries, list)
                                              else {"error": entries})
    for name, data in members.items():
        if any(marker in data for marker in _KEY_MARKERS):
            # a bug somewhere upstream; never ship it (and never show the content)
            raise CertsyncError(
                f"bundle member {name!r} looks like it holds a private key, so no bundle was "
                "written; report this as a certsync bug")
    return members


async def collect_bundle(
    config: AdminConfig, node: str | None, *, now: dt.datetime
) -> dict[str, bytes]:
    """Ask the cluster for everything :func:`build_members` needs."""
    status = await collect_status(config, now=now)
    source = node or status["primary"] or config.topology.primary.name
    coverage: dict[str, Any] | str
    try:
        coverage = await collect_cluster_coverage(config, source)
    except CertsyncError as err:
        coverage = str(err)
    async with NodeClient(admin_target(config, source)) as client:
        listed = await client.list_certificates()
        pems = await asyncio.gather(*(
            client.export(c.sha256, certsync_pb2.EXPORT_FORMAT_PEM) for c in listed))
    names = config.topology.names
    audits = await asyncio.gather(*(_audit_of(config, n) for n in names))
    return build_members(
        config=config,
        status=status,
        coverage=coverage,
        node=source,
        certificates=[cert_json(c) for c in listed],
        chains={c.sha256: pem for c, pem in zip(listed, pems, strict=True)},
        now=now,
        audit=dict(zip(names, audits, strict=True)),
    )


async def _audit_of(config: AdminConfig, node: str) -> list[dict[str, Any]] | str:
    """Node ``node``'s audit log as JSON entries, or why it could not be read."""
    try:
        async with NodeClient(admin_target(config, node), timeout=10.0) as client:
            resp = await client.read_audit(limit=AUDIT_LIMIT)
    except CertsyncError as err:
        return str(err)
    return [entry_json(e) for e in resp.entries]


def write_zip_atomically(out: Path, members: dict[str, bytes], *, force: bool) -> None:
    """Write ``members`` to ``out`` (mode 0600) via a temporary file and a rename.

    Without ``force`` an existing ``out`` is refused, also one that appears meanwhile.
    """
    if out.exists() and not force:
        raise AlreadyExists(f"{str(out)!r} exists; give another --out or add --force")
    directory = out.parent if str(out.parent) else Path()
    if not directory.is_dir():
        raise BadInput(f"directory {str(directory)!r} of --out does not exist; create it first")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for name, data in members.items():
                    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                    info.external_attr = 0o600 << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    zf.writestr(info, data)
            fh.flush()
            os.fsync(fh.fileno())
        if force:
            tmp.replace(out)
        else:
            try:
                os.link(tmp, out)  # fails if out appeared meanwhile: never clobber
            except FileExistsError as err:
                raise AlreadyExists(
                    f"{str(out)!r} exists; give another --out or add --force") from err
            tmp.unlink()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _run(args: argparse.Namespace) -> int:
    config = admin_config(args.config)
    out = Path(args.out)
    if out.exists() and not args.force:  # before asking the cluster anything
        raise AlreadyExists(f"{str(out)!r} exists; give another --out or add --force")
    members = asyncio.run(collect_bundle(config, args.node, now=utcnow()))
    write_zip_atomically(out, members, force=args.force)
    chains = sum(1 for name in members if name.startswith("chains/"))
    print(f"wrote {out} ({len(members)} files, {chains} certificate chains, no private keys)")
    return 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "support-bundle",
        help="zip of status, coverage, certificate chains and topology; never a private key",
        description=(
            "Write a zip for support: status.json, coverage.json, certificates.json, every "
            "certificate's chain as PEM (certificates only), cluster.toml, every node's "
            "audit log (audit/NODE.json). Never a private "
            "key or passphrase. The certificates come from the primary (or the global "
            "--node). The file is created with mode 0600."
        ),
    )
    parser.add_argument("--out", required=True, metavar="FILE.zip", help="zip file to write")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.set_defaults(func=_run)
