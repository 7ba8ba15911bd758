"""Client sessions: the replicated reply cache that makes commands exactly-once.

As in the Raft dissertation (§6.3): a client registers a session (its id is the log index of
the registration), then numbers its commands ``seq`` 1, 2, ...; the state machine keeps, per
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

Records (``seq`` and the reply in JSON)::

    \\x01s <u64 session id>          {"t": last active ms, "q": seq, "r": reply, "d": digest}
    \\x01t <u64 last active ms> <u64 session id> (empty)    -- the expiry index, in time order
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from keelfs.meta.commands import Result
from keelfs.meta.kvstore import KVStore, Txn

__all__ = ["SessionInfo", "SessionRecord", "exists", "load", "save", "delete", "expire", "info"]

_U64 = struct.Struct(">Q")
_SESSION = b"\x01s"
_EXPIRY = b"\x01t"


def _session_key(session_id: int) -> bytes:
    return _SESSION + _U64.pack(session_id)


def _expiry_key(last_active: int, session_id: int) -> bytes:
    return _EXPIRY + _U64.pack(last_active) + _U64.pack(session_id)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    last_active: int
    seq: int = 0
    reply: Result | None = None
    digest: str = ""
    """``Command.digest()`` of the command that got ``reply``."""

    def encode(self) -> bytes:
        body: dict[str, Any] = {"t": self.last_active, "q": self.seq, "d": self.digest}
        body["r"] = None if self.reply is None else self.reply.to_json()
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> SessionRecord:
        body = json.loads(raw)
        reply = None if body["r"] is None else Result.from_json(body["r"])
        return cls(int(body["t"]), int(body["q"]), reply, str(body.get("d", "")))


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
    txn.put(_expiry_key(record.last_active, session_id), b"")
    txn.put(_session_key(session_id), record.encode())


def delete(txn: Txn, session_id: int) -> bool:
    old = load(txn, session_id)
    if old is None:
        return False
    txn.delete(_expiry_key(old.last_active, session_id))
    txn.delete(_session_key(session_id))
    return True


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
        session_id = _U64.unpack_from(key, len(_EXPIRY) + _U64.size)[0]
        txn.delete(key)
        txn.delete(_session_key(session_id))
        gone.append(session_id)
    return gone


def info(store: KVStore, session_id: int) -> SessionInfo | None:
    record = load(store, session_id)
    if record is None:
        return None
    return SessionInfo(session_id, record.last_active, record.seq)
