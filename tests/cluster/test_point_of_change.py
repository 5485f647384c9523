"""The cluster holds its promises at the point of change (issue 12), with every node a real
``certsync node serve`` process on loopback and everything typed as an admin would:

* a default that leaves required names uncovered is refused at ``cert default`` (exit 1, the
  names and their nodes listed) and every node -- the primary included -- keeps serving the
  old one; ``--force`` applies it and it is served everywhere;
* only the primary takes changes: ``--node t1`` and a demoted ex-primary refuse (exit 2, one
  line naming the primary and the epoch) and their stores stay as they were;
* without ``--node`` a change goes to the primary of the highest epoch: p1 before
  ``promote b1``, b1 after it (with a note on stderr);
* ``replicate --json`` prints only its JSON on stdout (progress on stderr) and ends quietly
  when its reader goes away.
"""

from __future__ import annotations

import json
import subprocess

from sync.localcluster import LocalCluster, certsync_command
from tests.cluster.conftest import (
    MakeCluster,
    cli_ok,
    create_default,
    not_serving,
    openssl_served,
    served,
    wait_in_sync,
    wait_served,
    wait_until,
)

#: covers the site, p1 and b1 but not the traffic nodes (*.atlas.example.com); for the names
#: it covers the wide default stays preferred (exact site name, later expiry), so storing it
#: changes nothing that is served
NARROW = "*.example.com"


def _shas(cluster: LocalCluster, node: str) -> list[str]:
    rows = json.loads(cli_ok(cluster, "--node", node, "cert", "list", "--json"))
    return sorted(r["sha256"] for r in rows)


def _create(cluster: LocalCluster, name: str, *where: str) -> subprocess.CompletedProcess[str]:
    return cluster.cli(*where, "cert", "create-self-signed", "--name", name, "--key",
                       "ec-p256", "--cn", "x.example.com", "--san", "x.example.com")


def test_an_uncovering_default_is_refused_at_the_change_and_forced_served_everywhere(
        cluster: LocalCluster) -> None:
    wide = create_default(cluster, name="wide")
    wait_served(cluster, wide)
    # the narrow certificate is stored (not default: nothing to gate) and replicated
    out = cli_ok(cluster, "cert", "create-self-signed", "--name", "narrow", "--key", "ec-p256",
                 "--cn", "narrow.example.com", "--san", NARROW, "--days", "30")
    narrow = out.strip()
    wait_in_sync(cluster)
    refused = cluster.cli("cert", "default", narrow, "--confirm-ca-change")
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    line = refused.stderr.strip()
    assert line.startswith("certsync: error:") and "\n" not in line
    for name, node in (("t1.atlas.example.com", "t1"), ("t2.atlas.example.com", "t2")):
        assert f"{name} (node {node})" in line
    assert "b1.example.com" not in line  # covered: not listed
    assert "--force" in line
    # nothing moved: every node, the primary included, still serves the wide default
    assert not not_serving(cluster, wide, cluster.names)
    assert json.loads(cli_ok(cluster, "sni", "--json"))["sha256"] == wide

    forced = cluster.cli("cert", "default", narrow, "--confirm-ca-change", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "overrode the coverage check" in forced.stderr
    # pushed to every node without 'replicate --force'; names only the wide one covers
    # still get it by SNI
    def everywhere() -> bool:
        return all(served(cluster, node, None) == narrow for node in cluster.names)

    wait_until(everywhere, what="every node serving the forced default")
    for node in cluster.names:
        assert served(cluster, node, "t1.atlas.example.com") == wide
    wait_in_sync(cluster)
    assert openssl_served(cluster.spec("t2").tls_address, None) == narrow


def test_only_the_primary_takes_changes_and_the_cli_follows_a_promotion(
        make_cluster: MakeCluster) -> None:
    cluster = make_cluster(traffic=(("t1", "t1.atlas.example.com"),))
    first = create_default(cluster, name="first")
    wait_served(cluster, first)

    # a change sent to a traffic node: refused, one line naming the primary, nothing stored
    before = _shas(cluster, "t1")
    refused = _create(cluster, "on-t1", "--node", "t1")
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    assert refused.stderr.count("\n") == 1 and refused.stderr.startswith("certsync: error:")
    assert "'t1' is not the primary of epoch 1" in refused.stderr
    assert "'p1'" in refused.stderr
    assert _shas(cluster, "t1") == before
    # twin: without --node the same change reaches the primary p1 (no note: it is the
    # configured one)
    plain = _create(cluster, "plain")
    assert plain.returncode == 0, plain.stderr
    assert "note: using node" not in plain.stderr  # (the guide's CN advice may be there)
    assert plain.stdout.strip() in _shas(cluster, "p1")

    cli_ok(cluster, "promote", "b1")
    # p1 is still up and was told: a demoted ex-primary refuses, its store unchanged
    p1_before = _shas(cluster, "p1")
    demoted = _create(cluster, "on-p1", "--node", "p1")
    assert demoted.returncode == 2, demoted.stderr
    assert "'p1' is not the primary of epoch 2" in demoted.stderr and "'b1'" in demoted.stderr
    assert _shas(cluster, "p1") == p1_before
    # a plain call now reaches b1, and says so
    after = _create(cluster, "after-promote")
    assert after.returncode == 0, after.stderr
    assert "using node 'b1', the primary of epoch 2" in after.stderr
    assert after.stdout.strip() in _shas(cluster, "b1")
    wait_in_sync(cluster)

    # global options after the sub-command
    config = str(cluster.admin_toml)
    late = subprocess.run([*certsync_command(), "cert", "list", "--json", "--config", config,
                           "--node", "t1"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert late.returncode == 0, late.stderr
    assert sorted(r["sha256"] for r in json.loads(late.stdout)) == _shas(cluster, "t1")

    # replicate --json: stdout is the JSON alone, progress lines on stderr
    rep = cluster.cli("replicate", "--json")
    assert rep.returncode == 0, rep.stderr
    report = json.loads(rep.stdout)
    assert report["primary"] == "b1" and report["all_in_sync"] is True
    assert "used node 'b1'" in rep.stderr
    assert {"p1", "t1"} <= {line.split()[0] for line in rep.stderr.splitlines() if line}
    # ... and a reader that goes away before it writes ends it quietly
    proc = subprocess.Popen(
        [*certsync_command(), "--config", config, "replicate", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err
