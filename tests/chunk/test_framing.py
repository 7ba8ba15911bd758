"""The hand-written codec of the data path's messages agrees with the generated classes."""

from __future__ import annotations

import random

import pytest

from keelfs.datapath.checksums import chunk_crcs, crc32c
from keelfs.datapath.file_checksum import TAIL_MIN, crc32c_tail
from keelfs.datapath.framing import (
    decode_packet,
    decode_read_response,
    encode_packet,
    encode_read_response,
    new_read_response,
    read_response_fields,
    seal_read_response,
)
from keelfs.datapath.protocol import Packetizer
from keelfs.datapath.wire import pb
from keelfs.errors import InvalidArgument

CASES = [
    (1, 0, b"", False, False),
    (2, 65536, b"abc", True, False),
    (300, 1 << 40, random.Random(1).randbytes(70_000), False, True),
    ((1 << 64) - 1, (1 << 64) - 1, b"\x00" * 200, True, True),
]


@pytest.mark.parametrize("seqno,offset,data,last,sync", CASES)
def test_packets_round_trip_with_the_generated_classes(
    seqno: int, offset: int, data: bytes, last: bool, sync: bool
) -> None:
    crcs = chunk_crcs(data)
    raw = encode_packet(seqno, offset, data, crcs, last=last, sync=sync)
    msg = pb.WriteRequest.FromString(raw)
    assert msg.WhichOneof("kind") == "packet"
    p = msg.packet
    assert (p.seqno, p.offset, p.data, p.crcs, p.last, p.sync) == (
        seqno,
        offset,
        data,
        crcs,
        last,
        sync,
    )
    generated = pb.WriteRequest(
        packet=pb.Packet(seqno=seqno, offset=offset, data=data, crcs=crcs, last=last, sync=sync)
    ).SerializeToString()
    for wire in (raw, generated):
        got = decode_packet(wire)
        assert got is not None
        assert (got.seqno, got.offset, bytes(got.data), got.crcs, got.last, got.sync) == (
            seqno,
            offset,
            data,
            crcs,
            last,
            sync,
        )


def test_a_header_is_not_a_packet_and_garbage_is_refused() -> None:
    header = pb.WriteRequest(header=pb.WriteHeader(block_id=1, gen=1)).SerializeToString()
    assert decode_packet(header) is None
    assert decode_packet(b"") is None
    for garbage in (b"\x12\x05ab", b"\x12\xff", b"\x0f"):
        with pytest.raises(InvalidArgument):
            decode_packet(garbage)
    # unknown fields are skipped, as protobuf does
    extra = pb.WriteRequest(packet=pb.Packet(seqno=3, data=b"x")).SerializeToString()
    extra += b"\x98\x06\x07" + b"\xa2\x06\x02hi"  # fields 99 (varint) and 100 (bytes)
    got = decode_packet(extra)
    assert got is not None and got.seqno == 3 and bytes(got.data) == b"x"


@pytest.mark.parametrize("offset,data,crc", [(0, b"", 0), (5, b"hello", 0xFFFFFFFF)])
def test_read_responses_round_trip_with_the_generated_classes(
    offset: int, data: bytes, crc: int
) -> None:
    raw = encode_read_response(offset, data, crc)
    msg = pb.ReadResponse.FromString(raw)
    assert (msg.offset, msg.data, msg.crc32c) == (offset, data, crc)
    generated = pb.ReadResponse(offset=offset, data=data, crc32c=crc).SerializeToString()
    assert decode_read_response(raw) == decode_read_response(generated) == (offset, data, crc)


def test_packetizer_cuts_whole_chunks_and_a_last_packet() -> None:
    p = Packetizer(packet_size=4 * 512, chunk_size=512, offset=1024)
    out = p.feed(b"a" * 1000) + p.feed(b"b" * 3000) + [p.finish()]
    packets = [decode_packet(raw) for raw in out]
    assert [(x.seqno, x.offset, len(x.data), x.last) for x in packets if x] == [
        (1, 1024, 2048, False),
        (2, 3072, 1952, True),
    ]
    with pytest.raises(InvalidArgument):
        Packetizer(packet_size=1000, chunk_size=512)


@pytest.mark.parametrize(
    "size", [0, 1, 100, TAIL_MIN - 1, TAIL_MIN, TAIL_MIN + 7, 1 << 20, 3 << 20]
)
@pytest.mark.parametrize("prefix", [0, 1, 9, 14])
def test_crc_of_a_messages_tail_matches_the_crc_of_a_copy(size: int, prefix: int) -> None:
    raw = random.Random(size * 31 + prefix).randbytes(prefix + size)
    assert crc32c_tail(raw, prefix) == crc32c(raw[prefix:])


def test_crc_of_a_messages_tail_sees_one_flipped_bit_in_the_data_but_not_in_the_prefix() -> None:
    raw = bytearray(encode_read_response(1 << 20, random.Random(5).randbytes(1 << 20), 0))
    _, start, end, _ = read_response_fields(bytes(raw))
    good = crc32c_tail(bytes(raw), start)
    raw[start - 1] ^= 0x10  # the prefix (the length's last byte): not part of the data
    assert crc32c_tail(bytes(raw), start) == good
    raw[start - 1] ^= 0x10
    raw[end - 1] ^= 0x01
    assert crc32c_tail(bytes(raw), start) != good


@pytest.mark.parametrize("size", [0, 5, 1 << 20])
def test_read_response_fields_locate_the_data_in_the_message(size: int) -> None:
    data = random.Random(size).randbytes(size)
    raw = encode_read_response(77 << 20, data, crc32c(data))
    offset, start, end, crc = read_response_fields(raw)
    assert (offset, raw[start:end], crc) == (77 << 20, data, crc32c(data))
    assert end == len(raw)  # the data is last: a reader sums it in place
    generated = pb.ReadResponse(offset=3, data=data, crc32c=9).SerializeToString()
    offset, start, end, crc = read_response_fields(generated)
    assert (offset, generated[start:end], crc) == (3, data, 9)


@pytest.mark.parametrize("offset", [0, 127, 128, 1 << 40])
@pytest.mark.parametrize("size", [0, 1, 70_000])
def test_a_reply_filled_in_place_is_the_encoded_reply(offset: int, size: int) -> None:
    # the chunk server reads a piece from disk straight into its reply: the bytes must be
    # those of encode_read_response, which the generated classes decode
    data = random.Random(size).randbytes(size)
    made = new_read_response(offset, size)
    assert made is not None
    reply, view, at = made
    with view:
        view[at:] = data
        seal_read_response(view, crc32c(data))
    assert reply == encode_read_response(offset, data, crc32c(data))
    message = pb.ReadResponse.FromString(reply)
    assert (message.offset, message.data, message.crc32c) == (offset, data, crc32c(data))
