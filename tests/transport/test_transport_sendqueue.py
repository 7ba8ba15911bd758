"""The per-peer send queue: bounds, drop policy per lane, batch composition."""

from __future__ import annotations

import pytest

from keelfs.raft.messages import Message, MessageType
from keelfs.transport.sendqueue import PeerQueue, QueueLimits


def app(term: int) -> Message:
    return Message(MessageType.APP, to=2, frm=1, term=term)


def chunk(offset: int) -> Message:
    return Message(MessageType.SNAP, to=2, frm=1, snap_offset=offset)


def terms(items: list[tuple[str, Message, int]]) -> list[int]:
    return [m.term for _, m, _ in items]


def test_control_lane_drops_oldest_by_count() -> None:
    q = PeerQueue(QueueLimits(max_messages=3))
    dropped = [q.push("g", app(t), 10) for t in range(1, 6)]
    assert dropped == [0, 0, 0, 1, 1]
    assert terms(q.take(1 << 20)) == [3, 4, 5]  # the newest survive
    assert not q and q.bytes == 0


def test_control_lane_drops_oldest_by_bytes() -> None:
    q = PeerQueue(QueueLimits(max_bytes=100))
    assert q.push("g", app(1), 40) == 0
    assert q.push("g", app(2), 40) == 0
    assert q.push("g", app(3), 90) == 2  # must evict both older ones to fit
    assert terms(q.take(1 << 20)) == [3]


def test_message_larger_than_lane_is_refused() -> None:
    q = PeerQueue(QueueLimits(max_bytes=100, max_snapshot_bytes=100))
    q.push("g", app(1), 10)
    assert q.push("g", app(2), 101) == 1
    assert q.push("g", chunk(0), 101) == 1
    assert terms(q.take(1 << 20)) == [1]


def test_snapshot_lane_drops_newest() -> None:
    q = PeerQueue(QueueLimits(max_snapshot_messages=2, max_snapshot_bytes=1000))
    assert [q.push("g", chunk(i), 100) for i in range(4)] == [0, 0, 1, 1]
    assert [m.snap_offset for _, m, _ in q.take(1 << 20)] == [0, 1]  # a contiguous prefix
    q2 = PeerQueue(QueueLimits(max_snapshot_bytes=250))
    assert [q2.push("g", chunk(i), 100) for i in range(3)] == [0, 0, 1]


def test_snapshot_chunks_do_not_evict_control_messages() -> None:
    q = PeerQueue(QueueLimits(max_messages=2, max_snapshot_messages=2))
    q.push("g", app(1), 10)
    q.push("g", app(2), 10)
    q.push("g", chunk(0), 10)
    q.push("g", chunk(1), 10)
    assert len(q) == 4


def test_take_puts_control_first_and_respects_budget() -> None:
    q = PeerQueue(QueueLimits())
    q.push("g", chunk(0), 50)
    for t in range(1, 5):
        q.push("g", app(t), 30)
    first = q.take(100)
    # 3 control messages (90 bytes), then one chunk anyway so snapshots cannot starve
    assert [m.type for _, m, _ in first] == [MessageType.APP] * 3 + [MessageType.SNAP]
    assert terms(q.take(100)) == [4]
    assert not q


def test_take_always_returns_one_oversized_message() -> None:
    q = PeerQueue(QueueLimits())
    q.push("g", app(1), 500)
    q.push("g", app(2), 10)
    q.push("g", chunk(0), 10)
    assert terms(q.take(100)) == [1]  # alone: nothing else may ride on an oversized batch
    assert len(q.take(100)) == 2


def test_clear_counts() -> None:
    q = PeerQueue(QueueLimits())
    q.push("g", app(1), 10)
    q.push("g", chunk(0), 10)
    assert q.clear() == 2
    assert len(q) == 0 and q.bytes == 0


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        QueueLimits(max_messages=0)
    with pytest.raises(ValueError):
        QueueLimits(max_snapshot_bytes=0)
