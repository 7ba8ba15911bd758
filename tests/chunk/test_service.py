"""The chunk server service with real processes: the write pipeline, reads, commands, fencing.

Tests here share one trio of servers (``trio``) and use block ids of their own; tests that kill
or restart servers are in ``test_faults.py``.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import grpc
import pytest
from chunk_keys import Access, signer

from keelfs.chunk.layout import Layout
from keelfs.datapath.checksums import chunk_crcs
from keelfs.datapath.client import ChunkClient, read_block, write_block
from keelfs.datapath.protocol import NodeState, Target, header_request
from keelfs.datapath.replica import DeleteOutcome, ReplicaState
from keelfs.datapath.wire import CHANNEL_OPTIONS, decode_node_error, pb, pb_grpc
from keelfs.errors import (
    AlreadyExists,
    CorruptReplica,
    Fenced,
    InvalidArgument,
    NotFound,
    PipelineBroken,
    StaleGeneration,
)
from keelfs.server.chunkservers import LocalChunkServers

MIB = 1 << 20


def payload(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def data_file(servers: LocalChunkServers, i: int, block_id: int, gen: int) -> Path:
    layout = Layout(servers.data_dir(i))
    return Layout.files(layout.finalized_dir(block_id), block_id, gen)[0]


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_pipeline_of_three_writes_identical_replicas(
    trio: LocalChunkServers, client: ChunkClient
) -> None:
    data = payload(5 * MIB + 12345, seed=1)
    # pieces of an odd size: the client cuts them into 1 MiB packets
    result = client.write_block(trio.addresses, 100, 1, pieces(data, 300_001), "shard-1", 1)
    assert result.finalized and result.length == len(data)
    assert [(n.address, n.server_id, n.state, n.length) for n in result.nodes] == [
        (a, f"cs{i}", NodeState.OK, len(data)) for i, a in enumerate(trio.addresses)
    ]
    for i, address in enumerate(trio.addresses):
        assert md5(data_file(trio, i, 100, 1).read_bytes()) == md5(data)
        assert md5(client.read_block(address, 100, 1)) == md5(data)
        [info] = client.block_info(address, 100)
        assert (info.gen, info.length, info.state) == (1, len(data), ReplicaState.FINALIZED)
        assert info.shard_id == "shard-1" and info.chunk_size == 64 * 1024
    # ranged reads over the wire, across chunk and packet boundaries
    for offset, length in [(0, 1), (65535, 2), (MIB - 3, 70_000), (len(data) - 10, 100)]:
        got = client.read_block(trio.addresses[1], 100, 1, offset, length)
        assert got == data[offset : offset + length]
    assert b"".join(client.iter_block(trio.addresses[2], 100, 1, 7, 3 * MIB)) == data[7:][: 3 * MIB]


def test_reads_are_answered_in_replies_of_almost_4_mib(
    trio: LocalChunkServers, client: ChunkClient
) -> None:
    """A reply costs much more than its bytes (keelfs.chunk.service.READ_REPLY_SIZE), so
    ReadBlock answers in replies of 63 chunks, each within gRPC's default 4 MiB limit: a
    client with the generated classes and a channel with default options reads them."""
    data = payload(10 * MIB + 5, seed=9)
    client.write_block(trio.addresses, 105, 1, data, "shard-1", 1)
    token = signer().sign(105, 1, Access.READ)
    piece = 63 * 64 * 1024
    with grpc.insecure_channel(trio.addresses[0]) as channel:
        stub = pb_grpc.ChunkServerStub(channel)
        whole = list(stub.ReadBlock(pb.ReadRequest(block_id=105, gen=1, token=token)))
        ranged = list(
            stub.ReadBlock(
                pb.ReadRequest(block_id=105, gen=1, offset=7, length=9 * MIB, token=token)
            )
        )
    assert [(r.offset, len(r.data)) for r in whole] == [
        (0, piece),
        (piece, piece),
        (2 * piece, len(data) - 2 * piece),
    ]
    assert all(r.ByteSize() <= 4 * MIB for r in whole)
    assert b"".join(r.data for r in whole) == data
    # a range that starts inside a chunk: its first reply ends where the first piece does
    assert [len(r.data) for r in ranged] == [piece - 7, piece, 9 * MIB - 2 * piece + 7]
    assert b"".join(r.data for r in ranged) == data[7 : 7 + 9 * MIB]


def test_one_shot_helpers_and_small_blocks(trio: LocalChunkServers) -> None:
    sign = signer().sign
    write = sign(101, 3, Access.WRITE, "shard-1", 1)
    result = write_block(trio.addresses[:2], 101, 3, b"hello", "shard-1", 1, token=write)
    assert result.length == 5 and len(result.nodes) == 2
    assert read_block(trio.addresses[1], 101, 3, token=sign(101, 3, Access.READ)) == b"hello"
    empty = sign(102, 1, Access.WRITE, "shard-1", 1)
    assert write_block([trio.addresses[2]], 102, 1, [], "shard-1", 1, token=empty).length == 0
    assert read_block(trio.addresses[2], 102, 1, token=sign(102, 1, Access.READ)) == b""


def test_stale_generation_is_never_served(trio: LocalChunkServers, client: ChunkClient) -> None:
    client.write_block(trio.addresses, 110, 5, payload(1000, 2), "shard-1", 1)
    for gen in (4, 6):
        with pytest.raises(StaleGeneration):
            client.read_block(trio.addresses[0], 110, gen)
    with pytest.raises(NotFound):
        client.read_block(trio.addresses[0], 111, 1)
    with pytest.raises(NotFound):
        client.block_info(trio.addresses[0], 111)
    with pytest.raises(AlreadyExists):  # the head refuses the header itself
        client.write_block(trio.addresses, 110, 5, b"again", "shard-1", 1)
    # a newer stamp replaces the replica everywhere
    client.write_block(trio.addresses, 110, 6, b"v6", "shard-1", 1)
    for address in trio.addresses:
        assert client.read_block(address, 110, 6) == b"v6"
        with pytest.raises(StaleGeneration):
            client.read_block(address, 110, 5)


def test_write_fencing_per_shard(trio: LocalChunkServers, client: ChunkClient) -> None:
    a0, a1, a2 = trio.addresses
    client.write_block([a1], 120, 1, b"x", "shard-w", 7)  # a1 saw epoch 7 of shard-w
    with pytest.raises(Fenced) as exc:
        client.write_block([a1, a2], 121, 1, b"x", "shard-w", 6)
    assert exc.value.current_epoch == 7
    # a1 is the second node: the pipeline breaks at setup, naming it and why
    with pytest.raises(PipelineBroken) as broken:
        client.write_block([a0, a1, a2], 122, 1, b"x", "shard-w", 6)
    assert broken.value.failed == [a1] and broken.value.acked_length == 0
    nodes = broken.value.result.nodes
    assert [n.state for n in nodes] == [NodeState.OK, NodeState.FAILED, NodeState.UNKNOWN]
    assert isinstance(nodes[1].error, Fenced)
    with pytest.raises(NotFound):  # nothing was left behind on the head
        client.block_info(a0, 122)
    # another shard is not fenced by shard-w's epoch
    client.write_block([a1], 123, 1, b"y", "shard-v", 1)
    assert client.server_info(a1).epochs["shard-w"] == 7


def test_delete_blocks_is_fenced(trio: LocalChunkServers, client: ChunkClient) -> None:
    a0 = trio.addresses[0]
    client.write_block([a0], 130, 2, payload(3000, 3), "shard-d", 5)
    client.write_block([a0], 131, 2, payload(3000, 4), "shard-d", 5)
    path = data_file(trio, 0, 130, 2)
    assert path.exists()
    with pytest.raises(Fenced):
        client.delete_blocks(a0, [130], "shard-d", 4)
    assert path.exists() and client.read_block(a0, 130, 2) == payload(3000, 3)
    results = client.delete_blocks(a0, [(130, 1), (131, 2), 132], "shard-d", 5)
    assert [(r.block_id, r.outcome, r.gen) for r in results] == [
        (130, DeleteOutcome.KEPT_NEWER, 2),
        (131, DeleteOutcome.DELETED, 2),
        (132, DeleteOutcome.NOT_FOUND, 0),
    ]
    [r] = client.delete_blocks(a0, [130], "shard-d", 6)  # a newer epoch is admitted
    assert r.outcome is DeleteOutcome.DELETED
    assert not path.exists() and not data_file(trio, 0, 131, 2).exists()
    with pytest.raises(NotFound):
        client.block_info(a0, 130)
    with pytest.raises(Fenced):  # epoch 6 is now the one to beat
        client.delete_blocks(a0, [131], "shard-d", 5)


def test_replicate_block(trio: LocalChunkServers, client: ChunkClient) -> None:
    a0, a1, a2 = trio.addresses
    data = payload(2 * MIB + 7, 5)
    client.write_block([a0], 140, 3, data, "shard-r", 2)
    result = client.replicate_block(a0, 140, 3, [Target(a1, "cs1"), a2], "shard-r", 2)
    assert result.length == len(data)
    assert [(n.address, n.state) for n in result.nodes] == [(a1, NodeState.OK), (a2, NodeState.OK)]
    for i, address in enumerate(trio.addresses):
        assert md5(client.read_block(address, 140, 3)) == md5(data)
        assert md5(data_file(trio, i, 140, 3).read_bytes()) == md5(data)
    with pytest.raises(Fenced):
        client.replicate_block(a0, 140, 3, [a1], "shard-r", 1)
    with pytest.raises(StaleGeneration):
        client.replicate_block(a0, 140, 2, [a1], "shard-r", 2)
    with pytest.raises(NotFound):
        client.replicate_block(a0, 141, 1, [a1], "shard-r", 2)
    with pytest.raises(AlreadyExists):  # the first target refuses: it has the replica
        client.replicate_block(a0, 140, 3, [a1, a2], "shard-r", 2)
    client.write_block([a0, a2], 142, 1, b"only on a0 and a2", "shard-r", 2)
    with pytest.raises(PipelineBroken) as exc:  # a later target refuses: it is named
        client.replicate_block(a0, 142, 1, [a1, a2], "shard-r", 2)
    assert exc.value.failed == [a2]
    assert "ALREADY_EXISTS" in exc.value.details["reason"]
    with pytest.raises(NotFound):  # the target that accepted kept nothing
        client.block_info(a1, 142)


def test_corrupt_packet_is_refused_and_reported(trio: LocalChunkServers) -> None:
    """A packet whose data does not match its CRCs is never acknowledged: the failure ack names
    the node that checked it."""
    a0, a1 = trio.addresses[:2]
    first, second = payload(MIB, 6), payload(MIB, 7)
    # generated protobuf classes on this side: the server's hand-written codec reads them
    good = pb.WriteRequest(packet=pb.Packet(seqno=1, data=first, crcs=chunk_crcs(first)))
    bad = pb.WriteRequest(
        packet=pb.Packet(seqno=2, offset=MIB, data=b"\x00" + second[1:], crcs=chunk_crcs(second))
    )
    write = signer().sign(150, 1, Access.WRITE, "shard-1", 1)
    header = header_request(150, 1, "shard-1", 1, [Target(a1)], token=write)
    with grpc.insecure_channel(a0, options=CHANNEL_OPTIONS) as channel:
        # what follows the bad packet is read and dropped, and the stream ends normally
        after = pb.WriteRequest(packet=pb.Packet(seqno=3, offset=2 * MIB, last=True))
        stream = iter([header, good, bad, after])
        acks = list(pb_grpc.ChunkServerStub(channel).WriteBlock(stream))
    assert [a.seqno for a in acks] == [0, 1, 1] and acks[-1].failed
    assert acks[-1].length == MIB
    failed = acks[-1].nodes[0]
    assert failed.state == pb.NODE_FAILED and failed.address == a0
    err = decode_node_error(failed.error)
    assert err is not None and err.code == "CHECKSUM_MISMATCH"
    assert err.details["offset"] == MIB


def test_bad_requests(trio: LocalChunkServers, client: ChunkClient) -> None:
    a0 = trio.addresses[0]
    with pytest.raises(InvalidArgument):
        client.write_block([a0], 0, 1, b"x", "shard-1", 1)
    with pytest.raises(InvalidArgument):
        client.write_block([a0], 160, 1, b"x", "shard-1", 0)
    with pytest.raises(InvalidArgument):
        client.write_block([a0], 160, 1, b"x", "no spaces", 1)
    with pytest.raises(InvalidArgument):
        client.write_block([a0, a0], 160, 1, b"x", "shard-1", 1)
    with pytest.raises(NotFound):  # pipeline recovery of a replica that is not there
        client.write_block([a0], 161, 2, b"x", "shard-1", 1, offset=65536)
    client.write_block([a0], 162, 1, b"0123456789", "shard-1", 1)
    with pytest.raises(InvalidArgument):
        client.read_block(a0, 162, 1, 11, 1)


def test_reads_of_a_corrupt_replica_are_refused(
    trio: LocalChunkServers, client: ChunkClient
) -> None:
    a2 = trio.addresses[2]
    data = payload(300_000, 8)
    client.write_block([a2], 170, 1, data, "shard-1", 1)
    path = data_file(trio, 2, 170, 1)
    raw = bytearray(path.read_bytes())
    raw[200_000] ^= 0x01
    path.write_bytes(bytes(raw))
    assert client.read_block(a2, 170, 1, 0, 1000) == data[:1000]  # chunk 0 is intact
    with pytest.raises(CorruptReplica):
        client.read_block(a2, 170, 1)
    [info] = client.block_info(a2, 170)
    assert info.corrupt
    with pytest.raises(CorruptReplica):  # never served again
        client.read_block(a2, 170, 1, 0, 1000)
    assert client.server_info(a2).corrupt >= 1
    listed = {(r.block_id, r.corrupt) for r in client.list_blocks(a2)}
    assert (170, True) in listed
