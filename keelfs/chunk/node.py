"""``ChunkNode``: one chunk server (store, fencing, pipeline, commands, scanner, gRPC service).

The process is ``keelfs chunkserver`` (``keelfs.server.chunk_process``); tests and an
all-in-one server can run a node inside their own event loop.

What the heartbeats and block reports to the masters (``keelfs.chunk.reporting``, DESIGN 2.8)
use, without touching the parts directly:

- :meth:`ChunkNode.status` — identity, rack, capacity and usage (``ServerStatus``);
- :meth:`ChunkNode.block_report` — every replica (a full block report);
- :meth:`ChunkNode.take_events` — replicas received, finalized, deleted or found corrupt since
  the last call (an incremental report; ``overflowed`` asks for a full report instead);
- :meth:`ChunkNode.execute` — run a command a master sent back (fenced like the RPCs);
- :meth:`ChunkNode.learn_keys` — the block-token keys a master's reply carries.

Every read, write and command needs a block access token signed with one of the keys
(``keelfs.datapath.tokens``); ``block_keys`` holds them (``keelfs.chunk.keys``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import grpc

from keelfs.chunk.commands import CommandExecutor, DeleteBlocks, ReplicateBlock, VerifyBlock
from keelfs.chunk.events import EventBatch
from keelfs.chunk.fencing import EpochTable
from keelfs.chunk.keys import learn_keys, load_keys
from keelfs.chunk.layout import Layout, write_atomically
from keelfs.chunk.pipeline import PipelineConfig
from keelfs.chunk.scanner import BlockScanner
from keelfs.chunk.service import ChunkServicer, add_to_server
from keelfs.chunk.store import BlockStore
from keelfs.datapath.client import AsyncChunkClient
from keelfs.datapath.protocol import ServerStatus, WriteResult
from keelfs.datapath.replica import DeleteResult, ReplicaInfo, check_shard_id
from keelfs.datapath.tokens import BlockKey, KeyRing, TokenVerifier
from keelfs.datapath.wire import GRPC_OPTIONS, AsyncChannels
from keelfs.errors import InvalidArgument
from keelfs.rpc.access import server_interceptors
from keelfs.rpc.addresses import advertised_address
from keelfs.storage.format import check_data_format
from keelfs.tls.credentials import TlsSettings, add_port

__all__ = [
    "DEFAULT_MAX_CONCURRENT_RPCS",
    "DEFAULT_RACK",
    "ChunkNode",
    "ChunkNodeConfig",
    "load_server_id",
]

log = logging.getLogger("keelfs.chunk.node")

DEFAULT_RACK = "/default-rack"


DEFAULT_MAX_CONCURRENT_RPCS = 1024
"""Calls a chunk server serves at once: a pipeline stage or a read stream each holds one."""


@dataclass(frozen=True)
class ChunkNodeConfig:
    """=====================  ============  ====================================================
    field                  default       meaning
    =====================  ============  ====================================================
    ``data_dir``           (required)    where the replicas live
    ``listen``             127.0.0.1:0   gRPC address (port 0: any free port)
    ``server_id``          ""            "" = the id stored in ``data_dir``, or a new one
    ``rack``               /default-rack for placement
    ``fsync_on_close``     True          fsync replicas when finalized (off: tests, benches)
    ``scan_interval_s``    21600         seconds between scanner passes (0: no scanner)
    ``scan_rate_bytes_s``  32 MiB/s      scanner read rate
    ``ack_timeout_s``      60            pipeline: wait for the next node's ack at most this
    ``rbw_expiry_s``       3600          abandoned being-written replicas are removed after
    ``io_threads``         16            threads of the loop's default executor, which runs
                                         the disk I/O (0: keep the loop's own, e.g. when the
                                         node shares a process)
    ``reserved_bytes``     0             disk space kept free: no new block once free space
                                         is down to it; left out of the reported capacity
    ``advertise``          ""            the address others are told ("": ``listen``'s)
    =====================  ============  ====================================================
    """

    data_dir: Path
    listen: str = "127.0.0.1:0"
    server_id: str = ""
    rack: str = DEFAULT_RACK
    fsync_on_close: bool = True
    scan_interval_s: float = 6 * 3600.0
    scan_rate_bytes_s: float = 32 * 1024 * 1024
    ack_timeout_s: float = 60.0
    rbw_expiry_s: float = 3600.0
    io_threads: int = 16
    reserved_bytes: int = 0
    max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS
    """Calls in progress at once (each pipeline stage holds one); more get
    RESOURCE_EXHAUSTED."""
    advertise: str = ""
    """The address registered with the config group and reported to the masters, ``HOST`` or
    ``HOST:PORT`` (``keelfs.rpc.addresses``); empty: the address listened on."""
    tls: TlsSettings | None = None
    """This server's TLS material: mutual TLS on its port (the access classes of
    ``keelfs.rpc.access`` enforced) and on every channel it opens (pipeline, replication,
    reports to the masters). None: plain gRPC."""


def load_server_id(layout: Layout, wanted: str) -> str:
    """The server's id, kept in ``server.json`` from the first start on: ``wanted`` ("" for a
    generated one) the first time; afterwards ``wanted`` must be "" or the same."""
    path = layout.identity_file
    if path.exists():
        stored = str(json.loads(path.read_text())["server_id"])
        if wanted and wanted != stored:
            raise InvalidArgument(
                f"{layout.root} belongs to chunk server {stored!r}, not {wanted!r}", "server_id"
            )
        return stored
    server_id = check_shard_id(wanted) if wanted else f"cs-{secrets.token_hex(4)}"
    layout.root.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps({"server_id": server_id}).encode())
    return server_id


class ChunkNode:
    """See the module docstring. ``await start()``, then ``await stop()``."""

    def __init__(self, config: ChunkNodeConfig) -> None:
        self.config = config
        self.pipeline_config = PipelineConfig(
            ack_timeout_s=config.ack_timeout_s, fsync_on_close=config.fsync_on_close
        )
        self.server_id = ""
        self.address = config.listen
        self.store: BlockStore
        self.epochs: EpochTable
        self.executor: CommandExecutor
        self.scanner: BlockScanner | None = None
        self.channels = AsyncChannels(tls=config.tls)
        self.block_keys = KeyRing()
        self.tokens = TokenVerifier(self.block_keys)
        self._layout: Layout | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self._server: grpc.aio.Server | None = None
        self._client: AsyncChunkClient | None = None

    async def start(self) -> None:
        cfg = self.config
        if cfg.io_threads > 0:  # blocking disk work runs in asyncio.to_thread
            asyncio.get_running_loop().set_default_executor(
                concurrent.futures.ThreadPoolExecutor(cfg.io_threads, thread_name_prefix="chunk-io")
            )
        await asyncio.to_thread(check_data_format, Path(cfg.data_dir))  # before opening it
        layout = Layout(Path(cfg.data_dir))
        self.server_id = await asyncio.to_thread(load_server_id, layout, cfg.server_id)
        self.store = await asyncio.to_thread(
            BlockStore.open,
            layout.root,
            fsync=cfg.fsync_on_close,
            reserved_bytes=cfg.reserved_bytes,
        )
        self.epochs = EpochTable(layout.epochs_file, layout.tmp)
        self._layout = layout
        self.block_keys.update(await asyncio.to_thread(load_keys, layout.block_keys_file))
        self._client = AsyncChunkClient(ack_timeout_s=cfg.ack_timeout_s, tls=cfg.tls)
        self.executor = CommandExecutor(self.store, self.epochs, self._client, self.tokens)
        server = grpc.aio.server(
            options=[("grpc.so_reuseport", 0), *GRPC_OPTIONS],
            maximum_concurrent_rpcs=cfg.max_concurrent_rpcs,
            interceptors=server_interceptors(cfg.tls, self.server_id),
        )
        add_to_server(ChunkServicer(self), server)
        port = add_port(server, cfg.listen, cfg.tls)
        self.address = advertised_address(cfg.advertise, f"{cfg.listen.rpartition(':')[0]}:{port}")
        await server.start()
        self._server = server
        if cfg.scan_interval_s > 0:
            self.scanner = BlockScanner(
                self.store, interval_s=cfg.scan_interval_s, rate_bytes_s=cfg.scan_rate_bytes_s
            )
            self.tasks.append(asyncio.create_task(self.scanner.run(), name="scanner"))
        self.tasks.append(asyncio.create_task(self._expiry_loop(), name="rbw-expiry"))

    async def _expiry_loop(self) -> None:
        period = max(1.0, min(60.0, self.config.rbw_expiry_s / 4))
        while True:
            await asyncio.sleep(period)
            for info in await asyncio.to_thread(
                self.store.expire_abandoned, self.config.rbw_expiry_s
            ):
                log.info("removed abandoned replica %s", info.describe())

    async def stop(self, grace_s: float = 1.0) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None
        if self._client is not None:
            await self._client.close()
        await self.channels.close()
        if hasattr(self, "store"):
            await asyncio.to_thread(self.store.close)

    def ready_info(self) -> dict[str, Any]:
        return {
            "server_id": self.server_id,
            "address": self.address,
            "rack": self.config.rack,
            "data_dir": str(self.config.data_dir),
            "pid": os.getpid(),
        }

    # -- the heartbeat's interface --------------------------------------------------------------
    def status(self) -> ServerStatus:
        u = self.store.usage()
        return ServerStatus(
            server_id=self.server_id,
            address=self.address,
            rack=self.config.rack,
            capacity_bytes=u.capacity_bytes,
            available_bytes=u.available_bytes,
            used_bytes=u.used_bytes,
            finalized=u.finalized,
            being_written=u.being_written,
            corrupt=u.corrupt,
            epochs=self.epochs.snapshot(),
        )

    def block_report(self) -> list[ReplicaInfo]:
        return self.store.block_report()

    def take_events(self, max_events: int | None = None) -> EventBatch:
        return self.store.events.take(max_events)

    async def learn_keys(self, keys: list[BlockKey]) -> None:
        """Keys from a master's heartbeat reply (kept on disk when new)."""
        layout = self._layout
        assert layout is not None, "learn_keys before start"
        await asyncio.to_thread(
            learn_keys, self.block_keys, keys, layout.block_keys_file, layout.tmp
        )

    @overload
    async def execute(self, command: DeleteBlocks) -> list[DeleteResult]: ...
    @overload
    async def execute(self, command: ReplicateBlock) -> WriteResult: ...
    @overload
    async def execute(self, command: VerifyBlock) -> ReplicaInfo: ...
    async def execute(self, command: DeleteBlocks | ReplicateBlock | VerifyBlock) -> Any:
        return await self.executor.execute(command)
