"""Lossless mapping between the core's :class:`~keelfs.raft.messages.Message` and protobuf.

The core's values are frozen dataclasses with Python ints and enums; the wire format is
``keelfs.raft.v1`` (``proto/raft.proto``). ``decode(encode(g, m)) == (g, m)`` holds for every
message whose integers fit in uint64, which the tests check with hypothesis. Two details keep
that true:

- ``Message.snapshot is None`` maps to an *absent* ``snapshot`` field (proto3 message fields have
  presence), not to an all-zero one, so "no snapshot" and "the empty snapshot" stay distinct.
- ``ConfState`` sets are encoded sorted, so equal messages encode to equal bytes.

Both directions are on the hot path (every heartbeat of every group goes through them), so fields
at their default are not assigned at all: a protobuf setter costs far more than the ``if``.
"""

from __future__ import annotations

from typing import cast

from keelfs.raft.messages import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    SnapshotMeta,
)
from keelfs.transport.pb import raft_pb2 as pb

__all__ = ["DecodeError", "decode", "decode_message", "encode", "encode_into"]


class DecodeError(ValueError):
    """A well-formed protobuf that does not describe a valid core Message (e.g. type 0)."""


_MESSAGE_TYPES = {int(t): t for t in MessageType}
_ENTRY_TYPES = {int(t): t for t in EntryType}


def encode(group_id: str, msg: Message) -> pb.RaftEnvelope:
    """Return a new envelope carrying ``msg`` for ``group_id``."""
    env = pb.RaftEnvelope()
    encode_into(env, group_id, msg)
    return env


def encode_into(env: pb.RaftEnvelope, group_id: str, msg: Message) -> None:
    """Fill an empty envelope in place: lets a batch ``envelopes.add()`` without a copy.

    Raises ``ValueError`` for integers outside uint64 (negative ids, for instance).
    """
    if group_id:
        env.group_id = group_id
    _fill_message(env.msg, msg)


def _fill_message(p: pb.Message, m: Message) -> None:
    p.type = cast(pb.MessageType, int(m.type))  # same numbers; proto enums take plain ints
    p.to = m.to
    p.frm = m.frm
    if m.term:
        p.term = m.term
    if m.log_term:
        p.log_term = m.log_term
    if m.index:
        p.index = m.index
    if m.entries:
        add = p.entries.add
        for e in m.entries:
            pe = add()
            pe.term = e.term
            pe.index = e.index
            if e.data:
                pe.data = e.data
            if e.type:
                pe.type = cast(pb.EntryType, int(e.type))
    if m.commit:
        p.commit = m.commit
    if m.reject:
        p.reject = True
    if m.reject_hint:
        p.reject_hint = m.reject_hint
    if m.context:
        p.context = m.context
    if m.read_seq:
        p.read_seq = m.read_seq
    if m.snapshot is not None:
        s = m.snapshot
        ps = p.snapshot
        ps.SetInParent()  # present even when every field is zero
        ps.index = s.index
        ps.term = s.term
        if s.conf.voters:
            ps.conf.voters.extend(sorted(s.conf.voters))
        if s.conf.learners:
            ps.conf.learners.extend(sorted(s.conf.learners))
    if m.snap_offset:
        p.snap_offset = m.snap_offset
    if m.snap_data:
        p.snap_data = m.snap_data
    if m.snap_done:
        p.snap_done = True
    if m.force:
        p.force = True
    if m.quiesce:
        p.quiesce = True


def decode(env: pb.RaftEnvelope) -> tuple[str, Message]:
    """Inverse of :func:`encode`. Raises :class:`DecodeError` for an invalid message."""
    return env.group_id, decode_message(env.msg)


def decode_message(p: pb.Message) -> Message:
    try:
        mtype = _MESSAGE_TYPES[p.type]
    except KeyError:
        raise DecodeError(f"unknown message type {p.type}") from None
    entries: tuple[Entry, ...] = ()
    pe = p.entries
    if pe:
        try:  # a list comprehension: markedly cheaper than tuple(<generator>)
            entries = tuple([Entry(e.term, e.index, e.data, _ENTRY_TYPES[e.type]) for e in pe])
        except KeyError as exc:
            raise DecodeError(f"unknown entry type {exc.args[0]}") from None
    snapshot = None
    if p.HasField("snapshot"):
        ps = p.snapshot
        conf = ConfState(frozenset(ps.conf.voters), frozenset(ps.conf.learners))
        snapshot = SnapshotMeta(ps.index, ps.term, conf)
    return Message(
        type=mtype,
        to=p.to,
        frm=p.frm,
        term=p.term,
        log_term=p.log_term,
        index=p.index,
        entries=entries,
        commit=p.commit,
        reject=p.reject,
        reject_hint=p.reject_hint,
        context=p.context,
        read_seq=p.read_seq,
        snapshot=snapshot,
        snap_offset=p.snap_offset,
        snap_data=p.snap_data,
        snap_done=p.snap_done,
        force=p.force,
        quiesce=p.quiesce,
    )
