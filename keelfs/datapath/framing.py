"""The two data-carrying messages, encoded and decoded by hand: ``WriteRequest`` with a
``Packet``, and ``ReadResponse``.

Why: through the generated classes a MiB of data is copied into a protobuf object, out of it
(every ``.data`` access copies), and again to serialize it for the next hop. Here a node decodes
a packet in place (``data`` is a memoryview of the received message), writes it to disk from
that view, and forwards the very bytes it received (the message does not change from hop to
hop); a read reply is one join of a small prefix and the data. The bytes are ordinary protobuf
(proto/chunk.proto): peers using the generated classes interoperate, and the tests check both
directions against them. Only the hot path uses this; every other message goes through the
generated code.
"""

from __future__ import annotations

from dataclasses import dataclass

from keelfs.datapath.memory import fresh_bytes
from keelfs.errors import InvalidArgument

__all__ = [
    "RawPacket",
    "decode_packet",
    "decode_read_response",
    "read_response_fields",
    "encode_packet",
    "encode_read_response",
    "new_read_response",
    "seal_read_response",
]

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(buf: bytes | memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            break
    raise InvalidArgument("malformed message: bad varint", "message")


def _fields(buf: bytes | memoryview, pos: int, end: int) -> list[tuple[int, int, int, int]]:
    """``(field, wire type, value or start, end)`` of each field in ``buf[pos:end]``: for a
    length-delimited field its ``[start, end)``, for a number its value (and 0)."""
    out = []
    while pos < end:
        key, pos = _read_varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _read_varint(buf, pos, end)
            out.append((field, wire, value, 0))
        elif wire == _LENGTH:
            size, pos = _read_varint(buf, pos, end)
            if pos + size > end:
                raise InvalidArgument("malformed message: truncated field", "message")
            out.append((field, wire, pos, pos + size))
            pos += size
        elif wire in (_FIXED32, _FIXED64):
            width = 4 if wire == _FIXED32 else 8
            if pos + width > end:
                raise InvalidArgument("malformed message: truncated field", "message")
            out.append((field, wire, int.from_bytes(buf[pos : pos + width], "little"), 0))
            pos += width
        else:
            raise InvalidArgument(f"malformed message: wire type {wire}", "message")
    return out


@dataclass(slots=True)
class RawPacket:
    seqno: int
    offset: int
    data: memoryview
    """A view into the received message (no copy)."""
    crcs: bytes
    last: bool
    sync: bool


def encode_packet(
    seqno: int, offset: int, data: bytes, crcs: bytes, *, last: bool = False, sync: bool = False
) -> bytes:
    """A serialized ``WriteRequest{packet: Packet{...}}``."""
    head = b"\x08" + _varint(seqno) + b"\x10" + _varint(offset) + b"\x1a" + _varint(len(data))
    tail = b"\x22" + _varint(len(crcs)) + crcs
    if last:
        tail += b"\x28\x01"
    if sync:
        tail += b"\x30\x01"
    size = len(head) + len(data) + len(tail)
    return b"".join((b"\x12", _varint(size), head, data, tail))


def decode_packet(raw: bytes) -> RawPacket | None:
    """The packet in a serialized ``WriteRequest``; None when it holds none (a header)."""
    view = memoryview(raw)
    packet: tuple[int, int] | None = None
    for field, wire, a, b in _fields(view, 0, len(view)):
        if field == 2 and wire == _LENGTH:
            packet = (a, b)
        elif field == 1 and wire == _LENGTH:
            packet = None
    if packet is None:
        return None
    out = RawPacket(0, 0, view[0:0], b"", False, False)
    for field, wire, a, b in _fields(view, *packet):
        if wire == _VARINT:
            if field == 1:
                out.seqno = a
            elif field == 2:
                out.offset = a
            elif field == 5:
                out.last = bool(a)
            elif field == 6:
                out.sync = bool(a)
        elif wire == _LENGTH:
            if field == 3:
                out.data = view[a:b]
            elif field == 4:
                out.crcs = bytes(view[a:b])
    return out


def encode_read_response(offset: int, data: bytes | memoryview, crc: int) -> bytes:
    """A serialized ``ReadResponse`` (the data last, so that a reader slices it off the end)."""
    return b"".join(
        (
            b"\x08",
            _varint(offset),
            b"\x1d",
            crc.to_bytes(4, "little"),
            b"\x12",
            _varint(len(data)),
            data,
        )
    )


def _read_response_head(offset: int, length: int) -> bytes:
    """What :func:`encode_read_response` puts before the data, with a CRC of 0."""
    return b"".join((b"\x08", _varint(offset), b"\x1d\0\0\0\0\x12", _varint(length)))


def new_read_response(offset: int, length: int) -> tuple[bytes, memoryview, int] | None:
    """A serialized ``ReadResponse`` of ``length`` bytes at ``offset``, built to be filled in
    place: ``(reply, a writable view of it, where its data starts)``. The caller writes the
    data through the view, then :func:`seal_read_response` with its CRC, and releases the view
    before the reply goes anywhere (``keelfs.datapath.memory.fresh_bytes``: the chunk server
    reads a piece from disk straight into its reply, no join). The bytes are those of
    :func:`encode_read_response`. None where a bytes object cannot be filled in place."""
    head = _read_response_head(offset, length)
    made = fresh_bytes(len(head) + length)
    if made is None:
        return None
    reply, view = made
    view[: len(head)] = head
    return reply, view, len(head)


def seal_read_response(view: memoryview, crc: int) -> None:
    """Write the CRC32C of the data into a reply of :func:`new_read_response` (``view``)."""
    _, at = _read_varint(view, 1, len(view))  # past the offset, at the CRC's key
    view[at + 1 : at + 5] = crc.to_bytes(4, "little")


def decode_read_response(raw: bytes) -> tuple[int, bytes, int]:
    """``(offset, data, crc32c)`` of a serialized ``ReadResponse``."""
    offset, start, end, crc = read_response_fields(raw)
    return offset, raw[start:end], crc


def read_response_fields(raw: bytes) -> tuple[int, int, int, int]:
    """``(offset, data start, data end, crc32c)`` of a serialized ``ReadResponse``: where its
    data lies in ``raw``, for a reader that keeps a view of it instead of a copy."""
    offset = crc = start = end = 0
    for field, wire, a, b in _fields(raw, 0, len(raw)):
        if field == 1 and wire == _VARINT:
            offset = a
        elif field == 2 and wire == _LENGTH:
            start, end = a, b
        elif field == 3 and wire == _FIXED32:
            crc = a
    return offset, start, end, crc
