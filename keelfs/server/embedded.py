"""``keelfs server``: the whole file system in one process, on one data directory.

One asyncio loop runs:

- a :class:`~keelfs.master.node.MetaNode` (node 1) hosting the config group and ``shard-1``,
  each a single-member Raft group (its log is fsynced like any other: an acknowledged write
  survives a crash);
- a :class:`~keelfs.chunk.node.ChunkNode` sharing the loop's executor (``io_threads=0``) and
  its :class:`~keelfs.chunk.reporting.Reporter`, which registers it and heartbeats to the
  master as a separate chunk server process would;
- optionally the HTTP side of the master (``keelfs.web``: the dashboard, ``/health``,
  ``/metrics``, ``/raft/state``).

Files created without a replication get ``replication`` (default 1: there is one chunk
server; the master's ``default_replication``), and a block is complete with one replica
(``min_replicas=1``). More chunk servers may join later (``keelfs chunkserver
--config-servers <client address>``); files asking for more replicas then get them.

Data directory::

    <data>/meta/     the master: RocksDB (both groups' Raft logs), shards/shard-1/ (namespace)
    <data>/chunks/   the chunk server's replicas (server.json holds its id)
    <data>/server.lock  held while a server runs (a second one on the same data stops at once)

First start and restart are the same code: the groups are bootstrapped with this node as
their only member when ``<data>/meta`` holds none (membership is sticky afterwards, so later
starts need nothing), then ``shard-1`` is added to the ShardMap unless it is there and the
namespace formatted unless it is (both idempotent, so a first start interrupted half-way is
finished by the next one). Once the chunk server's first block report has reached the master
one ``READY {json}`` line is printed on stdout (after the human-readable banner), as every
keelfs process does. SIGTERM or SIGINT stop everything cleanly (exit status 0); if the Raft
runtime or a background task dies, the process exits with status 1
(``keelfs.runtime.lifecycle``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keelfs.chunk import node as chunk_node
from keelfs.chunk.node import ChunkNode, ChunkNodeConfig
from keelfs.chunk.reporting import Reporter
from keelfs.errors import AlreadyExists, KeelError, NotFound
from keelfs.master.callers import DEFAULT_SUPERUSER_GROUP
from keelfs.master.node import DEFAULT_MAX_CONCURRENT_RPCS, MetaNode, NodeConfig
from keelfs.meta.sessions import DEFAULT_MAX_SESSIONS_PER_USER
from keelfs.meta.shard_records import DEFAULT_MAX_LEASES_PER_SESSION, DEFAULT_MAX_OPEN_TXNS
from keelfs.rpc.addresses import split_advertise
from keelfs.runtime.host import HostConfig
from keelfs.runtime.lifecycle import (
    announce_ready,
    configure_logging,
    run_process,
    serve_until_stopped,
    stop_on_signals,
)
from keelfs.server.security import check_listen, http_settings, node_tls
from keelfs.server.settings import (
    SERVER_SETTINGS,
    ConfigError,
    Resolved,
    check_limits,
    checked_advertise,
    checked_log_format,
    checked_log_level,
    neighbour_address,
    split_address,
    trash_interval,
)
from keelfs.storage.private import PRIVATE_FILE_MODE, private_dir
from keelfs.tls.credentials import TlsSettings
from keelfs.web.access import HttpSettings

__all__ = ["NODE_ID", "SHARD", "ServerConfig", "run", "serve"]

log = logging.getLogger("keelfs.server")

NODE_ID = 1
CHUNK_ID = "cs-1"
"""The embedded chunk server's id on a first start with TLS (its certificate names it)."""
SHARD = "shard-1"
_SETUP_TIMEOUT_S = 60.0
_REPORT_TIMEOUT_S = 30.0


def _lock_data(data: Path) -> int:
    """Hold ``<data>/server.lock`` (an exclusive ``flock``, released when the process exits)
    so that a second server on the same data stops at once with a clear message; the file
    descriptor."""
    private_dir(data)
    fd = os.open(data / "server.lock", os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise OSError(f"{data} is in use by another keelfs server (pid {holder})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


_POSITIVE_LIMITS = (
    "max_concurrent_rpcs",
    "max_sessions_per_user",
    "max_leases_per_session",
    "max_open_txns",
    "chunk_max_concurrent_rpcs",
)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ServerConfig:
    """What ``keelfs server`` runs (every field is a row of
    :data:`keelfs.server.settings.SERVER_SETTINGS`; ``docs/configuration.md`` lists them)."""

    data: Path = Path("keelfs-data")
    listen: str = "127.0.0.1:7001"
    raft_listen: str = ""
    chunk_listen: str = ""
    advertise: str = ""
    http_listen: str = "127.0.0.1:7080"
    http_token_file: str = ""
    webhdfs_listen: str = ""
    webhdfs_token_secret_file: str = ""
    replication: int = 1
    fsync_on_close: bool = True
    scan_interval_s: float = 6 * 3600.0
    heartbeat_interval_s: float = 1.0
    tick_ms: float = 15.0
    trash_interval: float = 1440.0
    superuser_group: str = DEFAULT_SUPERUSER_GROUP
    audit_log: str = ""
    max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS
    max_sessions_per_user: int = DEFAULT_MAX_SESSIONS_PER_USER
    max_leases_per_session: int = DEFAULT_MAX_LEASES_PER_SESSION
    max_open_txns: int = DEFAULT_MAX_OPEN_TXNS
    chunk_max_concurrent_rpcs: int = chunk_node.DEFAULT_MAX_CONCURRENT_RPCS
    reserved_bytes: int = 0
    log_level: str = "INFO"
    log_format: str = "text"
    tls_dir: str = ""
    insecure: bool = False
    s3_listen: str = ""
    s3_credentials: str = ""

    @classmethod
    def from_resolved(cls, resolved: Resolved) -> ServerConfig:
        """The config of resolved settings, every value checked (``ConfigError``) and the
        derived addresses filled in."""
        v = dict(resolved.values)
        unknown = set(v) - {s.name for s in SERVER_SETTINGS}
        if unknown:
            raise ConfigError(f"unknown settings {sorted(unknown)}")
        split_address(v["listen"], "listen")
        if not v["raft_listen"]:
            v["raft_listen"] = neighbour_address(v["listen"], -1, "listen")
        if not v["chunk_listen"]:
            v["chunk_listen"] = neighbour_address(v["listen"], +1, "listen")
        split_address(v["raft_listen"], "raft_listen")
        split_address(v["chunk_listen"], "chunk_listen")
        v["advertise"] = str(v["advertise"]).strip()
        if not 1 <= v["replication"] <= 512:
            raise ConfigError(f"replication must be between 1 and 512, not {v['replication']}")
        if v["scan_interval_s"] < 0 or v["heartbeat_interval_s"] <= 0 or v["tick_ms"] <= 0:
            raise ConfigError("scan_interval_s must be >= 0, heartbeat_interval_s and tick_ms > 0")
        check_limits(v, *_POSITIVE_LIMITS)
        check_limits(v, "reserved_bytes", least=0)
        trash_interval(v["trash_interval"])
        v["log_level"] = checked_log_level(v["log_level"])
        v["log_format"] = checked_log_format(v["log_format"])
        v["data"] = Path(v["data"])
        config = cls(**v)
        check_listen(
            (config.listen, config.raft_listen, config.chunk_listen),
            config.meta_tls(),
            config.insecure,
        )
        _check_server_advertise(config)  # after the TLS rule: that one speaks first
        config.chunk_tls()  # its certificate must be there too
        config.http()
        if config.s3_listen:
            from keelfs.gateways.s3.serve import check_listen as check_s3_listen

            try:
                check_s3_listen(config.s3_listen, config.insecure)
            except ValueError as exc:
                raise ConfigError(f"s3_listen: {exc}") from None
        config.webhdfs()
        config.webhdfs_token_secret()
        return config

    def webhdfs(self) -> str:
        """The WebHDFS gateway's address (empty: none), checked (``ConfigError``)."""
        listen = "" if self.webhdfs_listen in ("", "off") else self.webhdfs_listen
        if not listen:
            return ""
        if self.tls_dir:
            raise ConfigError(
                "webhdfs_listen: the WebHDFS gateway has no TLS yet (docs/webhdfs.md)"
            )
        from keelfs.gateways.webhdfs.app import parse_listen

        try:
            parse_listen(listen)
        except ValueError as exc:
            raise ConfigError(f"webhdfs_listen: {exc}") from None
        return listen

    def webhdfs_token_secret(self) -> Path | None:
        """The file of the WebHDFS gateway's token secret (None: no tokens), checked readable
        and long enough (``ConfigError``); refused without the gateway."""
        if not self.webhdfs_token_secret_file:
            return None
        if not self.webhdfs():
            raise ConfigError("webhdfs_token_secret_file: set webhdfs_listen too (no gateway)")
        from keelfs.gateways.webhdfs.tokens import load_secret

        path = Path(self.webhdfs_token_secret_file)
        try:
            load_secret(path)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"webhdfs_token_secret_file: {exc}") from None
        return path

    def http(self) -> HttpSettings:
        """The HTTP side (the metadata node's: the dashboard), checked (``ConfigError``)."""
        values = {"http_listen": self.http_listen, "http_token_file": self.http_token_file}
        return http_settings(values, self.meta_tls())

    @property
    def s3_credentials_file(self) -> Path:
        """The S3 gateway's access keys: ``s3_credentials``, else ``<data>/s3-credentials.toml``."""
        return (
            Path(self.s3_credentials) if self.s3_credentials else self.data / "s3-credentials.toml"
        )

    def meta_tls(self) -> TlsSettings | None:
        """The metadata node's TLS settings: ``master-1`` of ``tls_dir`` (None: no TLS)."""
        return node_tls({"tls_dir": self.tls_dir}, "master", NODE_ID)

    def chunk_tls(self) -> TlsSettings | None:
        """The chunk server's: ``chunkserver-ID`` of ``tls_dir``, ID its stored id (the
        first start stores :data:`CHUNK_ID`)."""
        return node_tls({"tls_dir": self.tls_dir}, "chunkserver", self.chunk_server_id())

    def chunk_server_id(self) -> str:
        """The embedded chunk server's id: as stored in its data, else, with TLS,
        :data:`CHUNK_ID` (its certificate must name it), else "" (a generated one)."""
        stored = self.chunk_dir / "server.json"
        if stored.exists():
            return str(json.loads(stored.read_text())["server_id"])
        return CHUNK_ID if self.tls_dir else ""

    @property
    def meta_dir(self) -> Path:
        return self.data / "meta"

    @property
    def chunk_dir(self) -> Path:
        return self.data / "chunks"

    def node_config(self, raft_address: str) -> NodeConfig:
        return NodeConfig(
            node_id=NODE_ID,
            listen=raft_address,
            data_dir=self.meta_dir,
            client_listen=self.listen,
            advertise=self.advertise,
            peers={NODE_ID: raft_address},  # used only when a group does not exist yet
            config_member=True,
            shards=(SHARD,),
            host=HostConfig(tick_ms=self.tick_ms),
            min_replicas=1,
            default_replication=self.replication,
            superuser_group=self.superuser_group,
            trash_interval_ms=trash_interval(self.trash_interval),
            audit_log=Path(self.audit_log) if self.audit_log else None,
            max_concurrent_rpcs=self.max_concurrent_rpcs,
            max_sessions_per_user=self.max_sessions_per_user,
            max_leases_per_session=self.max_leases_per_session,
            max_open_txns=self.max_open_txns,
            tls=self.meta_tls(),
        )

    def chunk_config(self) -> ChunkNodeConfig:
        return ChunkNodeConfig(
            data_dir=self.chunk_dir,
            listen=self.chunk_listen,
            advertise=self.advertise,
            fsync_on_close=self.fsync_on_close,
            scan_interval_s=self.scan_interval_s,
            io_threads=0,  # one process: the loop's own executor runs the disk I/O
            server_id=self.chunk_server_id(),
            reserved_bytes=self.reserved_bytes,
            max_concurrent_rpcs=self.chunk_max_concurrent_rpcs,
            tls=self.chunk_tls(),
        )


def _check_server_advertise(config: ServerConfig) -> None:
    """The ``advertise`` setting of a server: a ``HOST`` (no port: it stands for the host of
    all three addresses, each keeping its port), required when any of them is a wildcard."""
    advertise = config.advertise
    for name in ("listen", "raft_listen", "chunk_listen"):
        checked_advertise(getattr(config, name), advertise, name)
    if advertise and split_advertise(advertise)[1]:
        raise ConfigError(
            f"advertise: give a HOST only, not {advertise!r}: it stands for the client, Raft "
            "and chunk addresses, each with its own port"
        )


async def _set_up(node: MetaNode, deadline: float) -> bool:
    """Put ``shard-1`` in the ShardMap and format the namespace, each unless done; True if
    this call formatted it (a first start)."""
    from keelfs.client import AsyncClient

    client = AsyncClient(
        [node.client_address], deadline=10.0, attempt_timeout=2.0, tls=node.config.tls
    )
    try:
        while True:
            try:
                m = await client.shard_map()
                if SHARD not in m.shards:
                    with contextlib.suppress(AlreadyExists):
                        await client.add_shard(SHARD, [NODE_ID])
                return await client.format()
            except (NotFound, KeelError) as exc:
                # NotFound: the node has not registered itself yet; others are retryable
                if time.monotonic() >= deadline or not (isinstance(exc, NotFound) or exc.retryable):
                    raise
                log.info("setting up %s: %s; retrying", SHARD, exc)
                await asyncio.sleep(0.1)
    finally:
        await client.close()


async def _wait_reported(node: MetaNode, server_id: str, deadline: float) -> bool:
    """Wait until the master counts the chunk server live and fully reported (new blocks may
    go there); False if it did not happen by ``deadline``."""
    while time.monotonic() < deadline:
        st = node.chunks.servers.get(server_id)
        if st is not None and st.reported and node.chunks.live(server_id):
            return True
        await asyncio.sleep(0.05)
    return False


async def serve(config: ServerConfig, on_ready: Any = None) -> None:
    """Run the server until SIGTERM/SIGINT (see the module docstring). ``on_ready(info)`` is
    called once everything serves (default: print the banner and the READY line)."""
    stop = stop_on_signals()
    raft = config.raft_listen
    host, port = split_address(raft, "raft_listen")
    if port == 0:  # the address is stored in the group's membership: give it a real port
        raft = f"{host}:{_free_port(host)}"
    lock = _lock_data(config.data)
    first_start = not config.meta_dir.exists()
    meta = MetaNode(config.node_config(raft))
    chunk = ChunkNode(config.chunk_config())
    extra: list[asyncio.Task[None]] = []
    web: Any = None
    s3: Any = None
    gateway: Any = None
    try:
        await meta.start()
        deadline = time.monotonic() + _SETUP_TIMEOUT_S
        formatted = await _set_up(meta, deadline)
        await chunk.start()
        reporter = Reporter(chunk, [meta.client_address], interval_s=config.heartbeat_interval_s)
        extra.append(asyncio.create_task(reporter.run(), name="reporting"))
        if not await _wait_reported(meta, chunk.server_id, time.monotonic() + _REPORT_TIMEOUT_S):
            log.warning("the chunk server has not reported to the master yet; serving anyway")
        info: dict[str, Any] = {
            **meta.ready_info(),
            "data": str(config.data),
            "chunk": chunk.address,
            "chunk_server_id": chunk.server_id,
            "replication": config.replication,
            "first_start": first_start,
            "formatted": formatted,
        }
        http = config.http()
        if http.listen:
            from keelfs.web.app import meta_web_server  # aiohttp loads only when asked for

            web = meta_web_server(meta, http)
            await web.start()
            info["http"], info["http_url"] = web.address, web.url
        if config.s3_listen:
            s3 = await _start_s3(config, meta.client_address)
            info["s3"], info["s3_url"], info["s3_credentials"] = (
                s3.address, s3.url, str(config.s3_credentials_file),
            )  # fmt: skip
        if config.webhdfs():
            from keelfs.gateways.webhdfs.app import GatewaySettings, WebHdfsGateway

            gateway = WebHdfsGateway(
                GatewaySettings(
                    (meta.client_address,),
                    config.webhdfs(),
                    token_secret_file=config.webhdfs_token_secret(),
                )
            )
            await gateway.start()
            info["webhdfs"], info["webhdfs_url"] = gateway.address, gateway.url
        (on_ready or _print_ready)(info)
        log.info("keelfs server serving: %s", info)
        tasks = [*meta.tasks, *chunk.tasks, *extra]
        await serve_until_stopped(stop, tasks)
        log.info("keelfs server stopping")
    finally:
        if s3 is not None:
            await s3.stop()
        if gateway is not None:
            await gateway.stop()
        if web is not None:
            await web.stop()
        for t in extra:
            t.cancel()
        await asyncio.gather(*extra, return_exceptions=True)
        await chunk.stop()
        await meta.stop()
        os.close(lock)


async def _start_s3(config: ServerConfig, client_address: str) -> Any:
    """The S3 gateway on ``s3_listen`` for this server (``keelfs.gateways.s3``), its access
    keys made first if the default file is not there yet."""
    from keelfs.gateways.s3.app import S3Gateway
    from keelfs.gateways.s3.credentials import ensure_credentials
    from keelfs.gateways.s3.serve import check_listen

    keys = ensure_credentials(config.s3_credentials_file, create=not config.s3_credentials)
    host, port = check_listen(config.s3_listen, config.insecure)
    tls_dir = Path(config.tls_dir) if config.tls_dir else None
    gateway = S3Gateway([client_address], keys, host=host, port=port, tls_dir=tls_dir)
    await gateway.start()
    return gateway


def _print_ready(info: dict[str, Any]) -> None:
    state = "new, formatted" if info["formatted"] else "reopened"
    lines = [
        f"keelfs server: data in {info['data']} ({state}), pid {info['pid']}",
        f"  clients connect to   {info['client']}    e.g. keelfs.client.Client({info['client']!r})",
        f"  chunk server         {info['chunk']} ({info['chunk_server_id']})",
        f"  default replication  {info['replication']}",
    ]
    if info.get("http_url"):
        lines.append(f"  dashboard            {info['http_url']}/")
    if info.get("s3_url"):
        lines.append(f"  S3 gateway           {info['s3_url']} (keys in {info['s3_credentials']})")
    if info.get("webhdfs_url"):
        lines.append(f"  WebHDFS              {info['webhdfs_url']}/webhdfs/v1/")
    lines.append("  stop with Ctrl-C (or SIGTERM)")
    print("\n".join(lines), flush=True)
    announce_ready(info)


def run(config: ServerConfig) -> int:
    """Run the server in this process; the exit status (``keelfs.runtime.lifecycle``)."""
    from keelfs.chunk.memory import tune_malloc

    configure_logging(config.log_level, "server", config.log_format)
    tune_malloc()
    return run_process("server", lambda: serve(config))
