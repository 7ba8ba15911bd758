"""A data shard's side of online resharding: range states in the log, and the guard.

How a move runs is ``keelfs.master.resharding``'s story; this module keeps what each shard must
remember so that its state machine, not a master's cached map, decides what it may serve:

- the ``RangeTable`` (``keelfs.meta.ranges``) under one key, ``A``;
- one record per move this shard took part in, ``M <u64 txn id>``: ``frozen`` (source, copying),
  ``incoming`` (target, copying), ``committed`` or ``aborted``. A command of a move that is
  already decided here is refused, so a driver that lost its leadership cannot freeze or fill
  a range again after its move was settled.

``GuardedTxn`` is the stage every ordinary command runs in while the table is not empty: each
namespace record it reads, writes or scans is looked up by its directory's hash, and a record
of a ``moved`` range raises ``REDIRECT``, of an ``incoming`` range "locked" (the master
re-proposes), and a change in a ``frozen`` range "locked" too. A transaction's commands are
guarded by their part's homes (``transactions.home_dirs``); a part may not even be locked in a
range that is moving, nor may a range start to move under an undecided part
(``ShardStateMachine._part_range_error`` and the freeze's check), since its decision must be
applied where it was locked.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Protocol

from keelfs.errors import InvalidArgument, KeelError, Redirect, Unavailable
from keelfs.meta import paths
from keelfs.meta.kvstore import Txn
from keelfs.meta.ranges import FROZEN, INCOMING, MOVED, RangeState, RangeTable
from keelfs.meta.ring import key_hash

__all__ = [
    "ABORTED",
    "COMMITTED",
    "RANGES",
    "GuardedTxn",
    "load_move",
    "load_table",
    "routing_dir",
    "save_move",
    "save_table",
]

RANGES = b"A"
MOVE = b"M"
COMMITTED = "committed"
ABORTED = "aborted"
RECORD_PREFIXES = (b"D", b"E")
"""The namespace's record keys (``keelfs.meta.namespace``): ``D<dir>`` (a directory's
self-record) and ``E<parent>\\0<name>`` (an entry); both are placed by a directory's hash."""

_U64 = struct.Struct(">Q")


def routing_dir(key: bytes) -> str | None:
    """The directory whose ring position places the record ``key`` (None: not a record)."""
    kind = key[:1]
    if kind == b"D":
        return key[1:].decode("utf-8")
    if kind == b"E":
        return key[1:].partition(b"\x00")[0].decode("utf-8")
    return None


class _Getter(Protocol):
    def get(self, key: bytes) -> bytes | None: ...


def load_table(kv: _Getter) -> RangeTable:
    return RangeTable.decode(kv.get(RANGES))


def save_table(txn: Txn, table: RangeTable) -> None:
    if table:
        txn.put(RANGES, table.encode())
    else:
        txn.delete(RANGES)


def _move_key(txn_id: int) -> bytes:
    return MOVE + _U64.pack(txn_id)


def load_move(kv: _Getter, txn_id: int) -> dict[str, object] | None:
    raw = kv.get(_move_key(txn_id))
    return None if raw is None else dict(json.loads(raw))


def save_move(txn: Txn, txn_id: int, state: str, source: bool) -> None:
    body = {"state": state, "source": source}
    txn.put(_move_key(txn_id), json.dumps(body, separators=(",", ":")).encode())


def range_error(state: RangeState, directory: str, *, write: bool) -> KeelError | None:
    """What touching a record of ``directory`` in ``state`` raises (None: allowed)."""
    if state.state == MOVED:
        return Redirect(directory, state.peer, state.version)
    if state.state == INCOMING:
        return Unavailable(
            "locked", message=f"{directory} is moving to this shard (move {state.txn_id}); retry"
        )
    if write and state.state == FROZEN:
        return Unavailable(
            "locked",
            message=f"{directory} is moving to shard {state.peer} (move {state.txn_id}); retry",
        )
    return None


class GuardedTxn(Txn):
    """A stage that refuses records of ranges this shard must not serve (module doc).

    ``homes``: the directories the command is about (its paths and their parents). A record of
    a home directory in a moved or incoming range makes the command fail (``REDIRECT`` or
    "locked"). Any other record there is simply not here: it reads as absent and scans skip
    it (a create's parent's own entry, which the create touches only if it is here, is such a
    record). ``homes=None``: every record counts as a home."""

    __slots__ = ("_homes", "_table")

    def __init__(self, base: Txn, table: RangeTable, homes: frozenset[str] | None) -> None:
        super().__init__(base)
        self._table = table
        self._homes = homes

    def _state(self, key: bytes) -> tuple[str, RangeState, bool] | None:
        directory = routing_dir(key)
        if directory is None:
            return None
        state = self._table.lookup(key_hash(directory))
        if state is None:
            return None
        home = self._homes is None or directory in self._homes
        return directory, state, home

    def _hidden(self, key: bytes) -> bool:
        """Whether ``key`` reads as absent; raises if the command may not read it."""
        found = self._state(key)
        if found is None:
            return False
        directory, state, home = found
        if home:
            err = range_error(state, directory, write=False)
            if err is not None:
                raise err
            return False
        return state.state != FROZEN

    def get(self, key: bytes) -> bytes | None:
        return None if self._hidden(key) else super().get(key)

    def _check_write(self, key: bytes) -> None:
        found = self._state(key)
        if found is not None:
            err = range_error(found[1], found[0], write=True)
            if err is not None:
                raise err

    def put(self, key: bytes, value: bytes) -> None:
        self._check_write(key)
        super().put(key, value)

    def delete(self, key: bytes) -> None:
        self._check_write(key)
        super().delete(key)

    def scan(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key, value in super().scan(start, end):
            if not self._hidden(key):
                yield key, value

    def child(self) -> Txn:
        return GuardedTxn(self, self._table, self._homes)


def check_in(table_ranges: list[tuple[int, int]], key: bytes) -> None:
    """``key`` must be a namespace record placed in one of ``table_ranges``: a key as the
    shard writes it (a canonical path; an entry's name a valid name), since the records a
    move copies are read by every later command of the shard that takes them in."""
    try:
        directory = routing_dir(key)
        if directory is not None and paths.normalize(directory) != directory:
            directory = None
        if directory is not None and key[:1] == b"E":
            paths.validate_name(key[1:].partition(b"\x00")[2].decode("utf-8"))
    except (UnicodeDecodeError, KeelError):
        directory = None
    if directory is None:
        raise InvalidArgument(f"{key!r} is not a namespace record", "keys")
    h = key_hash(directory)
    if not any(first <= h <= last for first, last in table_ranges):
        raise InvalidArgument(f"record of {directory} is outside the move's ranges", "keys")
