"""The cluster admin views: ``status``, cluster ``coverage`` and ``support-bundle``.

The pure cores (:func:`sync.cmd_ops.status_report`, :func:`sync.cmd_coverage.
cluster_coverage_json`) get table tests with a fixed clock. The commands then run as a user
types them against a real cluster of four node processes on loopback; a decoy TLS server
(``openssl s_server``) plays a node that stores the right set but serves something else.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import socket
import subprocess
import time
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from hypothesis import given, settings
from hypothesis import strategies as st

from node.names import SanSet
from sync.cluster_view import collect_status
from sync.cmd_coverage import NO_DEFAULT_REASON, cluster_coverage_json
from sync.config import load_admin_config
from sync.localcluster import LocalCluster
from sync.report import Observed, status_report
from sync.topology import NodeRole, NodeSpec, Topology, topology_to_dict
from tests.pki import make_leaf, make_root

SITE = "support.example.com"
NODES: tuple[tuple[str, NodeRole, str], ...] = (
    ("p1", "primary", "p1.example.com"), ("b1", "backup", "b1.example.com"),
    ("t1", "traffic", "t1.example.com"), ("t2", "traffic", "t2.example.com"))
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
DIGEST = "d" * 64
LEAF = "a" * 64
OTHER = "b" * 64
STATUS_FIELDS = {"name", "role", "hostname", "grpc_address", "tls_address", "reachable",
                 "epoch", "digest", "in_sync", "default_sha256", "last_sync"}
PASS_CANARY = "canary-bundle-passphrase-7f3e"
DEADLINE = 60.0


# --------------------------------------------------------------------------- pure core


def _topology(stale_after: int = 300) -> Topology:
    specs = tuple(
        NodeSpec(name=n, role=r, hostname=h, grpc_address=f"127.0.0.1:{7400 + 2 * i}",
                 tls_address=f"127.0.0.1:{7401 + 2 * i}", cert_path=Path(f"/x/{n}.pem"))
        for i, (n, r, h) in enumerate(NODES)
    )
    return Topology(cluster_id="00000000-0000-4000-8000-000000000000", site=SITE, nodes=specs,
                    ca_cert_path=Path("/x/ca.pem"), stale_after_seconds=stale_after)


def _names() -> list[str | None]:
    return [*_topology().required_names(), None]


def _expected() -> dict[str | None, str]:
    return dict.fromkeys(_names(), LEAF)


def _node(name: str, **changes: Any) -> Observed:
    role = next(r for n, r, _ in NODES if n == name)
    base = Observed(
        name=name, reachable=True, role=role, epoch=1, revision=3, digest=DIGEST,
        default_sha256=LEAF, primary="p1",
        last_sync="" if name == "p1" else "2026-03-01T11:59:00Z",
        served=dict.fromkeys(_names(), LEAF),
    )
    return replace(base, **changes)


def _row(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(n for n in report["nodes"] if n["name"] == name)


def _report(*overrides: Observed, expected: dict[str | None, str] | None = None,
            now: dt.datetime = NOW) -> dict[str, Any]:
    by_name = {o.name: o for o in overrides}
    observed = [by_name.get(n) or _node(n) for n, _, _ in NODES]
    return status_report(_topology(), observed,
                         _expected() if expected is None else expected, now=now)


def test_status_all_serving_the_primary_set_are_in_sync() -> None:
    report = _report()
    assert report["epoch"] == 1 and report["primary"] == "p1"
    for row in report["nodes"]:
        assert set(row) >= STATUS_FIELDS
        assert row["in_sync"] is True and row["stale"] is False, row
        assert row["problems"] == []


@pytest.mark.parametrize(
    ("node", "needle"),
    [
        # stores the primary's set but its endpoint serves another certificate for a name
        (_node("t1", served={**dict.fromkeys(_names(), LEAF), "t1.example.com": OTHER}),
         "serves bbbbbbbbbbbbbbbb for 't1.example.com'"),
        # ... or without SNI
        (_node("b1", served={**dict.fromkeys(_names(), LEAF), None: OTHER}),
         "for no SNI"),
        # the handshake failed
        (_node("t2", served={**dict.fromkeys(_names(), LEAF), SITE: None},
               probe_errors={SITE: "connection refused"}), "connection refused"),
        # another digest, same epoch
        (_node("t1", digest="e" * 64), "differs from the primary's"),
        # another revision, same digest
        (_node("t1", revision=2), "revision 2"),
        # not probed at all: unknown, so not claimed in sync
        (_node("t2", served={}), None),
    ],
)
def test_status_stored_is_not_served(node: Observed, needle: str | None) -> None:
    row = _row(_report(node), node.name)
    assert row["in_sync"] is False and row["reachable"] is True
    if needle is not None:
        assert any(needle in p for p in row["problems"]), row["problems"]
    # the negative twin: the same node as the others is in sync
    assert _row(_report(), node.name)["in_sync"] is True


_SHAS = st.sampled_from([LEAF, OTHER])


@st.composite
def _observed(draw: st.DrawFn, name: str) -> Observed:
    if not draw(st.booleans()) and name != "p1":
        return Observed(name=name, reachable=False, error="down")
    served = {n: draw(st.one_of(st.none(), _SHAS)) for n in _names()}
    if draw(st.booleans()):
        served = dict.fromkeys(_names(), LEAF)  # the common case: serving it all
    return _node(name, revision=draw(st.sampled_from([3, 3, 2])),
                 digest=draw(st.sampled_from([DIGEST, DIGEST, "e" * 64])),
                 served=served if draw(st.integers(0, 5)) else {})


@settings(max_examples=60, deadline=None)
@given(st.tuples(*(_observed(n) for n, _, _ in NODES)))
def test_status_in_sync_iff_same_set_and_served_everywhere(
    observed: tuple[Observed, ...]
) -> None:
    """Reference model: in sync <=> reachable, the primary's revision and digest, and the
    primary's certificate served for every name (the primary p1 is always reachable)."""
    report = status_report(_topology(), list(observed), _expected(), now=NOW)
    p1 = observed[0]
    for node in observed:
        want = (node.reachable and node.same_set(p1)
                and all(node.served.get(n) == LEAF for n in _names()))
        assert _row(report, node.name)["in_sync"] is want, node


def test_status_unreachable_node_row() -> None:
    down = Observed(name="t2", reachable=False, error="node 't2' is unreachable")
    row = _row(_report(down), "t2")
    assert set(row) >= STATUS_FIELDS
    assert row["reachable"] is False and row["in_sync"] is False
    assert row["epoch"] is None and row["digest"] is None and row["default_sha256"] is None
    assert row["role"] == "traffic" and row["problems"] == ["node 't2' is unreachable"]
    assert _row(_report(down), "t1")["in_sync"] is True  # the others are unaffected


@pytest.mark.parametrize(
    ("now", "stale"),
    [
        (NOW, False),  # synced a minute ago
        (NOW + dt.timedelta(seconds=239), False),  # 299 s after the sync: not yet
        (NOW + dt.timedelta(seconds=241), True),  # 301 s after the sync (stale_after 300)
        (NOW + dt.timedelta(days=3), True),
    ],
)
def test_status_stale_flag_uses_the_clock_given(now: dt.datetime, stale: bool) -> None:
    report = _report(now=now)
    for name in ("b1", "t1", "t2"):
        assert _row(report, name)["stale"] is stale
    assert _row(report, "p1")["stale"] is False  # the primary does not sync from anyone


def test_status_never_synced_is_stale_and_not_in_sync() -> None:
    row = _row(_report(_node("t1", last_sync="")), "t1")
    assert row["stale"] is True and row["last_sync"] is None
    assert any("never" in p for p in row["problems"])


def test_status_runtime_role_after_promotion() -> None:
    """b1 was promoted (epoch 2); p1 came back still claiming primary at epoch 1."""
    report = _report(
        _node("p1", epoch=1, role="primary", primary="p1", last_sync=""),
        _node("b1", epoch=2, role="primary", primary="b1", last_sync=""),
        _node("t1", epoch=2, primary="b1"),
        _node("t2", epoch=2, primary="b1"),
    )
    assert report["primary"] == "b1" and report["epoch"] == 2
    assert _row(report, "b1")["role"] == "primary"
    p1 = _row(report, "p1")
    assert p1["role"] == "backup" and p1["configured_role"] == "primary"
    assert p1["in_sync"] is False and any("step down" in p for p in p1["problems"])
    assert _row(report, "t1")["in_sync"] is True


def test_status_unreachable_primary_is_still_reported() -> None:
    report = _report(Observed(name="p1", reachable=False, error="node 'p1' is unreachable"),
                     expected=None)
    assert report["primary"] == "p1"
    p1 = _row(report, "p1")
    assert p1["role"] == "primary" and p1["reachable"] is False
    assert not any(row["in_sync"] for row in report["nodes"])
    assert any("'p1' does not answer" in p for p in report["problems"])


def test_status_primary_without_certificates_needs_no_probe() -> None:
    nothing = {"served": {}, "default_sha256": ""}
    report = _report(*(_node(n, **nothing) for n, _, _ in NODES), expected={})
    assert [row["name"] for row in report["nodes"]] == [n for n, _, _ in NODES]  # not vacuous
    assert all(row["in_sync"] for row in report["nodes"])


def test_status_primary_without_certificates_flags_a_node_with_another_set() -> None:
    """Twin: with no probe expected, a traffic node holding another set (digest) than the
    empty primary is still not in sync."""
    nothing = {"served": {}, "default_sha256": ""}
    stale = _node("t1", served={}, default_sha256=LEAF, digest="e" * 64)
    report = _report(*(_node(n, **nothing) for n, _, _ in NODES if n != "t1"), stale,
                     expected={})
    assert [row["name"] for row in report["nodes"]] == [n for n, _, _ in NODES]
    assert _row(report, "t1")["in_sync"] is False
    assert all(_row(report, n)["in_sync"] for n in ("p1", "b1", "t2"))


def _sans(*dns: str) -> SanSet:
    return SanSet(dns_names=dns)


@pytest.mark.parametrize(
    ("sans", "uncovered"),
    [
        (_sans("*.example.com"), set()),
        (_sans("support.example.com", "p1.example.com", "b1.example.com", "t1.example.com",
               "t2.example.com"), set()),
        (_sans("support.example.com", "*.atlas.example.com"),
         {"p1.example.com", "b1.example.com", "t1.example.com", "t2.example.com"}),
        (_sans("p1.example.com", "b1.example.com", "t1.example.com", "t2.example.com"),
         {SITE}),
        (_sans(), {SITE, "p1.example.com", "b1.example.com", "t1.example.com",
                   "t2.example.com"}),
    ],
)
def test_cluster_coverage_rows_name_their_node(sans: SanSet, uncovered: set[str]) -> None:
    data = cluster_coverage_json(_topology(), sans, node="p1", sha256=LEAF)
    rows = data["hostnames"]
    assert [(r["hostname"], r["node"]) for r in rows] == [
        (SITE, None), ("p1.example.com", "p1"), ("b1.example.com", "b1"),
        ("t1.example.com", "t1"), ("t2.example.com", "t2")]
    assert {r["hostname"] for r in rows if not r["covered"]} == uncovered
    assert data["all_covered"] is (not uncovered)
    assert data["node"] == "p1" and data["sha256"] == LEAF
    for r in rows:
        assert {"hostname", "covered", "kind", "matched_by", "node"} <= set(r)


def test_cluster_coverage_without_default_covers_nothing() -> None:
    data = cluster_coverage_json(_topology(), None, node="p1", sha256=None)
    assert data["all_covered"] is False and data["sha256"] is None
    assert all(r["covered"] is False and r["reason"] == NO_DEFAULT_REASON
               for r in data["hostnames"])
    assert "no default certificate" in data["reason"]


def test_cluster_coverage_shared_hostname_is_listed_once() -> None:
    topo = _topology()
    site_node = replace(topo.nodes[3], hostname=SITE)
    topo = replace(topo, nodes=(*topo.nodes[:3], site_node))
    rows = cluster_coverage_json(topo, _sans("*.example.com"), node="p1", sha256=LEAF)[
        "hostnames"]
    assert [r["hostname"] for r in rows].count(SITE) == 1
    assert rows[0]["node"] is None


# --------------------------------------------------------------------------- real cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("views")
    with LocalCluster.create(
        root / "c", site=SITE, primary=("p1", "p1.example.com"),
        backup=("b1", "b1.example.com"),
        traffic=[("t1", "t1.example.com"), ("t2", "t2.example.com")],
    ) as c:
        c.start_all()
        created = c.cli("cert", "create-self-signed", "--name", "wild", "--key", "ec-p256",
                        "--cn", "*.example.com", "--san", "*.example.com", "--san",
                        "example.com", "--default")
        assert created.returncode == 0, created.stderr
        _wait_in_sync(c)
        yield c


def _wait_in_sync(c: LocalCluster) -> None:
    """Wait until status shows every node serving the primary's set (a change on the
    primary is pushed at once; ``replicate`` has its own tests)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        report = _status(c)
        if all(n["in_sync"] for n in report["nodes"]):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not in sync within {DEADLINE:.0f} s: {report}")
        time.sleep(0.2)  # polling other processes' state, bounded by the deadline


def _status(c: LocalCluster, admin: Path | None = None) -> dict[str, Any]:
    """``status --json``; its exit status is checked against the rows (status is a check:
    0 when every node is reachable, in sync and not stale, else 1, never 2)."""
    proc = _cli(c, "status", "--json", admin=admin)
    data: dict[str, Any] = json.loads(proc.stdout)
    ok = all(n["reachable"] and n["in_sync"] and not n["stale"] for n in data["nodes"])
    assert proc.returncode == (0 if ok else 1), (proc.returncode, proc.stderr)
    return data


def _cli(c: LocalCluster, *args: str, admin: Path | None = None
         ) -> subprocess.CompletedProcess[str]:
    if admin is None:
        return c.cli(*args)
    return subprocess.run([*c_cmd(), "--config", str(admin), *args], capture_output=True,
                          text=True, timeout=120, check=False)


def c_cmd() -> list[str]:
    from sync.localcluster import certsync_command

    return certsync_command()


def _edited_config(c: LocalCluster, where: Path, **node_changes: dict[str, str]) -> Path:
    """A copy of the admin config whose cluster.toml has ``node_changes`` applied (e.g. a
    node's tls_address pointed elsewhere); certificates stay where they are."""
    where.mkdir(parents=True, exist_ok=True)
    table = topology_to_dict(c.config.topology, where)  # paths stay absolute
    for entry in table["nodes"]:
        entry.update(node_changes.get(entry["name"], {}))
    (where / "cluster.toml").write_text(tomli_w.dumps(table))
    admin = where / "admin.toml"
    admin.write_text(tomli_w.dumps({
        "cluster": "cluster.toml", "ca_cert": str(c.config.ca_cert_path),
        "cert": str(c.config.cert_path), "key": str(c.config.key_path),
        "name": c.config.name}))
    return admin


@pytest.fixture
def decoy(tmp_path: Path) -> Iterator[str]:
    """``openssl s_server`` with a certificate for every cluster name: serves, not stores."""
    leaf = make_leaf(None, sans=["*.example.com", "example.com"])
    (tmp_path / "decoy.pem").write_bytes(leaf.cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "decoy.key").write_bytes(leaf.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    port = _free_port()
    proc = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}" if _accepts_host() else str(port),
         "-cert", str(tmp_path / "decoy.pem"), "-key", str(tmp_path / "decoy.key"), "-www",
         "-quiet"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("openssl s_server did not start") from None
                time.sleep(0.05)  # polling another process's socket, bounded by the deadline
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _accepts_host() -> bool:
    out = subprocess.run(["openssl", "version"], capture_output=True, text=True, check=False)
    return not out.stdout.startswith(("OpenSSL 1.0", "OpenSSL 0."))


def test_status_json_of_a_synced_cluster(cluster: LocalCluster) -> None:
    report = _status(cluster)
    assert report["primary"] == "p1" and isinstance(report["epoch"], int)
    assert [n["name"] for n in report["nodes"]] == ["p1", "b1", "t1", "t2"]
    defaults = {n["default_sha256"] for n in report["nodes"]}
    digests = {n["digest"] for n in report["nodes"]}
    assert len(defaults) == 1 and len(digests) == 1
    (default,) = defaults
    for n in report["nodes"]:
        assert set(n) >= STATUS_FIELDS
        assert n["reachable"] and n["in_sync"] and n["problems"] == [], n
        assert cluster.served_sha256(n["name"], n["hostname"]) == default
    human = cluster.cli("status")
    assert human.returncode == 0 and "p1" in human.stdout and "t2" in human.stdout


def test_status_node_serving_another_certificate_is_not_in_sync(
    cluster: LocalCluster, tmp_path: Path, decoy: str
) -> None:
    """t1 stores the right set, but its tls_address now leads to a server with another
    certificate for the same names: stored is not served."""
    admin = _edited_config(cluster, tmp_path / "cfg", t1={"tls_address": decoy})
    report = _status(cluster, admin)
    t1 = _row(report, "t1")
    assert t1["reachable"] is True and t1["digest"] == _row(report, "p1")["digest"]
    assert t1["in_sync"] is False
    assert any("serves" in p and "t1.example.com" in p for p in t1["problems"]), t1
    assert all(_row(report, n)["in_sync"] for n in ("p1", "b1", "t2"))
    # negative twin: the real address of t1 is in sync
    assert _row(_status(cluster), "t1")["in_sync"] is True


def test_status_unreachable_node_is_a_row_and_exit_1(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    admin = _edited_config(cluster, tmp_path / "cfg",
                           t2={"grpc_address": f"127.0.0.1:{_free_port()}"})
    report = _status(cluster, admin)
    t2 = _row(report, "t2")
    assert t2["reachable"] is False and t2["in_sync"] is False and t2["epoch"] is None
    assert "unreachable" in t2["problems"][0]
    assert _row(report, "t1")["in_sync"] is True
    human = _cli(cluster, "status", admin=admin)
    assert human.returncode == 1 and "unreachable" in human.stdout


def test_status_with_every_node_down_exits_1_not_2(cluster: LocalCluster,
                                                   tmp_path: Path) -> None:
    """No node answers: the check ran and failed (1), it is not bad input (2)."""
    admin = _edited_config(cluster, tmp_path / "cfg", **{
        n: {"grpc_address": f"127.0.0.1:{_free_port()}"} for n in cluster.names})
    report = _status(cluster, admin)
    assert not any(n["reachable"] for n in report["nodes"])
    human = _cli(cluster, "status", admin=admin)
    assert human.returncode == 1, human.stderr
    assert "certsync: error" not in human.stderr


def test_status_stale_flag_against_real_last_sync(cluster: LocalCluster) -> None:
    config = load_admin_config(cluster.admin_toml)
    fresh = asyncio.run(collect_status(config))
    last = max(dt.datetime.fromisoformat(n["last_sync"]) for n in fresh["nodes"]
               if n["name"] != "p1")
    stale_after = config.topology.stale_after_seconds
    late = asyncio.run(collect_status(
        config, now=last + dt.timedelta(seconds=stale_after + 60)))
    assert all(not n["stale"] for n in fresh["nodes"])
    assert [n["name"] for n in late["nodes"] if n["stale"]] == ["b1", "t1", "t2"]
    assert all(n["in_sync"] for n in late["nodes"])  # stale is a flag beside in_sync


def test_cluster_coverage_all_covered(cluster: LocalCluster) -> None:
    proc = cluster.cli("coverage", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["all_covered"] is True and data["node"] == "p1"
    assert [(r["hostname"], r["node"], r["kind"]) for r in data["hostnames"]] == [
        (SITE, None, "wildcard"), ("p1.example.com", "p1", "wildcard"),
        ("b1.example.com", "b1", "wildcard"), ("t1.example.com", "t1", "wildcard"),
        ("t2.example.com", "t2", "wildcard")]
    assert data["sha256"] == _status(cluster)["nodes"][0]["default_sha256"]
    human = cluster.cli("coverage")
    assert human.returncode == 0 and "(site)" in human.stdout and "all covered" in human.stdout


def test_cluster_coverage_uncovered_node_hostname_exit_1(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    admin = _edited_config(cluster, tmp_path / "cfg", t2={"hostname": "t2.atlas.example.org"})
    proc = _cli(cluster, "coverage", "--json", admin=admin)
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    assert data["all_covered"] is False
    bad = [r for r in data["hostnames"] if not r["covered"]]
    assert [(r["hostname"], r["node"]) for r in bad] == [("t2.atlas.example.org", "t2")]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["coverage", "--hostname", "x.example.com"], "--cert FILE"),
        (["coverage", "--json", "--passphrase-file", "/dev/null"], "offline form"),
    ],
)
def test_cluster_coverage_offline_flags_are_bad_input(
    cluster: LocalCluster, args: list[str], needle: str
) -> None:
    proc = cluster.cli(*args)
    assert proc.returncode == 2
    assert proc.stderr.startswith("certsync: error:") and needle in proc.stderr


def test_cluster_coverage_without_default_certificate(tmp_path: Path) -> None:
    with LocalCluster.create(tmp_path / "c", site=SITE, primary=("p1", "p1.example.com")) as c:
        c.start_all()
        proc = c.cli("coverage", "--json")
        assert proc.returncode == 1, proc.stderr
        data = json.loads(proc.stdout)
        assert data["all_covered"] is False and data["sha256"] is None
        assert "no default certificate" in data["reason"]
        human = c.cli("coverage")
        assert human.returncode == 1 and "no default certificate" in human.stdout


# --------------------------------------------------------------------------- bundle


def _key_forms(key: ec.EllipticCurvePrivateKey) -> list[bytes]:
    """Byte strings that would betray ``key``: its DER (PKCS#8 and traditional), PEM
    bodies and the private scalar."""
    der8 = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    trad = key.private_bytes(serialization.Encoding.DER,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    return [der8, trad, scalar, scalar.hex().encode(), der8.hex().encode()]


def _secrets_on_disk(c: LocalCluster) -> list[bytes]:
    out: list[bytes] = []
    for name in c.names:
        for fname in ("store.key", "node-key.pem"):
            data = (c.directory / name / fname).read_bytes()
            out += [data, data.strip()]
    for fname in ("admin-key.pem", "ca-key.pem"):
        out.append((c.directory / fname).read_bytes())
    return out


def test_support_bundle_holds_no_key_or_passphrase(cluster: LocalCluster, tmp_path: Path) -> None:
    canary_key = ec.generate_private_key(ec.SECP256R1())
    root = make_root()
    leaf = make_leaf(root, sans=["canary.example.com"], key=canary_key)
    # the canary key imported with its certificate and chain, behind a canary passphrase
    blob = pkcs12.serialize_key_and_certificates(
        b"canary", leaf.key, leaf.cert, [root.cert],
        serialization.BestAvailableEncryption(PASS_CANARY.encode()))
    (tmp_path / "canary.bin").write_bytes(blob)
    (tmp_path / "pw").write_text(PASS_CANARY + "\n")
    imported = cluster.cli("cert", "import", str(tmp_path / "canary.bin"), "--passphrase-file",
                           str(tmp_path / "pw"), "--name", "canary")
    assert imported.returncode == 0, imported.stderr
    canary_sha = imported.stdout.strip()

    out = tmp_path / "bundle.zip"
    proc = cluster.cli("support-bundle", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    raw = out.read_bytes()
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    assert {"status.json", "coverage.json", "cluster.toml", "certificates.json",
            "README.txt"} <= set(members)
    chains = {n for n in members if n.startswith("chains/")}
    listed = json.loads(cluster.cli("cert", "list", "--json").stdout)
    assert chains == {f"chains/{c['sha256']}.pem" for c in listed}
    # the canary's chain file holds its certificate and its root, nothing else
    canary_pem = members[f"chains/{canary_sha}.pem"]
    assert canary_pem.count(b"BEGIN CERTIFICATE") == 2
    assert x509.load_pem_x509_certificates(canary_pem) == [leaf.cert, root.cert]
    assert json.loads(members["status.json"])["primary"] == "p1"
    assert json.loads(members["coverage.json"])["all_covered"] is True
    # every node's audit log is in, newest first; the primary's names the canary's import
    assert {f"audit/{n}.json" for n in ("p1", "b1", "t1", "t2")} <= set(members)
    audit = json.loads(members["audit/p1.json"])
    assert [e["time"] for e in audit] == sorted((e["time"] for e in audit), reverse=True)
    adds = [e for e in audit if e["action"] == "cert.add" and e["target"] == canary_sha]
    assert len(adds) == 1 and adds[0]["actor"] == "admin:admin" and adds[0]["outcome"] == "ok"
    assert {"time", "actor", "action", "target", "outcome", "detail"} == set(adds[0])
    needles = [b"PRIVATE KEY", PASS_CANARY.encode(), *_key_forms(canary_key),
               *_secrets_on_disk(cluster)]
    for name, data in [*members.items(), ("<zip bytes>", raw)]:
        for needle in needles:
            assert needle not in data, f"{name} holds secret bytes"
    # the negative twin: the same search finds the canary key in a p12 export of it
    p12_out = tmp_path / "with-key.p12"
    exported = cluster.cli("cert", "export", canary_sha, "--out", str(p12_out), "--format",
                           "p12", "--passphrase-file", str(tmp_path / "pw"))
    assert exported.returncode == 0, exported.stderr
    loaded = pkcs12.load_pkcs12(p12_out.read_bytes(), PASS_CANARY.encode())
    assert loaded.key is not None
    exported_der = loaded.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    assert _key_forms(canary_key)[0] == exported_der
    cluster.cli("cert", "delete", canary_sha)


def test_support_bundle_refuses_to_overwrite_without_force(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    out = tmp_path / "b.zip"
    out.write_bytes(b"keep me")
    proc = cluster.cli("support-bundle", "--out", str(out))
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert proc.stderr.count("\n") == 1 and out.read_bytes() == b"keep me"
    forced = cluster.cli("support-bundle", "--out", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert zipfile.is_zipfile(out) and out.stat().st_mode & 0o777 == 0o600
    leftovers = [p for p in tmp_path.iterdir() if p.name != "b.zip"]
    assert leftovers == []  # the temporary file was renamed, not left behind


def test_support_bundle_missing_directory_is_bad_input(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    proc = cluster.cli("support-bundle", "--out", str(tmp_path / "no" / "such" / "b.zip"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert not (tmp_path / "no").exists()


def test_bundle_key_guard_refuses_a_member_with_a_key(tmp_path: Path) -> None:
    """Defence in depth: should a key ever reach a member, no bundle is written."""
    from node.errors import CertsyncError
    from sync.cmd_bundle import build_members

    c = _fake_admin(tmp_path)
    pem = make_root().key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    good = {"x" * 64: b"-----BEGIN CERTIFICATE-----\n"}
    kwargs: dict[str, Any] = {"config": c, "status": {}, "coverage": "none", "node": "p1",
                              "certificates": [], "now": NOW}
    assert "chains/" + "x" * 64 + ".pem" in build_members(chains=good, **kwargs)
    with pytest.raises(CertsyncError, match="looks like it holds a private key"):
        build_members(chains={"y" * 64: pem}, **kwargs)


def _fake_admin(tmp_path: Path) -> Any:
    from sync.config import AdminConfig

    return AdminConfig(name="admin", path=tmp_path / "admin.toml", topology=_topology(),
                       ca_cert_path=tmp_path / "ca.pem", cert_path=tmp_path / "a.pem",
                       key_path=tmp_path / "a-key.pem")

