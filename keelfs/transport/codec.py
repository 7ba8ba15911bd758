"""Lossless mapping between the core's :class:`~keelfs.raft.messages.Message` and protobuf.

The core's values are frozen dataclasses with Python ints and enums; the wire format is
``keelfs.raft.v1`` (``proto/raft.proto``). ``decode(encode(g, m)) == (g, m)`` holds for every
message whose integers are in [0, 2**63-1] (``keelfs.raft.messages.MAX_WIRE_INT``), which the
tests check with hypothesis. The wire's uint64 fields could carry more, but no correct node
sends a term, index, offset or node id above that bound (the reported attack was a heartbeat
with term 2**64-1, which the node adopted and then could neither store nor increase), so both
directions refuse one: the encoder with ``ValueError``, the decoder with ``DecodeError`` naming
the field, which the transport counts as rejected and skips. Two details keep the round trip
lossless:

- ``Message.snapshot is None`` maps to an *absent* ``snapshot`` field (proto3 message fields have
  presence), not to an all-zero one, so "no snapshot" and "the empty snapshot" stay distinct.
- ``ConfState`` sets are encoded sorted, so equal messages encode to equal bytes.

Both directions are on the hot path (every heartbeat of every group goes through them), so fields
at their default are not assigned at all: a protobuf setter costs far more than the ``if``.
"""

from __future__ import annotations

from typing import cast

from keelfs.raft.messages import (
    MAX_WIRE_INT,
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
    """A well-formed protobuf that does not describe a valid core Message (e.g. type 0, or an
    integer above ``MAX_WIRE_INT``)."""


_MESSAGE_TYPES = {int(t): t for t in MessageType}
_ENTRY_TYPES = {int(t): t for t in EntryType}


def encode(group_id: str, msg: Message) -> pb.RaftEnvelope:
    """Return a new envelope carrying ``msg`` for ``group_id``."""
    env = pb.RaftEnvelope()
    encode_into(env, group_id, msg)
    return env


def encode_into(env: pb.RaftEnvelope, group_id: str, msg: Message) -> None:
    """Fill an empty envelope in place: lets a batch ``envelopes.add()`` without a copy.

    Raises ``ValueError`` for integers outside [0, MAX_WIRE_INT] (negative ids, for instance).
    """
    bad = _out_of_range(msg)
    if bad is not None:
        raise ValueError(f"cannot encode {msg.type.name}: {bad}")
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


_TOP_LEVEL_INTS = (
    "to",
    "frm",
    "term",
    "log_term",
    "index",
    "commit",
    "reject_hint",
    "read_seq",
    "snap_offset",
)


def _out_of_range(m: Message) -> str | None:
    """The first integer of ``m`` outside [0, MAX_WIRE_INT], described; None if there is none.

    On the hot path (every message both ways), so the common case is one min and one max."""
    top = (m.to, m.frm, m.term, m.log_term, m.index, m.commit, m.reject_hint, m.read_seq)
    if min(top) < 0 or max(top) > MAX_WIRE_INT or not 0 <= m.snap_offset <= MAX_WIRE_INT:
        values = (*top, m.snap_offset)
        return next(
            _describe(f, v)
            for f, v in zip(_TOP_LEVEL_INTS, values, strict=True)
            if not 0 <= v <= MAX_WIRE_INT
        )
    for i, e in enumerate(m.entries):
        if not (0 <= e.term <= MAX_WIRE_INT and 0 <= e.index <= MAX_WIRE_INT):
            bad, value = ("term", e.term) if not 0 <= e.term <= MAX_WIRE_INT else ("index", e.index)
            return _describe(f"entries[{i}].{bad}", value)
    s = m.snapshot
    if s is not None:
        for f, v in (("snapshot.index", s.index), ("snapshot.term", s.term)):
            if not 0 <= v <= MAX_WIRE_INT:
                return _describe(f, v)
        for v in s.conf.voters | s.conf.learners:
            if not 0 <= v <= MAX_WIRE_INT:
                return _describe("snapshot.conf node id", v)
    return None


def _describe(field: str, value: int) -> str:
    return f"{field}={value} is outside [0, 2**63-1]"


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
    m = Message(
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
    bad = _out_of_range(m)
    if bad is not None:
        raise DecodeError(f"{mtype.name} from node {p.frm}: {bad}")
    return m
