"""Message <-> protobuf: the round trip must be lossless for every message the core can emit."""

from __future__ import annotations

from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keelfs.raft.messages import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    SnapshotMeta,
)
from keelfs.transport import codec
from keelfs.transport.pb import raft_pb2 as pb

U64 = st.integers(min_value=0, max_value=2**64 - 1)
SMALL = st.integers(min_value=0, max_value=1000)
ints = st.one_of(SMALL, U64)  # mostly small, sometimes at the edges of uint64
node_ids = st.integers(min_value=1, max_value=2**64 - 1)
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
