"""Recursive deletes of trees that span shards and are too large for one transaction: in
atomic units, leaves first, the top entry last.

A cross-shard recursive delete is one transaction over every record of the tree
(``keelfs.master.subtree``), at most :data:`subtree.MAX_ENTRIES` records. A larger tree is
deleted in steps, each one an ordinary, atomic operation of its own:

1. The tree is walked depth first. A directory whose remaining subtree (after its own
   children's turn) still holds more than ``MAX_ENTRIES`` records has every child deleted,
   each by its own ``Delete`` (recursive for a directory, whose subtree fits one transaction
   by then: a plain command when one shard holds it, else one transaction). These go through
   this master's internal client, acting for the caller (``ACTING_FOR``), so each is checked
   against the caller's rights as the caller's own request would be, and is exactly-once
   through the internal client's session.
2. Then the client's own request deletes what is left (now small) in one transaction, with
   the client's session and seq: the top entry goes last, and a retry of the request is
   answered from that transaction as for any other delete.

What others see: whole leaf subtrees and single files disappear, one atomic delete at a time,
never a directory before what is under it; the top directory exists until the last step.
A failure in the middle (the leader killed) leaves a smaller tree and nothing half-deleted:
every step either happened or not, and the client's retry (same session and seq, to the new
leader) walks what is left and goes on. Two drivers at once (a retry reaching another master
while the first still runs) race harmlessly: a unit already gone is ``NOT_FOUND``, skipped.

Before anything is deleted a caller who is not a superuser is checked for ``rwx`` on every
non-empty directory of the tree (HDFS's rule for a recursive delete), so that a tree with one
directory the caller may not empty is refused whole rather than half deleted (a ``chmod``
racing with the delete is caught by the unit that meets it).

The client's attempts time out long before a large tree is gone: the work runs in a task per
request (shard, path, session, seq) that a retry of the request waits on again
(:class:`TreeDeletes`). The counts the client is told include the steps' (they are written in
the last transaction's result), those of the driver that finished: steps that another driver
took (a leader killed or deposed before the end) are not counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from keelfs import failpoints
from keelfs.client.identity import ACTING_FOR
from keelfs.errors import NotFound, OutcomeUnknown
from keelfs.master import subtree
from keelfs.meta.principals import EXECUTE, READ, WRITE, Caller, allows, denied, describe
from keelfs.meta.records import Inode

if TYPE_CHECKING:
    from keelfs.master.peers import PeerClient
    from keelfs.meta.records import FileInfo

__all__ = ["DeleteCounts", "TreeDeletes", "clear_below"]

log = logging.getLogger(__name__)

KEEP_S = 600.0
"""How long a finished tree delete's counts wait for a retry of its request."""
UNIT_CONCURRENCY = 16
"""Unit deletes in flight at once (files of one large directory go one by one)."""

DeleteCounts = dict[str, int]


def _counts() -> DeleteCounts:
    return {"files": 0, "directories": 0, "blocks": 0}


async def _listing(
    client: PeerClient, directory: str
) -> tuple[str, list[tuple[FileInfo, str]]] | None:
    """``directory``'s self-record and entries; None once it is gone (a step of this delete
    that an earlier driver sent, a killed leader, still finishing on another shard)."""
    try:
        return await client.list_records(directory)
    except NotFound:
        return None


async def _check_rights(client: PeerClient, top: str, caller: Caller) -> None:
    """``PermissionDenied`` unless ``caller`` has ``rwx`` on every non-empty directory of the
    tree at ``top``."""
    pending = [top]
    while pending:
        directory = pending.pop()
        listed = await _listing(client, directory)
        if listed is None:
            continue
        self_record, entries = listed
        if entries and self_record:
            d = Inode.decode(self_record.encode())
            if not allows(caller, d.owner, d.group, d.mode, READ | WRITE | EXECUTE, d.acl):
                what = describe(READ | WRITE | EXECUTE)
                raise denied(caller, directory, d.owner, d.group, d.mode, what)
        pending += [info.path for info, _ in entries if info.is_dir]


async def clear_below(client: PeerClient, top: str, caller: Caller | None) -> DeleteCounts:
    """Delete what lies below ``top`` in atomic units, leaves first, until what is left of the
    tree (``top``'s self-record included) fits one transaction; what was deleted."""
    if caller is not None and not caller.superuser:
        await _check_rights(client, top, caller)
    counts = _counts()
    acting = ACTING_FOR.set(caller.encode()) if caller is not None else None
    try:
        await _clear(client, top, counts, asyncio.Semaphore(UNIT_CONCURRENCY))
    finally:
        if acting is not None:
            ACTING_FOR.reset(acting)
    return counts


async def _clear(
    client: PeerClient, directory: str, counts: DeleteCounts, slots: asyncio.Semaphore
) -> int:
    """The records left in ``directory``'s subtree once every subtree below it fits one
    transaction, and it too unless that needed all of its children deleted."""
    listed = await _listing(client, directory)
    if listed is None:
        return 0
    _, entries = listed
    total = 1 + len(entries)
    for info, _ in entries:
        if info.is_dir:
            total += await _clear(client, info.path, counts, slots) - 1
    if total <= subtree.MAX_ENTRIES:
        return total
    await asyncio.gather(*(_delete_unit(client, info, counts, slots) for info, _ in entries))
    return 1


async def _delete_unit(
    client: PeerClient, info: FileInfo, counts: DeleteCounts, slots: asyncio.Semaphore
) -> None:
    async with slots:
        try:
            result = await client.delete(info.path, recursive=info.is_dir)
        except NotFound:
            return  # another driver of the same delete was first
    counts["files"] += result.files
    counts["directories"] += result.directories
    counts["blocks"] += result.blocks
    failpoints.hit("tree_delete.unit_deleted")


_Key = tuple[str, str, bytes, int]


class TreeDeletes:
    """The tree deletes this master runs, per client request (shard, path, session, seq): a
    retry of the request waits on the task its first attempt started (instead of racing it
    with its own last step), and gets the counts of every task of the request, kept
    :data:`KEEP_S` seconds after the last one ended. A task that failed counts nothing and
    the next attempt starts afresh."""

    def __init__(self) -> None:
        self._tasks: dict[_Key, asyncio.Task[DeleteCounts]] = {}
        self._totals: dict[_Key, DeleteCounts] = {}
        self._ended: dict[_Key, float] = {}

    def started(self, group: str, top: str, request: tuple[bytes, int]) -> bool:
        """Whether request ``request`` (session id, seq) began deleting ``top`` in steps."""
        return (group, top, *request) in self._tasks

    async def clear(
        self,
        client: PeerClient,
        group: str,
        top: str,
        caller: Caller | None,
        request: tuple[bytes, int],
        timeout: float,
        *,
        again: bool,
    ) -> DeleteCounts:
        """Wait (at most ``timeout``) for request ``request``'s :func:`clear_below` of ``top``
        (its session id and seq), started here if none runs (``again``: also when one ran
        and ended: the tree grew meanwhile); what all of the request's steps deleted.
        ``OutcomeUnknown`` after ``timeout`` (the task goes on; the client's retry, same
        session and seq, waits on it again)."""
        self._prune()
        key = (group, top, *request)
        task = self._tasks.get(key)
        if task is None or (again and task.done()):
            task = asyncio.create_task(clear_below(client, top, caller), name=f"delete {top}")
            self._tasks[key] = task
            self._ended.pop(key, None)
            task.add_done_callback(lambda done: self._ended_now(key, done))
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            raise OutcomeUnknown(
                "tree delete in progress",
                message=f"deleting the tree at {top} (in steps: it is large); retry the "
                "request (same session and seq) to wait for it",
            ) from None
        return dict(self._totals.get(key) or _counts())

    def _ended_now(self, key: _Key, task: asyncio.Task[DeleteCounts]) -> None:
        if task.cancelled() or task.exception() is not None:
            if self._tasks.get(key) is task:
                del self._tasks[key]
            if not task.cancelled():
                log.info("tree delete of %s stopped: %s", key[1], task.exception())
            return
        total = self._totals.setdefault(key, _counts())
        for k, n in task.result().items():
            total[k] += n
        self._ended[key] = time.monotonic()

    def _prune(self) -> None:
        now = time.monotonic()
        for key, ended in list(self._ended.items()):
            if now - ended > KEEP_S and self._tasks[key].done():
                del self._ended[key]
                del self._tasks[key]
                self._totals.pop(key, None)
