"""A data shard's commands of cross-shard transactions: begin, prepare, decide, finish and
acknowledge (the records and steps: ``keelfs.meta.transactions``; the protocol:
``keelfs.master.transactions``).
"""

from __future__ import annotations

import json
from typing import Any

from keelfs.errors import (
    AlreadyExists,
    DirectoryNotEmpty,
    InvalidArgument,
    IsADirectory,
    KeelError,
    LeaseConflict,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from keelfs.meta import acls, moves, paths, quotas, sessions, snapshots
from keelfs.meta import transactions as tx
from keelfs.meta import tree_fences as tf
from keelfs.meta.commands import (
    TxnAcked,
    TxnBegin,
    TxnDecide,
    TxnFinish,
    TxnPrepare,
)
from keelfs.meta.kvstore import Txn, prefix_end
from keelfs.meta.machine import Context
from keelfs.meta.permission_checks import PermissionChecks
from keelfs.meta.principals import EXECUTE
from keelfs.meta.ranges import FROZEN, INCOMING, MOVED
from keelfs.meta.records import check_version
from keelfs.meta.ring import key_hash
from keelfs.meta.shard_records import (
    _RETRY_ANEW,
    _children_prefix,
    _entry_key,
    _first,
    _self_key,
)

__all__ = ["TransactionSteps"]


class TransactionSteps(PermissionChecks):
    """The transaction commands of ``ShardStateMachine`` and the reads of its records."""

    def transaction(self, txn_id: int) -> tx.TxnRecord | None:
        """The record of transaction ``txn_id`` here (None: none, or forgotten)."""
        return tx.load(self._store, txn_id)

    def transactions(self) -> list[tx.TxnRecord]:
        """Every transaction record this shard holds."""
        return tx.records(self._store)

    def open_transactions(self) -> list[tx.TxnRecord]:
        """The records that still need work here (what recovery drives)."""
        return tx.open_records(self._store)

    def _part_range_error(self, steps: tuple[tx.Step, ...]) -> KeelError | None:
        """Why ``steps`` may not be locked here now, because of a move (None: they may).

        A part locked here is applied here when the decision comes, so every range it
        reaches must stay here until then: none of them may be moving (frozen: the copy
        would miss the change; incoming: not ours yet), which is "locked" (retry when the
        move is over), and a record it needs may not have moved away (``REDIRECT``: it
        never will be here). ``_op_move_freeze`` is the other half: no range an undecided
        part reaches starts to move."""
        table = self.ranges
        if not table:
            return None
        for directory in sorted(tx.home_dirs(steps)):
            state = table.lookup(key_hash(directory))
            if state is not None and state.state == MOVED:
                return moves.range_error(state, directory, write=True)
        for directory in sorted(tx.reach_dirs(steps)):
            state = table.lookup(key_hash(directory))
            if state is not None and state.state in (FROZEN, INCOMING):
                return moves.range_error(state, directory, write=True)
        return None

    def _check_steps(self, txn: Txn, steps: tuple[tx.Step, ...], txn_id: int) -> None:
        conflict = tx.lock_conflict(txn, steps, txn_id)
        if conflict is not None:
            raise conflict
        marked = next(iter(txn.scan(snapshots.ALLOWED, prefix_end(snapshots.ALLOWED))), None)
        self._check_fences(txn, steps)
        for step in steps:
            path, kind = step.path, step.kind
            if marked is not None and kind in ("del_entry", "del_self"):
                snapshots.refuse_snapshottable(txn, path, "move or delete")  # as _op_rename's
            if kind == "absent" and self._entry(txn, path) is not None:
                raise AlreadyExists(path)
            if kind == "present" and self._entry(txn, path) is None:
                raise self._missing(txn, path)
            if kind in ("entry", "self"):
                key = _entry_key(path) if kind == "entry" else _self_key(path)
                if txn.get(key) != step.record.encode():
                    raise Unavailable(
                        "changed", message=f"{path} changed while the transaction was built"
                    )
            if kind == "entry_digest":
                stored = txn.get(_entry_key(path))
                if stored is None or tx.record_digest(stored) != step.record:
                    raise Unavailable(
                        "changed", message=f"{path} changed while the transaction was built"
                    )
            if kind == "dir":
                self._require_dir(txn, path)
            if kind == "empty":
                prefix = _children_prefix(path)
                if _first(txn, prefix, prefix_end(prefix)) is not None:
                    raise DirectoryNotEmpty(path)
            if kind == "may":
                self._check_may(txn, path, step.record)
            if kind == "version":
                check_version(path, self._entry(txn, path), step.record)
            if kind == "replaceable":
                existing = self._entry(txn, path)
                if existing is not None:
                    if existing.is_dir:
                        raise IsADirectory(path)
                    if self._holds_lease(txn, existing.lease_holder):
                        raise LeaseConflict(path, existing.lease_user)
        self._check_part_quotas(txn, steps)

    @staticmethod
    def _check_fences(txn: Txn, steps: tuple[tx.Step, ...]) -> None:
        """No step may reach into a tree being moved in steps (``keelfs.meta.tree_fences``)
        but the switch transaction's own: its ``tree_switch`` step finds its fence copying."""
        switching = frozenset(int(s.record) for s in steps if s.kind == "tree_switch")
        for move_id in switching:
            fence = tf.load(txn, move_id)
            if fence is None or fence.state != tf.COPYING:
                state = "settled" if fence is None else fence.state
                raise Unavailable(
                    "changed", message=f"tree move {move_id} is {state} here: not switched"
                )
        for step in steps:
            if step.kind == "touch":
                continue
            err = tf.write_error(txn, step.path, exempt=switching)
            if err is not None:
                raise err

    def _check_part_quotas(self, txn: Txn, steps: tuple[tx.Step, ...]) -> None:
        """A part that would bring names or space under a quota directory past its limit is
        refused when it is locked here (its writes simulated, then dropped;
        ``keelfs.meta.quotas``)."""
        roots = self.quota_limits
        if not roots or not any(s.kind in tx.CHANGES for s in steps):
            return
        simulated = txn.child()
        self._apply_steps(simulated, steps, 0)
        quotas.check(txn, quotas.deltas(txn, simulated.writes, roots), roots)

    def _check_may(self, txn: Txn, directory: str, record: str) -> None:
        caller, access, child, child_guards = tx.decode_may(record)
        self._check_dir(txn, caller, directory, access | EXECUTE)
        if child:
            entry = self._entry(txn, paths.join(directory, child))
            if entry is not None:
                self._check_sticky(txn, caller, paths.join(directory, child), entry)
        if child_guards is not None:
            here = self._child_guards(directory, self._require_dir(txn, directory))
            if here != child_guards:
                raise Unavailable(
                    "changed",
                    message=f"the permissions above {directory} changed while the "
                    "transaction was built",
                )
        inherited = tx.may_inherited(record)
        if inherited is not None:
            defaults = acls.default_entries(self._require_dir(txn, directory).acl)
            if defaults != inherited:
                raise Unavailable(
                    "changed",
                    message=f"the default ACL of {directory} changed while the transaction "
                    "was built",
                )

    def _apply_steps(self, txn: Txn, steps: tuple[tx.Step, ...], now: int) -> None:
        for step in steps:
            path, kind = step.path, step.kind
            if kind == "put_entry":
                txn.put(_entry_key(path), step.record.encode())
            elif kind == "del_entry":
                txn.delete(_entry_key(path))
            elif kind == "put_self":
                txn.put(_self_key(path), step.record.encode())
            elif kind == "del_self":
                txn.delete(_self_key(path))
            elif kind == "touch":
                self._touch_dir(txn, path, now)
            elif kind == "tree_switch":
                fence = tf.load(txn, int(step.record))
                if fence is not None and fence.state == tf.COPYING:
                    tf.save(txn, fence.evolve(tf.SWITCHED))
            elif kind == "replace":
                existing = self._entry(txn, path)
                if existing is not None and not existing.is_dir:
                    self._remove_file_state(txn, path, existing)
                    txn.delete(_entry_key(path))

    def _forget_later(self, txn: Txn, record: tx.TxnRecord, now: int) -> None:
        tx.schedule_forget(txn, record, now + self.txn_retention_ms)

    def _check_txn_room(self, txn: Txn) -> None:
        """``ResourceExhausted`` when ``max_open_txns`` transactions are open here already."""
        if tx.count_open(txn, self.max_open_txns) >= self.max_open_txns:
            raise ResourceExhausted(
                "transactions",
                self.max_open_txns,
                message=f"shard {self.shard_id} has {self.max_open_txns} transactions open "
                "(the most it takes at once): try again when they have finished",
            )

    def _op_txn_begin(self, txn: Txn, cmd: TxnBegin, ctx: Context) -> Any:
        record = tx.load(txn, cmd.txn_id)
        if record is not None:
            return record.to_dict()
        self._check_txn_room(txn)
        steps = tx.decode_part(cmd.part)
        moving = self._part_range_error(steps)
        if moving is not None:  # not recorded: the client's request waits and comes again
            raise moving
        self._check_steps(txn, steps, cmd.txn_id)
        tx.lock(txn, steps, cmd.txn_id)
        tx.set_open(txn, cmd.txn_id, True)
        record = tx.TxnRecord(
            cmd.txn_id,
            "coordinator",
            "pending",
            self.shard_id,
            cmd.part,
            ctx.now,
            participants=json.loads(cmd.participants),
            result=json.loads(cmd.result),
            kind=cmd.kind,
            session=ctx.session_id,
            seq=ctx.seq,
        )
        tx.save(txn, record)
        return record.to_dict()

    def _release_request(self, txn: Txn, record: tx.TxnRecord) -> None:
        """An abort worth retrying (a lock, a timeout, a participant whose range moved away):
        nothing was applied, so the client's request may run again with the same seq as a new
        transaction (routed by the client's newer map after a ``REDIRECT``), instead of being
        answered this abort from the session's reply cache forever."""
        if not record.session or not record.seq:
            return
        current = sessions.load(txn, record.session)
        reply = current.reply if current is not None else None
        if (
            current is not None
            and current.seq == record.seq
            and reply is not None
            and isinstance(reply.value, dict)
            and reply.value.get("txn_id") == record.txn_id
        ):
            released = sessions.SessionRecord(current.last_active, record.seq - 1)
            sessions.save(txn, record.session, released, current)

    def _op_txn_prepare(self, txn: Txn, cmd: TxnPrepare, ctx: Context) -> Any:
        record = tx.load(txn, cmd.txn_id)
        if record is not None:
            return record.to_dict()
        steps = tx.decode_part(cmd.part)
        record = tx.TxnRecord(
            cmd.txn_id, "participant", "prepared", cmd.coordinator, cmd.part, ctx.now
        )
        moving = self._part_range_error(steps)
        if isinstance(moving, Unavailable):
            raise moving  # not recorded: the coordinator prepares again until its timeout
        stage = txn.child()
        try:
            if moving is not None:
                raise moving
            self._check_steps(stage, steps, cmd.txn_id)
        except KeelError as refused:  # recorded, so that a repeated prepare gets this answer
            record.state, record.error = "aborted", refused.to_details()
            self._forget_later(txn, record, ctx.now)
        else:
            tx.lock(txn, steps, cmd.txn_id)
            tx.set_open(txn, cmd.txn_id, True)
        tx.save(txn, record)
        return record.to_dict()

    def _op_txn_decide(self, txn: Txn, cmd: TxnDecide, ctx: Context) -> Any:
        record = tx.load(txn, cmd.txn_id)
        if record is None or record.role != "coordinator":
            raise NotFound(str(cmd.txn_id), "transaction")
        if record.decided:
            return record.to_dict()
        steps = tx.decode_part(record.part)
        if cmd.commit:
            self._apply_steps(txn, steps, ctx.now)
            record.state = "committed"
        else:
            record.state = "aborted"
            record.error = json.loads(cmd.error) if cmd.error else None
            if record.error is not None and record.error.get("code") in _RETRY_ANEW:
                self._release_request(txn, record)
        tx.unlock(txn, steps, cmd.txn_id)
        if not record.unacked:
            tx.set_open(txn, cmd.txn_id, False)
            self._forget_later(txn, record, ctx.now)
        tx.save(txn, record)
        return record.to_dict()

    def _op_txn_finish(self, txn: Txn, cmd: TxnFinish, ctx: Context) -> Any:
        record = tx.load(txn, cmd.txn_id)
        if record is None:  # never prepared here, or finished and forgotten long ago
            return {"txn_id": cmd.txn_id, "state": "unknown"}
        if record.role != "participant":
            raise InvalidArgument(f"transaction {cmd.txn_id} is coordinated here", "txn_id")
        if record.decided:
            return record.to_dict()
        steps = tx.decode_part(record.part)
        if cmd.commit:
            self._apply_steps(txn, steps, ctx.now)
        record.state = "committed" if cmd.commit else "aborted"
        tx.unlock(txn, steps, cmd.txn_id)
        tx.set_open(txn, cmd.txn_id, False)
        self._forget_later(txn, record, ctx.now)
        tx.save(txn, record)
        return record.to_dict()

    def _op_txn_acked(self, txn: Txn, cmd: TxnAcked, ctx: Context) -> Any:
        record = tx.load(txn, cmd.txn_id)
        if record is None or record.role != "coordinator" or not record.decided:
            return {"txn_id": cmd.txn_id, "state": "unknown" if record is None else record.state}
        if cmd.shard in record.participants and cmd.shard not in record.acked:
            record.acked.append(cmd.shard)
            if not record.unacked:
                tx.set_open(txn, cmd.txn_id, False)
                self._forget_later(txn, record, ctx.now)
            tx.save(txn, record)
        return record.to_dict()
