"""``certsync audit`` against real node processes on loopback: filters, roles, bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sync.localcluster import LocalCluster

SITE = "support.example.com"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("audit")
    with LocalCluster.create(root / "c", site=SITE, primary=("p1", "p1.example.com"),
                             traffic=[("t1", "t1.example.com")]) as c:
        c.start_all()
        created = c.cli("cert", "create-self-signed", "--name", "wild", "--key", "ec-p256",
                        "--cn", "*.example.com", "--san", "*.example.com", "--san", SITE,
                        "--default")
        assert created.returncode == 0, created.stderr
        yield c


def _audit(c: LocalCluster, *args: str) -> list[dict[str, Any]]:
    proc = c.cli("audit", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    entries: list[dict[str, Any]] = json.loads(proc.stdout)
    return entries


def _node_config(c: LocalCluster, tmp_path: Path, node: str) -> str:
    d = c.directory
    path = tmp_path / f"{node}-as-admin.toml"
    path.write_text(f'cluster = "{d / "cluster.toml"}"\nca_cert = "{d / "ca.pem"}"\n'
                    f'cert = "{d / node / "node.pem"}"\nkey = "{d / node / "node-key.pem"}"\n'
                    f'name = "{node}"\n')
    return str(path)


def test_audit_lists_the_change_newest_first(cluster: LocalCluster) -> None:
    entries = _audit(cluster)
    assert entries, "the create was audited"
    assert [e["time"] for e in entries] == sorted((e["time"] for e in entries), reverse=True)
    listed = json.loads(cluster.cli("cert", "list", "--json").stdout)
    (wild,) = [c for c in listed if c["name"] == "wild"]
    add = [e for e in entries if e["action"] == "cert.add" and e["target"] == wild["sha256"]]
    assert len(add) == 1
    assert add[0]["actor"] == "admin:admin" and add[0]["outcome"] == "ok"
    assert set(add[0]) == {"time", "actor", "action", "target", "outcome", "detail"}
    assert _audit(cluster, "--since", "24h") == entries  # all of it is that recent
    table = cluster.cli("audit")
    assert table.returncode == 0 and table.stdout.splitlines()[0].startswith("TIME")
    assert wild["sha256"] in table.stdout


def test_a_node_identity_is_refused_and_the_refusal_is_audited(
        cluster: LocalCluster, tmp_path: Path) -> None:
    proc = cluster.cli("--config", _node_config(cluster, tmp_path, "t1"), "audit")
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("certsync: error: ")
    assert "only an admin may read the audit log" in lines[0]
    refused = _audit(cluster, "--actor", "node:t1")
    assert refused and refused[0]["action"] == "rpc.refused"
    assert refused[0]["target"] == "ReadAudit" and refused[0]["outcome"] == "refused"
    assert all(e["actor"] == "node:t1" for e in refused)
    # twin: the admin's own entries, filtered, hold none of t1's
    mine = _audit(cluster, "--actor", "admin:admin")
    assert mine and all(e["actor"] == "admin:admin" for e in mine)


@pytest.mark.parametrize("since", ["24x", "h", "1.5h", "-1h", "forever"])
def test_a_bad_duration_is_one_line_exit_2(cluster: LocalCluster, since: str) -> None:
    proc = cluster.cli("audit", f"--since={since}")
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("certsync: error: --since")
    assert repr(since) in lines[0] and "Traceback" not in proc.stderr


def test_a_bad_limit_is_one_line_exit_2(cluster: LocalCluster) -> None:
    proc = cluster.cli("audit", "--limit", "0")
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
    capped = cluster.cli("audit", "--json", "--limit", "1")
    assert capped.returncode == 0 and len(json.loads(capped.stdout)) == 1
    assert "more entries match" in capped.stderr
