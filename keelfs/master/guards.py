"""After a chmod, chown or ACL change of a directory: its new bits and ACL to every shard
(``SetTraverseGuard``).

The directory's entry changed on one shard; its self-record (what its children are checked
against) and the traverse guards of the directories below it live wherever the map put them,
so every shard gets the command, whatever it holds. A shard answers "locked" while a
transaction or a move of hash ranges is under way there: it is asked again until the
request's deadline. After one full pass, a second: a transaction that began before the change
may have written records with the old guards on a shard the first pass had already visited
(``keelfs.meta.commands.SetTraverseGuard``). One directory's passes never overlap (the last
applied would win on each shard): a lock per directory, on the master that leads its entry's
shard (the only one that can change it).

What is sent is the directory's attributes **as read once the lock is held** (a linearizable
read of its entry), not the ones the change answered: two changes of one directory (grant,
then revoke) may reach the lock in either order, and the pass that runs last must send the
last state, or the other shards would keep the first change's guard (a revoked right still
granted there). Any change applied after that read has its own pass after this one.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from keelfs.errors import NotADirectory, NotFound, Unavailable
from keelfs.meta.commands import SetTraverseGuard
from keelfs.rpc.pb import meta_pb2 as pb

if TYPE_CHECKING:
    from keelfs.master.node import MetaNode

__all__ = ["GuardSpreader"]

_RETRY_S = 0.05
_PASSES = 2


class GuardSpreader:
    def __init__(self, node: MetaNode) -> None:
        self.node = node
        self._locks: dict[str, asyncio.Lock] = {}

    async def after_change(self, info: pb.FileInfo, timeout: float) -> None:
        """Send ``info``'s directory's owner, group, mode and ACL to every shard, twice (module
        doc); nothing for a file. ``Unavailable`` if a shard kept refusing until
        ``timeout``: the change stands on the shards that applied it, and the client's retry
        (the same chmod) sends it again."""
        if info.kind != pb.DIRECTORY:
            return
        deadline = time.monotonic() + timeout
        lock = self._locks.setdefault(info.path, asyncio.Lock())
        try:
            async with lock:
                command = await self._current(info.path, deadline)
                if command is None:
                    return
                for _ in range(_PASSES):
                    for shard in sorted(self.node.shard_map.shards):
                        await self._send(shard, command, deadline)
        finally:
            if not lock.locked() and self._locks.get(info.path) is lock:
                del self._locks[info.path]

    async def _current(self, path: str, deadline: float) -> SetTraverseGuard | None:
        """The command for ``path``'s attributes now (module doc); None when it is no
        directory any more (its records below went with it)."""
        try:
            info = await self.node.internal.stat(
                path, deadline=max(0.05, deadline - time.monotonic())
            )
        except (NotFound, NotADirectory):
            return None
        if not info.is_dir:
            return None
        acl = tuple(e.to_text() for e in info.acl)
        return SetTraverseGuard(info.path, info.owner, info.group, info.mode, acl)

    async def _send(self, shard: str, command: SetTraverseGuard, deadline: float) -> None:
        while True:
            left = deadline - time.monotonic()
            try:
                await self.node.internal.move_command(
                    shard, command.op, command.args(), deadline=max(0.05, left)
                )
                return
            except Unavailable:  # "locked", or a leader change: the command is idempotent
                if deadline - time.monotonic() <= _RETRY_S:
                    raise
            await asyncio.sleep(_RETRY_S)
