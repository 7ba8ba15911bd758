"""The synchronous file objects of ``keelfs.client.Client``: ``FileWriter`` and ``FileReader``
are the asynchronous ones (``keelfs.client.files``) run on a private event loop, the
``IOThread`` one client shares among its open files.

See ``keelfs.client.files`` for what writing and reading guarantee; the twins add nothing
but the thread hop.
"""

from __future__ import annotations

import asyncio
import io
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from keelfs.client._core import Core
from keelfs.client.aio import AsyncClient
from keelfs.client.files import AsyncFileReader, AsyncFileWriter
from keelfs.datapath.client import AsyncChunkClient
from keelfs.datapath.protocol import DEFAULT_PACKET_SIZE, Target

__all__ = ["FileReader", "FileWriter", "IOThread"]

T = TypeVar("T")


class IOThread:
    """A private event loop on a daemon thread that runs a synchronous ``Client``'s data path:
    an ``AsyncClient`` sharing the ``Client``'s core (its sessions, leases and caches) and an
    ``AsyncChunkClient``."""

    def __init__(self, core: Core, user: str | None = None, **chunk_options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="keelfs-client-io", daemon=True
        )
        self._thread.start()

        async def make() -> tuple[AsyncClient, AsyncChunkClient]:
            return AsyncClient._sharing(core, user), AsyncChunkClient(tls=core.tls, **chunk_options)

        self.fs, self.chunks = self.run(make())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result (in the calling thread)."""
        if self._loop.is_closed():
            raise RuntimeError("client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        if self._loop.is_closed():
            return

        async def shut() -> None:
            await self.chunks.close()
            await self.fs.close()

        try:
            self.run(shut())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()


class FileWriter(io.BufferedIOBase):
    """A writable binary file (``Client.open(path, "wb")``): the ``io`` twin of
    :class:`AsyncFileWriter` (same semantics; writes smaller than a packet are gathered here
    first). ``hflush()`` and ``abort()`` as there."""

    def __init__(self, io_thread: IOThread, writer: AsyncFileWriter) -> None:
        super().__init__()
        self._io = io_thread
        self._writer = writer
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._gather = DEFAULT_PACKET_SIZE
        self.path = writer.path

    @property
    def writer(self) -> AsyncFileWriter:
        return self._writer

    @property
    def acked(self) -> int:
        """Bytes of the file every node of the pipeline acknowledged so far."""
        return self._writer.acked

    @property
    def pipeline(self) -> list[Target]:
        return self._writer.pipeline

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._writer.tell() + self._pending_size

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        piece = bytes(data)
        n = len(piece)
        if n >= self._gather and not self._pending:
            self._io.run(self._writer.write(piece))
            return n
        self._pending.append(piece)
        self._pending_size += n
        if self._pending_size >= self._gather:
            self._hand_over()
        return n

    def _hand_over(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending, self._pending_size = [], 0
            self._io.run(self._writer.write(data))

    def flush(self) -> None:
        if not self.closed:
            self._hand_over()

    def hflush(self) -> None:
        self._hand_over()
        self._io.run(self._writer.hflush())

    def abort(self) -> None:
        self._pending, self._pending_size = [], 0
        if not self.closed:
            try:
                self._io.run(self._writer.abort())
            finally:
                super().close()

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._hand_over()
            self._io.run(self._writer.close())
        except BaseException:
            self._pending, self._pending_size = [], 0
            super().close()
            raise
        super().close()


class FileReader(io.RawIOBase):
    """A readable, seekable binary file (``Client.open(path, "rb")``): the ``io`` twin of
    :class:`AsyncFileReader`."""

    def __init__(self, io_thread: IOThread, reader: AsyncFileReader) -> None:
        super().__init__()
        self._io = io_thread
        self._reader = reader
        self.path = reader.path
        self.length = reader.length

    @property
    def reader(self) -> AsyncFileReader:
        return self._reader

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._reader.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._reader.seek(offset, whence)

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        return self._io.run(self._reader.read(-1 if size is None else size))

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._io.run(self._reader.close())
            finally:
                super().close()
