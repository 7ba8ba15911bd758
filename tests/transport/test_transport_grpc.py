"""GrpcTransport over real sockets on 127.0.0.1: delivery, batching, reconnects, large messages.

Every test that starts its transports through :func:`start` runs twice: with links on framed
streams (the default) and on gRPC streams (``stream_port=None``, as a node of an earlier
release); the gRPC-only behaviours (keepalive pings, gRPC's receive cap) pin gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
from contextlib import AsyncExitStack
from typing import Any

import grpc
import pytest
from transport_helpers import Inbox, eventually, free_port, run

from keelfs.raft.messages import ConfState, Entry, Message, MessageType, SnapshotMeta
from keelfs.transport import codec
from keelfs.transport.base import RUNTIME_FEATURES, Transport
from keelfs.transport.grpc_transport import GrpcTransport, GrpcTransportConfig
from keelfs.transport.pb import raft_pb2 as pb
from keelfs.transport.pb import raft_pb2_grpc as _pb_grpc
from keelfs.transport.sendqueue import QueueLimits

pytestmark = pytest.mark.timeout(30)

pb_grpc: Any = _pb_grpc  # generated and untyped

# Short timeouts so reconnects happen well within a test's few seconds.
FAST = GrpcTransportConfig(backoff_initial=0.02, backoff_max=0.2, connect_timeout=0.5)


def msg(frm: int, to: int, term: int = 1, **kw: object) -> Message:
    return Message(MessageType.APP, to=to, frm=frm, term=term, **kw)  # type: ignore[arg-type]


LINK = "stream"
"""What :func:`start`'s transports link over in the running test (set by ``link_kind``)."""


@pytest.fixture(autouse=True, params=["stream", "grpc"])
def link_kind(request: pytest.FixtureRequest) -> str:
    global LINK
    LINK = request.param
    return LINK


def on_link(config: GrpcTransportConfig) -> GrpcTransportConfig:
    return config if LINK == "stream" else dataclasses.replace(config, stream_port=None)


async def start(
    stack: AsyncExitStack,
    node_id: int,
    address: str = "127.0.0.1:0",
    config: GrpcTransportConfig = FAST,
) -> tuple[GrpcTransport, Inbox]:
    inbox = Inbox()
    t = GrpcTransport(node_id, address, inbox, config=on_link(config))
    await t.start()
    stack.push_async_callback(t.stop)
    return t, inbox


def mesh(*ts: GrpcTransport) -> None:
    for a in ts:
        for b in ts:
            if a is not b:
                a.set_peer_address(b.node_id, b.address)


async def connected(a: GrpcTransport, *peers: int) -> None:
    await eventually(lambda: not any(a.unreachable(p) for p in peers), what="links up")
    for p in peers:
        status = a.peer_status(p)
        assert status is not None and status.link == LINK


def test_satisfies_protocol() -> None:
    t = GrpcTransport(1, "127.0.0.1:0", Inbox())
    assert isinstance(t, Transport)


def test_two_nodes_many_groups_are_batched() -> None:
    async def body() -> None:
        async with AsyncExitStack() as stack:
            a, _ = await start(stack, 1)
            b, inbox_b = await start(stack, 2)
            mesh(a, b)
            await connected(a, 2)
            await connected(b, 1)
            sent = [(f"group-{i % 7}", msg(1, 2, term=i)) for i in range(500)]
            for group_id, m in sent:
                a.send(group_id, m)
            await inbox_b.wait_for(500)
            assert inbox_b.messages == sent  # one stream: FIFO across groups too
            assert a.stats().sent == 500
            assert a.stats().batches_sent < 10  # coalesced, not one write per message
            assert b.stats().batches_received == a.stats().batches_sent
            assert len(inbox_b.batches) < 10
            # and the reverse direction has its own stream
            b.send("group-0", msg(2, 1))
            await eventually(lambda: a.stats().received == 1)

    run(body)


def test_three_nodes_full_mesh() -> None:
    async def body() -> None:
        async with AsyncExitStack() as stack:
            nodes = [await start(stack, i) for i in (1, 2, 3)]
            ts = [t for t, _ in nodes]
            mesh(*ts)
            for t in ts:
                await connected(t, *(o.node_id for o in ts if o is not t))
            for round_ in range(20):
                for t in ts:
                    for o in ts:
                        if o is not t:
                            t.send(f"g{round_ % 3}", msg(t.node_id, o.node_id, term=round_))
            for t, inbox in nodes:
                await inbox.wait_for(40)
                assert all(m.to == t.node_id for _, m in inbox.messages)
                by_sender = {
                    frm: [m.term for _, m in inbox.messages if m.frm == frm] for frm in (1, 2, 3)
                }
                for frm, got in by_sender.items():
                    assert got == ([] if frm == t.node_id else list(range(20)))

    run(body)


def test_send_to_self_is_local_and_never_reentrant() -> None:
    async def body() -> None:
        async with AsyncExitStack() as stack:
            a, inbox = await start(stack, 1)
            a.send("g", msg(1, 1, term=1))
            a.send("h", msg(1, 1, term=2))
            assert inbox.messages == []  # not delivered inside send()
            await inbox.wait_for(2)
            assert inbox.batches == [[("g", msg(1, 1, term=1)), ("h", msg(1, 1, term=2))]]
            assert a.peers() == []  # no link needed
            assert not a.unreachable(1)

    run(body)


def test_unknown_peer_and_stopped_transport_drop_without_raising() -> None:
    async def body() -> None:
        async with AsyncExitStack() as stack:
            a, _ = await start(stack, 1)
            a.send("g", msg(1, 9))
            assert a.unreachable(9)
            assert a.stats().dropped == 1
        a.send("g", msg(1, 1))  # after stop
        assert a.stats().dropped == 2

    run(body)


def test_peer_down_at_first_gets_queued_messages_once_up() -> None:
    async def body() -> None:
        async with AsyncExitStack() as stack:
            a, _ = await start(stack, 1)
            address = f"127.0.0.1:{free_port()}"
            a.set_peer_address(2, address)
            for i in range(5):
                a.send("g", msg(1, 2, term=i))

            def failed_twice() -> bool:
                status = a.peer_status(2)
                return status is not None and status.consecutive_failures >= 2

            await eventually(failed_twice, what="two failed connection attempts")
            assert a.unreachable(2)
            status = a.peer_status(2)
            assert status is not None and status.consecutive_failures >= 2
            assert status.queued_messages == 5 and status.last_error
            _, inbox_b = await start(stack, 2, address)
            await inbox_b.wait_for(5)
            assert [m.term for _, m in inbox_b.messages] == list(range(5))
            assert not a.unreachable(2)
            assert a.stats().connects == 1

    run(body)


def test_peer_restarted_on_same_port_recovers() -> None:
    async def body() -> None:
        async with AsyncExitStack() as stack:
            a, _ = await start(stack, 1)
            b, inbox_b = await start(stack, 2)
            a.set_peer_address(2, b.address)
            a.send("g", msg(1, 2, term=1))
            await inbox_b.wait_for(1)
            await b.stop()
            await eventually(lambda: a.unreachable(2), what="link noticed down")
            a.send("g", msg(1, 2, term=2))  # queued while down
            b2, inbox_b2 = await start(stack, 2, b.address)
            await inbox_b2.wait_for(1)
            await connected(a, 2)
            a.send("g", msg(1, 2, term=3))
            await inbox_b2.wait_for(2)
            assert [m.term for _, m in inbox_b2.messages] == [2, 3]
            assert a.stats().connects == 2

    run(body)


async def _large_snapshot_chunks_body() -> None:
    async with AsyncExitStack() as stack:
        a, _ = await start(stack, 1)
        b, inbox_b = await start(stack, 2)
        a.set_peer_address(2, b.address)
        meta = SnapshotMeta(100, 3, ConfState(frozenset({1, 2, 3})))
        chunk = 1 << 20
        blobs = [os.urandom(chunk) for _ in range(6)]
        for i, data in enumerate(blobs):
            a.send(
                "big",
                Message(
                    MessageType.SNAP,
                    to=2,
                    frm=1,
                    term=3,
                    snapshot=meta,
                    snap_offset=i * chunk,
                    snap_data=data,
                    snap_done=i == len(blobs) - 1,
                ),
            )
        # a large append and a heartbeat ride along
        a.send("big", msg(1, 2, entries=(Entry(3, 101, os.urandom(chunk)),)))
        a.send("small", Message(MessageType.HEARTBEAT, to=2, frm=1, term=3))
        await inbox_b.wait_for(8)
        snaps = [m for _, m in inbox_b.messages if m.type is MessageType.SNAP]
        assert [m.snap_data for m in snaps] == blobs
        assert snaps[-1].snap_done and snaps[0].snapshot == meta
        assert a.stats().dropped == 0
        await connected(a, 2)


@pytest.mark.process
@pytest.mark.timeout(120)
def test_large_snapshot_chunks_pass() -> None:
    """7 MiB of snapshot chunks, a 1 MiB append and a heartbeat, all delivered whole. Run in
    a fresh interpreter: in a test worker where earlier tests left event loops with grpc-aio
    objects (fsspec's IO thread, say) it once waited 30 s for completions that never came
    (the loop idle from its first 0.1 s on); alone it takes about a second."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = (
        "import runpy; ns = runpy.run_path('test_transport_grpc.py'); "
        f"ns['LINK'] = {LINK!r}; "
        "ns['run'](ns['_large_snapshot_chunks_body'], timeout=60.0)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=here, capture_output=True, text=True, timeout=100
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_stalled_peer_does_not_block_others() -> None:
    async def body() -> None:
        # A socket that accepts TCP connections (kernel backlog) but never speaks HTTP/2.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sink:
            sink.bind(("127.0.0.1", 0))
            sink.listen(16)
            stalled = f"127.0.0.1:{sink.getsockname()[1]}"
            async with AsyncExitStack() as stack:
                a, _ = await start(stack, 1)
                c, inbox_c = await start(stack, 3)
                a.set_peer_address(2, stalled)
                a.set_peer_address(3, c.address)
                for i in range(100):
                    a.send("g", msg(1, 2, term=i))
                    a.send("g", msg(1, 3, term=i))
                await inbox_c.wait_for(100)
                assert a.unreachable(2) and not a.unreachable(3)
                # the stream to the stalled peer times out and is retried; others carry on
                await eventually(lambda: a.stats().connect_failures >= 1, what="connect timeout")
                status = a.peer_status(2)
                assert status is not None and status.queued_messages == 100
                assert "timed out" in (status.last_error or "")
                a.send("g", msg(1, 3, term=100))
                await inbox_c.wait_for(101)

    run(body)


def test_wrong_node_at_address_is_refused() -> None:
    async def body() -> None:
        async with AsyncExitStack() as stack:
            a, _ = await start(stack, 1)
            b, inbox_b = await start(stack, 2)
            a.set_peer_address(3, b.address)  # stale address book: node 2 lives there now
            a.send("g", msg(1, 3))
            await eventually(lambda: a.stats().connect_failures >= 2)
            assert a.unreachable(3)
            status = a.peer_status(3)
            assert status is not None and "not node 3" in (status.last_error or "")
            assert inbox_b.messages == []
            # fixing the address re-establishes the link with the queue kept
            c, inbox_c = await start(stack, 3)
            a.set_peer_address(3, c.address)
            await inbox_c.wait_for(1)

    run(body)


def test_remove_peer_drops_its_queue() -> None:
    async def body() -> None:
        async with AsyncExitStack() as stack:
            a, _ = await start(stack, 1)
            a.set_peer_address(2, f"127.0.0.1:{free_port()}")
            for i in range(3):
                a.send("g", msg(1, 2, term=i))
            a.remove_peer(2)
            assert a.stats().dropped == 3
            assert a.peer_status(2) is None and a.unreachable(2)
            a.send("g", msg(1, 2))
            assert a.stats().dropped == 4

    run(body)


def test_send_queue_bound_sheds_oldest_while_peer_is_down() -> None:
    async def body() -> None:
        config = GrpcTransportConfig(
            queue=QueueLimits(max_messages=10),
            backoff_initial=0.02,
            backoff_max=0.2,
            connect_timeout=0.5,
        )
        async with AsyncExitStack() as stack:
            a, _ = await start(stack, 1, config=config)
            address = f"127.0.0.1:{free_port()}"
            a.set_peer_address(2, address)
            for i in range(25):
                a.send("g", msg(1, 2, term=i))
            assert a.stats().dropped == 15
            _, inbox_b = await start(stack, 2, address)
            await inbox_b.wait_for(10)
            assert [m.term for _, m in inbox_b.messages] == list(range(15, 25))

    run(body)


def test_receiver_rejects_bad_envelopes_and_survives_callback_errors() -> None:
    async def body() -> None:
        async with AsyncExitStack() as stack:
            calls: list[int] = []

            def on_messages(batch: list[tuple[str, Message]]) -> None:
                calls.append(len(batch))
                if len(calls) == 1:
                    raise RuntimeError("runtime bug")

            b = GrpcTransport(2, "127.0.0.1:0", on_messages, config=FAST)
            await b.start()
            stack.push_async_callback(b.stop)
            channel = grpc.aio.insecure_channel(b.address)
            stack.push_async_callback(channel.close)
            call = pb_grpc.RaftTransportStub(channel).Stream()
            hello = await call.read()
            assert hello.node_id == 2
            batch = pb.RaftBatch(from_node=1)
            batch.envelopes.append(codec.encode("g", msg(1, 2, term=1)))
            batch.envelopes.append(codec.encode("g", msg(1, 5, term=2)))  # not for node 2
            bad = batch.envelopes.add(group_id="g")  # type 0: undecodable
            bad.msg.to = 2
            await call.write(batch)
            await call.write(pb.RaftBatch(envelopes=[codec.encode("g", msg(1, 2, term=3))]))
            await eventually(lambda: len(calls) == 2)
            assert calls == [1, 1]
            stats = b.stats()
            assert stats.rejected == 2 and stats.received == 2 and stats.batches_received == 2
            await call.done_writing()
            with contextlib.suppress(grpc.aio.AioRpcError):
                assert await call.read() is grpc.aio.EOF

    run(body)


def test_bind_conflict_is_an_os_error() -> None:
    async def body() -> None:
        async with AsyncExitStack() as stack:
            a, _ = await start(stack, 1)
            other = GrpcTransport(2, a.address, Inbox(), config=FAST)
            with pytest.raises(OSError):
                await other.start()
            await other.stop()

    run(body)


def test_config_must_fit_the_largest_batch_in_a_grpc_message() -> None:
    with pytest.raises(ValueError):
        GrpcTransportConfig(max_grpc_message_bytes=8 << 20)
    with pytest.raises(ValueError):
        GrpcTransportConfig(backoff_initial=2.0, backoff_max=1.0)
    with pytest.raises(ValueError):
        GrpcTransport(0, "127.0.0.1:0", Inbox())


@pytest.mark.slow
def test_idle_link_survives_frequent_keepalive_pings() -> None:
    """Idle links are kept, not torn down: the server accepts pings at the peers' rate.

    gRPC clients ping at most once a second whatever the keepalive time. A server on gRPC's
    default policy (5 minutes between pings on a stream without data, 2 strikes) answers the
    fifth such ping with GOAWAY "too_many_pings", which would break the stream (counted in
    connect_failures) within this test's idle period; hence its ~6 s length.
    """

    async def body() -> None:
        config = GrpcTransportConfig(
            keepalive_time_ms=1000,
            keepalive_timeout_ms=2000,
            backoff_initial=0.02,
            backoff_max=0.2,
            connect_timeout=0.5,
        )
        async with AsyncExitStack() as stack:
            a, _ = await start(stack, 1, config=config)
            b, inbox_b = await start(stack, 2, config=config)
            a.set_peer_address(2, b.address)
            await connected(a, 2)
            await asyncio.sleep(5.6)  # pings on a stream that carries no data
            a.send("g", msg(1, 2))
            await inbox_b.wait_for(1)
            stats = a.stats()
            assert stats.connects == 1 and stats.connect_failures == 0

    run(body)


def _identity_from_metadata(context: Any) -> int | None:
    """Stands in for the TLS helper's reading of the peer certificate: the node id a stream
    proved, here taken from a test-only metadata entry (None: an unauthenticated stream)."""
    for key, value in context.invocation_metadata() or ():
        if key == "test-authenticated-node":
            return int(value)
    return None


async def _raw_stream(stack: AsyncExitStack, address: str, identity: int | None) -> Any:
    channel = grpc.aio.insecure_channel(address)
    stack.push_async_callback(channel.close)
    metadata = () if identity is None else (("test-authenticated-node", str(identity)),)
    call = pb_grpc.RaftTransportStub(channel).Stream(metadata=metadata)
    stack.callback(call.cancel)
    assert (await call.read()).node_id == 2
    return call


def test_authenticated_peer_may_only_speak_for_itself() -> None:
    """With ``authenticated_node``, a stream that proved it is node 1 delivers node 1's
    messages only: one in node 3's name is dropped and counted as forged, and the batch's
    claim to come from node 3 teaches no address. A stream that proved nothing (None) is not
    checked: insecure mode keeps working as before."""

    async def body() -> None:
        async with AsyncExitStack() as stack:
            inbox = Inbox()
            b = GrpcTransport(
                2, "127.0.0.1:0", inbox, config=FAST, authenticated_node=_identity_from_metadata
            )
            await b.start()
            stack.push_async_callback(b.stop)
            call = await _raw_stream(stack, b.address, identity=1)
            batch = pb.RaftBatch(from_node=3, from_address="127.0.0.1:1")
            batch.envelopes.append(codec.encode("g", msg(1, 2, term=1)))
            batch.envelopes.append(codec.encode("g", msg(3, 2, term=9)))  # in node 3's name
            batch.envelopes.append(codec.encode("h", msg(1, 2, term=2)))
            await call.write(batch)
            await inbox.wait_for(2)
            await eventually(lambda: b.stats().batches_received == 1)
            assert [(g, m.frm, m.term) for g, m in inbox.messages] == [("g", 1, 1), ("h", 1, 2)]
            stats = b.stats()
            assert (stats.forged, stats.rejected, stats.received) == (1, 1, 2)
            assert b.peers() == []  # from_node 3 is not who the stream proved to be

            insecure = await _raw_stream(stack, b.address, identity=None)
            await insecure.write(pb.RaftBatch(envelopes=[codec.encode("g", msg(3, 2, term=4))]))
            await inbox.wait_for(3)
            assert inbox.messages[-1][1].frm == 3
            assert b.stats().forged == 1

    run(body)


def test_authenticated_peers_exchange_messages_as_usual() -> None:
    """Between real transports, each stream authenticated as its sender: nothing is dropped."""

    async def body() -> None:
        async with AsyncExitStack() as stack:
            inboxes = {i: Inbox() for i in (1, 2)}
            ts = {}
            for i in (1, 2):
                t = GrpcTransport(
                    i,
                    "127.0.0.1:0",
                    inboxes[i],
                    config=FAST,
                    authenticated_node=lambda c, i=i: 3 - i,
                )
                await t.start()
                stack.push_async_callback(t.stop)
                ts[i] = t
            mesh(ts[1], ts[2])
            ts[1].send("g", msg(1, 2))
            ts[2].send("g", msg(2, 1))
            await inboxes[1].wait_for(1)
            await inboxes[2].wait_for(1)
            assert ts[1].stats().forged == ts[2].stats().forged == 0

    run(body)


MiB = 1 << 20
CAPPED = GrpcTransportConfig(
    queue=QueueLimits(max_bytes=MiB, max_snapshot_bytes=MiB),
    max_batch_bytes=MiB,
    max_grpc_message_bytes=4 * MiB,
    backoff_initial=0.02,
    backoff_max=0.2,
    connect_timeout=0.5,
)


def test_batch_over_the_receive_cap_is_refused_and_the_node_keeps_serving() -> None:
    """gRPC's receive limit is set explicitly: a peer writing a batch above it has its stream
    refused before anything is decoded, and the node goes on serving its real peers. Snapshot
    chunks as big as ``max_message_bytes`` still pass."""

    async def body() -> None:
        async with AsyncExitStack() as stack:
            a, _ = await start(stack, 1, config=CAPPED)
            b, inbox = await start(stack, 2, config=CAPPED)
            call = await _raw_stream(stack, b.address, identity=None)
            huge = pb.RaftBatch(from_node=1)
            huge.envelopes.append(codec.encode("g", msg(1, 2, context=os.urandom(5 * MiB))))
            with contextlib.suppress(grpc.aio.AioRpcError):
                await call.write(huge)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call.read()
            assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert b.stats().received == 0

            a.set_peer_address(2, b.address)
            limit = b.max_message_bytes
            data = os.urandom(limit - 64)
            meta = SnapshotMeta(9, 1, ConfState(frozenset({1, 2})))
            chunk = Message(
                MessageType.SNAP, 2, 1, 1, snapshot=meta, snap_data=data, snap_done=True
            )
            a.send("g", chunk)
            a.send("g", Message(MessageType.HEARTBEAT, 2, 1, 1))
            await inbox.wait_for(2)
            assert [m.snap_data for _, m in inbox.messages if m.snap_data] == [data]

    run(body, timeout=30.0)


def test_a_link_learns_what_the_peer_reads() -> None:
    """``RaftAck.features``: once a link is up the sender knows its peer's runtime features
    (what lets a leader write packs only to members that apply them); before, nothing."""

    async def body() -> None:
        async with AsyncExitStack() as stack:
            a, _ = await start(stack, 1)
            b, _ = await start(stack, 2)
            assert a.peer_features(2) == frozenset()
            mesh(a, b)
            a.send("g", msg(1, 2))
            await connected(a, 2)
            assert a.peer_features(2) == RUNTIME_FEATURES and "packs" in RUNTIME_FEATURES

    run(body)
