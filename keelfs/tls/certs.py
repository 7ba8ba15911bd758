"""Certificate authorities and the certificates they issue (``keelfs certs init|issue``).

Two authorities, as etcd keeps them: the **peer CA** signs node certificates (masters, config
servers, chunk servers: Raft, internal and chunk-server traffic) and the **client CA** signs
users' certificates. A server trusts both on its client port and tells them apart by the
signer (``keelfs.tls.credentials``), so a user's certificate can never pass for a node.

One directory holds everything, private keys ``0600`` in a ``0700`` directory::

    peer-ca.crt   peer-ca.key   client-ca.crt   client-ca.key
    master-3.crt  master-3.key            keelfs://master/3, plus the DNS names and IPs given
    chunkserver-cs-2.crt ...
    user-alice.crt  user-alice.key        keelfs://user/alice (+ groups, admin)

A node copies the two CA certificates (never their keys) and its own pair. Keys are ECDSA
P-256; a node certificate serves both ends of a TLS connection (server and client auth), a
user's only the client end. Every node certificate also names :data:`PEER_SERVER_NAME`, so a
client that dials a node at an address its certificate does not list can verify it by that
name instead (``TlsSettings.server_name``).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from keelfs.tls.identity import (
    ADMIN_URI,
    TlsError,
    check_name,
    check_node,
    group_uri,
    node_uri,
    proxy_uri,
    user_uri,
)

__all__ = [
    "CLIENT_CA",
    "PEER_CA",
    "PEER_SERVER_NAME",
    "KeyPair",
    "authority_files",
    "describe",
    "init_authorities",
    "issue_client",
    "issue_node",
    "load_certificate",
    "node_files",
    "uris_of",
    "user_files",
]

PEER_CA = "peer-ca"
CLIENT_CA = "client-ca"
PEER_SERVER_NAME = "keelfs-node"
"""A DNS name every node certificate carries (see the module docstring)."""

CA_DAYS = 3650
LEAF_DAYS = 365
_CLOCK_SKEW = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class KeyPair:
    """Where a certificate and its private key are."""

    cert: Path
    key: Path


def authority_files(directory: Path, which: str) -> KeyPair:
    """``which`` is :data:`PEER_CA` or :data:`CLIENT_CA`."""
    return KeyPair(directory / f"{which}.crt", directory / f"{which}.key")


def node_files(directory: Path, role: str, node_id: str | int) -> KeyPair:
    role, node = check_node(role, str(node_id))
    return KeyPair(directory / f"{role}-{node}.crt", directory / f"{role}-{node}.key")


def user_files(directory: Path, user: str) -> KeyPair:
    name = check_name("user", user)
    return KeyPair(directory / f"user-{name}.crt", directory / f"user-{name}.key")


# -- issuing ------------------------------------------------------------------------------------


def init_authorities(directory: Path, *, days: int = CA_DAYS) -> tuple[KeyPair, KeyPair]:
    """Make the peer CA and the client CA in ``directory`` (created ``0700``); refuses to
    replace either, since every certificate they signed would stop being trusted."""
    _private_directory(directory)
    peer, client = authority_files(directory, PEER_CA), authority_files(directory, CLIENT_CA)
    for pair in (peer, client):
        if pair.cert.exists() or pair.key.exists():
            raise TlsError(f"{pair.cert} already exists: a CA is made once (use a new directory)")
    for pair, title in ((peer, "keelfs peer CA"), (client, "keelfs client CA")):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, title)])
        builder = (
            _validity(x509.CertificateBuilder(), days)
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_usage(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )
        _write(pair, builder.sign(key, hashes.SHA256()), key, overwrite=False)
    return peer, client


def issue_node(
    directory: Path,
    role: str,
    node_id: str | int,
    hosts: Sequence[str] = (),
    *,
    days: int = LEAF_DAYS,
    overwrite: bool = False,
) -> KeyPair:
    """A node certificate from the peer CA in ``directory``: ``keelfs://ROLE/ID``, the DNS
    names and IP addresses in ``hosts`` (those it is dialled at) and :data:`PEER_SERVER_NAME`."""
    uri = node_uri(role, node_id)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    names += [_host_name(h) for h in dict.fromkeys([*hosts, PEER_SERVER_NAME])]
    usage = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    return _issue(
        directory, PEER_CA, node_files(directory, role, node_id), f"{role} {node_id}",
        names, usage, days, overwrite,
    )  # fmt: skip


def issue_client(
    directory: Path,
    user: str,
    *,
    groups: Sequence[str] = (),
    admin: bool = False,
    days: int = LEAF_DAYS,
    overwrite: bool = False,
    proxy_for: Sequence[str] = (),
) -> KeyPair:
    """A user's certificate from the client CA in ``directory``: ``keelfs://user/USER``, a
    group URI per group, the admin URI when ``admin``, and a proxy URI per user it may act
    for (``proxy_for``; ``*``: any, e.g. a gateway serving many users)."""
    uris = [user_uri(user), *(group_uri(g) for g in dict.fromkeys(groups))]
    uris += [proxy_uri(u) for u in dict.fromkeys(proxy_for)]
    if admin:
        uris.append(ADMIN_URI)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    return _issue(
        directory, CLIENT_CA, user_files(directory, user), user,
        names, [ExtendedKeyUsageOID.CLIENT_AUTH], days, overwrite,
    )  # fmt: skip


def _issue(
    directory: Path,
    authority: str,
    out: KeyPair,
    common_name: str,
    names: list[x509.GeneralName],
    usage: list[x509.ObjectIdentifier],
    days: int,
    overwrite: bool,
) -> KeyPair:
    ca_files = authority_files(directory, authority)
    if not ca_files.key.exists():
        raise TlsError(f"no {authority} in {directory}: run `keelfs certs init {directory}` first")
    if not overwrite and (out.cert.exists() or out.key.exists()):
        raise TlsError(f"{out.cert} already exists (`keelfs certs issue --force` replaces it)")
    ca_cert, ca_key = load_certificate(ca_files.cert), _load_key(ca_files.key)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _validity(x509.CertificateBuilder(), days)
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    _write(out, builder.sign(ca_key, hashes.SHA256()), key, overwrite=overwrite)
    return out


def _validity(builder: x509.CertificateBuilder, days: int) -> x509.CertificateBuilder:
    if days <= 0:
        raise TlsError(f"validity must be at least one day, not {days}")
    now = datetime.datetime.now(datetime.UTC)
    return (
        builder.serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _leaf_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _host_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return x509.DNSName(check_name("host", host))
    except TlsError:
        raise TlsError(f"invalid host {host!r}: a DNS name or an IP address") from None


# -- reading ------------------------------------------------------------------------------------


def load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise TlsError(f"cannot read certificate {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise TlsError(f"{path} is not a PEM certificate: {exc}") from None


def uris_of(cert: x509.Certificate) -> list[str]:
    """The URIs in a certificate's subject alternative names."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise TlsError(f"cannot read key {path}: {exc.strerror or exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsError(f"{path}: expected an EC private key")
    return key


# -- files --------------------------------------------------------------------------------------


def _private_directory(directory: Path) -> None:
    """Create ``directory`` ``0700``, or accept an existing one nobody else can enter."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = stat.S_IMODE(directory.stat().st_mode)
    except OSError as exc:
        raise TlsError(f"cannot create {directory}: {exc.strerror or exc}") from None
    if mode & 0o077:
        raise TlsError(
            f"{directory} is open to other users (mode {mode:04o}): it will hold private keys; "
            f"`chmod 700 {directory}` or use a new directory"
        )


def _write(
    pair: KeyPair, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, *, overwrite: bool
) -> None:
    """The key first (``0600``, never readable by others even for a moment), then the
    certificate (``0644``), each written to a temporary file and renamed into place."""
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_file(pair.key, key_pem, 0o600, overwrite)
    _write_file(pair.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644, overwrite)


def _write_file(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as f:
        os.fchmod(f.fileno(), mode)  # whatever the umask
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if the file appeared meanwhile
    except FileExistsError:
        raise TlsError(f"{path} already exists") from None
    finally:
        tmp.unlink()


def describe(cert: x509.Certificate) -> dict[str, object]:
    """What ``keelfs certs show`` prints: subject, issuer, validity and alternative names."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        hosts = [*san.get_values_for_type(x509.DNSName)]
        hosts += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        hosts = []
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "uris": uris_of(cert),
        "hosts": hosts,
    }
