"""GrpcTransport with ``tls=``: metadata nodes with their certificates exchange messages; the
Raft port refuses a user's certificate at the handshake and a chunk server's (which the peer
CA signed, but which names no Raft node) with PERMISSION_DENIED; a master's certificate may
only speak for its own node id."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest
from transport_helpers import Inbox, eventually, run

from keelfs.raft.messages import Message, MessageType
from keelfs.tls.certs import init_authorities, issue_client, issue_node
from keelfs.tls.credentials import TlsSettings, open_aio_channel
from keelfs.transport import codec
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
