"""Epoch fencing: the highest epoch (Raft term) seen per shard, kept durably.

A shard's leader stamps every block write and command with ``(shard_id, epoch)``. Once a chunk
server has seen epoch E from a shard it refuses anything older from that shard (``Fenced``):
a deposed leader that still believes it leads cannot delete or overwrite what its successor
decided. The table must survive restarts, otherwise a restart would re-open the door to the
deposed leader; it is written (atomically, fsync'ed) before the request that raised an epoch is
acted on. That happens once per shard per term, so the cost does not matter.

Concurrency: :meth:`EpochTable.check` is a dictionary read, safe on the event loop;
:meth:`EpochTable.admit` may write the file, so asyncio code runs it in a thread
(:meth:`admit_async` does both: the write only when the epoch is new).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from pathlib import Path

from keelfs.chunk.layout import write_atomically
from keelfs.datapath.replica import MAX_UINT64, check_shard_id
from keelfs.errors import Fenced, InvalidArgument

__all__ = ["EpochTable"]

log = logging.getLogger("keelfs.chunk.fencing")


class EpochTable:
    """The highest epoch per shard, persisted in ``path`` (JSON ``{"epochs": {shard: n}}``)."""

    def __init__(self, path: Path, tmp_dir: Path | None = None) -> None:
        self._path = path
        self._tmp_dir = tmp_dir
        self._lock = threading.Lock()
        self._epochs: dict[str, int] = {}
        if path.exists():
            raw = json.loads(path.read_text())
            self._epochs = {str(k): int(v) for k, v in raw["epochs"].items()}

    def snapshot(self) -> dict[str, int]:
        return dict(self._epochs)

    def current(self, shard_id: str) -> int:
        return self._epochs.get(shard_id, 0)

    def check(self, shard_id: str, epoch: int) -> bool:
        """Raise ``Fenced`` if ``epoch`` is older than the shard's highest; True when it is newer
        (then :meth:`admit` must record it before the request is acted on)."""
        check_shard_id(shard_id)
        if not 0 < epoch <= MAX_UINT64:
            raise InvalidArgument(f"epoch {epoch} out of range 1..2^64-1", "epoch")
        current = self._epochs.get(shard_id, 0)
        if epoch < current:
            raise Fenced(shard_id, epoch, current)
        return epoch > current

    def admit(self, shard_id: str, epoch: int) -> None:
        """Check ``epoch`` and, if it is the shard's newest, persist it (blocking: fsync)."""
        if not self.check(shard_id, epoch):
            return
        with self._lock:
            current = self._epochs.get(shard_id, 0)
            if epoch < current:  # a newer one was admitted while we waited for the lock
                raise Fenced(shard_id, epoch, current)
            if epoch == current:
                return
            epochs = {**self._epochs, shard_id: epoch}
            body = json.dumps({"epochs": epochs}, sort_keys=True).encode()
            write_atomically(self._path, body, self._tmp_dir)
            self._epochs = epochs
        log.info("shard %s: epoch %d (was %d)", shard_id, epoch, current)

    async def admit_async(self, shard_id: str, epoch: int) -> None:
        if self.check(shard_id, epoch):
            await asyncio.to_thread(self.admit, shard_id, epoch)
