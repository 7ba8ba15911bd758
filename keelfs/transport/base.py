"""The contract between the Raft runtime and whatever moves its messages between processes.

Raft is designed for a lossy, reordering network: every message is either retried by the
protocol (heartbeats, probes, vote timeouts, snapshot chunks re-requested by offset) or made
obsolete by a newer one. The transport therefore promises *no* delivery, and in exchange never
blocks and never raises on the send path: a runtime driving a thousand groups from one asyncio
loop must not stall because one peer is down or slow. What it gives instead is visibility —
:meth:`Transport.unreachable` (which the runtime can feed to the core so that a leader stops
pipelining to a dead follower) and :class:`TransportStats` counters for metrics.

Routing is by ``msg.to``: the runtime maps each node id to an address with
:meth:`Transport.set_peer_address` (typically from the ``ConfChange.context`` of the membership
entry that added the node) and hands messages to :meth:`Transport.send` as the core emits them.
Inbound messages arrive through the ``on_messages`` callback given at construction, as batches,
so the runtime can step many groups before persisting and replying once (the multi-raft "ready"
loop).

Everything runs on one asyncio event loop: ``send`` and the peer-management methods must be
called from the loop that ran ``start()``, and ``on_messages`` is called on that loop, never from
inside ``send`` (a message to self is delivered on a later loop iteration, so the callback never
re-enters the caller).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from keelfs.raft.messages import Message

OnMessages = Callable[[list[tuple[str, Message]]], None]
"""Receive callback: a batch of ``(group_id, message)`` pairs, in arrival order."""


RUNTIME_FEATURES: frozenset[str] = frozenset({"packs"})
"""What this release's runtime understands beyond the first release's, told to every peer
when a link comes up (``RaftAck.features``): a leader writes an entry format only once every
member of the group has said it reads it, so a cluster in the middle of a rolling upgrade
keeps writing what its older members apply. ``"packs"``: many commands in one entry
(``keelfs.meta.packs``)."""


@dataclass(slots=True)
class TransportStats:
    """Monotonic counters since construction; :meth:`Transport.stats` returns a copy.

    Messages are counted once each: ``sent`` when handed to a live link (or delivered to self),
    ``dropped`` when given up on the sending side for any reason (unknown peer, queue overflow,
    oversized, link failed mid-write, transport stopped, fault injection), ``received`` when
    passed to ``on_messages``, ``rejected`` when an arriving message was discarded instead
    (addressed to another node, undecodable, or forged: see ``forged``) or an arriving
    connection was refused for breaking the protocol (a framed stream's).
    """

    sent: int = 0
    dropped: int = 0
    received: int = 0
    rejected: int = 0
    batches_sent: int = 0
    batches_received: int = 0
    bytes_sent: int = 0
    """Approximate (:func:`keelfs.raft.messages.message_size`), as for the queue limits."""
    connects: int = 0
    """Links (re)established to peers."""
    connect_failures: int = 0
    """Attempts to establish a link that failed, and established links that broke."""
    forged: int = 0
    """Of the ``rejected``: messages whose ``frm`` was not the node that the stream they came
    on authenticated as (a peer speaking for another node)."""

    def copy(self) -> TransportStats:
        return TransportStats(
            sent=self.sent,
            dropped=self.dropped,
            received=self.received,
            rejected=self.rejected,
            batches_sent=self.batches_sent,
            batches_received=self.batches_received,
            bytes_sent=self.bytes_sent,
            connects=self.connects,
            connect_failures=self.connect_failures,
            forged=self.forged,
        )


@runtime_checkable
class Transport(Protocol):
    """What the Raft runtime needs from a transport; see the module docstring for the rules."""

    @property
    def node_id(self) -> int:
        """This node's id; messages with ``to == node_id`` are delivered locally."""
        ...

    async def start(self) -> None:
        """Begin listening and connecting to the known peers. Call once, on the runtime's loop."""
        ...

    async def stop(self) -> None:
        """Close every link and stop delivering. Pending messages are dropped. Idempotent."""
        ...

    def send(self, group_id: str, msg: Message) -> None:
        """Queue ``msg`` for ``msg.to``. Never blocks, never raises for an unreachable peer."""
        ...

    def set_peer_address(self, node_id: int, address: str) -> None:
        """Add a peer or change its address (the link is re-established, the queue kept)."""
        ...

    def remove_peer(self, node_id: int) -> None:
        """Forget a peer: close its link and drop what was queued for it."""
        ...

    def peer_features(self, node_id: int) -> frozenset[str]:
        """What ``node_id``'s runtime said it understands (:data:`RUNTIME_FEATURES` of its
        release) when its link last came up; nothing while no link ever did."""
        ...

    def unreachable(self, node_id: int) -> bool:
        """True while messages to ``node_id`` cannot currently be delivered.

        That is: the peer is unknown, or its link is not (yet, or any longer) established.
        Never true for this node itself.
        """
        ...

    def stats(self) -> TransportStats:
        """A snapshot of the counters."""
        ...

    @property
    def max_message_bytes(self) -> int:
        """The largest message (by :func:`keelfs.raft.messages.message_size`) this transport
        is sure to carry, of any kind. The runtime keeps snapshot chunks and appends below it:
        a larger one would be dropped every time it is sent, and never arrive."""
        ...
