"""The production Raft transport: gRPC (``grpc.aio``) streams between master processes.

Shape of the traffic
--------------------
A process hosts many Raft groups, and any two processes typically share most of them. So between
two processes there is exactly **one bidirectional stream per direction** (``RaftTransport.Stream``,
opened by the sender), and every write on it is a ``RaftBatch`` holding the messages of *all*
groups pending for that peer. A thousand groups heartbeating cost a handful of writes, not a
thousand RPCs. Inbound batches are decoded and handed to ``on_messages`` whole.

Batching without added latency
------------------------------
``send()`` only appends to the peer's bounded queue (:mod:`keelfs.transport.sendqueue`) and
wakes the peer's sender task. The sender takes *everything* pending (up to ``max_batch_bytes``)
into one batch and writes it. There is no timer: when the link is idle a message leaves on the
next loop iteration; under load, whatever accumulated while the previous write was in progress
goes out together, so batches grow exactly when writes are the bottleneck. Messages emitted in
one pass of the runtime's ready loop therefore share a batch.

Failures
--------
Each peer has its own queue and task, so a dead or slow peer only fills its own queue (which
then sheds its stalest messages) and never delays sends to the others; ``send()`` never blocks
or raises. A broken stream is reopened with jittered exponential back-off (``backoff_initial``
to ``backoff_max``, reset once a stream is up again). The receiver opens every stream by
sending a ``RaftAck`` naming itself: that marks the link up, and a link that reaches the wrong
node (an address reused after a node was replaced) is refused rather than fed its messages.

Authenticated senders
---------------------
Every message names its sender (``Message.frm``), and the Raft core trusts that name: it is
how it tells the term's leader from a follower and a member from a stranger. With mutual TLS
the certificate of an inbound stream names the node at the other end; given
``authenticated_node`` (a function of the stream's ``grpc.aio.ServicerContext`` returning that
node id, or None where the stream is not authenticated), the receiver drops every message
whose ``frm`` differs from it (counted in ``TransportStats.forged`` and ``rejected``) and
learns no address from a batch whose ``from_node`` differs. Given ``tls`` (a
``keelfs.tls.TlsSettings``), the port is mutual TLS for peer certificates only, channels
present this node's certificate, ``authenticated_node`` defaults to the certificate's Raft node
id, and a stream whose certificate names no metadata node (a chunk server's) is refused.
Without TLS (insecure mode) nothing is checked.

Idle links stay up
------------------
Connections are opened as soon as a peer is known and are never torn down for being idle: after
a leader dies, the first vote request of the next election must leave at once, not wait for a
TCP and HTTP/2 handshake (transports that drop idle links lose or delay that first vote and
roughly double failover time). gRPC keepalive pings (permitted without calls, unlimited without
data, and accepted by our server at that rate) keep NATs and conntrack entries warm and detect
a silently dead peer within ``keepalive_time + keepalive_timeout`` (gRPC clients never ping more
than about once a second, whatever the setting). The channel's idle timeout
and gRPC's own reconnect back-off (default up to two minutes) are overridden for the same
reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from keelfs.raft.messages import Message, message_size
from keelfs.tls.credentials import TlsSettings, add_port, node_authenticator, open_aio_channel
from keelfs.transport.base import RUNTIME_FEATURES, OnMessages, TransportStats
from keelfs.transport.codec import DecodeError, decode, encode_into
from keelfs.transport.pb import raft_pb2 as pb
from keelfs.transport.pb import raft_pb2_grpc as _pb_grpc
from keelfs.transport.sendqueue import MiB, PeerQueue, QueueLimits

__all__ = ["AuthenticatedNode", "GrpcTransport", "GrpcTransportConfig", "PeerStatus"]

log = logging.getLogger(__name__)

# The generated gRPC module is untyped (grpcio ships no stubs either); go through Any explicitly.
pb_grpc: Any = _pb_grpc

_NODE_ID_METADATA = "keelfs-node-id"

AuthenticatedNode = Callable[[Any], int | None]
"""Given an inbound stream's ``grpc.aio.ServicerContext``: the node id its peer proved (with
mutual TLS, the one its certificate names), or None if the stream is not authenticated (then
its messages are not checked). Called once per stream, when it opens; it must not raise."""
_INT_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class GrpcTransportConfig:
    """Tunables. The defaults suit a LAN cluster; tests shrink the timeouts."""

    queue: QueueLimits = field(default_factory=QueueLimits)
    max_batch_bytes: int = 4 * MiB
    """Soft bound of one stream write; see ``PeerQueue.take`` for the exact guarantee."""
    max_grpc_message_bytes: int = 64 * MiB
    """gRPC's hard per-message limit, both directions, set explicitly on the server and on
    every channel (``grpc.max_receive_message_length``): a peer that writes a bigger batch gets
    its stream refused (RESOURCE_EXHAUSTED) before anything is decoded. Must exceed the
    largest possible batch, or one oversized write would kill the stream that every group
    shares; the runtime keeps snapshot chunks under ``GrpcTransport.max_message_bytes``."""
    backoff_initial: float = 0.05
    backoff_max: float = 1.0
    connect_timeout: float = 2.0
    """How long a new stream may take to be acknowledged before it is retried."""
    keepalive_time_ms: int = 10_000
    keepalive_timeout_ms: int = 5_000
    stop_grace: float = 0.0
    """Seconds the server lets inbound streams run on during ``stop()``. Raft does not need the
    in-flight messages, so the default is to cut them at once."""

    def __post_init__(self) -> None:
        largest_batch = self.max_batch_bytes + self.queue.largest_message
        if largest_batch + MiB > self.max_grpc_message_bytes:
            raise ValueError(
                f"max_grpc_message_bytes={self.max_grpc_message_bytes} must exceed the largest "
                f"batch ({largest_batch} bytes plus 1 MiB for encoding overhead)"
            )
        if not 0 < self.backoff_initial <= self.backoff_max:
            raise ValueError("need 0 < backoff_initial <= backoff_max")


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """One peer as seen from this node, for diagnostics."""

    node_id: int
    address: str
    connected: bool
    queued_messages: int
    queued_bytes: int
    consecutive_failures: int
    last_error: str | None
    sent: int
    dropped: int
    batches_sent: int


class _Peer:
    """Per-peer state. Touched only from the event loop."""

    __slots__ = (
        "node_id",
        "address",
        "queue",
        "wake",
        "task",
        "connected",
        "failures",
        "last_error",
        "sent",
        "dropped",
        "batches_sent",
        "features",
    )

    def __init__(self, node_id: int, address: str, limits: QueueLimits) -> None:
        self.node_id = node_id
        self.address = address
        self.queue = PeerQueue(limits)
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.connected = False
        self.failures = 0
        self.last_error: str | None = None
        self.sent = 0
        self.dropped = 0
        self.batches_sent = 0
        self.features: frozenset[str] = frozenset()


def _unauthenticated(context: Any) -> int | None:
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"


class _Servicer:
    """Inbound side: acknowledge the stream, then hand every batch to the transport.

    Duck-typed against the generated ``RaftTransportServicer`` (registration only looks up the
    ``Stream`` attribute), which keeps the untyped base class out of the typed code."""

    def __init__(self, transport: GrpcTransport) -> None:
        self._transport = transport

    async def Stream(  # noqa: N802 - the RPC's name
        self, request_iterator: AsyncIterator[pb.RaftBatch], context: Any
    ) -> AsyncIterator[pb.RaftAck]:
        transport = self._transport
        peer = transport._authenticated_node(context)
        if peer is None and transport._tls is not None:
            # a chunk server's certificate passes the peer-only handshake but names no Raft node
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, "the Raft port accepts metadata nodes only"
            )
        yield pb.RaftAck(node_id=transport.node_id, features=sorted(RUNTIME_FEATURES))
        async for batch in request_iterator:
            transport._deliver_batch(batch, peer)


class GrpcTransport:
    """A :class:`~keelfs.transport.base.Transport` over gRPC; see the module docstring.

    ``listen_address`` is ``host:port``; port 0 picks a free port, readable from
    :attr:`address` after :meth:`start` (which keeps the host as given, so listen on an address
    peers can dial, not a wildcard, if that value is to be advertised). ``rng`` jitters the
    reconnect back-off. ``authenticated_node`` names the peer of an inbound stream (see
    "Authenticated senders" in the module docstring). All methods must be called on the event
    loop that ran :meth:`start`.
    """

    def __init__(
        self,
        node_id: int,
        listen_address: str,
        on_messages: OnMessages,
        *,
        config: GrpcTransportConfig | None = None,
        rng: random.Random | None = None,
        authenticated_node: AuthenticatedNode | None = None,
        tls: TlsSettings | None = None,
    ) -> None:
        if node_id <= 0:
            raise ValueError("node ids are positive")
        self._node_id = node_id
        self._tls = tls
        if authenticated_node is None:
            authenticated_node = node_authenticator(tls)
        self._authenticated_node: AuthenticatedNode = authenticated_node or _unauthenticated
        self._listen_address = listen_address
        self._address = listen_address
        self._on_messages = on_messages
        self._cfg = config or GrpcTransportConfig()
        self._rng = rng or random.Random()
        self._peers: dict[int, _Peer] = {}
        self._stats = TransportStats()
        self._server: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._stopped = False
        self._retiring: set[asyncio.Task[None]] = set()
        self._local: list[tuple[str, Message]] = []
        self._local_scheduled = False
        cfg = self._cfg
        common = [
            ("grpc.max_send_message_length", cfg.max_grpc_message_bytes),
            ("grpc.max_receive_message_length", cfg.max_grpc_message_bytes),
            ("grpc.keepalive_time_ms", cfg.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", cfg.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", 1),
            # Without this, pings stop after 2 on a link with no data: idle links go unwatched.
            ("grpc.http2.max_pings_without_data", 0),
        ]
        self._channel_options = [
            *common,
            # gRPC's default reconnect back-off grows to 2 minutes; ours is the one that counts.
            ("grpc.initial_reconnect_backoff_ms", int(cfg.backoff_initial * 1000)),
            ("grpc.max_reconnect_backoff_ms", int(cfg.backoff_max * 1000)),
            # Never let the channel go idle (it would, after 30 minutes without a new call).
            ("grpc.client_idle_timeout_ms", _INT_MAX),
            # One connection per peer channel, not shared with other channels in the process.
            ("grpc.use_local_subchannel_pool", 1),
        ]
        self._server_options = [
            *common,
            # gRPC servers by default allow one ping per 5 minutes on a stream without data and
            # answer the third early one with GOAWAY "too_many_pings", tearing down exactly the
            # idle links we keep. Accept our peers' rate, and never GOAWAY over pings: the
            # clients are our own processes (test_idle_link_survives_frequent_keepalive_pings).
            ("grpc.http2.min_ping_interval_without_data_ms", cfg.keepalive_time_ms // 2),
            ("grpc.http2.max_ping_strikes", 0),
            # gRPC sets SO_REUSEPORT by default: a second node could then silently share a port.
            ("grpc.so_reuseport", 0),
        ]

    # -- Transport protocol -------------------------------------------------------------------

    @property
    def node_id(self) -> int:
        return self._node_id

    @property
    def address(self) -> str:
        """The address peers should use: the listen address with the bound port filled in."""
        return self._address

    @property
    def max_message_bytes(self) -> int:
        """What both send-queue lanes accept; ``GrpcTransportConfig`` makes sure that a batch
        holding such a message fits under gRPC's message limit, both ways."""
        q = self._cfg.queue
        return min(q.max_bytes, q.max_snapshot_bytes)

    async def start(self) -> None:
        if self._running or self._stopped:
            raise RuntimeError("GrpcTransport can be started once")
        self._loop = asyncio.get_running_loop()
        server = grpc.aio.server(options=self._server_options)
        pb_grpc.add_RaftTransportServicer_to_server(_Servicer(self), server)
        # peers only: a user's certificate fails the handshake on the Raft port
        port = add_port(server, self._listen_address, self._tls, clients=False)
        host = self._listen_address.rpartition(":")[0]
        self._address = f"{host}:{port}"
        await server.start()
        self._server = server
        self._running = True
        for peer in self._peers.values():
            self._spawn(peer)
        log.debug("node %d listening on %s", self._node_id, self._address)

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._running = False
        tasks = [p.task for p in self._peers.values() if p.task is not None]
        tasks.extend(self._retiring)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for peer in self._peers.values():
            peer.task = None
            n = peer.queue.clear()
            peer.dropped += n
            self._stats.dropped += n
        if self._server is not None:
            await self._server.stop(self._cfg.stop_grace)
            self._server = None

    def send(self, group_id: str, msg: Message) -> None:
        if not self._running:
            self._stats.dropped += 1
            return
        to = msg.to
        if to == self._node_id:
            self._send_local(group_id, msg)
            return
        peer = self._peers.get(to)
        if peer is None:
            self._stats.dropped += 1
            return
        dropped = peer.queue.push(group_id, msg, message_size(msg))
        if dropped:
            peer.dropped += dropped
            self._stats.dropped += dropped
        peer.wake.set()

    def set_peer_address(self, node_id: int, address: str) -> None:
        if node_id == self._node_id:
            return  # messages to self never touch the network
        peer = self._peers.get(node_id)
        if peer is None:
            peer = self._peers[node_id] = _Peer(node_id, address, self._cfg.queue)
        elif peer.address == address:
            return
        else:
            peer.address = address
            self._retire(peer)
        if self._running:
            self._spawn(peer)

    def remove_peer(self, node_id: int) -> None:
        peer = self._peers.pop(node_id, None)
        if peer is None:
            return
        self._retire(peer)
        n = peer.queue.clear()
        self._stats.dropped += n

    def peer_features(self, node_id: int) -> frozenset[str]:
        peer = self._peers.get(node_id)
        return frozenset() if peer is None else peer.features

    def unreachable(self, node_id: int) -> bool:
        if node_id == self._node_id:
            return False
        peer = self._peers.get(node_id)
        return peer is None or not peer.connected

    def stats(self) -> TransportStats:
        return self._stats.copy()

    # -- extras ---------------------------------------------------------------------------------

    def peers(self) -> list[int]:
        return sorted(self._peers)

    def peer_status(self, node_id: int) -> PeerStatus | None:
        p = self._peers.get(node_id)
        if p is None:
            return None
        return PeerStatus(
            node_id=p.node_id,
            address=p.address,
            connected=p.connected,
            queued_messages=len(p.queue),
            queued_bytes=p.queue.bytes,
            consecutive_failures=p.failures,
            last_error=p.last_error,
            sent=p.sent,
            dropped=p.dropped,
            batches_sent=p.batches_sent,
        )

    # -- local delivery -------------------------------------------------------------------------

    def _send_local(self, group_id: str, msg: Message) -> None:
        """Deliver to self on a later loop iteration (never re-enter the caller), batched."""
        self._local.append((group_id, msg))
        self._stats.sent += 1
        if not self._local_scheduled:
            self._local_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush_local)

    def _flush_local(self) -> None:
        batch, self._local = self._local, []
        self._local_scheduled = False
        if not self._running:
            self._stats.dropped += len(batch)
            return
        self._stats.batches_received += 1
        self._stats.received += len(batch)
        self._invoke(batch)

    # -- inbound --------------------------------------------------------------------------------

    def _deliver_batch(self, batch: pb.RaftBatch, peer: int | None = None) -> None:
        """Decode a batch and hand it to ``on_messages``. Bad envelopes are counted, skipped.

        ``peer`` is the node the stream authenticated as (None: not authenticated)."""
        if not self._running:
            return
        out: list[tuple[str, Message]] = []
        me = self._node_id
        sender = batch.from_node
        if (
            sender
            and batch.from_address
            and sender != me
            and sender not in self._peers
            and peer in (None, sender)
        ):
            self.set_peer_address(sender, batch.from_address)  # a joiner learns who calls it
        forged = 0
        for env in batch.envelopes:
            try:
                item = decode(env)
            except DecodeError as exc:
                self._stats.rejected += 1
                log.warning("node %d: undecodable message from %d: %s", me, batch.from_node, exc)
                continue
            if item[1].to != me:
                # A peer with a stale address book; delivering would corrupt another node's view.
                self._stats.rejected += 1
                continue
            if peer is not None and item[1].frm != peer:
                forged += 1
                continue
            out.append(item)
        if forged:
            self._stats.rejected += forged
            self._stats.forged += forged
            log.warning(
                "node %d: dropped %d messages from authenticated node %d in another's name",
                me,
                forged,
                peer,
            )
        self._stats.batches_received += 1
        if out:
            self._stats.received += len(out)
            self._invoke(out)

    def _invoke(self, batch: list[tuple[str, Message]]) -> None:
        try:
            self._on_messages(batch)
        except Exception:
            # The stream is shared by every group: one bad message must not take it down.
            log.exception(
                "node %d: on_messages raised, %d messages lost", self._node_id, len(batch)
            )

    # -- outbound -------------------------------------------------------------------------------

    def _spawn(self, peer: _Peer) -> None:
        peer.task = asyncio.get_running_loop().create_task(
            self._run_peer(peer, peer.address), name=f"raft-send-{self._node_id}->{peer.node_id}"
        )

    def _retire(self, peer: _Peer) -> None:
        """Cancel a peer's sender; it closes its channel in the background (awaited by stop)."""
        task, peer.task = peer.task, None
        peer.connected = False
        if task is not None and not task.done():
            task.cancel()
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _run_peer(self, peer: _Peer, address: str) -> None:
        """Keep one stream to ``peer`` open for as long as the peer is known."""
        cfg = self._cfg
        channel = open_aio_channel(address, self._tls, self._channel_options)
        stub = pb_grpc.RaftTransportStub(channel)
        backoff = cfg.backoff_initial
        try:
            while True:
                if await self._run_stream(peer, stub):
                    backoff = cfg.backoff_initial
                await asyncio.sleep(backoff * self._rng.uniform(0.8, 1.2))
                backoff = min(backoff * 2, cfg.backoff_max)
        finally:
            peer.connected = False
            with contextlib.suppress(Exception):
                await channel.close()

    async def _run_stream(self, peer: _Peer, stub: Any) -> bool:
        """Open one stream and pump batches into it until it breaks.

        Returns whether the stream got established (so the back-off restarts from the bottom).
        """
        call = stub.Stream(metadata=((_NODE_ID_METADATA, str(self._node_id)),))
        try:
            try:
                ack = await asyncio.wait_for(call.read(), self._cfg.connect_timeout)
            except Exception as exc:
                self._link_failed(peer, f"connect to {peer.address}: {_describe(exc)}")
                return False
            if ack is grpc.aio.EOF:
                self._link_failed(peer, f"{peer.address} closed the stream at once")
                return False
            if ack.node_id != peer.node_id:
                self._link_failed(
                    peer, f"{peer.address} is node {ack.node_id}, not node {peer.node_id}"
                )
                return False
            if peer.failures:
                log.info("node %d: link to node %d is up again", self._node_id, peer.node_id)
            peer.features = frozenset(ack.features)
            peer.connected = True
            peer.failures = 0
            peer.last_error = None
            self._stats.connects += 1
            reader = asyncio.ensure_future(self._drain_acks(call))
            reader.add_done_callback(lambda _: peer.wake.set())
            try:
                await self._pump(peer, call, reader)
            finally:
                reader.cancel()
                if reader.done() and not reader.cancelled():
                    reader.exception()  # already reported by _pump or moot; mark it retrieved
            return True
        finally:
            peer.connected = False
            call.cancel()

    @staticmethod
    async def _drain_acks(call: Any) -> None:
        """Read until the stream ends: that is how a broken or closed stream is noticed."""
        while await call.read() is not grpc.aio.EOF:
            pass

    async def _pump(self, peer: _Peer, call: Any, reader: asyncio.Future[None]) -> None:
        queue = peer.queue
        max_batch = self._cfg.max_batch_bytes
        stats = self._stats
        while True:
            if not queue and not reader.done():
                peer.wake.clear()
                await peer.wake.wait()
            if reader.done():
                exc = None if reader.cancelled() else reader.exception()
                reason = _describe(exc) if exc is not None else "closed by the peer"
                self._link_failed(peer, f"stream to {peer.address} ended: {reason}")
                return
            items = queue.take(max_batch)
            if not items:
                continue
            batch = pb.RaftBatch(from_node=self._node_id, from_address=self.address)
            envelopes = batch.envelopes
            nbytes = 0
            n = 0
            for group_id, msg, size in items:
                try:
                    encode_into(envelopes.add(), group_id, msg)
                except ValueError as exc:  # an int outside uint64: a caller's bug, not fatal
                    del envelopes[-1]
                    stats.dropped += 1
                    peer.dropped += 1
                    log.error("node %d: cannot encode %s: %s", self._node_id, msg.describe(), exc)
                    continue
                nbytes += size
                n += 1
            if not n:
                continue
            try:
                await call.write(batch)
            except Exception as exc:
                stats.dropped += n
                peer.dropped += n
                self._link_failed(peer, f"write to {peer.address}: {_describe(exc)}")
                return
            stats.sent += n
            stats.batches_sent += 1
            stats.bytes_sent += nbytes
            peer.sent += n
            peer.batches_sent += 1

    def _link_failed(self, peer: _Peer, reason: str) -> None:
        peer.connected = False
        peer.failures += 1
        peer.last_error = reason
        self._stats.connect_failures += 1
        # Log the transition, not every retry of a peer that stays down.
        level = logging.WARNING if peer.failures == 1 else logging.DEBUG
        log.log(level, "node %d: link to node %d down: %s", self._node_id, peer.node_id, reason)
