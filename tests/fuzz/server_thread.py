"""A whole keelfs server (``keelfs.server.embedded``: a metadata node hosting the config group
and ``shard-1``, and a chunk server reporting to it) in this process, on an asyncio loop of its
own thread, so that a test can call its ports and look at its Raft host."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from typing import Any

from keelfs.chunk.node import ChunkNode
from keelfs.chunk.reporting import Reporter
from keelfs.master.node import MetaNode
from keelfs.server.embedded import ServerConfig, _free_port, _set_up

__all__ = ["ServerThread"]

_START_TIMEOUT_S = 60.0


class ServerThread:
    def __init__(self, data: Path) -> None:
        self.config = ServerConfig(
            data=data,
            listen="127.0.0.1:0",
            chunk_listen="127.0.0.1:0",
            http_listen="",
            heartbeat_interval_s=0.2,
            scan_interval_s=0.0,
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.meta: MetaNode | None = None
        self.chunk: ChunkNode | None = None
        self._reporting: asyncio.Task[None] | None = None

    def run(self, coro: Any, timeout: float = _START_TIMEOUT_S) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> ServerThread:
        self.thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        raft = f"127.0.0.1:{_free_port('127.0.0.1')}"
        self.meta = MetaNode(self.config.node_config(raft))
        await self.meta.start()
        await _set_up(self.meta, time.monotonic() + _START_TIMEOUT_S)
        self.chunk = ChunkNode(self.config.chunk_config())
        await self.chunk.start()
        reporter = Reporter(self.chunk, [self.meta.client_address], interval_s=0.2)
        self._reporting = asyncio.create_task(reporter.run())

    @property
    def client_address(self) -> str:
        assert self.meta is not None
        return self.meta.client_address

    @property
    def chunk_address(self) -> str:
        assert self.chunk is not None
        return self.chunk.address

    def failure(self) -> str | None:
        """Why the server is broken (a Raft host that stopped on a fatal error, or a task of
        the metadata node or the chunk server that ended), None while it is whole."""
        assert self.meta is not None and self.chunk is not None
        host = self.meta.host
        if host is None or host.failed is not None:
            return f"the Raft host stopped: {None if host is None else host.failed!r}"
        for task in [*self.meta.tasks, *self.chunk.tasks]:
            if task.done():
                return f"task {task.get_name()} ended: {task}"
        return None

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _stop(self) -> None:
        if self._reporting is not None:
            self._reporting.cancel()
            await asyncio.gather(self._reporting, return_exceptions=True)
        if self.chunk is not None:
            await self.chunk.stop()
        if self.meta is not None:
            await self.meta.stop()
