"""TLS for every gRPC port and channel of keelfs, and who is on the other end of a call.

One value, :class:`TlsSettings` — or ``None`` for today's insecure mode — goes to every place
that listens or dials: :func:`add_port` for a server, :func:`open_channel` /
:func:`open_aio_channel` for a client. With settings, every connection is mutual TLS:

- a server presents its node certificate and **requires** a certificate from the caller. Its
  client port trusts the peer CA and the client CA (one port for nodes and users, as they call
  the same services); a peer-only port (the Raft transport: ``clients=False``) trusts the peer
  CA alone, so a user's certificate fails the handshake there;
- a client verifies the server's certificate against the peer CA (servers are nodes) and
  presents its own: a node its node certificate, a user theirs.

:class:`Authenticator` turns a call's verified certificate into an
:data:`~keelfs.tls.identity.Identity`. Which CA signed it decides what it may be (see
``keelfs.tls.identity``): both CAs pass the handshake on a client port, so the signature is
checked again here against the peer CA. An access table over these identities is
``keelfs.rpc.access``.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from keelfs.tls.certs import (
    CLIENT_CA,
    PEER_CA,
    authority_files,
    load_certificate,
    node_files,
    uris_of,
    user_files,
)
from keelfs.tls.identity import ANONYMOUS, Identity, Peer, TlsError, identity_from_uris

__all__ = [
    "Authenticator",
    "TlsSettings",
    "add_port",
    "channel_credentials",
    "channel_options",
    "client_ssl_context",
    "node_authenticator",
    "open_aio_channel",
    "open_channel",
    "server_credentials",
    "server_ssl_context",
]

Options = Sequence[tuple[str, Any]]


@dataclass(frozen=True)
class TlsSettings:
    """Where this process's TLS material is.

    ``peer_ca``: the peer CA's certificate (verifies servers, and nodes calling in);
    ``client_ca``: the client CA's certificate, on a process that serves users (None: a port
    of this process accepts nodes only); ``cert``/``key``: this process's own certificate;
    ``server_name``: verify servers' certificates against this name instead of the host dialled
    (``keelfs.tls.certs.PEER_SERVER_NAME`` accepts any node of the cluster at any address: for
    addresses the certificates do not list)."""

    peer_ca: Path
    cert: Path
    key: Path
    client_ca: Path | None = None
    server_name: str | None = None

    @classmethod
    def for_node(cls, directory: Path, role: str, node_id: str | int) -> TlsSettings:
        """A node's settings from a ``keelfs certs`` directory (both CAs, its own pair)."""
        own = node_files(directory, role, node_id)
        return cls(
            peer_ca=authority_files(directory, PEER_CA).cert,
            client_ca=authority_files(directory, CLIENT_CA).cert,
            cert=own.cert,
            key=own.key,
        )

    @classmethod
    def for_user(cls, directory: Path, user: str) -> TlsSettings:
        """A user's settings from a ``keelfs certs`` directory (the peer CA, their own pair)."""
        own = user_files(directory, user)
        return cls(peer_ca=authority_files(directory, PEER_CA).cert, cert=own.cert, key=own.key)


def server_credentials(tls: TlsSettings, *, clients: bool = True) -> grpc.ServerCredentials:
    """Mutual-TLS server credentials: a certificate is required of every caller, from the peer
    CA or (``clients`` and a client CA configured) the client CA."""
    roots = _read(tls.peer_ca)
    if clients and tls.client_ca is not None:
        roots += b"\n" + _read(tls.client_ca)
    return grpc.ssl_server_credentials(
        [(_read(tls.key), _read(tls.cert))], root_certificates=roots, require_client_auth=True
    )


def channel_credentials(tls: TlsSettings) -> grpc.ChannelCredentials:
    """Verify the server by the peer CA; present this process's certificate."""
    return grpc.ssl_channel_credentials(_read(tls.peer_ca), _read(tls.key), _read(tls.cert))


def channel_options(tls: TlsSettings | None, options: Options = ()) -> list[tuple[str, Any]]:
    """``options`` plus the name to verify servers by, when the settings give one."""
    out = list(options)
    if tls is not None and tls.server_name:
        out.append(("grpc.ssl_target_name_override", tls.server_name))
    return out


def add_port(
    server: grpc.aio.Server, address: str, tls: TlsSettings | None, *, clients: bool = True
) -> int:
    """Listen on ``address`` (``host:0`` picks a port): mutual TLS with settings (``clients``
    as in :func:`server_credentials`), plain otherwise. The bound port; ``OSError`` when the
    address cannot be bound, ``TlsError`` when the TLS files cannot be read."""
    port: int
    try:
        if tls is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, server_credentials(tls, clients=clients))
    except RuntimeError as exc:  # grpc reports bind failures this way
        raise OSError(f"cannot listen on {address}: {exc}") from exc
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return port


def open_channel(address: str, tls: TlsSettings | None, options: Options = ()) -> grpc.Channel:
    """A synchronous channel to ``address``: mutual TLS with settings, plain otherwise."""
    if tls is None:
        return grpc.insecure_channel(address, options=list(options))
    return grpc.secure_channel(
        address, channel_credentials(tls), options=channel_options(tls, options)
    )


def open_aio_channel(
    address: str,
    tls: TlsSettings | None,
    options: Options = (),
    interceptors: Sequence[Any] = (),
) -> grpc.aio.Channel:
    """An asyncio channel to ``address``: mutual TLS with settings, plain otherwise
    (``interceptors``: client interceptors of every call, e.g. the caller's metadata)."""
    if tls is None:
        return grpc.aio.insecure_channel(
            address, options=list(options), interceptors=list(interceptors) or None
        )
    return grpc.aio.secure_channel(
        address,
        channel_credentials(tls),
        options=channel_options(tls, options),
        interceptors=list(interceptors) or None,
    )


def server_ssl_context(tls: TlsSettings, *, clients: bool = True) -> ssl.SSLContext:
    """The same mutual TLS as :func:`server_credentials`, for a listener that is not gRPC's
    (the Raft transport's framed streams): a certificate is required of every caller."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load_own_pair(ctx, tls)
    _load_roots(ctx, tls.peer_ca)
    if clients and tls.client_ca is not None:
        _load_roots(ctx, tls.client_ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_ssl_context(tls: TlsSettings) -> ssl.SSLContext:
    """As :func:`channel_credentials` for a connection that is not gRPC's: verify the server
    by the peer CA (and its name: pass ``tls.server_name or host`` as the server hostname, as
    :func:`channel_options` does), present this process's certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _load_roots(ctx, tls.peer_ca)
    _load_own_pair(ctx, tls)
    return ctx


def _load_own_pair(ctx: ssl.SSLContext, tls: TlsSettings) -> None:
    try:
        ctx.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot load {tls.cert} and {tls.key}: {exc}") from None


def _load_roots(ctx: ssl.SSLContext, path: Path) -> None:
    try:
        ctx.load_verify_locations(path)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot load {path}: {exc}") from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsError(f"cannot read {path}: {exc.strerror or exc}") from None


# -- who is calling -----------------------------------------------------------------------------


class Authenticator:
    """The identity of a call's peer, from the certificate the TLS handshake verified.

    gRPC verified the chain against the roots of the port; this decides which CA signed it
    (a certificate that both CAs could have signed, one CA serving as both, may name either
    a node or a user). Identities are cached by certificate: a connection's calls cost one
    dictionary lookup after the first."""

    _CACHE_LIMIT = 4096

    def __init__(self, tls: TlsSettings) -> None:
        self._peer_ca = load_certificate(tls.peer_ca)
        self._client_ca = None if tls.client_ca is None else load_certificate(tls.client_ca)
        self._cache: dict[bytes, Identity] = {}
        self._lock = threading.Lock()  # sync servers call from a thread pool

    def identity_of(self, context: Any) -> Identity:
        """The caller of ``context`` (a gRPC servicer context, sync or asyncio);
        ``ANONYMOUS`` on a connection without a verified certificate."""
        pem = context.auth_context().get("x509_pem_cert")
        if not pem:
            return ANONYMOUS
        identity = self._cache.get(pem[0])
        if identity is None:
            identity = self.identity_of_pem(pem[0])
            with self._lock:
                if len(self._cache) >= self._CACHE_LIMIT:
                    self._cache.clear()
                self._cache[pem[0]] = identity
        return identity

    def identity_of_pem(self, pem: bytes) -> Identity:
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            return ANONYMOUS
        return self._identity_of_certificate(cert)

    def _identity_of_certificate(self, cert: x509.Certificate) -> Identity:
        return identity_from_uris(
            uris_of(cert),
            peer_ca=_signed_by(cert, self._peer_ca),
            client_ca=self._client_ca is not None and _signed_by(cert, self._client_ca),
        )

    def authenticated_node(self, context: Any) -> int | None:
        """The Raft node id of a metadata node (master or config server) calling; None for
        anybody else."""
        identity = self.identity_of(context)
        return identity.raft_node if isinstance(identity, Peer) else None

    def node_of_der(self, der: bytes | None) -> int | None:
        """As :meth:`authenticated_node`, for a connection's verified certificate in DER (what
        ``ssl.SSLObject.getpeercert(binary_form=True)`` gives; None: no certificate)."""
        if not der:
            return None
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            return None
        identity = self._identity_of_certificate(cert)
        return identity.raft_node if isinstance(identity, Peer) else None


def node_authenticator(tls: TlsSettings | None) -> Callable[[Any], int | None] | None:
    """For the Raft transport: with settings, the function from a call's context to the
    authenticated Raft node id (None: not a metadata node, to be refused); without, None:
    there is nothing to check a sender against."""
    return None if tls is None else Authenticator(tls).authenticated_node


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
