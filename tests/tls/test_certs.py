"""``keelfs.tls.certs`` and ``keelfs.tls.identity``: the two CAs, node and user certificates
(names, usages, file modes), the refusals, and which URIs name whom."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from keelfs.tls.certs import (
    CLIENT_CA,
    PEER_CA,
    PEER_SERVER_NAME,
    authority_files,
    init_authorities,
    issue_client,
    issue_node,
    load_certificate,
    uris_of,
)
from keelfs.tls.identity import ANONYMOUS, Client, Peer, TlsError, identity_from_uris


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    d = tmp_path / "certs"
    init_authorities(d)
    return d


def test_init_makes_two_cas_with_private_keys_in_a_private_directory(tmp_path: Path) -> None:
    old = os.umask(0)  # whatever the umask, keys are 0600 and the directory 0700
    try:
        peer, client = init_authorities(tmp_path / "certs")
    finally:
        os.umask(old)
    assert mode(tmp_path / "certs") == 0o700
    assert mode(peer.key) == mode(client.key) == 0o600
    peer_ca, client_ca = load_certificate(peer.cert), load_certificate(client.cert)
    assert peer_ca.subject != client_ca.subject
    for ca in (peer_ca, client_ca):
        assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert sorted(p.name for p in (tmp_path / "certs").iterdir()) == [
        "client-ca.crt", "client-ca.key", "peer-ca.crt", "peer-ca.key",
    ]  # fmt: skip


def test_init_never_replaces_a_ca(certs: Path) -> None:
    before = authority_files(certs, PEER_CA).key.read_bytes()
    with pytest.raises(TlsError, match="already exists"):
        init_authorities(certs)
    assert authority_files(certs, PEER_CA).key.read_bytes() == before


def test_init_refuses_a_directory_others_can_read(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    with pytest.raises(TlsError, match="open to other users"):
        init_authorities(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_node_certificate_names_the_node_and_its_hosts(certs: Path) -> None:
    pair = issue_node(certs, "master", 3, ["10.0.0.3", "m3.example", "::1"])
    cert = load_certificate(pair.cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert uris_of(cert) == ["keelfs://master/3"]
    assert san.get_values_for_type(x509.DNSName) == ["m3.example", PEER_SERVER_NAME]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.3"), ipaddress.ip_address("::1"),
    ]  # fmt: skip
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    cert.verify_directly_issued_by(load_certificate(authority_files(certs, PEER_CA).cert))
    assert mode(pair.key) == 0o600


def test_a_user_certificate_names_the_user_groups_and_admin(certs: Path) -> None:
    pair = issue_client(certs, "alice", groups=["staff", "ops", "staff"], admin=True)
    cert = load_certificate(pair.cert)
    assert uris_of(cert) == [
        "keelfs://user/alice", "keelfs://group/staff", "keelfs://group/ops", "keelfs://role/admin",
    ]  # fmt: skip
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert.verify_directly_issued_by(load_certificate(authority_files(certs, CLIENT_CA).cert))


def test_issue_refuses_bad_names_and_replaces_only_when_told(certs: Path) -> None:
    for role, node_id in [("master", "x"), ("master", "0"), ("config", "01"), ("mds", "1")]:
        with pytest.raises(TlsError):
            issue_node(certs, role, node_id)
    with pytest.raises(TlsError, match="invalid user"):
        issue_client(certs, "../alice")
    with pytest.raises(TlsError, match="invalid host"):
        issue_node(certs, "chunkserver", "cs-1", ["bad host"])
    first = issue_client(certs, "bob").cert.read_bytes()
    with pytest.raises(TlsError, match="already exists"):
        issue_client(certs, "bob")
    assert issue_client(certs, "bob", overwrite=True).cert.read_bytes() != first
    assert not [p for p in certs.iterdir() if p.name.endswith(".tmp")]


def test_issue_needs_the_cas(tmp_path: Path) -> None:
    with pytest.raises(TlsError, match="keelfs certs init"):
        issue_node(tmp_path, "master", 1)


def test_uris_name_a_principal_only_from_the_ca_that_may_issue_it() -> None:
    node, user = ["keelfs://master/3"], ["keelfs://user/al", "keelfs://group/g"]
    assert identity_from_uris(node, peer_ca=True, client_ca=False) == Peer("master", "3")
    assert identity_from_uris(node, peer_ca=False, client_ca=True) is ANONYMOUS
    assert identity_from_uris(user, peer_ca=False, client_ca=True) == Client("al", frozenset({"g"}))
    assert identity_from_uris(user, peer_ca=True, client_ca=False) is ANONYMOUS
    both = node + user
    assert identity_from_uris(both, peer_ca=True, client_ca=True) is ANONYMOUS
    two_nodes = ["keelfs://master/3", "keelfs://config/4"]
    assert identity_from_uris(two_nodes, peer_ca=True, client_ca=False) is ANONYMOUS
    assert identity_from_uris(["keelfs://master/x"], peer_ca=True, client_ca=False) is ANONYMOUS
    assert identity_from_uris(["spiffe://x/y"], peer_ca=True, client_ca=True) is ANONYMOUS
    assert Peer("config", "4").raft_node == 4
    assert Peer("chunkserver", "cs-1").raft_node is None
