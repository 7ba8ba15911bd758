"""``python -m keelfs.server.chunkserver``: one chunk server process.

Lifecycle (as the master processes): once serving, one line ``READY {json}`` (server id,
address, rack, data directory, pid) is printed on stdout; logs go to stderr. SIGTERM or SIGINT
stop it cleanly (exit status 0). If a background task dies (the scanner, the expiry of
abandoned replicas) the process exits with status 1 at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keelfs.chunk.memory import tune_malloc
from keelfs.chunk.node import DEFAULT_RACK, ChunkNode, ChunkNodeConfig
from keelfs.chunk.reporting import Reporter
from keelfs.runtime.lifecycle import until_stopped
from keelfs.web.listen import add_http_argument, check_http_listen

__all__ = ["config_from_args", "main", "serve"]

log = logging.getLogger("keelfs.server.chunkserver")


def _parser() -> argparse.ArgumentParser:
    d = ChunkNodeConfig(Path("."))
    p = argparse.ArgumentParser(
        prog="python -m keelfs.server.chunkserver",
        description="Run a keelfs chunk server: stores block replicas, serves the data path.",
    )
    p.add_argument("--data", required=True, type=Path, help="data directory")
    p.add_argument("--listen", required=True, help="gRPC address HOST:PORT (port 0: any)")
    p.add_argument(
        "--server-id", default="", help="id on first start (default: generated; then stored)"
    )
    p.add_argument("--rack", default=DEFAULT_RACK, help="rack, for replica placement")
    p.add_argument(
        "--scan-interval-s",
        type=float,
        default=d.scan_interval_s,
        help="seconds between block scanner passes (0: no scanner)",
    )
    p.add_argument(
        "--scan-rate-mb",
        type=float,
        default=d.scan_rate_bytes_s / 2**20,
        help="block scanner read rate, MiB/s",
    )
    p.add_argument(
        "--fsync-on-close",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fsync a replica when it is finalized (--no-fsync-on-close: tests, benchmarks)",
    )
    p.add_argument(
        "--ack-timeout-s",
        type=float,
        default=d.ack_timeout_s,
        help="pipeline: a next node silent this long is declared failed",
    )
    p.add_argument(
        "--rbw-expiry-s",
        type=float,
        default=d.rbw_expiry_s,
        help="abandoned being-written replicas are removed after this long",
    )
    p.add_argument(
        "--config-servers",
        default="",
        help="comma-separated config-server addresses: register there and report to every "
        "master (empty: a standalone server, for tests of the data path alone)",
    )
    p.add_argument(
        "--heartbeat-interval-s",
        type=float,
        default=1.0,
        help="seconds between heartbeats to each master (changes are reported sooner)",
    )
    add_http_argument(p)
    p.add_argument("--log-level", default="INFO")
    return p


@dataclass(frozen=True)
class ReportingConfig:
    config_servers: tuple[str, ...] = ()
    interval_s: float = 1.0


def config_from_args(argv: list[str] | None = None) -> tuple[ChunkNodeConfig, ReportingConfig]:
    config, reporting, _ = _parse(argv)
    return config, reporting


def _parse(argv: list[str] | None) -> tuple[ChunkNodeConfig, ReportingConfig, str]:
    """The node's config, its reporting, and ``--http-listen`` (empty: no HTTP server)."""
    ns = _parser().parse_args(argv)
    http_listen = check_http_listen(ns.http_listen)
    if ns.scan_interval_s < 0 or ns.scan_rate_mb <= 0:
        raise SystemExit("--scan-interval-s must be >= 0 and --scan-rate-mb > 0")
    logging.basicConfig(
        level=ns.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s chunk %(levelname)s %(name)s: %(message)s",
    )
    reporting = ReportingConfig(
        tuple(a for a in ns.config_servers.split(",") if a), ns.heartbeat_interval_s
    )
    return (
        ChunkNodeConfig(
            data_dir=ns.data,
            listen=ns.listen,
            server_id=ns.server_id,
            rack=ns.rack,
            fsync_on_close=ns.fsync_on_close,
            scan_interval_s=ns.scan_interval_s,
            scan_rate_bytes_s=ns.scan_rate_mb * 2**20,
            ack_timeout_s=ns.ack_timeout_s,
            rbw_expiry_s=ns.rbw_expiry_s,
        ),
        reporting,
        http_listen,
    )


class _Failed(Exception):
    pass


async def serve(
    config: ChunkNodeConfig, reporting: ReportingConfig | None = None, http_listen: str = ""
) -> None:
    """Run the server until SIGTERM/SIGINT; with ``http_listen``, also its HTTP side
    (``keelfs.web``: health, metrics), started before READY."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
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
        if http_listen:
            from keelfs.web.app import chunk_web_server  # aiohttp loads only when asked for

            web = chunk_web_server(node, http_listen, reporter)
            await web.start()
            info["http"] = web.address
        print("READY " + json.dumps(info, sort_keys=True), flush=True)
        log.info("chunk server serving: %s", info)
        failed = await until_stopped(stop, tasks)
        if failed is not None:
            raise _Failed(f"background task {failed[0]} stopped: {failed[1]!r}") from failed[1]
        log.info("chunk server stopping")
    finally:
        if web is not None:
            await web.stop()
        for t in extra:
            t.cancel()
        await asyncio.gather(*extra, return_exceptions=True)
        await node.stop()


def main(argv: list[str] | None = None) -> int:
    config, reporting, http_listen = _parse(argv)
    if not tune_malloc():
        log.info("not glibc: malloc thresholds left as they are")
    try:
        asyncio.run(serve(config, reporting, http_listen))
    except _Failed as exc:
        log.critical("%s", exc, exc_info=exc.__cause__)
        return 1
    except OSError as exc:
        log.critical("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
