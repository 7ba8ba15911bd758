"""The block store on its own (no processes): checksums, ranges, corruption, crash leftovers,
generation stamps, pipeline recovery, deletes, reports."""

from __future__ import annotations

import os
import random
from pathlib import Path

import google_crc32c
import pytest

from keelfs.chunk.events import EventKind, EventQueue, ReplicaEvent
from keelfs.chunk.layout import HEADER_SIZE, Layout, SidecarHeader
from keelfs.chunk.store import BlockStore
from keelfs.datapath.checksums import CHUNK_SIZE, chunk_crcs, first_mismatch
from keelfs.datapath.framing import encode_read_response
from keelfs.datapath.replica import DeleteOutcome, ReplicaInfo, ReplicaState
from keelfs.errors import (
    AlreadyExists,
    ChecksumMismatch,
    CorruptReplica,
    InvalidArgument,
    NotFound,
    StaleGeneration,
)

CS = 4096  # small chunks: many chunk boundaries in little data


def payload(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def read_all(store: BlockStore, block_id: int, gen: int, offset: int = 0, length: int | None = None,
             piece: int = 3 * CS, framed: bool = False) -> bytes:  # fmt: skip
    """The range piece by piece; ``framed``: each whole piece must also come as its read
    reply, the bytes ``encode_read_response`` makes of it (and a piece cut inside a chunk
    without one)."""
    with store.open_reader(block_id, gen, offset, length, piece_size=piece, framed=framed) as r:
        parts = []
        expected = offset
        while (got := r.read_piece()) is not None:
            at, data = got
            assert at == expected
            expected += len(data)
            parts.append(data)
            whole = at % CS == 0 and (expected % CS == 0 or expected == r.info.length)
            if framed and whole:
                assert r.piece_reply == encode_read_response(at, data, r.piece_crc)
                assert r.piece_crc == google_crc32c.value(bytes(data))
            else:
                assert r.piece_reply is None
    return b"".join(parts)


def event_kinds(store: BlockStore) -> list[tuple[EventKind, int, int]]:
    return [(e.kind, e.replica.block_id, e.replica.gen) for e in store.events.take().events]


@pytest.fixture
def store(tmp_path: Path) -> BlockStore:
    return BlockStore.open(tmp_path / "data")


def test_checksum_helpers() -> None:
    data = payload(3 * CS + 5)
    crcs = chunk_crcs(data, CS)
    assert len(crcs) == 4 * 4
    assert first_mismatch(data, crcs, CS) == -1
    bad = bytearray(data)
    bad[2 * CS + 1] ^= 1
    assert first_mismatch(bytes(bad), crcs, CS) == 2
    assert chunk_crcs(b"", CS) == b""
    with pytest.raises(ValueError):
        first_mismatch(data, crcs[:-4], CS)


def test_sidecar_header_round_trip_and_damage() -> None:
    h = SidecarHeader(7, 3, CS, "shard-1", 12345, True)
    raw = h.encode()
    assert len(raw) == HEADER_SIZE
    assert SidecarHeader.decode(raw) == h
    damaged = bytearray(raw)
    damaged[20] ^= 0xFF
    with pytest.raises(ValueError, match="checksum"):
        SidecarHeader.decode(bytes(damaged))


def test_round_trip_and_report(store: BlockStore) -> None:
    data = payload(5 * CS + 100)
    info = store.write_replica(1, 1, "shard-1", data, CS)
    assert info == ReplicaInfo(1, 1, len(data), ReplicaState.FINALIZED, "shard-1", CS, False)
    assert read_all(store, 1, 1) == data
    assert store.block_report() == [info]
    assert event_kinds(store) == [(EventKind.RECEIVING, 1, 1), (EventKind.FINALIZED, 1, 1)]
    usage = store.usage()
    assert usage.finalized == 1 and usage.being_written == 0 and usage.corrupt == 0
    assert usage.used_bytes == len(data) + HEADER_SIZE + 6 * 4
    assert usage.capacity_bytes >= usage.available_bytes > 0
    # an empty block is a block too
    empty = store.write_replica(2, 1, "shard-1", b"", CS)
    assert empty.length == 0 and read_all(store, 2, 1) == b""


@pytest.mark.parametrize("framed", [False, True])
def test_ranged_reads_across_chunk_boundaries(store: BlockStore, framed: bool) -> None:
    data = payload(7 * CS + 123, seed=2)
    store.write_replica(5, 2, "shard-1", data, CS)
    rng = random.Random(3)
    cases = [(0, 1), (CS - 1, 2), (CS, CS), (CS - 10, 3 * CS + 20), (len(data) - 5, 5),
             (len(data), 0), (0, None), (2 * CS + 7, None), (3, len(data) + 100)]  # fmt: skip
    cases += [(o, rng.randrange(0, len(data) - o + 1)) for o in rng.sample(range(len(data)), 30)]
    for piece in (CS, 2 * CS, 1 << 20):
        for offset, length in cases:
            want = data[offset:] if length is None else data[offset : offset + length]
            got = read_all(store, 5, 2, offset, length, piece, framed)
            assert got == want, (offset, length, piece)
    with pytest.raises(InvalidArgument):
        store.open_reader(5, 2, len(data) + 1, 1)


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


@pytest.mark.parametrize("framed", [False, True])
def test_flipped_byte_on_disk_is_detected_and_replica_no_longer_served(
    store: BlockStore, framed: bool
) -> None:
    data = payload(4 * CS, seed=4)
    info = store.write_replica(9, 1, "shard-2", data, CS)
    store.events.take()
    data_path, _ = Layout.files(store.layout.finalized_dir(9), 9, 1)
    _flip(data_path, 2 * CS + 17)
    # a read that does not touch the damaged chunk still succeeds
    assert read_all(store, 9, 1, 0, 2 * CS, framed=framed) == data[: 2 * CS]
    with pytest.raises(CorruptReplica) as exc:  # framed: from a chunk's start (a reply's)
        read_all(store, 9, 1, CS if framed else CS + 5, 2 * CS, framed=framed)
    assert exc.value.details["offset"] == 2 * CS
    [event] = store.events.take().events
    assert event.kind is EventKind.CORRUPT and event.replica.corrupt
    # never served again, not even the good chunks
    with pytest.raises(CorruptReplica):
        store.open_reader(9, 1, 0, 10)
    assert store.block_report() == [ReplicaInfo(**{**_fields(info), "corrupt": True})]
    assert store.usage().corrupt == 1
    assert store.finalized_replicas() == []


def test_each_piece_carries_the_crc_it_was_checked_with(store: BlockStore) -> None:
    # the reader takes one CRC32C pass per piece and hands it on for the read reply: it must
    # be the CRC of exactly the bytes returned, whole pieces and ranges cut inside a chunk
    data = payload(7 * CS + 123, seed=6)
    store.write_replica(6, 1, "shard-1", data, CS)
    for offset, length in ((0, None), (5, 3 * CS), (CS, 2 * CS + 9), (len(data) - 3, 3)):
        with store.open_reader(6, 1, offset, length, piece_size=2 * CS) as r:
            while (got := r.read_piece()) is not None:
                assert r.piece_crc == google_crc32c.value(got[1]), (offset, length, got[0])


@pytest.mark.parametrize("framed", [False, True])
@pytest.mark.parametrize("chunk", [0, 1, 2])
def test_a_flipped_byte_in_any_chunk_of_a_piece_names_that_chunk(
    store: BlockStore, chunk: int, framed: bool
) -> None:
    # one whole-piece CRC, compared with the combination of the stored ones, must still catch
    # a flip in any chunk of a piece (first, middle, last) and name the chunk
    data = payload(6 * CS, seed=7)
    store.write_replica(7, 1, "shard-1", data, CS)
    data_path, _ = Layout.files(store.layout.finalized_dir(7), 7, 1)
    _flip(data_path, (3 + chunk) * CS + 100)
    assert read_all(store, 7, 1, 0, 3 * CS, piece=3 * CS, framed=framed) == data[: 3 * CS]
    with pytest.raises(CorruptReplica, match=f"chunk {3 + chunk}") as exc:
        read_all(store, 7, 1, 0, None, piece=3 * CS, framed=framed)
    assert exc.value.details["offset"] == (3 + chunk) * CS


@pytest.mark.parametrize("framed", [False, True])
def test_a_data_file_cut_under_an_open_reader_is_corruption(
    store: BlockStore, framed: bool
) -> None:
    # read straight into a reply or not, bytes the file no longer has are never served
    store.write_replica(8, 1, "shard-1", payload(4 * CS, seed=8), CS)
    data_path, _ = Layout.files(store.layout.finalized_dir(8), 8, 1)
    with store.open_reader(8, 1, piece_size=2 * CS, framed=framed) as r:
        os.truncate(data_path, 3 * CS)
        assert r.read_piece() is not None
        with pytest.raises(CorruptReplica, match="data file shorter") as exc:
            r.read_piece()
    assert exc.value.details["offset"] == 3 * CS
    assert store.replicas(8)[0].corrupt


def _fields(info: ReplicaInfo) -> dict[str, object]:
    return {k: getattr(info, k) for k in ReplicaInfo.__dataclass_fields__}


def test_damaged_sidecar_and_truncated_data_are_corruption(tmp_path: Path) -> None:
    store = BlockStore.open(tmp_path / "d")
    for block_id in (1, 2, 3):
        store.write_replica(block_id, 1, "shard-1", payload(2 * CS + 1, block_id), CS)
    d1, _ = Layout.files(store.layout.finalized_dir(1), 1, 1)
    _, m2 = Layout.files(store.layout.finalized_dir(2), 2, 1)
    _, m3 = Layout.files(store.layout.finalized_dir(3), 3, 1)
    os.truncate(d1, CS)  # data shorter than the replica
    _flip(m2, HEADER_SIZE + 4)  # the second chunk's stored CRC
    _flip(m3, 10)  # the header
    with pytest.raises(CorruptReplica, match="data file has"):
        store.open_reader(1, 1)
    with pytest.raises(CorruptReplica, match="chunk 1"):
        read_all(store, 2, 1)
    with pytest.raises(CorruptReplica, match="header"):
        store.open_reader(3, 1)
    # a restart finds the size and header problems without reading the data
    again = BlockStore.open(tmp_path / "d")
    corrupt = {r.block_id for r in again.block_report() if r.corrupt}
    assert corrupt == {1, 3}


def test_crash_leftovers_are_removed_and_never_reported(tmp_path: Path) -> None:
    root = tmp_path / "d"
    store = BlockStore.open(root)
    good = store.write_replica(1, 2, "shard-1", payload(3 * CS), CS)
    # a write the crash interrupted: in rbw/, never finalized
    w = store.create(2, 1, "shard-1", CS)
    w.write(payload(CS), chunk_crcs(payload(CS), CS))
    layout = store.layout
    # a temporary file, an orphan sidecar (finalize interrupted between its two renames), and
    # an older stamp left next to the newer one (crash before the old one was unlinked)
    (layout.tmp / "x.tmp").write_bytes(b"junk")
    orphan_dir = layout.finalized_dir(3)
    orphan_dir.mkdir(exist_ok=True)
    (orphan_dir / "blk_3_1.meta").write_bytes(SidecarHeader(3, 1, CS, "shard-1").encode())
    old_data, old_meta = Layout.files(layout.finalized_dir(1), 1, 1)
    old_data.write_bytes(b"old")
    old_meta.write_bytes(b"old")
    del store, w  # the process dies: no close, no finalize
    reopened = BlockStore.open(root)
    assert reopened.block_report() == [good]
    assert list(layout.rbw.iterdir()) == [] and list(layout.tmp.iterdir()) == []
    assert not (orphan_dir / "blk_3_1.meta").exists()
    assert not old_data.exists() and not old_meta.exists()
    assert read_all(reopened, 1, 2) == payload(3 * CS)
    with pytest.raises(NotFound):
        reopened.open_reader(2, 1)


def test_generation_stamps(store: BlockStore) -> None:
    v1, v2 = payload(2 * CS, 10), payload(3 * CS, 11)
    store.write_replica(4, 5, "shard-1", v1, CS)
    with pytest.raises(StaleGeneration):  # a read naming another stamp is refused both ways
        store.open_reader(4, 4)
    with pytest.raises(StaleGeneration):
        store.open_reader(4, 6)
    with pytest.raises(AlreadyExists):
        store.create(4, 5, "shard-1", CS)
    with pytest.raises(StaleGeneration):
        store.create(4, 3, "shard-1", CS)
    # a newer stamp: the old replica is served until the new one is finalized
    w = store.create(4, 6, "shard-1", CS)
    w.write(v2, chunk_crcs(v2, CS))
    assert read_all(store, 4, 5) == v1
    assert read_all(store, 4, 6) == v2  # the being-written replica, as far as written
    assert [r.state for r in store.replicas(4)] == [
        ReplicaState.FINALIZED,
        ReplicaState.BEING_WRITTEN,
    ]
    w.finalize()
    with pytest.raises(StaleGeneration):
        store.open_reader(4, 5)
    assert read_all(store, 4, 6) == v2
    assert [(r.gen, r.state) for r in store.replicas(4)] == [(6, ReplicaState.FINALIZED)]
    assert len(list(store.layout.finalized_dir(4).iterdir())) == 2  # old files unlinked


def test_newer_stamp_takes_over_a_writer_and_cuts_it_off(store: BlockStore) -> None:
    w1 = store.create(8, 1, "shard-1", CS)
    w1.write(payload(CS), chunk_crcs(payload(CS), CS))
    w2 = store.create(8, 2, "shard-1", CS)
    with pytest.raises(StaleGeneration):
        w1.write(payload(CS), chunk_crcs(payload(CS), CS))
    with pytest.raises(StaleGeneration):
        w1.finalize()
    w2.write(b"abc", chunk_crcs(b"abc", CS))
    assert w2.finalize().length == 3
    assert [(r.gen, r.length) for r in store.block_report()] == [(2, 3)]


def test_writer_checks_packets(store: BlockStore) -> None:
    w = store.create(11, 1, "shard-1", CS)
    data = payload(2 * CS)
    crcs = bytearray(chunk_crcs(data, CS))
    crcs[5] ^= 1
    with pytest.raises(ChecksumMismatch) as exc:
        w.write(data, bytes(crcs))
    assert exc.value.details["offset"] == CS
    assert w.length == 0  # nothing written
    with pytest.raises(InvalidArgument):
        w.write(data, chunk_crcs(data, CS)[:4])
    w.write(data[:100], chunk_crcs(data[:100], CS))
    with pytest.raises(InvalidArgument, match="inside a chunk"):
        w.write(data, chunk_crcs(data, CS))
    with pytest.raises(InvalidArgument):
        store.create(12, 1, "shard-1", 1000)  # not a multiple of 512
    with pytest.raises(InvalidArgument):
        store.create(12, 1, "bad id!", CS)


@pytest.mark.parametrize("finalized", [False, True])
def test_pipeline_recovery_continues_a_replica(store: BlockStore, finalized: bool) -> None:
    data = payload(6 * CS + 9, 20)
    w = store.create(30, 1, "shard-1", CS)
    w.write(data[: 4 * CS], chunk_crcs(data[: 4 * CS], CS))
    if finalized:
        w.finalize()
    else:
        w.abandon()
    with pytest.raises(InvalidArgument, match="whole number of chunks"):
        store.create(30, 2, "shard-1", CS, offset=CS + 1)
    with pytest.raises(InvalidArgument):
        store.create(30, 2, "shard-1", CS, offset=5 * CS)  # more than it has
    with pytest.raises(NotFound):
        store.create(31, 2, "shard-1", CS, offset=CS)
    store.events.take()
    # continue from 3 chunks (the acknowledged length), although 4 were written
    r = store.create(30, 2, "shard-1", CS, offset=3 * CS)
    assert r.length == 3 * CS
    rest = data[3 * CS :]
    r.write(rest, chunk_crcs(rest, CS))
    info = r.finalize()
    assert (info.gen, info.length) == (2, len(data))
    assert read_all(store, 30, 2) == data
    kinds = [k for k, _, _ in event_kinds(store)]
    expected = [EventKind.RECEIVING, EventKind.FINALIZED]
    assert kinds == ([EventKind.DELETED, *expected] if finalized else expected)
    assert sorted(p.name for p in store.layout.finalized_dir(30).iterdir()) == [
        "blk_30_2.data",
        "blk_30_2.meta",
    ]
    assert list(store.layout.rbw.iterdir()) == []


def test_delete(store: BlockStore) -> None:
    store.write_replica(40, 3, "shard-1", payload(CS), CS)
    store.write_replica(41, 3, "shard-1", payload(CS), CS)
    w = store.create(42, 1, "shard-1", CS)
    assert store.delete(40, gen=2).outcome is DeleteOutcome.KEPT_NEWER
    assert store.delete(40, gen=3).outcome is DeleteOutcome.DELETED
    assert store.delete(41).outcome is DeleteOutcome.DELETED
    assert store.delete(40).outcome is DeleteOutcome.NOT_FOUND
    assert store.delete(42).outcome is DeleteOutcome.DELETED
    with pytest.raises(StaleGeneration):
        w.write(b"x", chunk_crcs(b"x", CS))
    assert store.block_report() == []
    assert [p for d in store.layout.finalized.iterdir() for p in d.iterdir()] == []
    assert list(store.layout.rbw.iterdir()) == []


def test_expire_abandoned(store: BlockStore) -> None:
    w = store.create(50, 1, "shard-1", CS)
    active = store.create(51, 1, "shard-1", CS)
    assert store.expire_abandoned(0) == []
    w.abandon()
    assert [r.block_id for r in store.expire_abandoned(0)] == [50]
    assert [r.block_id for r in store.block_report()] == [51]
    active.abandon()


def test_event_queue_overflow_asks_for_a_full_report() -> None:
    q = EventQueue(capacity=3)
    info = ReplicaInfo(1, 1, 0, ReplicaState.FINALIZED, "s", CS)
    for _ in range(5):
        q.put(ReplicaEvent(EventKind.FINALIZED, info))
    batch = q.take()
    assert len(batch.events) == 3 and batch.overflowed
    assert q.take().events == () and not q.take().overflowed
    q.put(ReplicaEvent(EventKind.DELETED, info))
    assert q.take(0).events == () and len(q) == 1


def test_default_chunk_size(store: BlockStore) -> None:
    data = payload(CHUNK_SIZE * 2 + 3)
    store.write_replica(60, 1, "shard-1", data)
    assert read_all(store, 60, 1, CHUNK_SIZE - 1, 5, piece=1 << 20) == data[CHUNK_SIZE - 1 :][:5]
