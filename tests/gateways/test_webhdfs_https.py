"""The WebHDFS gateway over HTTPS (``--https-cert``/``--https-key``), against the real
``keelfs webhdfs`` process: HdfsCLI verifying the gateway's certificate by its CA, and, with
``--https-client-ca``, callers who are their client certificates' users."""

from __future__ import annotations

import datetime as dt
import getpass
import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hdfs import HdfsError, InsecureClient

from keelfs.cli.webhdfs_cmd import webhdfs
from keelfs.gateways.webhdfs.tokens import decode_url_string
from keelfs.runtime.processes import hard_kill
from keelfs.server.metacluster import MetaCluster
from keelfs.testing.tiers import starts_processes
from keelfs.tls.certs import init_authorities, issue_client, user_files
from tests.gateways.conftest import start_webhdfs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
ME = getpass.getuser()


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _certificate(
    subject: str, key: Any, issuer: str, issuer_key: Any, *, ca: bool, hosts: list[str]
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if hosts:
        names: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts if h[0].isalpha()]
        names += [x509.IPAddress(ipaddress.ip_address(h)) for h in hosts if h[0].isdigit()]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _server_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA of the test's own and the gateway's certificate from it (for 127.0.0.1 and
    localhost): (CA certificate, gateway certificate, gateway key)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("test https CA", ca_key, "test https CA", ca_key, ca=True, hosts=[])
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(
        "webhdfs gateway", key, "test https CA", ca_key, ca=False, hosts=["127.0.0.1", "localhost"]
    )
    paths = directory / "https-ca.crt", directory / "gateway.crt", directory / "gateway.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.fixture(scope="module")
@starts_processes
def https_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One cluster (simple mode) and two HTTPS gateways in front of it: ``server`` (a
    certificate, no client certificates) and ``mutual`` (client certificates of a
    ``keelfs certs`` client CA, listening on every address)."""
    root = tmp_path_factory.mktemp("webhdfs-https")
    c = MetaCluster(root, shards=("shard-1",), tls=False)
    processes = []
    try:
        c.start()
        c.start_chunk_servers(1, "--no-fsync-on-close")
        ca, cert, key = _server_files(root)
        users = root / "users"
        init_authorities(users)
        for user in ("alice", "bob"):
            issue_client(users, user)
        (root / "plain").mkdir()
        (root / "mutual").mkdir()
        https = ("--https-cert", str(cert), "--https-key", str(key))
        server, ready = start_webhdfs(c, root / "plain", *https)
        processes.append(server)
        client_ca = str(users / "client-ca.crt")
        secret = root / "token.secret"
        secret.write_text("k" * 40)
        mutual, mutual_ready = start_webhdfs(
            c, root / "mutual", *https, "--https-client-ca", client_ca, "--listen", "0.0.0.0:0",
            "--token-secret-file", str(secret),
        )  # fmt: skip
        processes.append(mutual)
        port = mutual_ready["webhdfs"].rpartition(":")[2]
        yield {
            "cluster": c,
            "ca": ca,
            "url": ready["url"],
            "mutual_url": f"https://127.0.0.1:{port}",
            "users": users,
        }
    finally:
        for process in processes:
            hard_kill(process)
        c.stop_all()


def _session(ca: Path, cert: tuple[str, str] | None = None) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE would win over session.verify
    session.verify = str(ca)
    session.cert = cert
    return session


def test_hdfscli_over_https_with_the_gateways_ca(https_setup: dict[str, Any]) -> None:
    url = https_setup["url"]
    assert url.startswith("https://127.0.0.1:")
    hdfs = InsecureClient(url, user=ME, session=_session(https_setup["ca"]))
    hdfs.makedirs("/https")
    hdfs.write("/https/hello", data=b"over https", replication=1)
    with hdfs.read("/https/hello", offset=5) as reader:
        assert reader.read() == b"https"
    hdfs.write("/https/hello", data=b"!", append=True)
    assert hdfs.status("/https/hello")["length"] == 11
    assert hdfs.list("/https") == ["hello"]
    # the data step's redirect stays on HTTPS
    step = requests.put(
        f"{url}/webhdfs/v1/https/x",
        params={"op": "CREATE", "user.name": ME, "noredirect": "true"},
        verify=str(https_setup["ca"]),
        timeout=30,
    )
    assert step.json()["Location"].startswith("https://")
    # a client that does not trust the gateway's CA refuses it; plain HTTP finds no server
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{url}/webhdfs/v1/?op=LISTSTATUS", timeout=30)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url.replace("https://", "http://") + "/webhdfs/v1/?op=LISTSTATUS", timeout=30)


def test_client_certificates_name_the_user(https_setup: dict[str, Any]) -> None:
    url, ca, users = https_setup["mutual_url"], https_setup["ca"], https_setup["users"]
    alice_files = user_files(users, "alice")
    alice = _session(ca, (str(alice_files.cert), str(alice_files.key)))
    with https_setup["cluster"].client() as fs:
        fs.mkdir("/shared", mode=0o777)
    hdfs = InsecureClient(url, user="alice", session=alice)
    hdfs.write("/shared/alices", data=b"a", replication=1)
    assert hdfs.status("/shared/alices")["owner"] == "alice"
    # no user.name at all: still alice (the certificate's), never the anonymous dr.who
    reply = alice.get(f"{url}/webhdfs/v1/shared/alices", params={"op": "GETFILESTATUS"})
    assert reply.json()["FileStatus"]["owner"] == "alice"
    # alice's certificate cannot claim to be bob, nor act for him without a proxy rule
    for params in ({"user.name": "bob"}, {"user.name": "alice", "doas": "bob"}):
        refused = alice.get(
            f"{url}/webhdfs/v1/shared", params={"op": "LISTSTATUS", **params}, timeout=30
        )
        assert refused.status_code == 403, params
        assert refused.json()["RemoteException"]["exception"] == "AccessControlException"
    with pytest.raises(HdfsError):
        claims_bob = _session(ca, (str(alice_files.cert), str(alice_files.key)))
        InsecureClient(url, user="bob", session=claims_bob).list("/shared")
    # without a client certificate the handshake fails
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        _session(ca).get(f"{url}/webhdfs/v1/?op=LISTSTATUS", timeout=30)
    bob_files = user_files(users, "bob")
    bob_session = _session(ca, (str(bob_files.cert), str(bob_files.key)))
    bob = InsecureClient(url, user="bob", session=bob_session)
    with bob.read("/shared/alices") as reader:  # 0644: bob may read, as bob
        assert reader.read() == b"a"
    with pytest.raises(HdfsError):
        bob.write("/shared/alices", data=b"b", append=True)  # alice's 0644 file
    assert hdfs.status("/shared/alices")["length"] == 1


def test_a_token_acts_as_its_user_whoever_presents_it(https_setup: dict[str, Any]) -> None:
    """With client certificates a token is got as the certificate's user, and acts as that
    user alone: bob presenting alice's token is alice, and cannot name himself beside it."""
    url, ca, users = https_setup["mutual_url"], https_setup["ca"], https_setup["users"]
    alice_files, bob_files = user_files(users, "alice"), user_files(users, "bob")
    alice = _session(ca, (str(alice_files.cert), str(alice_files.key)))
    bob = _session(ca, (str(bob_files.cert), str(bob_files.key)))
    with https_setup["cluster"].client() as fs:
        fs.mkdir("/alices-only", mode=0o700)
        fs.chown("/alices-only", "alice")
    claim = alice.get(f"{url}/webhdfs/v1/", params={"op": "GETDELEGATIONTOKEN", "user.name": "bob"})
    assert claim.status_code == 403  # a certificate's user gets tokens for itself alone
    got = alice.get(f"{url}/webhdfs/v1/", params={"op": "GETDELEGATIONTOKEN"}, timeout=30)
    text = got.json()["Token"]["urlString"]
    assert decode_url_string(text)[0].owner == "alice"
    assert decode_url_string(text)[0].kind == "SWEBHDFS delegation"
    listing = bob.get(
        f"{url}/webhdfs/v1/alices-only", params={"op": "LISTSTATUS", "delegation": text}
    )
    assert listing.status_code == 200, listing.text
    mixed = bob.get(
        f"{url}/webhdfs/v1/alices-only",
        params={"op": "LISTSTATUS", "delegation": text, "user.name": "bob"},
    )
    assert mixed.status_code == 403
    own = bob.get(f"{url}/webhdfs/v1/alices-only", params={"op": "LISTSTATUS"}, timeout=30)
    assert own.json()["RemoteException"]["exception"] == "AccessControlException"


def test_off_loopback_needs_client_certificates(tmp_path: Path) -> None:
    _, cert, key = _server_files(tmp_path)
    runner = CliRunner()
    base = ["--cluster", "127.0.0.1:1", "--listen", "0.0.0.0:0"]
    refused = runner.invoke(webhdfs, base)
    assert refused.exit_code == 2 and "loopback" in refused.output
    refused = runner.invoke(webhdfs, [*base, "--https-cert", str(cert), "--https-key", str(key)])
    assert refused.exit_code == 2 and "--https-client-ca" in refused.output
    lone = runner.invoke(webhdfs, ["--cluster", "127.0.0.1:1", "--https-cert", str(cert)])
    assert lone.exit_code == 2


@pytest.fixture(scope="module")
@starts_processes
def proxy_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A cluster with mutual TLS and two gateways holding the certificate of ``gw``, which
    may act for any user (``--proxy-for '*'``): ``mutual`` authenticates its callers by the
    cluster's client CA, ``plain`` does not (HTTPS, ``user.name``)."""
    root = tmp_path_factory.mktemp("webhdfs-proxy")
    c = MetaCluster(root, shards=("shard-1",), tls=True)
    processes = []
    try:
        c.start()
        c.start_chunk_servers(1, "--no-fsync-on-close")
        assert c.tls_dir is not None
        issue_client(c.tls_dir, "gw", proxy_for=["*"])
        for user in ("alice", "bob"):
            issue_client(c.tls_dir, user)
        ca, cert, key = _server_files(root)
        https = ("--https-cert", str(cert), "--https-key", str(key))
        cluster_tls = ("--tls-dir", str(c.tls_dir), "--user", "gw")
        (root / "mutual").mkdir()
        (root / "plain").mkdir()
        client_ca = str(c.tls_dir / "client-ca.crt")
        mutual, ready = start_webhdfs(
            c, root / "mutual", *cluster_tls, *https, "--https-client-ca", client_ca
        )
        processes.append(mutual)
        plain, plain_ready = start_webhdfs(c, root / "plain", *cluster_tls, *https)
        processes.append(plain)
        yield {
            "cluster": c,
            "ca": ca,
            "url": ready["url"],
            "plain_url": plain_ready["url"],
            "users": c.tls_dir,
        }
    finally:
        for process in processes:
            hard_kill(process)
        c.stop_all()


def test_a_proxy_certificate_serves_many_users_of_a_tls_cluster(
    proxy_setup: dict[str, Any],
) -> None:
    url, ca, users = proxy_setup["url"], proxy_setup["ca"], proxy_setup["users"]
    with proxy_setup["cluster"].client() as fs:
        fs.mkdir("/proxied", mode=0o777)

    def client(user: str) -> Any:
        files = user_files(users, user)
        return InsecureClient(
            url, user=user, session=_session(ca, (str(files.cert), str(files.key)))
        )

    alice, bob = client("alice"), client("bob")
    alice.makedirs("/proxied/alice", permission="700")
    alice.write("/proxied/alice/f", data=b"alice's", replication=1)
    # the masters took the user the gateway named, and check that user's rights
    assert alice.status("/proxied/alice/f")["owner"] == "alice"
    with pytest.raises(HdfsError):
        bob.list("/proxied/alice")
    with pytest.raises(HdfsError):
        bob.write("/proxied/alice/g", data=b"b", replication=1)
    bob.write("/proxied/bobs", data=b"b", replication=1)
    assert alice.status("/proxied/bobs")["owner"] == "bob"


def test_proxy_rights_are_not_used_for_unchecked_user_names(
    proxy_setup: dict[str, Any],
) -> None:
    """Without client certificates a gateway's ``user.name`` is anyone's word: the gateway
    then serves its own certificate's user alone, proxy rights or not."""
    session = _session(proxy_setup["ca"])
    url = proxy_setup["plain_url"]
    for user in ("alice", "bob"):
        with pytest.raises(HdfsError, match="acts for gw alone"):
            InsecureClient(url, user=user, session=_session(proxy_setup["ca"])).list("/")
    assert isinstance(InsecureClient(url, user="gw", session=session).list("/"), list)
