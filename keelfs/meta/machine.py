"""What both metadata state machines share: applying envelopes, time, sessions, snapshots.

``MetaStateMachine`` implements ``keelfs.runtime.statemachine.StateMachine`` over a
``KVStore``. One ``apply(index, data)``:

1. decodes the envelope (a bad one becomes an error result; only the applied index moves);
2. advances the clock to ``max(clock, envelope.now_ms)`` (the proposer's log time: how a
   leader reckons it so that a wrong wall clock cannot make it jump is
   ``keelfs.master.node.LogClock``'s story; here it only never goes back);
3. housekeeping: expires idle sessions and whatever the subclass ties to time (leases);
4. checks the session: unknown -> ``SessionExpired``; a repeated ``seq`` -> the recorded
   reply, without applying again (``InvalidArgument`` if that ``seq`` answered a different
   command); an older ``seq`` -> ``InvalidArgument``; a new ``seq`` in a ``replay`` envelope
   -> ``REDIRECT``, recorded as that ``seq``'s reply, without applying (``Envelope.replay``);
5. runs the command's handler in a nested ``Txn``: a ``KeelError`` drops that stage (the state
   is untouched by the command) and becomes the error result;
6. records the reply in the session, and writes everything staged plus the applied index in
   ONE atomic store write.

An entry may also be a pack of envelopes (``keelfs.meta.packs``): steps 2-3 run once, at the
largest of their clocks; steps 4-5 and the reply of step 6 for each command in order; and
one store write for all of them (``_apply_pack``).

So ``apply`` never raises for a bad command, and every replica ends in the same state whatever
the command was. It raises for a bug in a handler (a non-``KeelError``) or a failing store:
then nothing of that entry is written (neither its stage, nor the clock, nor the applied
index), and the runtime stops the node with the entry unapplied (``RaftGroup._apply_failed``):
answering the error and going on would let this replica's applied index pass an entry the
others applied, or one a transient fault failed here only.

Nothing in ``apply`` reads a wall clock, a random source, or iterates an unordered container
into the state: time comes from the envelope, ids from the log index.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar

from keelfs.errors import InvalidArgument, KeelError, PermissionDenied, Redirect, SessionExpired
from keelfs.meta import packs, sessions
from keelfs.meta.commands import (
    CloseSession,
    Command,
    Envelope,
    KeepAlive,
    RegisterSession,
    Result,
    Tick,
    decode_envelope,
)
from keelfs.meta.frozen import fast_init
from keelfs.meta.kvstore import (
    DEFAULT_CHUNK_BYTES,
    KEY_END,
    REPLICATED_START,
    KVStore,
    SnapshotReader,
    Txn,
    encode_snapshot,
)
from keelfs.meta.principals import SUPERUSER, Caller
from keelfs.storage.errors import SnapshotCorruptedError

__all__ = ["Context", "MetaStateMachine"]

_U64 = struct.Struct(">Q")
K_APPLIED = b"\x00applied"
K_RESTORING = b"\x00restoring"
"""Present while a restore is under way; found at open, it means the restore was cut short."""
K_CLOCK = b"\x01clock"

DEFAULT_SESSION_TTL_MS = 120_000
_RESTORE_BATCH_BYTES = 4 << 20

Handler = Callable[[Txn, Any, "Context"], Any]


@fast_init
@dataclass(frozen=True, slots=True)
class Context:
    """What a handler knows besides its command: the entry's index, the state machine's clock
    (the largest leader timestamp applied so far), the envelope's session and sequence
    number (0: none) and who it acts for (``keelfs.meta.principals``)."""

    index: int
    now: int
    session_id: int
    seq: int = 0
    caller: Caller = SUPERUSER


class MetaStateMachine:
    """Base of ``ShardStateMachine`` and ``ConfigStateMachine`` (see the module doc).

    Subclasses set ``commands`` (op -> class) and define a handler ``_op_<op>(txn, cmd, ctx)``
    for each op, returning a JSON-safe value or raising ``KeelError``. ``session_ttl_ms`` is
    part of the replicated semantics: every member must be built with the same value.
    """

    commands: ClassVar[Mapping[str, type[Command]]]
    packable_ops: ClassVar[frozenset[str]] = frozenset()
    """Ops whose commands may share an entry with others (``keelfs.meta.packs``): those that
    read and write only through the apply's ``Txn`` and change no state the object caches
    between entries (a move's range table, the quota limits)."""

    def __init__(
        self,
        store: KVStore,
        *,
        session_ttl_ms: int = DEFAULT_SESSION_TTL_MS,
        max_sessions_per_user: int = sessions.DEFAULT_MAX_SESSIONS_PER_USER,
    ) -> None:
        if session_ttl_ms <= 0:
            raise ValueError("session_ttl_ms must be positive")
        if max_sessions_per_user <= 0:
            raise ValueError("max_sessions_per_user must be positive")
        self._store = store
        self.session_ttl_ms = session_ttl_ms
        self.max_sessions_per_user = max_sessions_per_user
        """Replicated semantics like ``session_ttl_ms``: the same on every member."""
        self._handlers: dict[str, Handler] = {
            op: getattr(self, f"_op_{op}") for op in self.commands
        }
        if store.get(K_RESTORING) is not None:
            # a restore was cut short: what is here is partial; start from nothing (the runtime
            # sees applied index 0 and restores its snapshot again)
            store.write({K_APPLIED: None, K_RESTORING: None}, clear_replicated=True)
        raw = store.get(K_APPLIED)
        self._applied = 0 if raw is None else _U64.unpack(raw)[0]
        self.clock_listener: Callable[[int], None] | None = None
        """Told the clock after each entry is applied and after a restore (the proposer's
        ``LogClock`` learns log time from it); local, it changes nothing replicated."""
        self._entry_clock = 0
        self.expiry_floors: dict[bytes, int] = {}
        """Per time index (sessions, leases), a cutoff below which it is known to be empty:
        where the next expiry scan starts (a cache of what is applied; empty after a restore
        or a restart, when scans start from the beginning again)."""
        self._staged_floors: dict[bytes, int] = {}

    # -- StateMachine protocol -----------------------------------------------------------------
    def apply(self, index: int, data: bytes) -> Result | list[Result]:
        """Apply one committed entry; returns its ``Result`` (see the module doc), or for a
        pack (``keelfs.meta.packs``) one ``Result`` per command, in order."""
        if index <= self._applied:
            return Result.failure(
                InvalidArgument(f"entry {index} is at or below the applied index {self._applied}")
            )
        txn = Txn(self._store)
        self._staged_floors.clear()
        self._entry_clock = 0
        outcome: Result | list[Result]
        if packs.is_pack(data):
            outcome = self._apply_pack(txn, data, index)
        else:
            try:
                envelope = decode_envelope(data, self.commands)
            except KeelError as e:
                outcome = Result.failure(e)
            else:
                outcome = self._apply_envelope(txn, envelope, index)
            txn.update(self._derived(self._store, txn.writes))
        txn.put(K_APPLIED, _U64.pack(index))
        self._store.write(txn.writes)
        self._applied = index
        self.expiry_floors.update(self._staged_floors)
        self._changed()
        if self.clock_listener is not None and self._entry_clock:
            self.clock_listener(self._entry_clock)
        return outcome

    def pack(self, items: Sequence[bytes]) -> list[tuple[int, bytes]]:
        """The entries that carry the encoded envelopes ``items`` (all of packable commands:
        ``packable_ops``), in order: ``(how many items, entry data)`` each
        (``keelfs.runtime.statemachine.PackingStateMachine``)."""
        return packs.plan(items)

    def applied_index(self) -> int:
        return self._applied

    def snapshot(self) -> bytes:
        """The whole state as one ``bytes`` (the joined ``snapshot_chunks()``)."""
        return b"".join(self.snapshot_chunks())

    def restore(self, data: bytes, index: int) -> None:
        """Replace the state with ``data`` from ``snapshot()`` (empty: the empty state)."""
        self.restore_chunks([data] if data else None, index)

    # -- streamed snapshots --------------------------------------------------------------------
    def snapshot_chunks(self, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[bytes]:
        """The state as of this call (``applied_index()`` now), streamed in chunks.

        The view is fixed when this is called (a RocksDB iterator's implicit snapshot), so the
        caller may consume it while later entries are applied; nothing of the state is held in
        Python beyond one chunk."""
        items = self._store.frozen_scan(REPLICATED_START, KEY_END)
        return encode_snapshot(items, self._applied, chunk_bytes)

    def restore_chunks(self, chunks: Iterable[bytes] | None, index: int) -> None:
        """Replace the state with a stream from ``snapshot_chunks()`` taken at ``index``
        (``None``: the empty state).

        The old state is cleared and a restore marker set in one write, the records follow in
        batches, and the last batch sets the applied index and clears the marker; a crash in
        between leaves the marker, and the next open starts from the empty state with applied
        index 0, so the runtime restores again. A damaged stream raises
        ``SnapshotCorruptedError`` and leaves the same state as a crash would."""
        self._applied = 0
        self.expiry_floors.clear()
        self._store.write({K_RESTORING: b"1", K_APPLIED: None}, clear_replicated=True)
        self._changed()
        if chunks is not None:
            batch: dict[bytes, bytes | None] = {}
            size = 0
            for key, value in SnapshotReader(chunks):
                if not REPLICATED_START <= key < KEY_END:
                    raise SnapshotCorruptedError(f"snapshot holds a local key {key!r}")
                batch[key] = value
                size += len(key) + len(value)
                if size >= _RESTORE_BATCH_BYTES:
                    self._store.write(batch)
                    batch, size = {}, 0
            self._store.write(batch)
        self._store.write({K_APPLIED: _U64.pack(index), K_RESTORING: None})
        self._applied = index
        self._changed()
        if self.clock_listener is not None:
            self.clock_listener(self.clock_ms())

    # -- reads ----------------------------------------------------------------------------------
    def clock_ms(self) -> int:
        """The state machine's clock: the largest leader timestamp applied so far."""
        raw = self._store.get(K_CLOCK)
        return 0 if raw is None else _U64.unpack(raw)[0]

    def session(self, session_id: int) -> sessions.SessionInfo | None:
        return sessions.info(self._store, session_id)

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> MetaStateMachine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the apply pipeline ----------------------------------------------------------------------
    def _apply_envelope(self, txn: Txn, envelope: Envelope, index: int) -> Result:
        clock = self._advance_clock(txn, envelope.now_ms)
        return self._apply_command(txn, envelope, index, clock)

    def _apply_pack(self, txn: Txn, data: bytes, index: int) -> Result | list[Result]:
        """Apply the commands of a pack (``keelfs.meta.packs``) in order, in ``txn``.

        The entry's clock is the largest of its commands' ``now_ms`` (and the state machine's
        clock), advanced once, with one round of housekeeping; then each command is applied
        as a single-command entry of that clock would be, its derived records (``_derived``)
        added with its own writes, so that the next command sees the state its predecessors
        left. A command that cannot be decoded, or is not packable,
        fails alone; a pack whose framing is broken fails as a whole (one ``Result``)."""
        try:
            items = packs.unpack(data)
        except KeelError as e:
            return Result.failure(e)
        decoded: list[Envelope | KeelError] = []
        for item in items:
            try:
                envelope = decode_envelope(item, self.commands)
                if envelope.command.op not in self.packable_ops:
                    raise InvalidArgument(f"{envelope.command.op} cannot be packed", "op")
                decoded.append(envelope)
            except KeelError as e:
                decoded.append(e)
        nows = [e.now_ms for e in decoded if isinstance(e, Envelope)]
        clock = 0
        if nows:
            step = txn.child()
            clock = self._advance_clock(step, max(nows))
            step.update(self._derived(txn, step.writes))
            step.commit()
        results: list[Result] = []
        for one in decoded:
            if isinstance(one, KeelError):
                results.append(Result.failure(one))
            else:
                results.append(self._apply_command(txn, one, index, clock, settle=True))
        return results

    def _advance_clock(self, txn: Txn, now_ms: int) -> int:
        """Move the clock to ``now_ms`` (never back) and expire what it ends; the clock."""
        raw = txn.get(K_CLOCK)
        clock = max(0 if raw is None else _U64.unpack(raw)[0], now_ms)
        txn.put(K_CLOCK, _U64.pack(clock))
        self._entry_clock = clock
        floor = self.expiry_floors.get(b"session", 0)
        for session_id in sessions.expire(txn, clock, self.session_ttl_ms, floor):
            self._session_ended(txn, session_id)
        self.raise_floor(b"session", clock - self.session_ttl_ms)
        self._housekeeping(txn, clock)
        return clock

    def _apply_command(
        self, txn: Txn, envelope: Envelope, index: int, clock: int, *, settle: bool = False
    ) -> Result:
        """Steps 4-6 of the module doc for one command, at ``clock``. ``settle``: add what the
        command's writes derive (``_derived``) with them (a pack's command, which the next one
        must see complete), not once at the end of the entry."""
        command, sid, seq = envelope.command, envelope.session_id, envelope.seq
        record: sessions.SessionRecord | None = None
        if sid:
            record = sessions.load(txn, sid)
            if record is None:
                return Result.failure(SessionExpired(sid))
            try:
                sessions.check_owner(record, sid, envelope.acting_for.user)
            except PermissionDenied as denied:
                return Result.failure(denied)
            if seq and seq <= record.seq:
                if seq == record.seq and record.reply is not None:
                    if record.digest != command.digest():
                        return Result.failure(
                            InvalidArgument(
                                f"seq {seq} of session {sid} was used for a different command",
                                "seq",
                            )
                        )
                    sessions.save(txn, sid, _touched(record, clock), record)
                    return record.reply
                return Result.failure(
                    InvalidArgument(
                        f"seq {seq} of session {sid} is older than its last command "
                        f"({record.seq}); its reply is no longer kept",
                        "seq",
                    )
                )
            if not seq:  # with a seq, the reply written below touches it too
                sessions.save(txn, sid, _touched(record, clock), record)
            if envelope.replay:  # not answered from the cache above: never applied here
                result = Result.failure(_not_applied(sid, seq))
                sessions.save(
                    txn, sid, record.answered(clock, seq, result, command.digest()), record
                )
                return result
        elif command.needs_session:
            return Result.failure(
                InvalidArgument(f"{command.op} must be sent in a client session", "session_id")
            )

        caller = envelope.acting_for
        if command.servers_only and not caller.superuser:
            return Result.failure(
                PermissionDenied(
                    command.op,
                    caller.user,
                    message=f"{command.op} is for metadata servers only, not {caller.user}",
                )
            )
        stage = self._stage(txn, command)
        try:
            context = Context(index, clock, sid, seq, caller)
            value = self._handlers[command.op](stage, command, context)
            self._admit(txn, stage, command)
        except KeelError as e:
            result = Result.failure(e)
            if settle:
                self._derived(txn, {})  # forget what the dropped stage left to derive
        else:
            if settle:
                stage.update(self._derived(txn, stage.writes))
            stage.commit()
            result = Result.success(value)
        if record is not None and seq and sessions.exists(txn, sid):  # gone if it closed it
            if result.code == "UNAVAILABLE":
                # refused for now (a transaction's lock): nothing was applied, so the same
                # seq may come again and must then be applied, not answered from the cache
                updated = _touched(record, clock)
            else:
                updated = record.answered(clock, seq, result, command.digest())
            sessions.save(txn, sid, updated, record)
        return result

    def raise_floor(self, index: bytes, cutoff: int) -> None:
        """Remember (once this apply is written) that the time index ``index`` holds nothing
        below ``cutoff`` any more, so its next expiry scan may start there."""
        if cutoff > self.expiry_floors.get(index, 0):
            self._staged_floors[index] = cutoff

    # -- hooks ----------------------------------------------------------------------------------
    def _stage(self, txn: Txn, command: Command) -> Txn:
        """The nested stage ``command``'s handler runs in (a subclass may guard it)."""
        return txn.child()

    def _housekeeping(self, txn: Txn, clock: int) -> None:
        """Expire what the subclass ties to the clock (after sessions have been expired)."""

    def _session_ended(self, txn: Txn, session_id: int) -> None:
        """A session expired or was closed: release what it held."""

    def _changed(self) -> None:
        """The store changed (an apply or a restore): drop derived caches."""

    def _admit(self, before: Txn, stage: Txn, command: Command) -> None:
        """Raise a ``KeelError`` to refuse what ``command`` staged in ``stage`` (over the
        state ``before``) as a whole, once its handler has run: a check on the sum of its
        writes (the data shards' quotas)."""

    def _derived(
        self, before: KVStore | Txn, writes: Mapping[bytes, bytes | None]
    ) -> Mapping[bytes, bytes | None]:
        """What the subclass derives from ``writes`` staged over the state ``before``
        (indexes kept in the same atomic write as the records they index)."""
        return {}

    # -- session commands ------------------------------------------------------------------------
    def _op_register_session(self, txn: Txn, cmd: RegisterSession, ctx: Context) -> Any:
        # an entry from before random ids carries none: its index was the id then
        session_id = int(cmd.session_id, 16) if cmd.session_id else ctx.index
        if sessions.exists(txn, session_id):  # 2^-128 by chance; a replayed command otherwise
            raise InvalidArgument(f"session {session_id:032x} exists already", "session_id")
        owner = ctx.caller.user
        sessions.check_room(txn, owner, self.max_sessions_per_user)
        sessions.save(txn, session_id, sessions.SessionRecord(ctx.now, owner=owner), None)
        return {"session_id": session_id}

    def _op_keep_alive(self, txn: Txn, cmd: KeepAlive, ctx: Context) -> Any:
        return {"clock": ctx.now}

    def _op_close_session(self, txn: Txn, cmd: CloseSession, ctx: Context) -> Any:
        self._session_ended(txn, ctx.session_id)
        sessions.delete(txn, ctx.session_id)
        return {}

    def _op_tick(self, txn: Txn, cmd: Tick, ctx: Context) -> Any:
        return {"clock": ctx.now}


def _not_applied(session_id: int, seq: int) -> Redirect:
    """The answer to a replayed ``seq`` this shard never applied (``Envelope.replay``): go
    where the shard map says. Recorded like any reply, so the first attempt, should it still
    arrive, gets this too instead of being applied."""
    return Redirect(
        message=f"seq {seq} of session {session_id} was not applied on this shard; "
        "send it to the shard the current map names"
    )


def _touched(record: sessions.SessionRecord, clock: int) -> sessions.SessionRecord:
    return record.touched(clock)
