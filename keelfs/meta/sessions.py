"""Client sessions: the replicated reply cache that makes commands exactly-once.

As in the Raft dissertation (§6.3): a client registers a session, then numbers its commands
``seq`` 1, 2, ...; the state machine keeps, per
session, the last ``seq`` it applied and the reply it gave. A command that arrives again with
that ``seq`` (the client retried after a timeout or a failover) gets the recorded reply and is
not applied again; an older ``seq`` is refused, and so is the last ``seq`` reused for a
different command (the record keeps a digest of the command it answered). One outstanding
command per session is assumed, which is how the keelfs client issues them; a client wanting
concurrency opens more sessions.

Expiry is by LOG time, never by a wall clock read inside ``apply``: each command carries the
proposing leader's clock, the state machine's clock is the largest such value applied so far,
and a session idle (no command carrying it) for longer than the TTL is removed during the apply
that first sees its deadline passed. Every replica applies the same entries, so every replica
expires the same sessions at the same index. A leader whose clock lags its predecessor's simply
does not advance time until it catches up, which only lengthens lifetimes.

A session id is 128 random bits drawn by the proposing leader (``new_session_id``) and carried
in the ``RegisterSession`` command, so ``apply`` stays deterministic and nobody can guess
another client's session. A session belongs to the user that registered it (``"u"``, the
envelope's caller; a record without one predates owners and is anyone's): a command that
names a session of another user is refused (``check_owner``), the superuser included: a
session is a client's channel for exactly-once replies, not a permission, and a superuser that
needs another's file back recovers its lease instead. ``max_per_user`` sessions per user at
most (``count_of``), so one principal cannot fill the shard's memory with sessions.

Records (``seq`` and the reply in JSON)::

    \\x01s <u128 session id>         {"t": last active ms, "q": seq, "r": reply, "d": digest,
                                     "u": owner}
    \\x01t <u64 last active ms> <u128 session id> (empty)   -- the expiry index, in time order
    \\x01u <owner> \\x00 <u128 session id> (empty)          -- the sessions of each user
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass
from typing import Any

import msgspec

from keelfs.errors import PermissionDenied, ResourceExhausted
from keelfs.meta import jsonbytes
from keelfs.meta.commands import MAX_SESSION_ID, Result
from keelfs.meta.kvstore import KVStore, Txn, prefix_end

__all__ = [
    "DEFAULT_MAX_SESSIONS_PER_USER",
    "ID_BYTES",
    "MAX_SESSION_ID",
    "SessionInfo",
    "SessionRecord",
    "check_owner",
    "check_room",
    "delete",
    "exists",
    "expire",
    "info",
    "load",
    "new_session_id",
    "pack_id",
    "save",
    "unpack_id",
]

_U64 = struct.Struct(">Q")
_SESSION = b"\x01s"
_EXPIRY = b"\x01t"
_OWNED = b"\x01u"
ID_BYTES = 16
DEFAULT_MAX_SESSIONS_PER_USER = 4096
"""Enough for a busy user's clients (each opens a few per group); small enough that one user
cannot fill a shard with session records."""


def new_session_id() -> int:
    """A fresh session id: 128 random bits (never 0, which means "no session")."""
    return secrets.randbits(8 * ID_BYTES) or 1


def pack_id(session_id: int) -> bytes:
    """A session id as the fixed-width key part every session-keyed record uses."""
    return session_id.to_bytes(ID_BYTES, "big")


def unpack_id(raw: bytes, offset: int = 0) -> int:
    return int.from_bytes(raw[offset : offset + ID_BYTES], "big")


def _session_key(session_id: int) -> bytes:
    return _SESSION + pack_id(session_id)


def _expiry_key(last_active: int, session_id: int) -> bytes:
    return _EXPIRY + _U64.pack(last_active) + pack_id(session_id)


def _owned_prefix(owner: str) -> bytes:
    return _OWNED + owner.encode() + b"\x00"


class _Stored(msgspec.Struct):
    """A session record as ``SessionRecord.encode`` writes it, its reply left undecoded."""

    t: int
    q: int
    r: msgspec.Raw
    d: str = ""
    u: str | None = None


_STORED = msgspec.json.Decoder(_Stored)
_NULL = b"null"


class SessionRecord:
    """What a session's record holds: when it was last active, its last ``seq`` and the
    reply given to it (with its command's ``digest``), and its owner.

    Read back (``decode``), the reply stays in its JSON until something asks for it
    (``reply``): the next command of a session almost always has a new ``seq``, whose answer
    replaces the reply unread; only a retry reads it. Immutable by convention (no method
    changes it; ``touched``/``answered`` make new records)."""

    __slots__ = ("_reply", "_reply_json", "digest", "last_active", "owner", "seq")

    def __init__(
        self,
        last_active: int,
        seq: int = 0,
        reply: Result | None = None,
        digest: str = "",
        owner: str | None = None,
    ) -> None:
        self.last_active = last_active
        self.seq = seq
        self._reply = reply
        self._reply_json: bytes | None = None
        self.digest = digest
        """``Command.digest()`` of the command that got ``reply``."""
        self.owner = owner
        """The user that registered the session; ``None``: a record from before owners."""

    @property
    def reply(self) -> Result | None:
        raw = self._reply_json
        if raw is not None:
            self._reply = Result.from_json(jsonbytes.loads(raw))
            self._reply_json = None
        return self._reply

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SessionRecord):
            return NotImplemented
        return (self.last_active, self.seq, self.reply, self.digest, self.owner) == (
            other.last_active,
            other.seq,
            other.reply,
            other.digest,
            other.owner,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable by its lazy reply, like a dict

    def __repr__(self) -> str:
        return (
            f"SessionRecord(last_active={self.last_active!r}, seq={self.seq!r}, "
            f"reply={self.reply!r}, digest={self.digest!r}, owner={self.owner!r})"
        )

    def encode(self) -> bytes:
        reply = self.reply
        body: dict[str, Any] = {"t": self.last_active, "q": self.seq, "d": self.digest}
        body["r"] = None if reply is None else reply.to_json()
        if self.owner is not None:
            body["u"] = self.owner
        return jsonbytes.dumps_sorted(body)

    @classmethod
    def decode(cls, raw: bytes) -> SessionRecord:
        try:
            stored = _STORED.decode(raw)
        except msgspec.DecodeError:  # not as encode writes it: read it as it always was
            return cls._decode_any(raw)
        record = cls(stored.t, stored.q, None, stored.d, stored.u)
        if bytes(stored.r) != _NULL:
            record._reply_json = bytes(stored.r)
        return record

    @classmethod
    def _decode_any(cls, raw: bytes) -> SessionRecord:
        body = jsonbytes.loads(raw)
        reply = None if body["r"] is None else Result.from_json(body["r"])
        owner = body.get("u")
        return cls(int(body["t"]), int(body["q"]), reply, str(body.get("d", "")), owner)

    def touched(self, clock: int) -> SessionRecord:
        return SessionRecord(clock, self.seq, self.reply, self.digest, self.owner)

    def answered(self, clock: int, seq: int, reply: Result, digest: str) -> SessionRecord:
        return SessionRecord(clock, seq, reply, digest, self.owner)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What a read of a session shows."""

    session_id: int
    last_active_ms: int
    last_seq: int


def load(txn: Txn | KVStore, session_id: int) -> SessionRecord | None:
    raw = txn.get(_session_key(session_id))
    return None if raw is None else SessionRecord.decode(raw)


def exists(txn: Txn | KVStore, session_id: int) -> bool:
    return txn.get(_session_key(session_id)) is not None


def save(txn: Txn, session_id: int, record: SessionRecord, old: SessionRecord | None) -> None:
    """Write ``record`` (``old``: what was there, to move the expiry index entry)."""
    if old is not None and old.last_active != record.last_active:
        txn.delete(_expiry_key(old.last_active, session_id))
    if old is None and record.owner is not None:
        txn.put(_owned_prefix(record.owner) + pack_id(session_id), b"")
    txn.put(_expiry_key(record.last_active, session_id), b"")
    txn.put(_session_key(session_id), record.encode())


def _forget(txn: Txn, session_id: int, record: SessionRecord) -> None:
    txn.delete(_expiry_key(record.last_active, session_id))
    txn.delete(_session_key(session_id))
    if record.owner is not None:
        txn.delete(_owned_prefix(record.owner) + pack_id(session_id))


def delete(txn: Txn, session_id: int) -> bool:
    old = load(txn, session_id)
    if old is None:
        return False
    _forget(txn, session_id, old)
    return True


def check_owner(record: SessionRecord, session_id: int, user: str) -> None:
    """``PermissionDenied`` unless ``user`` registered the session (module doc)."""
    if record.owner is not None and record.owner != user:
        raise PermissionDenied(
            "", user, message=f"session {session_id:032x} belongs to another user, not {user}"
        )


def check_room(txn: Txn, owner: str, max_per_user: int) -> None:
    """``ResourceExhausted`` if ``owner`` already has ``max_per_user`` sessions here."""
    prefix = _owned_prefix(owner)
    for held, _ in enumerate(txn.scan(prefix, prefix_end(prefix)), 1):
        if held >= max_per_user:
            raise ResourceExhausted(
                "sessions",
                max_per_user,
                message=f"{owner} already has {max_per_user} sessions open here "
                "(the most one user may hold): close some or wait for idle ones to expire",
            )


def expire(txn: Txn, clock: int, ttl_ms: int, floor: int = 0) -> list[int]:
    """Delete every session idle since before ``clock - ttl_ms``; their ids, oldest first.

    ``floor``: a cutoff this replica already expired everything below (the caller's memory of
    its previous call). The scan starts there instead of at the index's beginning, so it never
    steps over the tombstones that earlier expiries and touches left below it; the result is
    the same, since no record below an applied cutoff can exist (new records are stamped with
    the clock, which only grows)."""
    cutoff = clock - ttl_ms
    if cutoff <= max(floor, 0):
        return []
    gone: list[int] = []
    start = _EXPIRY + _U64.pack(max(floor, 0))
    for key, _ in list(txn.scan(start, _EXPIRY + _U64.pack(cutoff))):
        session_id = unpack_id(key, len(_EXPIRY) + _U64.size)
        record = load(txn, session_id)
        txn.delete(key)
        if record is not None:
            _forget(txn, session_id, record)
        gone.append(session_id)
    return gone


def info(store: KVStore, session_id: int) -> SessionInfo | None:
    record = load(store, session_id)
    if record is None:
        return None
    return SessionInfo(session_id, record.last_active, record.seq)
