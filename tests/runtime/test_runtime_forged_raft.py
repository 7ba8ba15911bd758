"""Forged Raft traffic against running nodes (issue [9]): three RaftHosts over the real gRPC
transport on loopback, and an attacker that opens its own stream to a node's Raft port.

The reported attack: one batch holding a HEARTBEAT from a made-up node with term 2**64-1 was
adopted and persisted; the group could then never elect again and the node could not restart
(nothing can store or campaign past that term). And a forged APPEND at the current term in the
name of a member that is not the leader committed an entry on a follower that the real leader
never replaced. Both must leave the victim's term, log and commit as they were.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from keelfs.raft.messages import Entry, Message, MessageType
from keelfs.runtime import HostConfig, RaftGroup, RaftHost, kv
from keelfs.runtime.kv import KVStateMachine
from keelfs.transport.grpc_transport import GrpcTransport, GrpcTransportConfig
from keelfs.transport.pb import raft_pb2 as pb
from keelfs.transport.pb import raft_pb2_grpc as _pb_grpc
from keelfs.transport.sendqueue import QueueLimits
from tests.transport.transport_helpers import free_port

pytestmark = pytest.mark.timeout(60)

pb_grpc: Any = _pb_grpc  # generated and untyped

FAST = GrpcTransportConfig(backoff_initial=0.02, backoff_max=0.2, connect_timeout=0.5)
CONFIG = HostConfig(quiesce_after_ticks=0)


def _host(node_id: int, tmp: Path, address: str) -> RaftHost:
    def transport(cb: Any) -> GrpcTransport:
        return GrpcTransport(node_id, address, cb, config=FAST)

    return RaftHost(node_id, tmp / f"n{node_id}", transport, CONFIG)


@asynccontextmanager
async def grpc_cluster(tmp: Path) -> AsyncIterator[tuple[dict[int, RaftHost], dict[int, str]]]:
    peers = {i: f"127.0.0.1:{free_port()}" for i in (1, 2, 3)}
    hosts: dict[int, RaftHost] = {}
    try:
        for i, address in peers.items():
            hosts[i] = _host(i, tmp, address)
            await hosts[i].start()
            hosts[i].open_group("g", KVStateMachine(), peers)
        yield hosts, peers
    finally:
        for h in hosts.values():
            await h.stop()


async def until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate() and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert predicate(), f"{what} not reached within {timeout}s"


def leader_of(hosts: dict[int, RaftHost]) -> RaftGroup | None:
    return next((h.groups["g"] for h in hosts.values() if h.groups["g"].is_leader), None)


async def settled_leader(hosts: dict[int, RaftHost]) -> tuple[RaftGroup, RaftGroup, RaftGroup]:
    """The leader and its two followers, once both followers know it."""
    await until(lambda: leader_of(hosts) is not None, "a leader")
    leader = leader_of(hosts)
    assert leader is not None
    await leader.propose(kv.put("a", "1"), timeout=10)
    lead = leader.host.node_id
    a, b = (h.groups["g"] for h in hosts.values() if h.node_id != lead)
    await until(lambda: a.node.raft.lead == b.node.raft.lead == lead, "followers know the leader")
    applied = leader.applied_index
    await until(lambda: a.applied_index() == b.applied_index() == applied(), "caught up")
    return leader, a, b


async def send_forged(stack: AsyncExitStack, address: str, *msgs: Message) -> None:
    """What an attacker does: open a stream to the node's Raft port and write one batch."""
    channel = grpc.aio.insecure_channel(address)
    stack.push_async_callback(channel.close)
    call = pb_grpc.RaftTransportStub(channel).Stream()
    stack.callback(call.cancel)
    await asyncio.wait_for(call.read(), 10)  # the node's hello
    batch = pb.RaftBatch(from_node=99, from_address="127.0.0.1:1")
    for m in msgs:
        env = batch.envelopes.add(group_id="g")
        raw_fill(env.msg, m)
    await asyncio.wait_for(call.write(batch), 10)


def raw_fill(p: pb.Message, m: Message) -> None:
    """Like the codec's encoder, which an attacker need not use (it has no range checks)."""
    p.type = int(m.type)  # type: ignore[assignment]
    p.to, p.frm, p.term, p.log_term, p.index, p.commit = (
        m.to,
        m.frm,
        m.term,
        m.log_term,
        m.index,
        m.commit,
    )
    for e in m.entries:
        p.entries.add(term=e.term, index=e.index, data=e.data)


def dropped(victim: RaftGroup) -> int:
    """Forged messages the victim's node dropped, in the transport or in the core."""
    transport = victim.host.transport
    return transport.stats().rejected + victim.node.raft.ignored


def test_forged_heartbeat_with_term_2_64_minus_1_changes_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncExitStack() as stack:
            hosts, peers = await stack.enter_async_context(grpc_cluster(tmp_path))
            leader, victim, _ = await settled_leader(hosts)
            me = victim.host.node_id
            hs = victim.node.raft.hard_state()
            before = dropped(victim)
            forged = Message(MessageType.HEARTBEAT, me, 99, 2**64 - 1, commit=hs.commit)
            await send_forged(stack, peers[me], forged)
            await until(
                lambda: dropped(victim) > before or victim.node.raft.term != hs.term,
                "the forged heartbeat handled",
            )
            assert victim.node.raft.hard_state() == hs
            assert victim.host.failed is None
            # The group goes on, and the victim restarts from what it persisted.
            await leader.propose(kv.put("b", "2"), timeout=10)
            await until(lambda: victim.sm.get("b") == "2", "victim applies b")  # type: ignore[attr-defined]
            await victim.host.stop()
            restarted = _host(me, tmp_path, peers[me])
            hosts[me] = restarted
            await restarted.start()
            group = restarted.groups.get("g") or restarted.open_group("g", KVStateMachine())
            assert group.node.raft.term < 2**63
            await leader.propose(kv.put("c", "3"), timeout=10)
            await until(lambda: group.sm.get("c") == "3", "restarted victim applies c")  # type: ignore[attr-defined]
            assert restarted.failed is None

    asyncio.run(main())


def test_forged_append_from_a_member_that_is_not_the_leader_changes_nothing(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with AsyncExitStack() as stack:
            hosts, peers = await stack.enter_async_context(grpc_cluster(tmp_path))
            leader, victim, other = await settled_leader(hosts)
            me, r = victim.host.node_id, victim.node.raft
            term, last, commit = r.term, r.log.last_index(), r.log.committed
            before = dropped(victim)
            forged = Message(
                MessageType.APP,
                me,
                other.host.node_id,  # a member, but not the leader of this term
                term,
                log_term=r.log.last_term(),
                index=last,
                entries=(Entry(term, last + 1, kv.put("evil", "1")),),
                commit=last + 1,
            )
            await send_forged(stack, peers[me], forged)
            await until(
                lambda: dropped(victim) > before or r.log.last_index() != last,
                "the forged append handled",
            )
            assert (r.term, r.log.last_index(), r.log.committed) == (term, last, commit)
            # The real leader's next entry lands at that index, and everyone agrees on it.
            await leader.propose(kv.put("b", "2"), timeout=10)
            await until(lambda: victim.sm.get("b") == "2", "victim applies b")  # type: ignore[attr-defined]
            assert victim.sm.get("evil") is None  # type: ignore[attr-defined]
            assert victim.storage.term(last + 1) == leader.storage.term(last + 1)

    asyncio.run(main())


def test_host_refuses_snapshot_chunks_the_transport_cannot_carry(tmp_path: Path) -> None:
    """A snapshot chunk above the transport's largest message would be dropped at every try
    and a follower needing the snapshot would never catch up: refused when the host is built."""
    small = GrpcTransportConfig(
        queue=QueueLimits(max_bytes=1 << 20, max_snapshot_bytes=1 << 20),
        max_batch_bytes=1 << 20,
        max_grpc_message_bytes=4 << 20,
    )

    def transport(cb: Any) -> GrpcTransport:
        return GrpcTransport(1, "127.0.0.1:0", cb, config=small)

    with pytest.raises(ValueError, match="snapshot_chunk_size=2097152"):
        RaftHost(1, tmp_path / "n1", transport, HostConfig(snapshot_chunk_size=2 << 20))
    RaftHost(1, tmp_path / "n1", transport, HostConfig(snapshot_chunk_size=1 << 19)).engine.close()
