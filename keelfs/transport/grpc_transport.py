"""The production Raft transport: streams between master processes, opened as gRPC
(``grpc.aio``) and moved to framed streams (:mod:`keelfs.transport.frames`) where both ends
speak them — a message there costs a tenth of the CPU. Everything below holds for both kinds of
link; "Framed streams" at the end says what differs.

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

Framed streams
--------------
The receiver's ``RaftAck`` names the port of its framed-stream listener
(``GrpcTransportConfig.stream_port``); the sender dials it on the host it dialled, greets,
and on the listener's ``ACK`` closes the gRPC stream and pumps the same ``RaftBatch`` values
as frames. The checks are the same: the listener's certificate-named node (mutual TLS with
the same roots, peer CA only) for every message's ``frm``; the greeting names the node,
the ACK is checked against the peer expected; a frame over ``max_grpc_message_bytes`` ends
the connection before it is read. gRPC's keepalive is replaced by the sender's pings: a link
silent for ``keepalive_time + keepalive_timeout`` is down. Should the framed port not answer,
the link stays on the gRPC stream (logged once). A transport given its own
``authenticated_node`` (which judges gRPC contexts) and no TLS keeps every link on gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import DecodeError as ProtobufDecodeError

from keelfs.raft.messages import Message, message_size
from keelfs.tls.credentials import (
    Authenticator,
    TlsSettings,
    add_port,
    client_ssl_context,
    open_aio_channel,
    server_ssl_context,
)
from keelfs.transport import frames
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
_STREAM_RETRY_AFTER_S = 60.0


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
    stream_port: int | None = 0
    """Where to listen for framed streams (:mod:`keelfs.transport.frames`), on the gRPC
    listener's host: 0 picks a free port (it is told to peers on every gRPC handshake, so it
    need not be known in advance); None: no framed streams, neither listened for nor dialled
    (every link on gRPC, as in earlier releases)."""

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
    link: str
    """What the link runs over while it is up: ``"stream"`` (framed) or ``"grpc"``; ``""``
    while it is down."""


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
        "link",
        "stream_retry_at",
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
        self.link = ""
        self.stream_retry_at = 0.0
        """Loop time before which no framed connection is tried; set when one failed, 0 once
        one succeeds (a failure after a failure logs quietly)."""


def _unauthenticated(context: Any) -> int | None:
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "closed by the peer"
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
        yield transport._ack()
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
        authenticator = None if tls is None else Authenticator(tls)
        self._stream_node_of_der = None if authenticator is None else authenticator.node_of_der
        """Who a framed stream's certificate names (None without TLS: nothing to check)."""
        if authenticated_node is None and authenticator is not None:
            authenticated_node = authenticator.authenticated_node
        self._authenticated_node: AuthenticatedNode = authenticated_node or _unauthenticated
        self._listen_address = listen_address
        self._address = listen_address
        self._on_messages = on_messages
        self._cfg = config or GrpcTransportConfig()
        self._framed = self._cfg.stream_port is not None and (
            tls is not None or authenticated_node is None
        )
        """Framed streams on: a caller's own ``authenticated_node`` judges gRPC contexts only,
        so with one (and no TLS) every link stays on gRPC, where it applies."""
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
        self._stream_server: asyncio.Server | None = None
        self._stream_port = 0
        """The framed-stream listener's port; 0 while there is none."""
        self._stream_handlers: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        """Each inbound framed stream's task, and its connection (what ``stop`` closes)."""
        self._heard_at: dict[int, float] = {}
        """When a batch last came from each node (loop time), on any of its links to us: a
        sign of life that the framed links' watch counts like a pong."""
        self._client_ssl = None if tls is None else client_ssl_context(tls)
        self._server_ssl = None if tls is None else server_ssl_context(tls, clients=False)
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

    def _loop_time(self) -> float:
        return asyncio.get_running_loop().time()

    # -- Transport protocol -------------------------------------------------------------------

    @property
    def node_id(self) -> int:
        return self._node_id

    @property
    def address(self) -> str:
        """The address peers should use: the listen address with the bound port filled in."""
        return self._address

    @property
    def stream_port(self) -> int:
        """The framed-stream listener's port (on the listen address's host); 0: none."""
        return self._stream_port

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
        if self._framed:
            # before gRPC serves: every RaftAck names the port
            assert self._cfg.stream_port is not None
            sock = frames.listening_socket(
                frames.split_host(self._listen_address), self._cfg.stream_port
            )
            self._stream_port = sock.getsockname()[1]
            self._stream_server = await asyncio.start_server(
                self._serve_stream,
                sock=sock,
                ssl=self._server_ssl,
                ssl_handshake_timeout=self._cfg.connect_timeout if self._server_ssl else None,
            )
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
        if self._stream_server is not None:
            self._stream_server.close()
            # Closing a connection ends its task (its read fails); a cancel would be logged by
            # asyncio's stream callback as an error.
            for writer in self._stream_handlers.values():
                writer.transport.abort()
            handlers = list(self._stream_handlers)
            if handlers:
                _, stuck = await asyncio.wait(handlers, timeout=1.0)
                for task in stuck:
                    task.cancel()
                await asyncio.gather(*handlers, return_exceptions=True)
            self._stream_server = None
            self._stream_port = 0
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
        self._heard_at.pop(node_id, None)
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
            link=p.link if p.connected else "",
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
        heard_from = sender if peer is None else peer
        if heard_from in self._peers and self._loop is not None:
            self._heard_at[heard_from] = self._loop.time()
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

    def _ack(self) -> pb.RaftAck:
        """What this node answers a new inbound stream (gRPC or framed) with: who it is, what
        its runtime reads, where its framed streams listen."""
        return pb.RaftAck(
            node_id=self._node_id, features=sorted(RUNTIME_FEATURES), stream_port=self._stream_port
        )

    async def _serve_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """One inbound framed stream (:mod:`keelfs.transport.frames`): greet, then deliver its
        batches and answer its pings until it ends. Anything off-protocol ends the connection."""
        if self._stopped:  # a TLS handshake that ended after stop()
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._stream_handlers[task] = writer
        cfg = self._cfg
        limit = cfg.max_grpc_message_bytes
        where = writer.get_extra_info("peername")
        try:
            frames.set_keepalive(writer)
            peer: int | None = None
            if self._stream_node_of_der is not None:
                ssl_object = writer.get_extra_info("ssl_object")
                der = None if ssl_object is None else ssl_object.getpeercert(binary_form=True)
                peer = self._stream_node_of_der(der)
                if peer is None:
                    # as on the gRPC port: a chunk server's certificate names no Raft node
                    raise frames.FrameError("the Raft port accepts metadata nodes only")
            async with asyncio.timeout(cfg.connect_timeout):
                if await reader.readexactly(len(frames.MAGIC)) != frames.MAGIC:
                    raise frames.FrameError("not a keelfs framed stream")
                kind, payload = await frames.read_frame(reader, frames.MAX_HELLO_BYTES)
            if kind is not frames.Kind.HELLO:
                raise frames.FrameError(f"{kind.name} before HELLO")
            pb.RaftBatch.FromString(payload)  # well-formed; who it names is checked per message
            writer.write(frames.frame(frames.Kind.ACK, self._ack().SerializeToString()))
            while True:
                kind, payload = await frames.read_frame(reader, limit)
                if kind is frames.Kind.BATCH:
                    self._deliver_batch(pb.RaftBatch.FromString(payload), peer)
                elif kind is frames.Kind.PING:
                    if writer.transport.get_write_buffer_size() > frames.MAX_UNREAD_PONGS_BYTES:
                        raise frames.FrameError("pings without reading the answers")
                    writer.write(frames.PONG_FRAME)
                else:
                    raise frames.FrameError(f"an unexpected {kind.name}")
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass  # the dialler went away; it dials again if it still wants to
        except (frames.FrameError, ProtobufDecodeError, TimeoutError) as exc:
            self._stats.rejected += 1
            log.warning(
                "node %d: framed stream from %s refused: %s", self._node_id, where, _describe(exc)
            )
        finally:
            self._stream_handlers.pop(task, None)
            writer.transport.abort()

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
                # not asyncio.wait_for: on 3.11 it can swallow a cancel that comes as the read
                # completes, and the sender then runs on after stop()
                async with asyncio.timeout(self._cfg.connect_timeout):
                    ack = await call.read()
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
            if ack.stream_port and self._framed and self._loop_time() >= peer.stream_retry_at:
                stream = await self._dial_stream(peer, ack.stream_port)
                if stream is not None:
                    call.cancel()
                    await self._run_framed(peer, *stream)
                    return True
            self._link_up(peer, ack, "grpc")
            reader = asyncio.ensure_future(self._drain_acks(call))
            try:
                await self._pump(peer, call.write, reader)
            finally:
                reader.cancel()
                if reader.done() and not reader.cancelled():
                    reader.exception()  # already reported by _pump or moot; mark it retrieved
            return True
        finally:
            peer.connected = False
            call.cancel()

    def _link_up(self, peer: _Peer, ack: pb.RaftAck, link: str) -> None:
        if peer.failures:
            log.info("node %d: link to node %d is up again", self._node_id, peer.node_id)
        peer.features = frozenset(ack.features)
        peer.link = link
        peer.connected = True
        peer.failures = 0
        peer.last_error = None
        self._stats.connects += 1

    async def _dial_stream(
        self, peer: _Peer, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, pb.RaftAck] | None:
        """Open a framed stream to ``peer`` (its gRPC host, ``port``) and greet; None when that
        fails, and the link stays on gRPC (see :mod:`keelfs.transport.frames`)."""
        host = frames.split_host(peer.address)
        tls = self._tls
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self._cfg.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    ssl=self._client_ssl,
                    server_hostname=None if tls is None else (tls.server_name or host),
                )
                hello = pb.RaftBatch(from_node=self._node_id, from_address=self.address)
                greeting = frames.frame(frames.Kind.HELLO, hello.SerializeToString())
                writer.write(frames.MAGIC + greeting)
                kind, payload = await frames.read_frame(reader, self._cfg.max_grpc_message_bytes)
            if kind is not frames.Kind.ACK:
                raise frames.FrameError(f"{kind.name} instead of ACK")
            ack = pb.RaftAck.FromString(payload)
            if ack.node_id != peer.node_id:
                raise frames.FrameError(f"port {port} is node {ack.node_id}")
        except (
            OSError,
            TimeoutError,
            asyncio.IncompleteReadError,
            frames.FrameError,
            ProtobufDecodeError,
        ) as exc:
            if writer is not None:
                writer.transport.abort()
            level = logging.DEBUG if peer.stream_retry_at else logging.WARNING
            # a port that drops rather than refuses would hold every reconnect for the
            # connect timeout (and a new leader's first votes with it): let links go
            # straight to gRPC for a while
            peer.stream_retry_at = self._loop_time() + _STREAM_RETRY_AFTER_S
            log.log(
                level,
                "node %d: framed stream to node %d at %s:%d failed (%s); the link stays on "
                "gRPC (framed tried again in %.0f s)",
                self._node_id,
                peer.node_id,
                host,
                port,
                _describe(exc),
                _STREAM_RETRY_AFTER_S,
            )
            return None
        except BaseException:  # cancelled mid-dial: no socket left behind
            if writer is not None:
                writer.transport.abort()
            raise
        peer.stream_retry_at = 0.0
        frames.set_keepalive(writer)
        return reader, writer, ack

    async def _run_framed(
        self,
        peer: _Peer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ack: pb.RaftAck,
    ) -> None:
        """Pump batches into an open framed stream until it breaks or the peer falls silent."""
        cfg = self._cfg
        silence = (cfg.keepalive_time_ms + cfg.keepalive_timeout_ms) / 1000
        loop = asyncio.get_running_loop()

        async def watch() -> None:
            """Ends when the stream does: closed, off-protocol, or the peer silent for
            ``silence`` — no pong, and no batch on its own link to us either (pongs are
            answered by the peer's event loop, which a burst of work can hold up; its Raft
            messages arriving say as much as a pong that it is alive)."""
            heard = loop.time()
            while True:
                deadline = heard + silence
                try:
                    # a PONG is a header alone: a timeout here never splits a frame
                    async with asyncio.timeout_at(deadline):
                        kind, _ = await frames.read_frame(reader, 0)
                except TimeoutError:
                    now = loop.time()
                    heard = max(heard, self._heard_at.get(peer.node_id, heard))
                    if now - deadline > cfg.keepalive_time_ms / 1000:
                        # This loop itself stalled (the timeout fired that late): no ping
                        # went out meanwhile, and what came in is unread. Not the peer's
                        # silence: give it a full window from now.
                        heard = now
                    elif now - heard >= silence:
                        raise
                    continue
                if kind is not frames.Kind.PONG:
                    raise frames.FrameError(f"an unexpected {kind.name}")
                heard = loop.time()

        async def ping() -> None:
            while not writer.is_closing():
                await asyncio.sleep(cfg.keepalive_time_ms / 1000)
                writer.write(frames.PING_FRAME)

        async def write(batch: pb.RaftBatch) -> None:
            writer.write(frames.frame(frames.Kind.BATCH, batch.SerializeToString()))
            await writer.drain()

        self._link_up(peer, ack, "stream")
        watcher = asyncio.ensure_future(watch())
        # A write waiting for a peer that stopped reading (frozen, or its host gone with data
        # unacknowledged) waits in drain(): the watch ending must end it too.
        watcher.add_done_callback(lambda _: writer.transport.abort())
        pinger = asyncio.ensure_future(ping())
        try:
            await self._pump(peer, write, watcher)
        finally:
            peer.connected = False
            for task in (watcher, pinger):
                task.cancel()
                if task.done() and not task.cancelled():
                    task.exception()  # reported by _pump or moot
            writer.transport.abort()

    @staticmethod
    async def _drain_acks(call: Any) -> None:
        """Read until the stream ends: that is how a broken or closed stream is noticed."""
        while await call.read() is not grpc.aio.EOF:
            pass

    async def _pump(
        self,
        peer: _Peer,
        write: Callable[[pb.RaftBatch], Awaitable[Any]],
        reader: asyncio.Future[None],
    ) -> None:
        """Write batches of the peer's queue with ``write`` until ``reader`` (what watches the
        link) ends or a write fails."""
        reader.add_done_callback(lambda _: peer.wake.set())
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
                await write(batch)
            except Exception as exc:
                cause: BaseException = exc
                if reader.done() and not reader.cancelled():
                    # the watch ended the link (and so the write): its reason, not the echo
                    cause = reader.exception() or exc
                stats.dropped += n
                peer.dropped += n
                self._link_failed(peer, f"write to {peer.address}: {_describe(cause)}")
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
