"""A data shard's commands of online resharding: freeze, ingest, settle and drop the hash
ranges of a move (the range table: ``keelfs.meta.ranges``; the guard every command runs in:
``keelfs.meta.moves``; the driver: ``keelfs.master.resharding``).
"""

from __future__ import annotations

from typing import Any

from keelfs.errors import (
    InvalidArgument,
)
from keelfs.meta import moves, paths, sessions
from keelfs.meta import transactions as tx
from keelfs.meta.commands import (
    MoveDrop,
    MoveFreeze,
    MoveIngest,
    MoveSettle,
)
from keelfs.meta.kvstore import Txn, prefix_end
from keelfs.meta.machine import Context
from keelfs.meta.ranges import FROZEN, INCOMING, MOVED, RangeTable, pairs
from keelfs.meta.records import Inode, decode_foreign
from keelfs.meta.ring import key_hash
from keelfs.meta.shard_records import (
    _LEASE,
    ShardRecords,
    _unb64,
)

__all__ = ["MoveSteps"]


class MoveSteps(ShardRecords):
    """The resharding move commands of ``ShardStateMachine``."""

    def _set_table(self, txn: Txn, table: RangeTable) -> None:
        moves.save_table(txn, table)
        self._table = None  # reloaded from the store once this apply is written

    def _undecided_move(self, txn: Txn, txn_id: int, state: str) -> bool:
        """True if move ``txn_id`` is already ``state`` here; refuses a decided move."""
        record = moves.load_move(txn, txn_id)
        if record is None:
            return False
        if record["state"] in (moves.COMMITTED, moves.ABORTED):
            raise InvalidArgument(f"move {txn_id} is {record['state']} here", "txn_id")
        return record["state"] == state

    def _op_move_freeze(self, txn: Txn, cmd: MoveFreeze, ctx: Context) -> Any:
        if self._undecided_move(txn, cmd.txn_id, FROZEN):
            return {"state": FROZEN}
        spans = pairs(cmd.ranges)
        self._check_no_undecided_part_in(txn, spans)
        table = moves.load_table(txn)
        for first, last in spans:
            for r in table:
                if r.first <= last and first <= r.last:
                    raise InvalidArgument(
                        f"hash range {first}..{last} is {r.state} (move {r.txn_id}) here",
                        "ranges",
                    )
            table = table.with_state(first, last, FROZEN, cmd.txn_id, cmd.peer)
        self._set_table(txn, table)
        moves.save_move(txn, cmd.txn_id, FROZEN, True)
        return {"state": FROZEN}

    @staticmethod
    def _check_no_undecided_part_in(txn: Txn, spans: list[tuple[int, int]]) -> None:
        """Refuse ("locked": the driver retries) to freeze ranges that a transaction not yet
        decided here reaches (``tx.reach_dirs``: its locks, the records it changes, and the
        entry of a directory it touches, in the grandparent's range): its decision must be
        applied here, and the copy must see it."""
        for record in tx.open_records(txn):
            if record.decided:  # a coordinator still delivering: its part is applied
                continue
            for directory in sorted(tx.reach_dirs(tx.decode_part(record.part))):
                h = key_hash(directory)
                if any(first <= h <= last for first, last in spans):
                    raise tx.locked_error(directory, record.txn_id)

    def _op_move_ingest(self, txn: Txn, cmd: MoveIngest, ctx: Context) -> Any:
        spans = pairs(cmd.ranges)
        if not self._undecided_move(txn, cmd.txn_id, INCOMING):
            table = moves.load_table(txn)
            for first, last in spans:  # whatever this shard knew of them is superseded
                table = table.with_state(first, last, INCOMING, cmd.txn_id, cmd.peer)
            self._set_table(txn, table)
            moves.save_move(txn, cmd.txn_id, INCOMING, False)
        for key_text, value_text in zip(cmd.keys, cmd.values, strict=True):
            key, value = _unb64(key_text, "keys"), _unb64(value_text, "values")
            moves.check_in(spans, key)
            inode = _copied_inode(value)
            if inode.lease_holder:  # the writer's session is the source's, not ours
                value = inode.evolve(lease_holder=0).encode()
            txn.put(key, value)
        return {"state": INCOMING, "records": len(cmd.keys)}

    def _op_move_settle(self, txn: Txn, cmd: MoveSettle, ctx: Context) -> Any:
        outcome = moves.COMMITTED if cmd.commit else moves.ABORTED
        record = moves.load_move(txn, cmd.txn_id)
        if record is not None and record["state"] in (moves.COMMITTED, moves.ABORTED):
            if record["state"] != outcome:
                raise InvalidArgument(f"move {cmd.txn_id} is {record['state']} here", "commit")
            return {"state": outcome}
        spans = pairs(cmd.ranges)
        table = moves.load_table(txn)
        if cmd.source and cmd.commit:
            for first, last in spans:
                table = table.with_state(first, last, MOVED, cmd.txn_id, cmd.peer, cmd.version)
            self._release_leases_in(txn, spans)
        elif cmd.source or cmd.commit:  # source aborted; target committed: simply owned
            for r in table.of_txn(cmd.txn_id):
                table = table.without(r.first, r.last)
            if cmd.commit:
                for first, last in spans:  # older marks (it once moved them out) are void
                    table = table.without(first, last)
        # target aborted: the ranges stay incoming (invisible) until MoveDrop(final) has
        # removed what was copied here
        self._set_table(txn, table)
        moves.save_move(txn, cmd.txn_id, outcome, cmd.source)
        return {"state": outcome}

    def _release_leases_in(self, txn: Txn, spans: list[tuple[int, int]]) -> None:
        """Files moving away lose their writer's lease here (the target has no such session)."""
        for key, _ in list(txn.scan(_LEASE, prefix_end(_LEASE))):
            session_id = sessions.unpack_id(key, len(_LEASE))
            path = key[len(_LEASE) + sessions.ID_BYTES :].decode()
            h = key_hash(paths.parent(path))
            if any(first <= h <= last for first, last in spans):
                self._drop_lease(txn, session_id, path)

    def _op_move_drop(self, txn: Txn, cmd: MoveDrop, ctx: Context) -> Any:
        record = moves.load_move(txn, cmd.txn_id)
        committed_source = record == {"state": moves.COMMITTED, "source": True}
        aborted_target = record == {"state": moves.ABORTED, "source": False}
        if not (committed_source or aborted_target):
            raise InvalidArgument(f"move {cmd.txn_id} has nothing to drop here", "txn_id")
        table = moves.load_table(txn)
        spans = [(r.first, r.last) for r in table.of_txn(cmd.txn_id)]
        dropped = 0
        for key_text in cmd.keys:
            key = _unb64(key_text, "keys")
            if spans:
                moves.check_in(spans, key)
                txn.delete(key)
                dropped += 1
        if cmd.final and aborted_target:
            for first, last in spans:
                table = table.without(first, last)
            self._set_table(txn, table)
        return {"dropped": dropped}


def _copied_inode(value: bytes) -> Inode:
    """A copied record's inode; ``InvalidArgument`` unless it is one as this version writes
    it (what a move ingests is read by every later command here)."""
    try:
        return decode_foreign(value)
    except ValueError as e:
        raise InvalidArgument(f"a copied record is {e}", "values") from None
