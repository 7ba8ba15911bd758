"""Framed streams (``keelfs.transport.frames``): links move off gRPC where both ends speak them,
stay on gRPC where one does not (a rolling upgrade) or where the framed port cannot be reached,
notice a frozen peer by its silence, and refuse anything off-protocol without harm to the
links that keep to it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from transport_helpers import Inbox, eventually, run

from keelfs.raft.messages import Entry, Message, MessageType
from keelfs.transport import codec, frames
from keelfs.transport.base import RUNTIME_FEATURES
from keelfs.transport.grpc_transport import GrpcTransport, GrpcTransportConfig
from keelfs.transport.pb import raft_pb2 as pb

pytestmark = pytest.mark.timeout(30)

FAST = GrpcTransportConfig(backoff_initial=0.02, backoff_max=0.2, connect_timeout=0.5)
OLD = dataclasses.replace(FAST, stream_port=None)
"""A node of a release without framed streams: it names no stream port and dials none."""


def msg(frm: int, to: int, term: int = 1, **kw: object) -> Message:
    return Message(MessageType.APP, to=to, frm=frm, term=term, **kw)  # type: ignore[arg-type]


async def start(
    stack: AsyncExitStack, node_id: int, config: GrpcTransportConfig = FAST
) -> tuple[GrpcTransport, Inbox]:
    inbox = Inbox()
    t = GrpcTransport(node_id, "127.0.0.1:0", inbox, config=config)
    await t.start()
    stack.push_async_callback(t.stop)
    return t, inbox


def link(t: GrpcTransport, peer: int) -> str:
    status = t.peer_status(peer)
    assert status is not None
    return status.link


async def raw_link(
    port: int, greet: bool = True
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A hand-made framed connection (as a forger or a confused client would make one)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if greet:
        hello = pb.RaftBatch(from_node=1, from_address="127.0.0.1:1").SerializeToString()
        writer.write(frames.MAGIC + frames.frame(frames.Kind.HELLO, hello))
        kind, payload = await frames.read_frame(reader, 1 << 20)
        assert kind is frames.Kind.ACK
        assert pb.RaftAck.FromString(payload).stream_port == port
    return reader, writer


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    try:
        async with asyncio.timeout(3):
            while await reader.read(4096):
                pass
    except ConnectionError:
        pass
    return True


def test_links_move_to_framed_streams_and_old_nodes_stay_on_grpc() -> None:
    """Between two nodes that speak framed streams the link moves there; a node that does not
    (an earlier release during a rolling upgrade) is talked to over gRPC and talks over gRPC,
    and messages flow every way with the peers' features learned."""

    async def body() -> None:
        async with AsyncExitStack() as stack:
            a, inbox_a = await start(stack, 1)
            b, inbox_b = await start(stack, 2)
            old, inbox_old = await start(stack, 3, OLD)
            assert a.stream_port and b.stream_port and old.stream_port == 0
            for x, y in [(a, b), (b, a), (a, old), (old, a)]:
                x.set_peer_address(y.node_id, y.address)
            a.send("g", msg(1, 2))
            a.send("g", msg(1, 3))
            b.send("g", msg(2, 1))
            old.send("g", msg(3, 1))
            await inbox_a.wait_for(2)
            await inbox_b.wait_for(1)
            await inbox_old.wait_for(1)
            assert (link(a, 2), link(b, 1)) == ("stream", "stream")
            assert (link(a, 3), link(old, 1)) == ("grpc", "grpc")
            assert a.peer_features(2) == a.peer_features(3) == RUNTIME_FEATURES
            assert sorted(m.frm for _, m in inbox_a.messages) == [2, 3]

    run(body)


def test_a_framed_port_that_cannot_be_reached_leaves_the_link_on_grpc() -> None:
    """A framed port that refuses connections (a firewall letting only the gRPC port through)
    costs nothing but the try: the link stays on the gRPC stream it came in by."""

    async def body() -> None:
        async with AsyncExitStack() as stack:
            a, _ = await start(stack, 1)
            b, inbox_b = await start(stack, 2)
            assert b._stream_server is not None
            b._stream_server.close()  # still named in its acks, but nobody listens
            await b._stream_server.wait_closed()
            a.set_peer_address(2, b.address)
            for term in (1, 2):
                a.send("g", msg(1, 2, term))
            await inbox_b.wait_for(2)
            assert link(a, 2) == "grpc"
            assert a.stats().connect_failures == 0

    run(body)


_PEER = """
import asyncio, sys
from keelfs.transport.grpc_transport import GrpcTransport, GrpcTransportConfig

def got(batch):
    for _, m in batch:
        print("term", m.term, flush=True)

async def main():
    config = GrpcTransportConfig(keepalive_time_ms=300, keepalive_timeout_ms=300)
    t = GrpcTransport(2, "127.0.0.1:0", got, config=config)
    await t.start()
    print(t.address, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@contextlib.asynccontextmanager
async def peer_process() -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """Node 2 in a process of its own (``_PEER``), and its Raft address; killed at the end."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _PEER, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    try:
        yield proc, (await proc.stdout.readline()).decode().strip()
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGCONT)  # a stopped process dies only once continued
            proc.kill()
        await proc.wait()


@pytest.mark.process
def test_a_frozen_peer_is_noticed_by_its_silence_and_the_link_comes_back() -> None:
    """A peer process that is stopped (SIGSTOP) answers no pings: the link is down within
    keepalive + timeout, as gRPC's keepalive made it (a quiesced group learns of a frozen
    leader node from the link alone). Continued, it is linked again and gets what was sent
    meanwhile."""

    async def body() -> None:
        async with peer_process() as (proc, address):
            assert proc.stdout is not None
            config = dataclasses.replace(FAST, keepalive_time_ms=300, keepalive_timeout_ms=300)
            async with AsyncExitStack() as stack:
                a, _ = await start(stack, 1, config)
                a.set_peer_address(2, address)
                a.send("g", msg(1, 2, term=1))
                assert await proc.stdout.readline() == b"term 1\n"
                assert link(a, 2) == "stream"

                os.kill(proc.pid, signal.SIGSTOP)
                frozen = time.monotonic()
                # more than the sockets buffer: the sender ends up waiting in a write
                for _ in range(24):
                    a.send("g", msg(1, 2, term=2, entries=(Entry(1, 1, bytes(1 << 20)),)))
                await eventually(lambda: a.unreachable(2), timeout=5, what="frozen peer noticed")
                assert time.monotonic() - frozen >= 0.3  # its silence, not a broken socket
                status = a.peer_status(2)
                assert status is not None and "timed out" in (status.last_error or "")
                assert status.sent < 24  # it was stuck behind the backlog, not idle
                a.send("g", msg(1, 2, term=3))

                os.kill(proc.pid, signal.SIGCONT)
                await eventually(lambda: not a.unreachable(2), timeout=5, what="link back")
                while (line := await proc.stdout.readline()) == b"term 2\n":
                    pass  # what the frozen peer got of the backlog, and what was re-sent
                assert line == b"term 3\n"
                assert link(a, 2) == "stream"

    run(body, timeout=20)


def test_off_protocol_connections_are_refused_and_real_links_carry_on() -> None:
    """Something that is not a keelfs node, a frame over the size limit (refused before it is
    read), a greeting over its own small limit, a batch before the greeting, a batch that does
    not parse: each connection is closed and counted, and a real peer's link delivers on."""
    capped = dataclasses.replace(
        FAST,
        queue=dataclasses.replace(FAST.queue, max_bytes=1 << 20, max_snapshot_bytes=1 << 20),
        max_batch_bytes=1 << 20,
        max_grpc_message_bytes=4 << 20,
    )

    async def body() -> None:
        async with AsyncExitStack() as stack:
            b, inbox_b = await start(stack, 2, capped)
            a, _ = await start(stack, 1, capped)
            a.set_peer_address(2, b.address)
            a.send("g", msg(1, 2, term=1))
            await inbox_b.wait_for(1)
            port = b.stream_port

            reader, writer = await raw_link(port, greet=False)
            writer.write(b"GET / HTTP/1.1\r\n\r\n")
            assert await closed_by_peer(reader)

            reader, writer = await raw_link(port)
            writer.write(frames.FRAME_HEADER.pack(64 << 20, frames.Kind.BATCH))  # and no more
            assert await closed_by_peer(reader)

            reader, writer = await raw_link(port, greet=False)
            writer.write(frames.MAGIC + frames.FRAME_HEADER.pack(1 << 20, frames.Kind.HELLO))
            assert await closed_by_peer(reader)  # a greeting is small whatever batches are

            reader, writer = await raw_link(port, greet=False)
            batch = pb.RaftBatch(envelopes=[codec.encode("g", msg(1, 2, term=7))])
            writer.write(frames.MAGIC + frames.frame(frames.Kind.BATCH, batch.SerializeToString()))
            assert await closed_by_peer(reader)

            reader, writer = await raw_link(port)
            writer.write(frames.frame(frames.Kind.BATCH, b"\xff\xff\xff"))
            assert await closed_by_peer(reader)

            await eventually(lambda: b.stats().rejected == 5, what="five refusals counted")
            assert [m.term for _, m in inbox_b.messages] == [1]
            a.send("g", msg(1, 2, term=2))
            await inbox_b.wait_for(2)
            assert link(a, 2) == "stream"

    run(body)


def test_a_raw_framed_batch_is_delivered_like_a_grpc_one() -> None:
    """The listener's side alone: a greeted connection's batches reach ``on_messages`` in
    order, and its pings are answered."""

    async def body() -> None:
        async with AsyncExitStack() as stack:
            b, inbox_b = await start(stack, 2)
            reader, writer = await raw_link(b.stream_port)
            for term in (5, 6):
                batch = pb.RaftBatch(from_node=1, envelopes=[codec.encode("g", msg(1, 2, term))])
                writer.write(frames.frame(frames.Kind.BATCH, batch.SerializeToString()))
            writer.write(frames.PING_FRAME)
            assert await frames.read_frame(reader, 0) == (frames.Kind.PONG, b"")
            await inbox_b.wait_for(2)
            assert [m.term for _, m in inbox_b.messages] == [5, 6]
            writer.close()

    run(body)


def test_a_peer_whose_messages_arrive_is_alive_without_pongs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pongs come from the peer's event loop, which a burst of work can hold up: its Raft
    messages arriving on its own link say as much, and the link stays up (a false "down"
    makes a quiesced group's followers elect at once). Once nothing at all comes, it is
    down."""
    monkeypatch.setattr(frames, "PONG_FRAME", b"")  # no listener answers a ping
    config = dataclasses.replace(FAST, keepalive_time_ms=150, keepalive_timeout_ms=150)

    async def body() -> None:
        async with AsyncExitStack() as stack:
            a, inbox_a = await start(stack, 1, config)
            b, inbox_b = await start(stack, 2, config)
            a.set_peer_address(2, b.address)
            b.set_peer_address(1, a.address)
            a.send("g", msg(1, 2))
            b.send("g", msg(2, 1))
            await eventually(lambda: not a.unreachable(2) and not b.unreachable(1))
            for term in range(30):  # 1.5 s: five times the silence allowed
                a.send("g", msg(1, 2, term))
                b.send("g", msg(2, 1, term))
                await asyncio.sleep(0.05)
                assert not a.unreachable(2)
            assert a.stats().connect_failures == b.stats().connect_failures == 0
            await inbox_a.wait_for(31)
            b.remove_peer(1)  # nothing comes from B any more
            await eventually(lambda: a.unreachable(2), timeout=2, what="silent peer noticed")
            status = a.peer_status(2)
            assert status is not None and "timed out" in (status.last_error or "")

    run(body)


@pytest.mark.process
def test_a_stall_of_the_dialler_itself_is_not_the_peers_silence() -> None:
    """When this node's own event loop stalls (a long apply, a pause of the process), its
    watch's timeout fires late, with no ping sent meanwhile and the answers unread: that is
    not the peer's silence, and the link stays up."""
    config = dataclasses.replace(FAST, keepalive_time_ms=150, keepalive_timeout_ms=150)

    async def body() -> None:
        async with peer_process() as (proc, address):
            assert proc.stdout is not None
            async with AsyncExitStack() as stack:
                a, _ = await start(stack, 1, config)
                a.set_peer_address(2, address)
                a.send("g", msg(1, 2, term=1))
                assert await proc.stdout.readline() == b"term 1\n"
                for _ in range(3):
                    time.sleep(0.8)  # the whole loop stalls: more than twice the silence
                    await asyncio.sleep(0.4)
                    assert not a.unreachable(2)
                assert a.stats().connect_failures == 0

    run(body, timeout=20)


def test_a_dialler_that_pings_without_reading_is_cut_off() -> None:
    """Pongs a dialler leaves unread pile up in the listener's write buffer: past a bound the
    connection is closed, not the memory given."""

    async def body() -> None:
        async with AsyncExitStack() as stack:
            b, _ = await start(stack, 2)
            reader, writer = await raw_link(b.stream_port)
            writer.transport.pause_reading()  # type: ignore[attr-defined]  # never a pong read
            with contextlib.suppress(ConnectionError):  # cut off mid-write
                for _ in range(100):  # more than the sockets on both sides buffer
                    writer.write(frames.PING_FRAME * 200_000)  # 1 MB of pings
                    await writer.drain()
                    if b.stats().rejected:
                        break
            await eventually(lambda: b.stats().rejected == 1, what="the flood refused")
            writer.transport.abort()

    run(body)


def test_one_listening_socket_per_host_and_a_wildcard_ipv6_takes_ipv4_too() -> None:
    """The framed port is told to peers as one number: one socket, whatever the host; on
    ``::`` (gRPC's Raft listener there takes both families) IPv4 peers get in too."""
    import socket

    with frames.listening_socket("::", 0) as sock:
        port = sock.getsockname()[1]
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(family, socket.SOCK_STREAM) as client:
                client.settimeout(2)
                client.connect((host, port))
    with frames.listening_socket("localhost", 0) as sock:
        assert sock.getsockname()[1] > 0
    assert frames.split_host("[::1]:7000") == "::1"
    assert frames.split_host("10.0.0.5:7000") == "10.0.0.5"
