"""An in-process network for tests: many :class:`LocalTransport` endpoints on one event loop.

It behaves like the real transport as the runtime sees it — same :class:`Transport` protocol,
peers must be given an address before they can be sent to, delivery is asynchronous and batched
per loop iteration, ``send`` never raises — and adds the faults Raft must survive:

- ``drop_rate``: each message is lost independently with this probability;
- ``delay`` + ``jitter``: each message arrives ``delay + uniform(0, jitter)`` seconds later on
  the loop's clock, so jitter also reorders messages, as real networks do;
- ``partition({1}, {2, 3})``: nodes in different sets cannot reach each other (both directions);
  nodes named in no set are unaffected, which also lets a test build a "bridge" node;
- ``block(frm, to)`` / ``unblock(frm, to)``: one direction only (asymmetric partitions);
- ``heal()``: lifts every partition and block (drop rate and delay are left as set).

All randomness comes from the ``random.Random`` given to the network, so a seeded test replays
the same losses and delays. Faults are decided when a message is sent: a message already in
flight when a partition starts still arrives, like a packet already on the wire. A message to
self is never dropped, delayed or blocked (it never touches a network).
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Iterable

from keelfs.raft.messages import Message
from keelfs.transport.base import RUNTIME_FEATURES, OnMessages, TransportStats

__all__ = ["LocalNetwork", "LocalTransport"]


class LocalNetwork:
    """The hub: knows every endpoint and the current faults."""

    def __init__(
        self,
        rng: random.Random | None = None,
        *,
        drop_rate: float = 0.0,
        delay: float = 0.0,
        jitter: float = 0.0,
    ) -> None:
        self.rng = rng or random.Random(0)
        self.drop_rate = drop_rate
        self.delay = delay
        self.jitter = jitter
        self._endpoints: dict[int, LocalTransport] = {}
        self._blocked: set[tuple[int, int]] = set()
        self.stats = TransportStats()
        """Network-wide totals. ``dropped`` counts what the network lost: fault injection, and
        messages in flight to an endpoint that stopped before they arrived."""

    # -- membership -----------------------------------------------------------------------------

    def add(self, node_id: int, on_messages: OnMessages) -> LocalTransport:
        """Create the endpoint for ``node_id`` (its address is ``local://<node_id>``)."""
        if node_id in self._endpoints:
            raise ValueError(f"node {node_id} already has an endpoint")
        t = LocalTransport(self, node_id, on_messages)
        self._endpoints[node_id] = t
        return t

    def endpoint(self, node_id: int) -> LocalTransport:
        return self._endpoints[node_id]

    def connect_all(self) -> None:
        """Give every endpoint the address of every other one (a full mesh of known peers)."""
        for t in self._endpoints.values():
            for other in self._endpoints.values():
                if other is not t:
                    t.set_peer_address(other.node_id, other.address)

    def _detach(self, node_id: int) -> None:
        self._endpoints.pop(node_id, None)

    # -- faults ---------------------------------------------------------------------------------

    def set_faults(
        self,
        *,
        drop_rate: float | None = None,
        delay: float | None = None,
        jitter: float | None = None,
    ) -> None:
        if drop_rate is not None:
            if not 0.0 <= drop_rate <= 1.0:
                raise ValueError("drop_rate is a probability")
            self.drop_rate = drop_rate
        if delay is not None:
            self.delay = delay
        if jitter is not None:
            self.jitter = jitter

    def partition(self, *groups: Iterable[int]) -> None:
        """Cut every link between nodes of different ``groups``, in both directions.

        Adds to any partition or block already in force; :meth:`heal` lifts them all.
        """
        sets = [frozenset(g) for g in groups]
        for i, a in enumerate(sets):
            for b in sets[i + 1 :]:
                if a & b:
                    raise ValueError(f"node(s) {sorted(a & b)} in two sides of a partition")
                for x in a:
                    for y in b:
                        self._blocked.add((x, y))
                        self._blocked.add((y, x))

    def isolate(self, node_id: int) -> None:
        """Cut ``node_id`` off from every other endpoint, both directions."""
        others = set(self._endpoints) - {node_id}
        self.partition({node_id}, others)

    def block(self, frm: int, to: int) -> None:
        """Lose every message from ``frm`` to ``to`` (the other direction is untouched)."""
        self._blocked.add((frm, to))

    def unblock(self, frm: int, to: int) -> None:
        self._blocked.discard((frm, to))

    def heal(self) -> None:
        """Lift every partition and block. Drop rate and delay stay as set."""
        self._blocked.clear()

    def blocked(self, frm: int, to: int) -> bool:
        return (frm, to) in self._blocked

    # -- delivery -------------------------------------------------------------------------------

    def _route(self, frm: int, group_id: str, msg: Message) -> bool:
        """Send one message on its way; False if the network lost it."""
        to = msg.to
        dest = self._endpoints.get(to)
        if dest is None or not dest.running:
            return False
        if frm != to:
            if (frm, to) in self._blocked or (
                self.drop_rate and self.rng.random() < self.drop_rate
            ):
                self.stats.dropped += 1
                return False
            delay = self.delay + (self.rng.uniform(0.0, self.jitter) if self.jitter else 0.0)
            if delay > 0:
                loop = asyncio.get_running_loop()
                loop.call_at(loop.time() + delay, dest._arrive, group_id, msg)
                self.stats.sent += 1
                return True
        dest._arrive(group_id, msg)
        self.stats.sent += 1
        return True


class LocalTransport:
    """One node's endpoint on a :class:`LocalNetwork`; implements ``Transport``."""

    def __init__(self, network: LocalNetwork, node_id: int, on_messages: OnMessages) -> None:
        self._network = network
        self._node_id = node_id
        self._on_messages = on_messages
        self._peers: dict[int, str] = {}
        self._inbox: list[tuple[str, Message]] = []
        self._flush_scheduled = False
        self._stats = TransportStats()
        self.running = False
        self._stopped = False

    @property
    def node_id(self) -> int:
        return self._node_id

    @property
    def address(self) -> str:
        return f"local://{self._node_id}"

    @property
    def max_message_bytes(self) -> int:
        return sys.maxsize  # nothing is serialized: no limit

    async def start(self) -> None:
        if self.running or self._stopped:
            raise RuntimeError("LocalTransport can be started once")
        self.running = True

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.running = False
        self._network.stats.dropped += len(self._inbox)
        self._inbox.clear()
        self._network._detach(self._node_id)

    def send(self, group_id: str, msg: Message) -> None:
        to = msg.to
        if not self.running or (to != self._node_id and to not in self._peers):
            self._stats.dropped += 1
            return
        if self._network._route(self._node_id, group_id, msg):
            self._stats.sent += 1
        else:
            self._stats.dropped += 1

    def set_peer_address(self, node_id: int, address: str) -> None:
        if node_id != self._node_id:
            self._peers[node_id] = address

    def remove_peer(self, node_id: int) -> None:
        self._peers.pop(node_id, None)

    def peer_features(self, node_id: int) -> frozenset[str]:
        return RUNTIME_FEATURES  # one process, one release

    def unreachable(self, node_id: int) -> bool:
        if node_id == self._node_id:
            return False
        if node_id not in self._peers or self._network.blocked(self._node_id, node_id):
            return True
        try:
            return not self._network.endpoint(node_id).running
        except KeyError:
            return True

    def stats(self) -> TransportStats:
        return self._stats.copy()

    def _arrive(self, group_id: str, msg: Message) -> None:
        """A message reached this node: collect it, deliver the whole inbox on the next tick."""
        if not self.running:  # stopped while the message was in flight
            self._network.stats.dropped += 1
            return
        if msg.frm != self._node_id and msg.frm not in self._peers:
            self._peers[msg.frm] = f"local://{msg.frm}"  # as GrpcTransport learns from a batch
        self._inbox.append((group_id, msg))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._inbox = self._inbox, []
        if not batch or not self.running:
            return
        self._stats.batches_received += 1
        self._stats.received += len(batch)
        # Exceptions go to the loop's exception handler, where a test harness can fail on them.
        self._on_messages(batch)
