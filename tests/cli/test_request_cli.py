"""``certsync request list|delete`` and the subject notices on the command line (issue 11),
against one real node process."""

from __future__ import annotations

import json

from tests.cli.test_node_cli import Cluster, cluster  # noqa: F401 -- the node fixture


def test_request_list_shows_subject_sans_key_type_and_state_and_delete_removes(
    cluster: Cluster,  # noqa: F811 -- the fixture above
) -> None:
    created = cluster.cli("request", "create", "--key", "ec-p384", "--cn", "list.example.com",
                          "--san", "www.example.com", "--json")
    csr_id = json.loads(created.stdout)["id"]
    # the CN is a DNS name and was not the first SAN: put first, with the guide's advice
    notes = [line for line in created.stderr.splitlines() if line.startswith("certsync: note:")]
    assert any("put first" in n for n in notes) and any("ignore the CN" in n for n in notes)
    rows = {r["id"]: r for r in json.loads(cluster.cli("request", "list", "--json").stdout)}
    assert rows[csr_id] | {"created_at": "", "fulfilled_by": None} == {
        "id": csr_id, "name": "list.example.com", "created_at": "", "fulfilled_by": None,
        "subject": "CN=list.example.com", "dns_names": ["list.example.com", "www.example.com"],
        "key_type": "ec-p384", "state": "pending"}
    human = cluster.cli("request", "list").stdout
    line = next(row for row in human.splitlines() if row.startswith(csr_id))
    assert "pending" in line and "ec-p384" in line and "CN=list.example.com" in line
    assert "www.example.com" in line
    cluster.cli("request", "delete", csr_id)
    listed = json.loads(cluster.cli("request", "list", "--json").stdout)
    assert csr_id not in [r["id"] for r in listed]
    # twin: deleting it again is bad input, one line
    again = cluster.cli("request", "delete", csr_id, check=False)
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert "no request" in again.stderr


def test_a_title_cn_gets_no_notice(cluster: Cluster) -> None:  # noqa: F811
    created = cluster.cli("request", "create", "--key", "ec-p256", "--cn", "Support Portal",
                          "--san", "portal.example.com")
    assert "certsync: note:" not in created.stderr
