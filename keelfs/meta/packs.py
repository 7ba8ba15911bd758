"""Packs: one Raft entry carrying the commands of many proposals.

Why: a metadata write costs every replica an apply of its own entry (a store write, the clock
and the session and lease expiry scans, the applied index) plus its share of the Raft work per
entry (the log write, the append message, the proposal's bookkeeping). The proposals a leader
queues in one Raft round are concurrent anyway, so the runtime hands the state machine the
packable ones to pack (``keelfs.runtime.group.RaftGroup._flush``), and the state machine
applies a pack in one pass: one clock, one housekeeping, one store write, each command with its
own result, its own session reply and its own error, in order
(``keelfs.meta.machine.MetaStateMachine``).

Wire form (never valid JSON, so it cannot be mistaken for a single envelope)::

    b"\\x00KFP" u8 version  u32 count  (u32 length, envelope bytes) * count

Each envelope is exactly what a single-command entry would carry (``Envelope.encode``), so
single-command entries written before packs existed, and those a leader still writes for a
lone proposal, decode as before. A replica of a version without packs cannot apply a pack:
a leader packs only while every member of its group has said it applies them (the runtime
features its link named, ``keelfs.transport.base.RUNTIME_FEATURES``), so a rolling upgrade
from such a version writes one entry each until its last member is upgraded.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from keelfs.errors import InvalidArgument

__all__ = ["MAGIC", "MAX_PACK_BYTES", "MAX_PACK_ITEMS", "is_pack", "pack", "plan", "unpack"]

MAGIC = b"\x00KFP"
VERSION = 1
_HEAD = struct.Struct(">4sBI")
_LENGTH = struct.Struct(">I")
MAX_PACK_ITEMS = 512
MAX_PACK_BYTES = 1 << 20
"""A pack's whole size at most (the Raft core's ``max_size_per_msg``): a proposal that does
not fit beside others is proposed on its own, as a plain entry."""


def is_pack(data: bytes) -> bool:
    return data[:4] == MAGIC


def pack(items: Sequence[bytes]) -> bytes:
    """One entry carrying ``items`` (encoded envelopes) in order."""
    parts = [_HEAD.pack(MAGIC, VERSION, len(items))]
    for item in items:
        parts.append(_LENGTH.pack(len(item)))
        parts.append(item)
    return b"".join(parts)


def plan(items: Sequence[bytes]) -> list[tuple[int, bytes]]:
    """The entries that carry ``items`` in order: ``(how many items, entry data)`` each. Items
    are packed up to ``MAX_PACK_ITEMS`` and ``MAX_PACK_BYTES`` per entry; an entry of one item
    is that item itself (a plain single-command entry)."""
    out: list[tuple[int, bytes]] = []
    group: list[bytes] = []
    size = _HEAD.size

    def close() -> None:
        if len(group) == 1:
            out.append((1, group[0]))
        elif group:
            out.append((len(group), pack(group)))

    for item in items:
        cost = _LENGTH.size + len(item)
        if group and (len(group) >= MAX_PACK_ITEMS or size + cost > MAX_PACK_BYTES):
            close()
            group, size = [], _HEAD.size
        group.append(item)
        size += cost
    close()
    return out


def unpack(data: bytes) -> list[bytes]:
    """The envelopes of a pack, in order; ``InvalidArgument`` if it is malformed (the whole
    entry is refused then: its framing cannot be trusted for any item)."""
    if len(data) > MAX_PACK_BYTES:
        raise InvalidArgument(f"pack of {len(data)} bytes (at most {MAX_PACK_BYTES})")
    if len(data) < _HEAD.size:
        raise InvalidArgument("truncated pack header")
    magic, version, count = _HEAD.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise InvalidArgument(f"unsupported pack version {version}", "v")
    if not 2 <= count <= MAX_PACK_ITEMS:
        raise InvalidArgument(f"pack of {count} items (2..{MAX_PACK_ITEMS})")
    items: list[bytes] = []
    pos = _HEAD.size
    view = memoryview(data)
    for _ in range(count):
        if pos + _LENGTH.size > len(data):
            raise InvalidArgument("truncated pack")
        (length,) = _LENGTH.unpack_from(data, pos)
        pos += _LENGTH.size
        if pos + length > len(data):
            raise InvalidArgument("truncated pack")
        items.append(bytes(view[pos : pos + length]))
        pos += length
    if pos != len(data):
        raise InvalidArgument("bytes after the last item of a pack")
    return items
