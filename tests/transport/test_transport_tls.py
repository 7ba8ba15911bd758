"""GrpcTransport with ``tls=``: metadata nodes with their certificates exchange messages (on
framed streams, with TLS too); the Raft port — gRPC's and the framed streams' — refuses a
user's certificate at the handshake and a chunk server's (which the peer CA signed, but which
names no Raft node); a master's certificate may only speak for its own node id."""

from __future__ import annotations

import asyncio
import ssl
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest
from transport_helpers import Inbox, eventually, run

from keelfs.raft.messages import Message, MessageType
from keelfs.tls.certs import init_authorities, issue_client, issue_node
from keelfs.tls.credentials import TlsSettings, client_ssl_context, open_aio_channel
from keelfs.transport import codec, frames
from keelfs.transport.grpc_transport import GrpcTransport, GrpcTransportConfig
from keelfs.transport.pb import raft_pb2 as pb
from keelfs.transport.pb import raft_pb2_grpc as _pb_grpc

pytestmark = pytest.mark.timeout(30)

pb_grpc: Any = _pb_grpc
FAST = GrpcTransportConfig(backoff_initial=0.02, backoff_max=0.2, connect_timeout=0.5)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    init_authorities(directory)
    for node in (1, 2, 3):
        issue_node(directory, "master", node, ["127.0.0.1"])
    issue_node(directory, "chunkserver", "cs-1", ["127.0.0.1"])
    issue_client(directory, "alice")
    return directory


def msg(frm: int, to: int, term: int = 1) -> Message:
    return Message(MessageType.APP, to=to, frm=frm, term=term)


async def _transport(stack: AsyncExitStack, certs: Path, node: int) -> tuple[GrpcTransport, Inbox]:
    inbox = Inbox()
    t = GrpcTransport(
        node, "127.0.0.1:0", inbox, config=FAST, tls=TlsSettings.for_node(certs, "master", node)
    )
    await t.start()
    stack.push_async_callback(t.stop)
    return t, inbox


async def _open(stack: AsyncExitStack, address: str, tls: TlsSettings) -> Any:
    channel = open_aio_channel(address, tls)
    stack.push_async_callback(channel.close)
    call = pb_grpc.RaftTransportStub(channel).Stream()
    stack.callback(call.cancel)
    return call


def test_masters_with_certificates_exchange_messages(certs: Path) -> None:
    async def body() -> None:
        async with AsyncExitStack() as stack:
            (a, inbox_a), (b, inbox_b) = [await _transport(stack, certs, i) for i in (1, 2)]
            a.set_peer_address(2, b.address)
            b.set_peer_address(1, a.address)
            a.send("g", msg(1, 2))
            b.send("g", msg(2, 1))
            await inbox_a.wait_for(1)
            await inbox_b.wait_for(1)
            assert a.stats().forged == b.stats().forged == 0
            for t, peer in ((a, 2), (b, 1)):
                status = t.peer_status(peer)
                assert status is not None and status.link == "stream"

    run(body)


async def _open_framed(
    port: int, tls: TlsSettings
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A framed connection presenting ``tls``'s certificate, greeted as node 1."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_ssl_context(tls), server_hostname="127.0.0.1"
    )
    hello = pb.RaftBatch(from_node=1).SerializeToString()
    writer.write(frames.MAGIC + frames.frame(frames.Kind.HELLO, hello))
    return reader, writer


def test_framed_streams_refuse_users_and_chunk_servers(certs: Path) -> None:
    """The framed listener asks what the gRPC port asks: a user's certificate fails the
    handshake (the peer CA alone is trusted there), a chunk server's is refused after it (it
    names no Raft node): no greeting answered, nothing delivered."""

    async def body() -> None:
        async with AsyncExitStack() as stack:
            b, inbox = await _transport(stack, certs, 2)
            with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
                reader, _ = await _open_framed(b.stream_port, TlsSettings.for_user(certs, "alice"))
                await frames.read_frame(reader, 1 << 20)
            chunk = TlsSettings.for_node(certs, "chunkserver", "cs-1")
            reader, writer = await _open_framed(b.stream_port, chunk)
            batch = pb.RaftBatch(envelopes=[codec.encode("g", msg(1, 2, term=7))])
            writer.write(frames.frame(frames.Kind.BATCH, batch.SerializeToString()))
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError, ssl.SSLError)):
                await frames.read_frame(reader, 1 << 20)
            await eventually(lambda: b.stats().rejected == 1, what="the refusal counted")
            assert inbox.messages == []

    run(body)


def test_framed_stream_speaks_only_for_its_certificates_node(certs: Path) -> None:
    async def body() -> None:
        async with AsyncExitStack() as stack:
            b, inbox = await _transport(stack, certs, 2)
            node1 = TlsSettings.for_node(certs, "master", 1)
            reader, writer = await _open_framed(b.stream_port, node1)
            kind, payload = await frames.read_frame(reader, 1 << 20)
            assert kind is frames.Kind.ACK and pb.RaftAck.FromString(payload).node_id == 2
            batch = pb.RaftBatch(from_node=1)
            batch.envelopes.append(codec.encode("g", msg(3, 2, term=9)))  # node 3's name
            batch.envelopes.append(codec.encode("g", msg(1, 2, term=1)))
            writer.write(frames.frame(frames.Kind.BATCH, batch.SerializeToString()))
            await inbox.wait_for(1)
            await eventually(lambda: b.stats().forged == 1)
            assert [(m.frm, m.term) for _, m in inbox.messages] == [(1, 1)]
            writer.close()

    run(body)


def test_user_certificate_fails_the_raft_handshake(certs: Path) -> None:
    async def body() -> None:
        async with AsyncExitStack() as stack:
            b, _ = await _transport(stack, certs, 2)
            call = await _open(stack, b.address, TlsSettings.for_user(certs, "alice"))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call.read()
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE

    run(body)


def test_chunk_server_certificate_is_refused_on_the_raft_port(certs: Path) -> None:
    async def body() -> None:
        async with AsyncExitStack() as stack:
            b, inbox = await _transport(stack, certs, 2)
            call = await _open(stack, b.address, TlsSettings.for_node(certs, "chunkserver", "cs-1"))
            with pytest.raises(grpc.aio.AioRpcError) as err:  # at the write or the read:
                # the server may refuse the stream before the batch is written
                await call.write(pb.RaftBatch(envelopes=[codec.encode("g", msg(1, 2, term=7))]))
                await call.read()
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert inbox.messages == []

    run(body)


def test_master_certificate_speaks_only_for_its_own_node(certs: Path) -> None:
    async def body() -> None:
        async with AsyncExitStack() as stack:
            b, inbox = await _transport(stack, certs, 2)
            call = await _open(stack, b.address, TlsSettings.for_node(certs, "master", 1))
            assert (await call.read()).node_id == 2
            batch = pb.RaftBatch(from_node=1)
            batch.envelopes.append(codec.encode("g", msg(3, 2, term=9)))  # node 3's name
            batch.envelopes.append(codec.encode("g", msg(1, 2, term=1)))
            await call.write(batch)
            await inbox.wait_for(1)
            await eventually(lambda: b.stats().forged == 1)
            assert [(m.frm, m.term) for _, m in inbox.messages] == [(1, 1)]

    run(body)
