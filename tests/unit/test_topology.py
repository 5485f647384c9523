"""Topology (pure), cluster PKI and identities: tables with a negative twin for each rule."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from node.errors import BadInput, ConfigError, HostnameError, NotFound, PermissionDenied
from node.identity import Identity, check_node_name, identity_from_certificate
from sync import pki
from sync.topology import (
    NodeSpec,
    Topology,
    format_address,
    split_address,
    topology_from_dict,
    topology_to_dict,
)

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
CLUSTER = "6f1c1f64-7a0e-4a7e-9d3b-0c4f5f3a9e11"
OTHER_CLUSTER = "0b7e2d35-3f35-4a8f-8c57-3e0d8f6f2a90"


@pytest.fixture(scope="module")
def ca() -> pki.Issued:
    return pki.make_ca(CLUSTER, now=NOW, key=pki.new_key())


@pytest.fixture(scope="module")
def other_ca() -> pki.Issued:
    return pki.make_ca(OTHER_CLUSTER, now=NOW, key=pki.new_key())


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["p1", "a", "traffic-2", "0", "x" * 63, "a-b-c"])
def test_valid_node_names(name: str) -> None:
    assert check_node_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "P1", "-p1", "p1-", "p_1", "p.1", "x" * 64, "p 1", "ü", "p1\n"]
)
def test_invalid_node_names(name: str) -> None:
    with pytest.raises(BadInput, match="node name"):
        check_node_name(name)


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [("127.0.0.1:7400", "127.0.0.1", 7400), ("[::1]:1", "::1", 1),
     ("p1:65535", "p1", 65535), ("node.example.com:443", "node.example.com", 443)],
)
def test_split_address(address: str, host: str, port: int) -> None:
    assert split_address(address) == (host, port)
    assert format_address(host, port) == address


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "127.0.0.1:", ":7400", "::1:7400", "h:0", "h:65536", "h:x", ""]
)
def test_split_address_rejects(address: str) -> None:
    with pytest.raises(BadInput, match="HOST:PORT"):
        split_address(address)


# --------------------------------------------------------------------------- topology


def _spec(name: str, role: str, host: str, i: int) -> dict[str, Any]:
    return {"name": name, "role": role, "hostname": host,
            "grpc_address": f"127.0.0.1:{7400 + 2 * i}",
            "tls_address": f"127.0.0.1:{7401 + 2 * i}", "cert": f"{name}/node.pem"}


def _cluster_dict(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "cluster_id": CLUSTER,
        "site": "support.example.com",
        "ca_cert": "ca.pem",
        "sync_interval_seconds": 30,
        "stale_after_seconds": 300,
        "nodes": [_spec("p1", "primary", "p1.example.com", 0),
                  _spec("b1", "backup", "b1.example.com", 1),
                  _spec("t1", "traffic", "T1.Example.com.", 2),
                  _spec("t2", "traffic", "support.example.com", 3)],
    }
    data.update(changes)
    return data


def test_topology_from_dict_resolves_and_normalises(tmp_path: Path) -> None:
    topo = topology_from_dict(_cluster_dict(), base=tmp_path, source="cluster.toml")
    assert topo.primary.name == "p1"
    assert topo.backup is not None and topo.backup.name == "b1"
    assert topo.node("t1").hostname == "t1.example.com"  # normalised
    assert topo.node("t1").cert_path == tmp_path / "t1/node.pem"
    assert topo.ca_cert_path == tmp_path / "ca.pem"
    # site first, de-duplicated (t2's hostname is the site), order kept
    assert topo.required_names() == (
        "support.example.com", "p1.example.com", "b1.example.com", "t1.example.com")


def test_topology_round_trips_through_dict(tmp_path: Path) -> None:
    topo = topology_from_dict(_cluster_dict(), base=tmp_path, source="cluster.toml")
    again = topology_from_dict(topology_to_dict(topo, tmp_path), base=tmp_path, source="x")
    assert again == topo


def test_admin_address_is_optional_and_round_trips(tmp_path: Path) -> None:
    nodes = [{**_spec("p1", "primary", "p1.example.com", 0), "admin_address": "[::1]:7410"},
             _spec("b1", "backup", "b1.example.com", 1)]
    topo = topology_from_dict(_cluster_dict(nodes=nodes), base=tmp_path, source="c")
    assert topo.node("p1").admin_url == "https://[::1]:7410/"
    assert topo.node("b1").admin_url is None  # written before the console: no URL
    again = topology_from_dict(topology_to_dict(topo, tmp_path), base=tmp_path, source="x")
    assert again == topo and "admin_address" not in topology_to_dict(topo, tmp_path)["nodes"][1]


def test_node_lookup_unknown_is_not_found(tmp_path: Path) -> None:
    topo = topology_from_dict(_cluster_dict(), base=tmp_path, source="cluster.toml")
    assert topo.node("b1").role == "backup"
    with pytest.raises(NotFound, match="'zz'"):
        topo.node("zz")


def test_no_backup_is_fine(tmp_path: Path) -> None:
    data = _cluster_dict(nodes=[_spec("p1", "primary", "p1.example.com", 0),
                                _spec("t1", "traffic", "t1.example.com", 1)])
    assert topology_from_dict(data, base=tmp_path, source="c").backup is None


def _without(key: str) -> dict[str, Any]:
    data = _cluster_dict()
    del data[key]
    return data


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (_without("cluster_id"), "cluster_id"),
        (_cluster_dict(cluster_id="not-a-uuid"), "UUID"),
        (_cluster_dict(site="http://x"), "hostname"),
        (_cluster_dict(site=7), "site"),
        (_cluster_dict(sync_interval_seconds=0), "sync_interval_seconds"),
        (_cluster_dict(stale_after_seconds=True), "stale_after_seconds"),
        (_cluster_dict(nodes=[]), "at least a primary"),
        (_without("nodes"), "nodes"),
        (_cluster_dict(colour="blue"), "unknown key 'colour'"),
        (_cluster_dict(nodes=[_spec("t1", "traffic", "t.example.com", 0)]), "primary"),
        (_cluster_dict(nodes=[_spec("p1", "primary", "a.example.com", 0),
                              _spec("p2", "primary", "b.example.com", 1)]), "primary"),
        (_cluster_dict(nodes=[_spec("p1", "primary", "a.example.com", 0),
                              _spec("t1", "traffic", "b.example.com", 1),
                              _spec("b1", "backup", "c.example.com", 2)]), "backup"),
        (_cluster_dict(nodes=[_spec("p1", "primary", "a.example.com", 0),
                              _spec("p1", "traffic", "b.example.com", 1)]), "'p1'"),
        (_cluster_dict(nodes=[_spec("p1", "primary", "a.example.com", 0),
                              _spec("t1", "traffic", "b.example.com", 0)]), "127.0.0.1:7400"),
        (_cluster_dict(nodes=[_spec("P1", "primary", "a.example.com", 0)]), "node name"),
        (_cluster_dict(nodes=[_spec("p1", "boss", "a.example.com", 0)]), "role"),
        (_cluster_dict(nodes=[_spec("p1", "primary", "a..example.com", 0)]), "hostname"),
        (_cluster_dict(nodes=[{**_spec("p1", "primary", "a.example.com", 0),
                               "grpc_address": "nowhere"}]), "HOST:PORT"),
        (_cluster_dict(nodes=[{**_spec("p1", "primary", "a.example.com", 0), "x": 1}]),
         "unknown key 'nodes\\[0\\].x'"),
        (_cluster_dict(nodes=[{**_spec("p1", "primary", "a.example.com", 0),
                               "admin_address": "no-port"}]), "HOST:PORT"),
        (_cluster_dict(nodes=[{**_spec("p1", "primary", "a.example.com", 0),
                               "admin_address": "127.0.0.1:7401"}]), "127.0.0.1:7401"),
    ],
)
def test_topology_from_dict_rejects(tmp_path: Path, data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        topology_from_dict(data, base=tmp_path, source="/etc/cluster.toml")
    assert "\n" not in str(info.value)
    assert "/etc/cluster.toml" in str(info.value)


# --------------------------------------------------------------------------- PKI + identity


def _verify_server(ca: pki.Issued, leaf: pki.Issued, name: str) -> None:
    store = verification.Store([ca.cert])
    verifier = (verification.PolicyBuilder().store(store).time(NOW)
                .build_server_verifier(x509.DNSName(name)))
    verifier.verify(leaf.cert, [])


def _verify_client(ca: pki.Issued, leaf: pki.Issued) -> None:
    store = verification.Store([ca.cert])
    verification.PolicyBuilder().store(store).time(NOW).build_client_verifier().verify(
        leaf.cert, [])


def test_node_certificate_profile(ca: pki.Issued) -> None:
    node = pki.issue_node(ca, "p1", now=NOW, key=pki.new_key())
    assert node.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node:p1"
    assert node.cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        f"certsync {CLUSTER}")
    san = node.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["p1.node.certsync"]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"certsync://{CLUSTER}/node/p1"]
    eku = node.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert isinstance(node.cert.signature_hash_algorithm, hashes.SHA256)
    _verify_server(ca, node, "p1.node.certsync")
    _verify_client(ca, node)


def test_node_certificate_negative_twins(ca: pki.Issued, other_ca: pki.Issued) -> None:
    node = pki.issue_node(ca, "p1", now=NOW, key=pki.new_key())
    with pytest.raises(verification.VerificationError):
        _verify_server(ca, node, "b1.node.certsync")  # wrong name
    with pytest.raises(verification.VerificationError):
        _verify_server(other_ca, node, "p1.node.certsync")  # wrong CA


def test_admin_certificate_is_client_only(ca: pki.Issued) -> None:
    admin = pki.issue_admin(ca, "admin", now=NOW, key=pki.new_key())
    eku = admin.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert admin.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "admin:admin")
    _verify_client(ca, admin)
    san = admin.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == []  # cannot act as a node's server


def test_validity_starts_before_now_and_needs_aware_now(ca: pki.Issued) -> None:
    node = pki.issue_node(ca, "p1", now=NOW, key=pki.new_key())
    assert node.cert.not_valid_before_utc < NOW < node.cert.not_valid_after_utc
    assert node.cert.not_valid_after_utc <= ca.cert.not_valid_after_utc
    with pytest.raises(ValueError, match="timezone"):
        pki.issue_node(ca, "p1", now=NOW.replace(tzinfo=None), key=pki.new_key())


@pytest.mark.parametrize(
    ("kind", "name"), [("node", "p1"), ("node", "traffic-7"), ("admin", "admin"),
                       ("monitor", "monitor")]
)
def test_identity_round_trip(ca: pki.Issued, kind: str, name: str) -> None:
    issue = {"node": pki.issue_node, "admin": pki.issue_admin,
             "monitor": pki.issue_monitor}[kind]
    cert = issue(ca, name, now=NOW, key=pki.new_key()).cert
    expected = Identity(kind=kind, name=name, cluster_id=CLUSTER)  # type: ignore[arg-type]
    assert identity_from_certificate(cert) == expected
    assert identity_from_certificate(cert, cluster_id=CLUSTER) == expected


def test_identity_from_another_cluster_is_refused(other_ca: pki.Issued) -> None:
    cert = pki.issue_node(other_ca, "p1", now=NOW, key=pki.new_key()).cert
    assert identity_from_certificate(cert).cluster_id == OTHER_CLUSTER
    with pytest.raises(PermissionDenied, match="belongs to cluster"):
        identity_from_certificate(cert, cluster_id=CLUSTER)


def _cert_with_sans(ca: pki.Issued, sans: list[x509.GeneralName] | None) -> x509.Certificate:
    key = pki.new_key()
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node:p1")]))
               .issuer_name(ca.cert.subject).public_key(key.public_key())
               .serial_number(1).not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(1)))
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca.key, hashes.SHA256())


def _uri(text: str) -> x509.GeneralName:
    return x509.UniformResourceIdentifier(text)


@pytest.mark.parametrize(
    ("sans", "fragment"),
    [
        (None, "0 certsync identity URIs"),
        ([x509.DNSName("p1.node.certsync")], "0 certsync identity URIs"),
        ([_uri("https://example.com/node/p1")], "0 certsync identity URIs"),
        ([_uri(f"certsync://{CLUSTER}/node/p1"), _uri(f"certsync://{CLUSTER}/admin/a")],
         "2 certsync identity URIs"),
        ([_uri(f"certsync://{CLUSTER}/root/p1")], "malformed"),
        ([_uri(f"certsync://{CLUSTER}/node/P1")], "malformed"),
        ([_uri(f"certsync://{CLUSTER}/node/p1/extra")], "malformed"),
        ([_uri(f"certsync://{CLUSTER}/node/p1?admin=1")], "malformed"),
        ([_uri("certsync://not-a-uuid/node/p1")], "malformed"),
        ([_uri(f"certsync://{CLUSTER.upper()}/node/p1")], "malformed"),
        ([_uri(f"certsync://{CLUSTER}/node/")], "malformed"),
    ],
)
def test_identity_rejects_odd_certificates(
    ca: pki.Issued, sans: list[x509.GeneralName] | None, fragment: str
) -> None:
    with pytest.raises(PermissionDenied, match=fragment):
        identity_from_certificate(_cert_with_sans(ca, sans))


@settings(max_examples=25, deadline=None)
@given(name=st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True),
       cluster=st.uuids(version=4).map(str))
def test_identity_round_trip_property(name: str, cluster: str) -> None:
    ca = pki.make_ca(cluster, now=NOW, key=_CA_KEY)
    cert = pki.issue_node(ca, name, now=NOW, key=_LEAF_KEY).cert
    assert identity_from_certificate(cert, cluster_id=cluster) == Identity("node", name, cluster)


_CA_KEY = pki.new_key()
_LEAF_KEY = pki.new_key()


def test_topology_dataclasses_are_frozen(tmp_path: Path) -> None:
    spec = NodeSpec("p1", "primary", "p1.example.com", "h:1", "h:2", tmp_path / "p")
    topo = Topology(str(uuid.uuid4()), "s.example.com", (spec,), tmp_path / "ca.pem")
    with pytest.raises(AttributeError):
        topo.site = "x"  # type: ignore[misc]
    assert topo.required_names() == ("s.example.com", "p1.example.com")


def test_hostname_error_is_bad_input() -> None:
    assert issubclass(HostnameError, BadInput)  # so a bad --site exits 2
