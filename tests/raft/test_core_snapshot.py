"""InstallSnapshot in chunks: Raft paper §7 (Figure 13: offset, data, done) and dissertation
§5.3 / §5.4.1 (sending snapshots in chunks; leaders keep working while one is sent)."""

from __future__ import annotations

from core_helpers import MT, Network, conf, log_terms, of_type

from keelfs.raft.messages import Message, SnapshotMeta, message_size
from keelfs.raft.progress import ProgressState
from keelfs.raft.storage import MemoryStorage

CHUNK = 100
IMAGE = bytes(range(256)) * 4 + b"tail"  # 1028 bytes: 11 chunks, the last one short


class RecordingStorage(MemoryStorage):
    """MemoryStorage that records every snapshot chunk the core reads."""

    def __init__(self, c: object) -> None:
        super().__init__(c)  # type: ignore[arg-type]
        self.chunk_reads: list[tuple[int, int]] = []

    def snapshot_chunk(self, meta: SnapshotMeta, offset: int, max_bytes: int) -> tuple[bytes, bool]:
        self.chunk_reads.append((offset, max_bytes))
        return super().snapshot_chunk(meta, offset, max_bytes)


def _lagging_follower(window: int, image: bytes = IMAGE) -> Network:
    """Leader 1; node 3 missed five entries that the leader then compacted into ``image``.

    Returns with the leader's heartbeat to node 3 queued (nothing of the snapshot sent yet).
    """
    net = Network(
        storages={1: RecordingStorage(conf([1, 2, 3]))},
        snapshot_chunk_size=CHUNK,
        snapshot_window=window,
    )
    net.elect(1)
    net.isolate(3)
    for k in range(5):
        net.propose(1, b"v%d" % k)
    net.deliver()
    net.snapshot_and_compact(1, image)
    net.heal()
    net.tick([1], deliver=False)
    return net


def _snaps(msgs: list[Message]) -> list[Message]:
    return [m for m in msgs if m.type is MT.SNAP]


def _start_stream(net: Network) -> list[Message]:
    """Deliver until the leader has started streaming; return the chunks now in flight."""
    net.deliver(lambda m: m.type is not MT.SNAP)
    return net.pending(of_type(MT.SNAP, to=3))


def test_core_snapshot_streamed_in_bounded_chunks_within_window() -> None:
    """Figure 13 / dissertation §5.3: the snapshot is sent in chunks at increasing offsets, the
    last marked done; here no chunk exceeds ``snapshot_chunk_size`` and no more than
    ``snapshot_window`` chunks are unacknowledged at any time. The follower ends with the
    leader's image and log."""
    window = 3
    net = _lagging_follower(window)
    r1 = net.raft(1)
    first = _start_stream(net)
    assert r1.prs[3].state is ProgressState.SNAPSHOT
    assert [(m.snap_offset, len(m.snap_data)) for m in first] == [(0, 100), (100, 100), (200, 100)]
    while True:
        net.flush()
        if not net.queue:
            break
        net.step(net.queue.pop(0))
        pr = r1.prs[3]
        if pr.state is ProgressState.SNAPSHOT:
            assert pr.snap_sent - pr.snap_acked <= window * CHUNK
    snaps = _snaps(net.sent)
    assert all(0 < len(m.snap_data) <= CHUNK for m in snaps)
    assert all(message_size(m) <= 64 + CHUNK for m in snaps)
    assert [m.snap_done for m in snaps] == [False] * (len(snaps) - 1) + [True]
    assert b"".join(m.snap_data for m in snaps) == IMAGE  # nothing sent twice
    assert net.installed[3] == [IMAGE]
    assert net.storages[3].snapshot_data() == IMAGE
    assert log_terms(net.raft(3)) == log_terms(r1)
    assert net.raft(3).log.committed == r1.log.committed
    assert r1.prs[3].state is ProgressState.REPLICATE


def test_core_follower_ready_stages_chunks_then_installs_snapshot() -> None:
    """Figure 13 receiver rules: chunks are written at their offset, in order, and the snapshot
    is installed only once ``done``; the Ready that carries the snapshot carries (or follows)
    the last chunk, and never more than a window of data — neither side holds the whole image
    in memory (the leader reads one chunk at a time from its storage)."""
    window = 2
    net = _lagging_follower(window)
    net.deliver()
    readies = net.readies[3]
    with_chunks = [rd for rd in readies if rd.snapshot_chunks]
    installs = [k for k, rd in enumerate(readies) if rd.snapshot is not None]
    assert len(installs) == 1
    inst = readies[installs[0]]
    assert inst.snapshot_chunks and inst.snapshot_chunks[-1].done
    assert inst.snapshot == inst.snapshot_chunks[-1].meta
    assert all(not rd.snapshot_chunks for rd in readies[installs[0] + 1 :])
    chunks = [c for rd in with_chunks for c in rd.snapshot_chunks]
    offsets = [c.offset for c in chunks]
    assert offsets == sorted(offsets) and offsets[0] == 0
    assert b"".join(c.data for c in chunks) == IMAGE
    for rd in with_chunks:
        assert sum(len(c.data) for c in rd.snapshot_chunks) <= window * CHUNK
    assert net.raft(3).receiving is None
    reads = net.storages[1].chunk_reads  # type: ignore[attr-defined]
    assert reads and all(max_bytes == CHUNK for _, max_bytes in reads)


def test_core_lost_chunk_resent_from_acknowledged_offset() -> None:
    """Dissertation §5.3 / Figure 13: a follower accepts chunks only at the offset it expects.
    When a chunk is lost the follower's answer to the next one names the offset it wants, and
    the leader resumes from there — it does not start the transfer over."""
    net = _lagging_follower(window=2)
    first = _start_stream(net)
    assert [m.snap_offset for m in first] == [0, 100]
    lost = net.take(lambda m: m is first[1])
    assert len(lost) == 1
    net.deliver()
    offsets = [m.snap_offset for m in _snaps(net.sent)]
    assert offsets.count(0) == 1, offsets
    assert offsets.count(100) == 2, offsets
    rejected = [m for m in net.sent if m.type is MT.SNAP_RESP and m.reject]
    assert [m.snap_offset for m in rejected] == [100]
    assert net.installed[3] == [IMAGE]
    assert log_terms(net.raft(3)) == log_terms(net.raft(1))


def test_core_stalled_snapshot_resumed_by_heartbeats_from_acknowledged_offset() -> None:
    """When every chunk after the acknowledged offset is lost, no rejection comes back; a
    heartbeat round without progress makes the leader resend from the follower's acknowledged
    offset (not from zero)."""
    net = _lagging_follower(window=2)
    first = _start_stream(net)
    net.take(lambda m: m is first[1])  # chunk 100 lost
    net.step(net.take(lambda m: m is first[0])[0])  # chunk 0 arrives
    net.deliver(of_type(MT.SNAP_RESP))  # its ack makes the leader send chunk 200 ...
    assert [m.snap_offset for m in net.take(of_type(MT.SNAP))] == [200]  # ... which is lost too
    assert net.raft(1).prs[3].snap_acked == 100
    n_sent = len(net.sent)
    for _ in range(4):
        net.tick([1])
        if net.installed[3]:
            break
    resent = [m.snap_offset for m in _snaps(net.sent[n_sent:])]
    assert resent and resent[0] == 100 and 0 not in resent, resent
    assert net.installed[3] == [IMAGE]


def test_core_snapshot_replaced_mid_transfer_restarts_with_new_one() -> None:
    """Dissertation §5.4.1: the leader may take a new snapshot while it is sending one; the old
    image is gone, so the transfer restarts from offset 0 with the new snapshot, and the
    follower installs only the new one."""
    net = _lagging_follower(window=1)
    r1 = net.raft(1)
    _start_stream(net)
    old = r1.prs[3].snapshot
    assert old == net.storages[1].snapshot_meta()
    # chunks 0 and 100 go through and are acknowledged; chunk 200 stays in flight
    net.deliver(
        lambda m: (m.to == 3 or m.frm == 3) and not (m.type is MT.SNAP and m.snap_offset > 100)
    )
    assert r1.prs[3].snap_acked == 200 and r1.prs[3].snapshot == old
    # meanwhile the leader commits more (with node 2) and snapshots again
    for k in range(3):
        net.propose(1, b"w%d" % k)
    net.deliver(lambda m: m.to != 3 and m.frm != 3)
    new_image = b"N" * 450
    net.snapshot_and_compact(1, new_image)
    new = net.storages[1].snapshot_meta()
    assert new != old
    in_flight = net.pending(of_type(MT.SNAP, to=3))
    assert [(m.snapshot, m.snap_offset) for m in in_flight] == [(old, 200)]
    n_sent = len(net.sent)
    net.deliver()
    later = _snaps(net.sent[n_sent:])
    assert later and all(m.snapshot == new for m in later)
    assert later[0].snap_offset == 0
    assert b"".join(m.snap_data for m in later) == new_image
    assert net.installed[3] == [new_image]
    assert net.storages[3].snapshot_meta() == new
    assert log_terms(net.raft(3)) == log_terms(r1)


def test_core_snapshot_superseded_after_it_was_fully_sent() -> None:
    """Dissertation §5.4.1 again, when every chunk of the old snapshot is already in flight:
    the follower installs the old snapshot, which the leader has meanwhile compacted past, so
    the leader must go on to the new snapshot (not wait for appends it can no longer send)."""
    net = _lagging_follower(window=20)  # the whole image fits in the window
    r1 = net.raft(1)
    first = _start_stream(net)
    assert first[-1].snap_done
    old = first[0].snapshot
    for k in range(3):
        net.propose(1, b"w%d" % k)
    net.deliver(lambda m: m.to != 3 and m.frm != 3)
    new_image = b"N" * 250
    net.snapshot_and_compact(1, new_image)
    new = net.storages[1].snapshot_meta()
    assert new != old and new.index > old.index
    for _ in range(5):
        net.deliver()
        if net.installed[3][-1:] == [new_image]:
            break
        net.tick([1])
    assert net.installed[3] == [IMAGE, new_image]
    assert log_terms(net.raft(3)) == log_terms(r1)
    assert r1.prs[3].state is ProgressState.REPLICATE
