"""The background block scanner: re-reads finalized replicas to find silent corruption.

Every ``interval_s`` seconds the scanner starts a pass over the finalized replicas (those present
when the pass starts), reading each one through the same verified reader as client reads, at
most ``rate_bytes_s`` bytes per second so that it does not starve real traffic. A replica whose
checksum fails is marked corrupt by the store, which queues a CORRUPT event for the heartbeat
(``keelfs.chunk.events``); ``on_corrupt`` is called as well. Replicas deleted or replaced while a
pass runs are skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from keelfs.chunk.store import BlockStore
from keelfs.datapath.replica import ReplicaInfo
from keelfs.errors import CorruptReplica, OperationError

__all__ = ["BlockScanner", "ScanPass"]

log = logging.getLogger("keelfs.chunk.scanner")

_PIECE = 4 << 20


@dataclass
class ScanPass:
    replicas: int = 0
    bytes: int = 0
    corrupt: list[ReplicaInfo] = field(default_factory=list)
    seconds: float = 0.0


class BlockScanner:
    """See the module docstring. ``run()`` is the background task; ``scan_once()`` one pass."""

    def __init__(
        self,
        store: BlockStore,
        *,
        interval_s: float,
        rate_bytes_s: float,
        on_corrupt: Callable[[ReplicaInfo, str], None] | None = None,
    ) -> None:
        if interval_s <= 0 or rate_bytes_s <= 0:
            raise ValueError("the scan interval and rate must be positive")
        self.store = store
        self.interval_s = interval_s
        self.rate_bytes_s = rate_bytes_s
        self.on_corrupt = on_corrupt
        self.passes = 0
        self.last: ScanPass | None = None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.last = await self.scan_once()
            self.passes += 1
            log.info(
                "scan pass %d: %d replicas, %d bytes in %.1f s, %d corrupt",
                self.passes,
                self.last.replicas,
                self.last.bytes,
                self.last.seconds,
                len(self.last.corrupt),
            )

    async def scan_once(self) -> ScanPass:
        result = ScanPass()
        start = time.monotonic()
        for info in self.store.finalized_replicas():
            try:
                scanned = await self._scan(info, start, result.bytes)
            except CorruptReplica as exc:
                result.corrupt.append(info)
                if self.on_corrupt is not None:
                    self.on_corrupt(info, exc.message)
                continue
            except OperationError:
                continue  # deleted, replaced or already known corrupt since the pass began
            result.replicas += 1
            result.bytes += scanned
        result.seconds = time.monotonic() - start
        return result

    async def _scan(self, info: ReplicaInfo, start: float, done_before: int) -> int:
        reader = await asyncio.to_thread(
            self.store.open_reader, info.block_id, info.gen, piece_size=_PIECE
        )
        scanned = 0
        try:
            while (piece := await asyncio.to_thread(reader.read_piece)) is not None:
                scanned += len(piece[1])
                ahead = (done_before + scanned) / self.rate_bytes_s - (time.monotonic() - start)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        finally:
            reader.close()
        return scanned
