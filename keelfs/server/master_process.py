"""Command lines and the process lifecycle shared by ``config_server`` and ``master``.

Lifecycle (as ``keelfs.runtime.server``): once serving, one line ``READY {json}`` (id, Raft and
client addresses, pid, hosted groups) is printed on stdout; logs go to stderr. SIGTERM or
SIGINT stop the node cleanly (exit status 0). If the Raft runtime dies the process exits with
status 1 at once (fail-stop: a node whose log is not being written must not answer).

Membership is sticky: ``--peers`` bootstraps the groups this start creates (every one of them
with the same members); afterwards members and addresses come from ``--data``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from keelfs.errors import InvalidArgument
from keelfs.master.block_service import DEFAULT_MIN_REPLICAS
from keelfs.master.blocks import DEFAULT_DEAD_AFTER_S
from keelfs.master.node import MetaNode, NodeConfig, NodeFailed
from keelfs.master.transactions import DEFAULT_PREPARE_TIMEOUT_MS
from keelfs.meta.commands import DEFAULT_REPLICATION, check_id
from keelfs.meta.machine import DEFAULT_SESSION_TTL_MS
from keelfs.meta.namespace import DEFAULT_LEASE_TTL_MS, DEFAULT_TXN_RETENTION_MS
from keelfs.meta.ring import DEFAULT_VNODES
from keelfs.runtime.host import add_host_arguments, host_config_from_args
from keelfs.runtime.lifecycle import until_stopped
from keelfs.runtime.server import parse_peers
from keelfs.web.listen import add_http_argument, check_http_listen

__all__ = ["config_from_args", "main", "serve"]

log = logging.getLogger("keelfs.master")


def _parser(role: str) -> argparse.ArgumentParser:
    if role == "config":
        p = argparse.ArgumentParser(
            prog="python -m keelfs.server.config_server",
            description="Run one member of the keelfs config group (the ShardMap).",
        )
    else:
        p = argparse.ArgumentParser(
            prog="python -m keelfs.server.master",
            description="Run a keelfs master: members of one or more data shards' Raft groups.",
        )
    p.add_argument("--id", type=int, required=True, help="node id, unique among all meta nodes")
    p.add_argument("--listen", required=True, help="Raft transport address HOST:PORT")
    p.add_argument(
        "--client-listen",
        default="",
        help="client API address HOST:PORT (default: --listen's port + 1)",
    )
    p.add_argument("--data", required=True, type=Path, help="data directory")
    p.add_argument(
        "--peers",
        default="",
        help="ID=HOST:PORT,... every initial member's Raft address (first start only)",
    )
    if role == "config":
        p.add_argument(
            "--shard",
            action="append",
            default=[],
            help="also host a member of this data shard (repeatable)",
        )
        p.add_argument(
            "--config-servers",
            default="",
            help="client addresses of the other config servers (optional: helps them register)",
        )
    else:
        p.add_argument(
            "--shard",
            action="append",
            required=True,
            help="host a member of this data shard, e.g. shard-1 (repeatable)",
        )
        p.add_argument(
            "--config-servers",
            default="",
            help="client addresses of config servers ADDR,... (any of them)",
        )
        p.add_argument(
            "--config-member",
            action="store_true",
            help="also host a member of the config group in this process",
        )
    add_host_arguments(p)
    p.add_argument(
        "--session-ttl-ms",
        type=int,
        default=DEFAULT_SESSION_TTL_MS,
        help="client session lifetime when idle (same on every member)",
    )
    p.add_argument(
        "--lease-ttl-ms",
        type=int,
        default=DEFAULT_LEASE_TTL_MS,
        help="writer lease lifetime (same on every member)",
    )
    p.add_argument(
        "--txn-prepare-timeout-ms",
        type=int,
        default=DEFAULT_PREPARE_TIMEOUT_MS,
        help="a cross-shard transaction whose participants did not all prepare within this "
        "(log time) is aborted",
    )
    p.add_argument(
        "--txn-retention-ms",
        type=int,
        default=DEFAULT_TXN_RETENTION_MS,
        help="how long finished transaction records are kept (same on every member)",
    )
    p.add_argument(
        "--join",
        action="store_true",
        help="host empty members of the groups this data directory lacks, waiting to be added "
        "(keelfs admin add-member GROUP NODE ADDRESS)",
    )
    p.add_argument(
        "--min-replicas",
        type=int,
        default=DEFAULT_MIN_REPLICAS,
        help="replicas each block needs reported before a file can be closed",
    )
    p.add_argument(
        "--default-replication",
        type=int,
        default=DEFAULT_REPLICATION,
        help="replication of files created without one (the client asks for the default)",
    )
    p.add_argument(
        "--chunk-dead-after",
        type=float,
        default=DEFAULT_DEAD_AFTER_S,
        help="seconds without a heartbeat after which a chunk server counts as dead",
    )
    p.add_argument(
        "--vnodes", type=int, default=DEFAULT_VNODES, help="ring points per shard (config group)"
    )
    p.add_argument("--map-refresh", type=float, default=1.0, help="seconds between ShardMap polls")
    add_http_argument(p)
    p.add_argument("--log-level", default="INFO")
    return p


def config_from_args(role: str, argv: list[str] | None = None) -> NodeConfig:
    return _parse(role, argv)[0]


def _parse(role: str, argv: list[str] | None) -> tuple[NodeConfig, str]:
    """The node's config and ``--http-listen`` (empty: no HTTP server)."""
    ns = _parser(role).parse_args(argv)
    http_listen = check_http_listen(ns.http_listen)
    if ns.id <= 0:
        raise SystemExit("--id must be positive")
    try:
        peers = parse_peers(ns.peers) if ns.peers else None
    except ValueError as exc:
        raise SystemExit(f"--peers: {exc}") from None
    if peers is not None and ns.id not in peers:
        raise SystemExit(f"--peers must include this node ({ns.id})")
    shards = tuple(dict.fromkeys(ns.shard))
    for shard in shards:
        try:
            check_id(shard, "shard")
        except InvalidArgument as exc:
            raise SystemExit(f"--shard: {exc}") from None
        if shard == "config":
            raise SystemExit("--shard: 'config' is the config group's name")
    if not 1 <= ns.default_replication <= 512:
        raise SystemExit("--default-replication must be between 1 and 512")
    config_member = role == "config" or ns.config_member
    servers = tuple(a.strip() for a in ns.config_servers.split(",") if a.strip())
    if not config_member and not servers:
        raise SystemExit("--config-servers is required (or --config-member)")
    logging.basicConfig(
        level=ns.log_level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s n{ns.id} %(levelname)s %(name)s: %(message)s",
    )
    host = host_config_from_args(ns)
    return NodeConfig(
        node_id=ns.id,
        listen=ns.listen,
        data_dir=ns.data,
        client_listen=ns.client_listen,
        peers=peers,
        config_member=config_member,
        shards=shards,
        config_servers=servers,
        host=host,
        session_ttl_ms=ns.session_ttl_ms,
        lease_ttl_ms=ns.lease_ttl_ms,
        txn_prepare_timeout_ms=ns.txn_prepare_timeout_ms,
        txn_retention_ms=ns.txn_retention_ms,
        min_replicas=ns.min_replicas,
        join=ns.join,
        default_replication=ns.default_replication,
        chunk_dead_after_s=ns.chunk_dead_after,
        vnodes=ns.vnodes,
        map_refresh_s=ns.map_refresh,
    ), http_listen


async def serve(config: NodeConfig, http_listen: str = "") -> None:
    """Run the node until SIGTERM/SIGINT; with ``http_listen``, also its HTTP side
    (``keelfs.web``: health, metrics, Raft state, the dashboard), started before READY."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    node = MetaNode(config)
    web: Any = None
    try:
        await node.start()
        info = node.ready_info()
        if http_listen:
            from keelfs.web.app import meta_web_server  # aiohttp loads only when asked for

            web = meta_web_server(node, http_listen)
            await web.start()
            info["http"] = web.address
        print("READY " + json.dumps(info, sort_keys=True), flush=True)
        log.info("node %d serving: %s", config.node_id, info)
        failed = await until_stopped(stop, node.tasks)
        if failed is not None:
            raise NodeFailed(f"the Raft runtime stopped: {failed[1]!r}") from failed[1]
        log.info("node %d stopping", config.node_id)
    finally:
        if web is not None:
            await web.stop()
        await node.stop()


def main(role: str, argv: list[str] | None = None) -> int:
    config, http_listen = _parse(role, argv)
    try:
        asyncio.run(serve(config, http_listen))
    except NodeFailed as exc:
        log.critical("%s", exc, exc_info=exc.__cause__)
        return 1
    return 0
