"""A data shard's commands of a directory tree moved across shards in steps: fence, stage,
abort and drop (the fences and what they forbid: ``keelfs.meta.tree_fences``; the switch is a
transaction step, ``tree_switch``: ``keelfs.meta.txn_steps``; the driver:
``keelfs.master.tree_move``).

None of them queues a block for deletion: a file's blocks stay referenced by the copy of its
record on the side that lives (``blockrefs`` follows the records written and deleted).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from keelfs.errors import AlreadyExists, InvalidArgument
from keelfs.meta import paths, snapshots
from keelfs.meta import transactions as tx
from keelfs.meta import tree_fences as tf
from keelfs.meta.commands import MoveTreeAbort, MoveTreeDrop, MoveTreeFence, MoveTreeStage
from keelfs.meta.kvstore import Txn
from keelfs.meta.machine import Context
from keelfs.meta.shard_records import (
    ShardRecords,
    _entry_key,
    _self_key,
    _subtree_entry_ranges,
    _subtree_self_range,
)

__all__ = ["TreeMoveSteps", "tree_record_ranges"]


def tree_record_ranges(top: str) -> list[tuple[bytes, bytes]]:
    """Key ranges of every record of the tree at ``top`` but its own entry: its self-record,
    the entries below it and the self-records of the directories below it."""
    own = _self_key(top)
    return [(own, own + b"\x00"), *_subtree_entry_ranges(top), _subtree_self_range(top)]


def _records_under(kv: Any, top: str) -> Iterator[bytes]:
    for start, end in tree_record_ranges(top):
        for key, _ in kv.scan(start, end):
            yield bytes(key)


def _stageable(step: tx.Step, dst: str) -> bool:
    """A record the move may write: an entry below ``dst``, a self-record of it or below."""
    if step.kind == "put_entry":
        return paths.is_ancestor(dst, step.path)
    return step.kind == "put_self" and tf.under(step.path, dst)


class TreeMoveSteps(ShardRecords):
    """The tree move commands of ``ShardStateMachine`` and the read of its fences."""

    def tree_fences(self) -> list[tf.Fence]:
        """The moves fenced here (what the masters' recovery drives)."""
        return tf.active(self._store)

    def tree_move_settled(self, move_id: int) -> bool:
        """Whether move ``move_id`` was fenced here and is over (switched or aborted, and
        its leftovers dropped)."""
        return tf.settled(self._store, move_id)

    def _live_fence(self, txn: Txn, move_id: int) -> tf.Fence:
        fence = tf.load(txn, move_id)
        if fence is None:
            what = "settled" if tf.settled(txn, move_id) else "unknown"
            raise InvalidArgument(f"tree move {move_id} is {what} here", "move_id")
        return fence

    def _op_move_tree_fence(self, txn: Txn, cmd: MoveTreeFence, ctx: Context) -> Any:
        fence = tf.load(txn, cmd.move_id)
        if fence is not None:
            return fence.to_dict()  # a retry
        if tf.settled(txn, cmd.move_id):
            raise InvalidArgument(f"tree move {cmd.move_id} is settled here", "move_id")
        src, dst = paths.normalize(cmd.src), paths.normalize(cmd.dst)
        if tf.under(dst, src) or tf.under(src, dst):
            raise InvalidArgument(f"cannot move {src} into itself ({dst})", "dst")
        snapshots.refuse_snapshottable(txn, src, "rename")  # as a rename's apply (the master
        # checked before it began; an allow-snapshot may have landed since)
        for top in (src, dst):
            err = tf.write_error(txn, top) or tf.fence_below(txn, top)
            if err is not None:
                raise err
            self._check_unlocked(txn, top)
            self._check_subtree_unlocked(txn, top)
        if self._entry(txn, dst) is not None:
            raise AlreadyExists(dst)  # where its entry is; elsewhere its records are not
        fence = tf.Fence(cmd.move_id, src, dst, tf.COPYING, cmd.coordinator, cmd.shards)
        tf.save(txn, fence)
        return fence.to_dict()

    def _op_move_tree_stage(self, txn: Txn, cmd: MoveTreeStage, ctx: Context) -> Any:
        fence = self._live_fence(txn, cmd.move_id)
        if fence.state != tf.COPYING:
            raise InvalidArgument(f"tree move {cmd.move_id} is {fence.state} here", "move_id")
        steps = tx.decode_part(cmd.part)
        if not all(_stageable(step, fence.dst) for step in steps):
            raise InvalidArgument(f"a tree move stages records of {fence.dst} only", "part")
        for step in steps:
            key = _entry_key(step.path) if step.kind == "put_entry" else _self_key(step.path)
            txn.put(key, step.record.encode())
        return {"staged": len(steps)}

    def _op_move_tree_abort(self, txn: Txn, cmd: MoveTreeAbort, ctx: Context) -> Any:
        fence = tf.load(txn, cmd.move_id)
        if fence is None:
            if not tf.settled(txn, cmd.move_id):
                tf.settle(txn, cmd.move_id)  # never fenced here: a late fence is refused
            return {"state": tf.ABORTED}
        if fence.state == tf.SWITCHED:
            raise InvalidArgument(f"tree move {cmd.move_id} switched here", "move_id")
        holder = tx.locked_by(txn, fence.src)
        if holder:  # the switch transaction is undecided here: its decision comes first
            raise tx.locked_error(fence.src, holder)
        tf.save(txn, fence.evolve(tf.ABORTED))
        return {"state": tf.ABORTED}

    def _op_move_tree_drop(self, txn: Txn, cmd: MoveTreeDrop, ctx: Context) -> Any:
        fence = self._live_fence(txn, cmd.move_id)
        top = fence.left_behind
        if top is None:
            raise InvalidArgument(f"tree move {cmd.move_id} is still copying here", "move_id")
        keys: list[bytes] = []
        for key in _records_under(txn, top):
            if len(keys) == cmd.limit:
                break
            keys.append(key)
        else:
            tf.settle(txn, cmd.move_id)
        for key in keys:
            txn.delete(key)
        return {"dropped": len(keys), "done": tf.load(txn, cmd.move_id) is None}
