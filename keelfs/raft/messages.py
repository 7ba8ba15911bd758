"""Values that flow into and out of the Raft core.

Everything here is a frozen, slotted dataclass or an enum: the core never mutates a message it
received or one it emitted, so a message can be handed to a transport, kept in a simulator queue
or printed in a golden test without copies. ``describe()`` gives a stable one-line text used by
scenario tests; changing its format changes golden files.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

NO_NODE = 0
"""Node id meaning "nobody" (no vote cast, no leader known). Real node ids are positive."""

MAX_WIRE_INT = 2**63 - 1
"""The largest term, index, offset or node id a message may carry. The wire format has room for
2**64 - 1, but a node that adopted such a term could never campaign (``term + 1``) nor store it
in a signed 64-bit field; the core drops a message with any integer above this bound, and the
codec refuses to decode one (``keelfs.transport.codec.DecodeError``)."""


class MessageType(enum.IntEnum):
    """Kinds of message. Local kinds never leave a node; the rest travel between peers."""

    # local inputs, produced by the node itself
    HUP = 1  # start an election (pre-vote first if enabled)
    BEAT = 2  # leader: send heartbeats now
    PROP = 3  # a proposal (forwarded from a follower to the leader, too)
    # replication
    APP = 4
    APP_RESP = 5
    HEARTBEAT = 6
    HEARTBEAT_RESP = 7
    # elections
    PRE_VOTE = 8
    PRE_VOTE_RESP = 9
    VOTE = 10
    VOTE_RESP = 11
    # snapshots, streamed in chunks
    SNAP = 12
    SNAP_RESP = 13
    # linearizable reads
    READ_INDEX = 14
    READ_INDEX_RESP = 15
    # leadership transfer
    TRANSFER_LEADER = 16
    TIMEOUT_NOW = 17


LOCAL_MESSAGES = frozenset({MessageType.HUP, MessageType.BEAT})

RESPONSE_OF = {
    MessageType.APP: MessageType.APP_RESP,
    MessageType.HEARTBEAT: MessageType.HEARTBEAT_RESP,
    MessageType.PRE_VOTE: MessageType.PRE_VOTE_RESP,
    MessageType.VOTE: MessageType.VOTE_RESP,
    MessageType.SNAP: MessageType.SNAP_RESP,
    MessageType.READ_INDEX: MessageType.READ_INDEX_RESP,
}

_SHORT_NAMES = {t: "Msg" + "".join(p.capitalize() for p in t.name.split("_")) for t in MessageType}


class EntryType(enum.IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


ENTRY_OVERHEAD_BYTES = 24
"""Bytes an entry is counted for beyond its payload, when batches are bounded in bytes."""


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    data: bytes = b""
    type: EntryType = EntryType.NORMAL

    def size(self) -> int:
        return len(self.data) + ENTRY_OVERHEAD_BYTES

    def describe(self) -> str:
        if self.type is EntryType.CONF_CHANGE:
            body = ConfChange.decode(self.data).describe()
        elif self.data:
            body = repr(self.data.decode("utf-8", "backslashreplace"))
        else:
            body = "<empty>"
        return f"{self.term}/{self.index} {body}"


class ConfChangeType(enum.IntEnum):
    """Single-server membership changes; a new node always enters as a learner."""

    ADD_LEARNER = 1
    PROMOTE = 2  # learner -> voter
    REMOVE = 3


@dataclass(frozen=True, slots=True)
class ConfChange:
    type: ConfChangeType
    node_id: int
    context: bytes = b""
    """Opaque to the core: the runtime stores the node's address here."""

    _HEADER = struct.Struct(">BQ")

    def encode(self) -> bytes:
        return self._HEADER.pack(int(self.type), self.node_id) + self.context

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        if len(data) < cls._HEADER.size:
            raise ValueError("conf change entry too short")
        kind, node_id = cls._HEADER.unpack_from(data)
        return cls(ConfChangeType(kind), node_id, bytes(data[cls._HEADER.size :]))

    def describe(self) -> str:
        return f"{self.type.name.lower()}({self.node_id})"


@dataclass(frozen=True, slots=True)
class ConfState:
    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()

    def describe(self) -> str:
        v = " ".join(str(i) for i in sorted(self.voters))
        if not self.learners:
            return f"voters=({v})"
        return f"voters=({v}) learners=({' '.join(str(i) for i in sorted(self.learners))})"


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """What the core knows of a snapshot: where it ends in the log and the membership there.

    The state-machine image itself lives with the application's storage; the core only moves it
    between nodes chunk by chunk and never holds all of it.
    """

    index: int = 0
    term: int = 0
    conf: ConfState = field(default_factory=ConfState)

    def describe(self) -> str:
        return f"{self.term}/{self.index} {self.conf.describe()}"


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before any message that depends on it is sent."""

    term: int = 0
    vote: int = NO_NODE
    commit: int = 0

    def describe(self) -> str:
        return f"term={self.term} vote={self.vote} commit={self.commit}"


@dataclass(frozen=True, slots=True)
class Message:
    type: MessageType
    to: int
    frm: int
    term: int = 0
    log_term: int = 0
    """APP: term of the entry at ``index``. VOTE: candidate's last log term. APP_RESP reject:
    term of the follower's entry at ``reject_hint`` (fast back-off)."""
    index: int = 0
    """APP: index just before ``entries``. VOTE: candidate's last index. APP_RESP: the
    follower's last matching index (accept) or the rejected index (reject). READ_INDEX_RESP:
    the read index."""
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    """READ_INDEX*: the caller's request id, echoed back untouched."""
    read_seq: int = 0
    """HEARTBEAT*: the leader's read round this heartbeat belongs to (see ReadOnly)."""
    snapshot: SnapshotMeta | None = None
    """SNAP: the snapshot being streamed. SNAP_RESP: the one acknowledged."""
    snap_offset: int = 0
    """SNAP: byte offset of ``snap_data``. SNAP_RESP: the next byte the follower wants."""
    snap_data: bytes = b""
    snap_done: bool = False
    """SNAP: this chunk is the last. SNAP_RESP: the whole snapshot is installed."""
    force: bool = False
    """VOTE/PRE_VOTE sent after TIMEOUT_NOW: voters ignore their leader lease."""
    quiesce: bool = False
    """HEARTBEAT: the group is idle and every follower is caught up; the follower may stop its
    election timer until anything else arrives (see ``Raft`` quiescence)."""

    def describe(self) -> str:
        parts = [f"{self.frm}->{self.to} {_SHORT_NAMES[self.type]} Term:{self.term}"]
        t = self.type
        if t in (MessageType.APP, MessageType.VOTE, MessageType.PRE_VOTE):
            parts.append(f"Log:{self.log_term}/{self.index}")
        if t is MessageType.APP or t is MessageType.HEARTBEAT:
            parts.append(f"Commit:{self.commit}")
        if t is MessageType.APP_RESP or t is MessageType.READ_INDEX_RESP:
            parts.append(f"Index:{self.index}")
        if self.reject:
            if t is MessageType.APP_RESP:
                parts.append(f"Rejected (Hint: {self.reject_hint}/{self.log_term})")
            else:
                parts.append("Rejected")
        if self.read_seq:
            parts.append(f"ReadSeq:{self.read_seq}")
        if self.context:
            parts.append(f"Ctx:{self.context.decode('utf-8', 'backslashreplace')}")
        if self.force:
            parts.append("Force")
        if self.quiesce:
            parts.append("Quiesce")
        if self.snapshot is not None:
            parts.append(f"Snapshot:{self.snapshot.describe()}")
            if t is MessageType.SNAP:
                parts.append(f"Chunk:{self.snap_offset}+{len(self.snap_data)}")
            else:
                parts.append(f"Next:{self.snap_offset}")
            if self.snap_done:
                parts.append("Done")
        if self.entries:
            parts.append("Entries:[" + ", ".join(e.describe() for e in self.entries) + "]")
        return " ".join(parts)


def message_size(m: Message) -> int:
    """Approximate bytes on the wire, used only for batching limits."""
    return 64 + sum(e.size() for e in m.entries) + len(m.snap_data) + len(m.context)
