"""Every RPC method of keelfs against a real in-process ``grpc.aio`` server with mutual TLS and
the access interceptor: no certificate fails the handshake; a user is refused internal and admin
methods with PERMISSION_DENIED; an admin user gets admin methods; a chunk server gets the
internal methods of any node but not those of metadata nodes; a metadata node gets everything;
a certificate from the client CA that names a node is nobody. The servicers are stand-ins that
answer every method: a call that reaches one passed the interceptor."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keelfs.rpc.access import ACCESS, Access, proto_files, rpc_methods, server_interceptors
from keelfs.tls.certs import (
    CLIENT_CA,
    PEER_SERVER_NAME,
    authority_files,
    init_authorities,
    issue_client,
    issue_node,
)
from keelfs.tls.credentials import (
    Authenticator,
    TlsSettings,
    add_port,
    node_authenticator,
    open_aio_channel,
    open_channel,
)
from keelfs.tls.identity import ANONYMOUS, Client, Peer

pytestmark = pytest.mark.timeout(120)

OK = grpc.StatusCode.OK
DENIED = grpc.StatusCode.PERMISSION_DENIED


@dataclass(frozen=True)
class Method:
    path: str
    client_streaming: bool
    server_streaming: bool


def methods() -> list[Method]:
    return [
        Method(f"/{s.full_name}/{m.name}", m.client_streaming, m.server_streaming)
        for f in proto_files()
        for s in f.services_by_name.values()
        for m in s.methods
    ]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tls") / "certs"
    init_authorities(d)
    issue_node(d, "master", 1, ["127.0.0.1"])
    issue_node(d, "master", 2, ["localhost"])  # not the address the tests dial
    issue_node(d, "chunkserver", "cs-1", ["127.0.0.1"])
    issue_client(d, "alice", groups=["staff"])
    issue_client(d, "root", admin=True)
    _forge_node_from_client_ca(d, "master-9")
    return d


def _forge_node_from_client_ca(d: Path, name: str) -> None:
    """A certificate naming ``keelfs://master/9``, signed by the client CA (as anyone who can
    get user certificates could ask for): it must name nobody."""
    ca = authority_files(d, CLIENT_CA)
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key: Any = serialization.load_pem_private_key(ca.key.read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "master 9")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier("keelfs://master/9")]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (d / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def node(certs: Path, role: str, node_id: str | int) -> TlsSettings:
    return TlsSettings.for_node(certs, role, node_id)


def user(certs: Path, name: str) -> TlsSettings:
    return TlsSettings.for_user(certs, name)


# -- the table ----------------------------------------------------------------------------------


def test_every_rpc_method_in_the_protos_has_an_access_class() -> None:
    in_protos = set(rpc_methods())
    assert in_protos - set(ACCESS) == set(), "RPC methods without an access class in ACCESS"
    assert set(ACCESS) - in_protos == set(), "ACCESS names methods the protos do not have"
    assert len(in_protos) == len(methods()) >= 60


def test_internal_methods_the_issue_names_are_not_open_to_clients() -> None:
    internal = [
        "/keelfs.raft.v1.RaftTransport/Stream",
        "/keelfs.meta.v1.Namespace/TxnPrepare",
        "/keelfs.meta.v1.Namespace/TxnFinish",
        "/keelfs.meta.v1.Namespace/Move",
        "/keelfs.meta.v1.Namespace/MoveRead",
        "/keelfs.meta.v1.Namespace/BlocksKnown",
        "/keelfs.meta.v1.Namespace/ChunkHeartbeat",
        "/keelfs.meta.v1.Config/RegisterMaster",
        "/keelfs.meta.v1.Config/RegisterChunkServer",
        "/keelfs.chunk.v1.ChunkServer/DeleteBlocks",
    ]
    admin = [
        "/keelfs.meta.v1.Node/AddMember",
        "/keelfs.meta.v1.Node/RemoveMember",
        "/keelfs.meta.v1.Node/SetFailpoint",
        "/keelfs.meta.v1.Namespace/Format",
        "/keelfs.meta.v1.Config/SetShardMembers",
        "/keelfs.meta.v1.Config/SetServerAdminState",
        "/keelfs.meta.v1.Node/BalanceStep",
    ]
    assert all(ACCESS[m] in (Access.PEER, Access.METADATA) for m in internal)
    assert all(ACCESS[m] is Access.ADMIN for m in admin)


# -- a real server ------------------------------------------------------------------------------


def _stand_in(m: Method, style: str) -> grpc.RpcMethodHandler:
    """A handler of ``m``'s kind answering empty bytes: reaching it means the call passed.
    ``style``: streams as async generators, or through ``context.read``/``write`` (as the
    chunk servers' write pipeline does)."""

    async def unary(request: Any, context: Any) -> bytes:
        if m.client_streaming:
            async for _ in request:
                pass
        return b""

    async def generator(request: Any, context: Any) -> AsyncIterator[bytes]:
        if m.client_streaming:
            async for _ in request:
                pass
        yield b""

    async def reader_writer(request: Any, context: Any) -> None:
        if m.client_streaming:
            while await context.read() is not grpc.aio.EOF:
                pass
        await context.write(b"")

    stream = generator if style == "generator" else reader_writer
    if m.client_streaming and m.server_streaming:
        return grpc.stream_stream_rpc_method_handler(stream)
    if m.server_streaming:
        return grpc.unary_stream_rpc_method_handler(stream)
    if m.client_streaming:
        return grpc.stream_unary_rpc_method_handler(unary)
    return grpc.unary_unary_rpc_method_handler(unary)


def _handlers(style: str) -> list[grpc.GenericRpcHandler]:
    by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for m in methods():
        service, name = m.path[1:].split("/")
        by_service.setdefault(service, {})[name] = _stand_in(m, style)
    return [grpc.method_handlers_generic_handler(s, h) for s, h in by_service.items()]


async def _call(channel: grpc.aio.Channel, m: Method) -> grpc.StatusCode:
    """The status of one call of ``m`` with an empty request."""
    try:
        if m.client_streaming:

            async def requests() -> AsyncIterator[bytes]:
                yield b""

            if m.server_streaming:
                async for _ in channel.stream_stream(m.path)(requests(), timeout=10):
                    pass
            else:
                await channel.stream_unary(m.path)(requests(), timeout=10)
        elif m.server_streaming:
            async for _ in channel.unary_stream(m.path)(b"", timeout=10):
                pass
        else:
            await channel.unary_unary(m.path)(b"", timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return OK


async def _statuses(
    server_tls: TlsSettings | None,
    caller: Callable[[str], grpc.aio.Channel],
    *,
    clients: bool = True,
    style: str = "generator",
) -> dict[str, grpc.StatusCode]:
    """Serve every method (TLS as given) and call each once through ``caller(address)``."""
    server = grpc.aio.server(interceptors=server_interceptors(server_tls))
    server.add_generic_rpc_handlers(_handlers(style))
    port = add_port(server, "127.0.0.1:0", server_tls, clients=clients)
    await server.start()
    try:
        async with caller(f"127.0.0.1:{port}") as channel:
            return {m.path: await _call(channel, m) for m in methods()}
    finally:
        await server.stop(None)


def statuses(
    server_tls: TlsSettings | None, caller_tls: TlsSettings | None, **kw: Any
) -> dict[str, grpc.StatusCode]:
    return asyncio.run(
        _statuses(server_tls, lambda address: open_aio_channel(address, caller_tls), **kw)
    )


def expected(admitted: Callable[[Access], bool]) -> dict[str, grpc.StatusCode]:
    return {path: OK if admitted(access) else DENIED for path, access in ACCESS.items()}


def test_without_a_certificate_the_handshake_fails(certs: Path) -> None:
    server_tls = node(certs, "master", 1)
    plain = statuses(server_tls, None)
    no_cert = asyncio.run(
        _statuses(
            server_tls,
            lambda address: grpc.aio.secure_channel(
                address, grpc.ssl_channel_credentials(server_tls.peer_ca.read_bytes())
            ),
        )
    )
    for result in (plain, no_cert):
        assert set(result.values()) == {grpc.StatusCode.UNAVAILABLE}


STYLES = pytest.mark.parametrize("style", ["generator", "reader_writer"])


@STYLES
def test_a_user_is_refused_internal_and_admin_methods(certs: Path, style: str) -> None:
    got = statuses(node(certs, "master", 1), user(certs, "alice"), style=style)
    assert got == expected(lambda access: access is Access.CLIENT)


def test_an_admin_user_gets_admin_methods_but_not_internal_ones(certs: Path) -> None:
    got = statuses(node(certs, "master", 1), user(certs, "root"))
    assert got == expected(lambda access: access in (Access.CLIENT, Access.ADMIN))


def test_a_chunk_server_gets_the_internal_methods_of_any_node_only(certs: Path) -> None:
    got = statuses(node(certs, "master", 1), node(certs, "chunkserver", "cs-1"))
    assert got == expected(lambda access: access in (Access.CLIENT, Access.PEER))


@STYLES
def test_a_metadata_node_passes_the_interceptor_on_every_method(certs: Path, style: str) -> None:
    got = statuses(node(certs, "master", 1), node(certs, "master", 1), style=style)
    assert set(got.values()) == {OK}


def test_a_refusal_names_the_method_its_class_and_the_caller(certs: Path) -> None:
    async def call() -> grpc.aio.AioRpcError:
        server = grpc.aio.server(interceptors=server_interceptors(node(certs, "master", 1)))
        server.add_generic_rpc_handlers(_handlers("generator"))
        port = add_port(server, "127.0.0.1:0", node(certs, "master", 1))
        await server.start()
        try:
            async with open_aio_channel(f"127.0.0.1:{port}", user(certs, "alice")) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await channel.unary_unary("/keelfs.meta.v1.Namespace/TxnPrepare")(b"")
                return caught.value
        finally:
            await server.stop(None)

    err = asyncio.run(call())
    assert err.code() == DENIED
    assert err.details() == (
        "/keelfs.meta.v1.Namespace/TxnPrepare is internal (metadata nodes only): not user alice"
    )


def test_a_node_named_by_the_client_ca_is_nobody(certs: Path) -> None:
    forged = TlsSettings(
        peer_ca=node(certs, "master", 1).peer_ca,
        cert=certs / "master-9.crt",
        key=certs / "master-9.key",
    )
    got = statuses(node(certs, "master", 1), forged)
    assert set(got.values()) == {grpc.StatusCode.UNAUTHENTICATED}


def test_a_peer_only_port_refuses_users_in_the_handshake(certs: Path) -> None:
    server_tls = node(certs, "master", 1)
    by_user = statuses(server_tls, user(certs, "root"), clients=False)
    by_node = statuses(server_tls, node(certs, "master", 2), clients=False)
    assert set(by_user.values()) == {grpc.StatusCode.UNAVAILABLE}
    assert set(by_node.values()) == {OK}


@pytest.mark.parametrize("secure", [True, False])
def test_synchronous_channels(certs: Path, secure: bool) -> None:
    server_tls = node(certs, "master", 1) if secure else None
    caller_tls = user(certs, "alice") if secure else None

    def call(address: str, method: str) -> grpc.StatusCode:
        with open_channel(address, caller_tls) as channel:
            try:
                channel.unary_unary(method)(b"", timeout=10)
            except grpc.RpcError as exc:
                return exc.code()
        return OK

    async def serve_and_call() -> list[grpc.StatusCode]:
        server = grpc.aio.server(interceptors=server_interceptors(server_tls))
        server.add_generic_rpc_handlers(_handlers("generator"))
        address = f"127.0.0.1:{add_port(server, '127.0.0.1:0', server_tls)}"
        await server.start()
        try:
            methods = ["/keelfs.meta.v1.Namespace/Create", "/keelfs.meta.v1.Namespace/Move"]
            return [await asyncio.to_thread(call, address, m) for m in methods]
        finally:
            await server.stop(None)

    assert asyncio.run(serve_and_call()) == ([OK, DENIED] if secure else [OK, OK])


def test_without_tls_nothing_is_checked() -> None:
    assert server_interceptors(None) == []
    assert node_authenticator(None) is None
    assert set(statuses(None, None).values()) == {OK}


def test_a_server_is_verified_by_name_when_its_certificate_lacks_the_address(certs: Path) -> None:
    """master-2's certificate names localhost and the shared node name, not 127.0.0.1."""
    server_tls = node(certs, "master", 2)
    by_address = statuses(server_tls, user(certs, "alice"))
    by_name = TlsSettings(**{**vars(user(certs, "alice")), "server_name": PEER_SERVER_NAME})
    assert set(by_address.values()) == {grpc.StatusCode.UNAVAILABLE}
    assert statuses(server_tls, by_name) == expected(lambda access: access is Access.CLIENT)


# -- identities ---------------------------------------------------------------------------------


class _Context:
    def __init__(self, pem: Path | None) -> None:
        self._pem = pem

    def auth_context(self) -> dict[str, list[bytes]]:
        return {} if self._pem is None else {"x509_pem_cert": [self._pem.read_bytes()]}


def test_identities_and_raft_nodes_from_certificates(certs: Path) -> None:
    auth = Authenticator(node(certs, "config", 1))
    who: Iterator[Any] = (
        auth.identity_of(_Context(p))
        for p in (
            certs / "master-1.crt",
            certs / "chunkserver-cs-1.crt",
            certs / "user-alice.crt",
            certs / "user-root.crt",
            certs / "master-9.crt",
            None,
        )
    )
    assert list(who) == [
        Peer("master", "1"),
        Peer("chunkserver", "cs-1"),
        Client("alice", frozenset({"staff"}), admin=False),
        Client("root", frozenset(), admin=True),
        ANONYMOUS,
        ANONYMOUS,
    ]
    check = node_authenticator(node(certs, "config", 1))
    assert check is not None
    assert check(_Context(certs / "master-1.crt")) == 1
    assert check(_Context(certs / "chunkserver-cs-1.crt")) is None
    assert check(_Context(certs / "user-root.crt")) is None
    assert check(_Context(certs / "master-9.crt")) is None


def test_a_node_process_that_serves_no_users_knows_no_clients(certs: Path) -> None:
    peers_only = TlsSettings(**{**vars(node(certs, "master", 1)), "client_ca": None})
    auth = Authenticator(peers_only)
    assert auth.identity_of(_Context(certs / "user-root.crt")) is ANONYMOUS
    assert auth.identity_of(_Context(certs / "master-1.crt")) == Peer("master", "1")
