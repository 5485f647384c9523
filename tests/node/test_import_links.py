"""Imports judged over the store (issue 11), through the gRPC API of a running node: a leaf
alone with ``--default`` is not a CA change when its chain is stored; a leaf alone is linked
to a stored key; a re-import keeps the friendly name."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from node.api import certsync_pb2
from node.errors import Conflict
from tests.node.test_lifecycle_node import (  # noqa: F401 -- fixtures used by name
    HOST,
    Node,
    _import,
    cluster_dir,
    node,
    two_cas,
)
from tests.pki import Pki, make_leaf, pem_bundle


async def test_a_same_ca_leaf_alone_as_default_uses_the_stored_chain(
    node: Node, two_cas: tuple[Pki, Pki, Pki]  # noqa: F811 -- the fixtures above
) -> None:
    first, same_ca, other = two_cas
    await _import(node, first, default=True)
    # the leaf alone, with its key, and no chain on the command line: not a CA change
    resp = await node.client.import_files(
        [("leaf.pem", pem_bundle(same_ca.leaf.cert, key=same_ca.leaf.key))], make_default=True)
    assert (await node.list())[resp.identity_sha256].is_default
    # twin: another CA's leaf alone is still a CA change
    with pytest.raises(Conflict, match="changes the CA"):
        await node.client.import_files(
            [("o.pem", pem_bundle(other.leaf.cert, *other.chain, key=other.leaf.key))],
            make_default=True)


async def test_a_renewal_alone_is_linked_and_takes_over_the_default(
    node: Node, two_cas: tuple[Pki, Pki, Pki]  # noqa: F811 -- the fixtures above
) -> None:
    first, _same, _other = two_cas
    a = await _import(node, first, default=True)
    renewal = make_leaf(first.intermediate, sans=[HOST], key=first.leaf.key,
                        not_after=first.leaf.cert.not_valid_after_utc.replace(year=2030))
    resp = await node.client.import_files([("r.pem", pem_bundle(renewal.cert))])
    b = resp.identity_sha256
    assert [n for n in resp.notices if a in n and b in n], resp.notices
    certs = await node.list()
    assert certs[b].has_key and certs[b].is_default and certs[a].replaceable
    # twin: a leaf of another key stays key-less and takes nothing over
    stray = make_leaf(first.intermediate, sans=[HOST], slot=5,
                      not_after=first.leaf.cert.not_valid_after_utc.replace(year=2031))
    resp = await node.client.import_files([("s.pem", pem_bundle(stray.cert))])
    assert list(resp.notices) == []
    certs = await node.list()
    assert not certs[resp.identity_sha256].has_key and certs[b].is_default


async def test_a_reimport_keeps_the_friendly_name_unless_one_is_given(
    node: Node, two_cas: tuple[Pki, Pki, Pki]  # noqa: F811 -- the fixtures above
) -> None:
    first, _same, _other = two_cas
    data = pem_bundle(first.leaf.cert, *first.chain, key=first.leaf.key)
    sha = (await node.client.import_files([("b.pem", data)], name="Front door")).identity_sha256
    await node.client.import_files([("b.pem", data)])
    assert (await node.list())[sha].name == "Front door"
    await node.client.import_files([("b.pem", data)], name="Renamed")
    assert (await node.list())[sha].name == "Renamed"


async def test_the_signed_csr_alone_with_default_is_linked_and_made_default(
    node: Node, two_cas: tuple[Pki, Pki, Pki]  # noqa: F811 -- the fixtures above
) -> None:
    first, _same, _other = two_cas
    await _import(node, first, default=True)
    csr_info = await node.client.create_request(certsync_pb2.CreateRequestRequest(
        key_type="ec-p256", subject=certsync_pb2.Subject(common_name=HOST), sans=[HOST]))
    csr = x509.load_pem_x509_csr(csr_info.pem.encode())
    issuer = first.intermediate
    signed = (x509.CertificateBuilder().subject_name(csr.subject)
              .issuer_name(issuer.cert.subject).public_key(csr.public_key())
              .serial_number(4242).not_valid_before(first.leaf.cert.not_valid_before_utc)
              .not_valid_after(first.leaf.cert.not_valid_after_utc)
              .add_extension(csr.extensions.get_extension_for_class(
                  x509.SubjectAlternativeName).value, critical=False)
              .sign(issuer.key, hashes.SHA256()))
    resp = await node.client.import_files([("s.pem", pem_bundle(signed))], make_default=True)
    assert [n for n in resp.notices if csr_info.id in n], resp.notices
    certs = await node.list()
    assert certs[resp.identity_sha256].has_key and certs[resp.identity_sha256].is_default
    listed = {r.id: r for r in await node.client.list_requests()}
    assert listed[csr_info.id].state == "fulfilled"
    assert listed[csr_info.id].fulfilled_by == resp.identity_sha256
