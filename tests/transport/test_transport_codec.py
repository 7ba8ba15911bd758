"""Message <-> protobuf: the round trip must be lossless for every message the core can emit."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import replace
from typing import cast

import pytest
from google.protobuf import message as protobuf_message
from hypothesis import given, settings
from hypothesis import strategies as st

from keelfs.raft.core import Config
from keelfs.raft.messages import (
    MAX_WIRE_INT,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    SnapshotMeta,
)
from keelfs.raft.rawnode import RawNode
from keelfs.raft.storage import MemoryStorage
from keelfs.transport import codec
from keelfs.transport.pb import raft_pb2 as pb

WIRE = st.integers(min_value=0, max_value=MAX_WIRE_INT)
SMALL = st.integers(min_value=0, max_value=1000)
ints = st.one_of(SMALL, WIRE)  # mostly small, sometimes at the edge of the wire's range
node_ids = st.integers(min_value=1, max_value=MAX_WIRE_INT)
blobs = st.binary(max_size=64)

entries = st.builds(Entry, term=ints, index=ints, data=blobs, type=st.sampled_from(EntryType))
conf_states = st.builds(
    ConfState,
    voters=st.frozensets(node_ids, max_size=7),
    learners=st.frozensets(node_ids, max_size=3),
)
snapshots = st.builds(SnapshotMeta, index=ints, term=ints, conf=conf_states)

messages = st.builds(
    Message,
    type=st.sampled_from(MessageType),
    to=node_ids,
    frm=node_ids,
    term=ints,
    log_term=ints,
    index=ints,
    entries=st.lists(entries, max_size=5).map(tuple),
    commit=ints,
    reject=st.booleans(),
    reject_hint=ints,
    context=blobs,
    read_seq=ints,
    snapshot=st.none() | snapshots,
    snap_offset=ints,
    snap_data=blobs,
    snap_done=st.booleans(),
    force=st.booleans(),
)
group_ids = st.text(max_size=40)


@settings(max_examples=300, deadline=None)
@given(group_ids, messages)
def test_round_trip(group_id: str, msg: Message) -> None:
    env = codec.encode(group_id, msg)
    assert codec.decode(env) == (group_id, msg)
    # ... and through bytes, as on the wire
    wire = pb.RaftEnvelope.FromString(env.SerializeToString())
    assert codec.decode(wire) == (group_id, msg)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(group_ids, messages), max_size=8))
def test_batch_round_trip(items: list[tuple[str, Message]]) -> None:
    batch = pb.RaftBatch(from_node=7)
    for group_id, msg in items:
        codec.encode_into(batch.envelopes.add(), group_id, msg)
    wire = pb.RaftBatch.FromString(batch.SerializeToString())
    assert wire.from_node == 7
    assert [codec.decode(e) for e in wire.envelopes] == items


@settings(max_examples=100, deadline=None)
@given(messages)
def test_equal_messages_encode_to_equal_bytes(msg: Message) -> None:
    # frozensets iterate in hash order; the encoder sorts them
    again = Message(**{f: getattr(msg, f) for f in Message.__dataclass_fields__})
    assert (
        codec.encode("g", msg).SerializeToString() == codec.encode("g", again).SerializeToString()
    )


def test_absent_and_empty_snapshot_are_distinct() -> None:
    none = Message(MessageType.SNAP_RESP, to=1, frm=2)
    empty = Message(MessageType.SNAP_RESP, to=1, frm=2, snapshot=SnapshotMeta())
    assert codec.decode(codec.encode("g", none))[1].snapshot is None
    assert codec.decode(codec.encode("g", empty))[1].snapshot == SnapshotMeta()


def test_decoded_values_have_core_types() -> None:
    msg = Message(
        MessageType.APP,
        to=2,
        frm=1,
        entries=(
            Entry(1, 1, ConfChange(ConfChangeType.ADD_LEARNER, 3).encode(), EntryType.CONF_CHANGE),
        ),
        snapshot=SnapshotMeta(3, 1, ConfState(frozenset({1, 2}))),
    )
    _, out = codec.decode(codec.encode("g", msg))
    assert out.type is MessageType.APP
    assert out.entries[0].type is EntryType.CONF_CHANGE
    assert isinstance(out.entries, tuple)
    assert out.snapshot is not None and isinstance(out.snapshot.conf.voters, frozenset)
    assert out.describe() == msg.describe()


def test_unknown_message_type_is_a_decode_error() -> None:
    env = pb.RaftEnvelope(group_id="g")
    env.msg.to = 1  # type 0 is never sent
    with pytest.raises(codec.DecodeError):
        codec.decode(env)
    env.msg.type = cast(pb.MessageType, 99)  # a newer peer's message type
    with pytest.raises(codec.DecodeError):
        codec.decode(env)


def test_unknown_entry_type_is_a_decode_error() -> None:
    env = codec.encode("g", Message(MessageType.APP, to=1, frm=2, entries=(Entry(1, 1),)))
    env.msg.entries[0].type = cast(pb.EntryType, 5)
    with pytest.raises(codec.DecodeError):
        codec.decode(env)


def test_out_of_range_integers_are_refused_when_encoding() -> None:
    with pytest.raises(ValueError):
        codec.encode("g", Message(MessageType.APP, to=1, frm=2, term=-1))
    with pytest.raises(ValueError):
        codec.encode("g", Message(MessageType.APP, to=1, frm=2, commit=2**64))
    with pytest.raises(ValueError, match=r"term=9223372036854775808 is outside \[0, 2\*\*63-1\]"):
        codec.encode("g", Message(MessageType.HEARTBEAT, to=1, frm=2, term=MAX_WIRE_INT + 1))


def _raw_heartbeat() -> pb.RaftEnvelope:
    """What an attacker writes: the wire's uint64 fields take any value up to 2**64-1."""
    env = pb.RaftEnvelope(group_id="g")
    env.msg.type = pb.MSG_HEARTBEAT
    env.msg.to, env.msg.frm, env.msg.term = 1, 99, 5
    return env


def _set_term(p: pb.Message, v: int) -> None:
    p.term = v


def _set_commit(p: pb.Message, v: int) -> None:
    p.commit = v


def _set_from(p: pb.Message, v: int) -> None:
    p.frm = v


def _set_entry_term(p: pb.Message, v: int) -> None:
    p.entries.add(term=v, index=1)


def _set_entry_index(p: pb.Message, v: int) -> None:
    p.entries.add(term=1, index=v)


def _set_snapshot_index(p: pb.Message, v: int) -> None:
    p.snapshot.index = v


def _set_snapshot_voter(p: pb.Message, v: int) -> None:
    p.snapshot.conf.voters.append(v)


@pytest.mark.parametrize(
    ("name", "set_value"),
    [
        ("term", _set_term),
        ("commit", _set_commit),
        ("frm", _set_from),
        ("entries[0].term", _set_entry_term),
        ("entries[0].index", _set_entry_index),
        ("snapshot.index", _set_snapshot_index),
        ("snapshot.conf node id", _set_snapshot_voter),
    ],
)
@pytest.mark.parametrize("value", [MAX_WIRE_INT + 1, 2**64 - 1])
def test_out_of_range_integers_are_a_decode_error(
    name: str, set_value: Callable[[pb.Message, int], None], value: int
) -> None:
    """The reported attack's heartbeat (term 2**64-1) and its kin are refused by the decoder
    with an error naming the field, which the transport counts and skips, instead of reaching
    the core."""
    env = _raw_heartbeat()
    set_value(env.msg, value)
    with pytest.raises(codec.DecodeError, match=rf"{re.escape(name)}={value} is outside"):
        codec.decode(pb.RaftEnvelope.FromString(env.SerializeToString()))


def test_largest_wire_values_decode() -> None:
    env = _raw_heartbeat()
    env.msg.term = env.msg.commit = MAX_WIRE_INT
    _, m = codec.decode(env)
    assert m.term == m.commit == MAX_WIRE_INT


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_fail_with_the_documented_errors(data: bytes) -> None:
    """Whatever arrives: protobuf refuses what is not an envelope (``message.DecodeError``,
    raised by gRPC's deserializer before the transport sees it); anything it parses either
    becomes a Message whose integers are all in range or fails with ``codec.DecodeError``,
    which the transport counts and skips. Nothing else may escape."""
    try:
        env = pb.RaftEnvelope.FromString(data)
    except protobuf_message.DecodeError:
        return
    try:
        _, m = codec.decode(env)
    except codec.DecodeError:
        return
    assert codec.decode(codec.encode(env.group_id, m)) == (env.group_id, m)


U64 = st.integers(min_value=0, max_value=2**64 - 1)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(list(pb.MessageType.values())),
    st.lists(U64, min_size=8, max_size=8),
    st.lists(st.tuples(U64, U64), max_size=3),
    st.none() | st.tuples(U64, U64, st.lists(U64, max_size=3)),
)
def test_any_uint64_values_decode_or_fail_with_decode_error(
    mtype: int,
    values: list[int],
    ents: list[tuple[int, int]],
    snap: tuple[int, int, list[int]] | None,
) -> None:
    """Random but well-formed envelopes with any uint64 in any field: a Message in range, or
    ``codec.DecodeError``."""
    p = pb.Message(type=cast(pb.MessageType, mtype))
    p.to, p.frm, p.term, p.log_term, p.index, p.commit, p.reject_hint, p.snap_offset = values
    for t, i in ents:
        p.entries.add(term=t, index=i)
    if snap is not None:
        p.snapshot.index, p.snapshot.term = snap[0], snap[1]
        p.snapshot.conf.voters.extend(snap[2])
    wanted_ok = mtype != 0 and all(
        v <= MAX_WIRE_INT
        for v in [
            *values,
            *(x for e in ents for x in e),
            *(snap[:2] if snap else ()),
            *(snap[2] if snap else ()),
        ]
    )
    try:
        _, m = codec.decode(pb.RaftEnvelope(group_id="g", msg=p))
    except codec.DecodeError:
        assert not wanted_ok
        return
    assert wanted_ok
    assert max(m.term, m.index, m.commit, m.frm, m.to) <= MAX_WIRE_INT
    # What the codec lets through is safe to step: the receive loop must not die on it.
    node = RawNode(Config(1, random.Random(0)), MemoryStorage(ConfState(frozenset({1, 2, 3}))))
    node.step(replace(m, to=1))
    assert node.raft.term <= MAX_WIRE_INT
