"""What ``keelfs chunkserver`` runs: the chunk server's config from its resolved settings
(:data:`~keelfs.server.settings.CHUNKSERVER_SETTINGS`), and its life.

Lifecycle: ``keelfs.runtime.lifecycle`` (``READY {json}`` with the server id, address, rack,
data directory and pid; SIGTERM/SIGINT stop it with status 0; if a background task dies, the
scanner, the expiry of abandoned replicas or the reporting to the masters, the process exits
with status 1 at once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keelfs.chunk.node import ChunkNode, ChunkNodeConfig
from keelfs.chunk.reporting import Reporter
from keelfs.runtime.lifecycle import announce_ready, serve_until_stopped, stop_on_signals
from keelfs.server.security import check_listen, http_settings, node_tls
from keelfs.server.settings import (
    ConfigError,
    check_limits,
    checked_advertise,
    split_address,
)
from keelfs.web.access import HttpSettings

__all__ = ["ReportingConfig", "chunk_config", "serve"]

log = logging.getLogger("keelfs.server.chunkserver")


@dataclass(frozen=True)
class ReportingConfig:
    config_servers: tuple[str, ...] = ()
    interval_s: float = 1.0


def chunk_config(
    values: Mapping[str, Any],
) -> tuple[ChunkNodeConfig, ReportingConfig, HttpSettings]:
    """The node's config, its reporting, and its HTTP side (``listen`` empty: none) from
    resolved settings, every value checked (``ConfigError``)."""
    split_address(values["listen"], "listen")
    advertise = checked_advertise(values["listen"], values["advertise"])
    if values["scan_interval_s"] < 0 or values["scan_rate_mb"] <= 0:
        raise ConfigError("scan_interval_s must be >= 0 and scan_rate_mb > 0")
    if values["heartbeat_interval_s"] <= 0:
        raise ConfigError("heartbeat_interval_s must be > 0")
    check_limits(values, "max_concurrent_rpcs")
    check_limits(values, "reserved_bytes", least=0)
    servers = tuple(a.strip() for a in values["config_servers"].split(",") if a.strip())
    tls = node_tls(values, "chunkserver", values["server_id"])
    check_listen((values["listen"],), tls, values["insecure"])
    return (
        ChunkNodeConfig(
            data_dir=Path(values["data"]),
            listen=values["listen"],
            advertise=advertise,
            server_id=values["server_id"],
            rack=values["rack"],
            fsync_on_close=values["fsync_on_close"],
            scan_interval_s=values["scan_interval_s"],
            scan_rate_bytes_s=values["scan_rate_mb"] * 2**20,
            ack_timeout_s=values["ack_timeout_s"],
            rbw_expiry_s=values["rbw_expiry_s"],
            reserved_bytes=values["reserved_bytes"],
            max_concurrent_rpcs=values["max_concurrent_rpcs"],
            tls=tls,
        ),
        ReportingConfig(servers, values["heartbeat_interval_s"]),
        http_settings(values, tls),
    )


async def serve(
    config: ChunkNodeConfig,
    reporting: ReportingConfig | None = None,
    http: HttpSettings | None = None,
) -> None:
    """Run the server until SIGTERM/SIGINT; with ``http.listen``, also its HTTP side
    (``keelfs.web``: health, metrics), started before READY."""
    stop = stop_on_signals()
    node = ChunkNode(config)
    extra: list[asyncio.Task[None]] = []
    web: Any = None
    try:
        await node.start()
        reporter: Reporter | None = None
        if reporting is not None and reporting.config_servers:
            reporter = Reporter(
                node, list(reporting.config_servers), interval_s=reporting.interval_s
            )
            extra.append(asyncio.create_task(reporter.run(), name="reporting"))
        tasks = [*node.tasks, *extra]
        info = node.ready_info()
        if http is not None and http.listen:
            from keelfs.web.app import chunk_web_server  # aiohttp loads only when asked for

            web = chunk_web_server(node, http, reporter)
            await web.start()
            info["http"], info["http_url"] = web.address, web.url
        announce_ready(info)
        log.info("chunk server serving: %s", info)
        await serve_until_stopped(stop, tasks)
        log.info("chunk server stopping")
    finally:
        if web is not None:
            await web.stop()
        for t in extra:
            t.cancel()
        await asyncio.gather(*extra, return_exceptions=True)
        await node.stop()
