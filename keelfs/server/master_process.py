"""What ``keelfs config-server`` and ``keelfs master`` run: the node's config from its
resolved settings (:data:`~keelfs.server.settings.CONFIG_SERVER_SETTINGS`,
:data:`~keelfs.server.settings.MASTER_SETTINGS`), and its life.

Lifecycle: ``keelfs.runtime.lifecycle`` (``READY {json}`` with the id, Raft and client
addresses, pid and hosted groups; SIGTERM/SIGINT stop it with status 0; if the Raft runtime
dies the process exits with status 1 at once: a node whose log is not being written must not
answer).

Membership is sticky: ``peers`` bootstraps the groups this start creates (every one of them
with the same members); afterwards members and addresses come from ``data``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from keelfs.errors import InvalidArgument
from keelfs.master.node import MetaNode, NodeConfig
from keelfs.meta.commands import check_id
from keelfs.runtime.host import HostConfig
from keelfs.runtime.lifecycle import announce_ready, serve_until_stopped, stop_on_signals
from keelfs.runtime.server import parse_peers
from keelfs.server.security import check_listen, http_settings, node_tls
from keelfs.server.settings import (
    ConfigError,
    check_limits,
    checked_advertise,
    neighbour_address,
    split_address,
    trash_interval,
)
from keelfs.web.access import HttpSettings

__all__ = ["ROLES", "node_config", "serve"]

log = logging.getLogger("keelfs.master")

ROLES = ("config", "master")
"""``config``: a config-group member (``keelfs config-server``); ``master``: members of data
shards (``keelfs master``), and of the config group too with ``config_member``."""


def _addresses(values: Mapping[str, Any]) -> tuple[str, str]:
    """``(raft, client)``: each given, or derived from the other (Raft = client port - 1)."""
    raft, client = values["raft_listen"], values["listen"]
    if not raft and not client:
        raise ConfigError("listen (the client address) or raft_listen is required")
    if not raft:
        raft = neighbour_address(client, -1, "listen")
    if not client:
        client = neighbour_address(raft, +1, "raft_listen")
    split_address(raft, "raft_listen")
    split_address(client, "listen")
    return raft, client


def _shards(values: Mapping[str, Any]) -> tuple[str, ...]:
    shards = tuple(dict.fromkeys(values["shard"]))
    for shard in shards:
        try:
            check_id(shard, "shard")
        except InvalidArgument as exc:
            raise ConfigError(f"shard: {exc}") from None
        if shard == "config":
            raise ConfigError("shard: 'config' is the config group's name")
    return shards


def _stream_port(port: int) -> int | None:
    if port == -1:
        return None
    if not 0 <= port <= 65535:
        raise ConfigError(f"raft_stream_port must be -1 (none), 0 (any) or a port, not {port}")
    return port


def _peers(values: Mapping[str, Any], node_id: int) -> dict[int, str] | None:
    if not values["peers"]:
        return None
    try:
        peers = parse_peers(values["peers"])
    except ValueError as exc:
        raise ConfigError(f"peers: {exc}") from None
    if node_id not in peers:
        raise ConfigError(f"peers must include this node ({node_id})")
    return peers


_LIMITS = (
    "max_concurrent_rpcs",
    "max_sessions_per_user",
    "max_leases_per_session",
    "max_open_txns",
)
"""Settings that are ``NodeConfig`` fields of the same name, each a positive bound."""


def node_config(role: str, values: Mapping[str, Any]) -> tuple[NodeConfig, HttpSettings]:
    """The node's config and its HTTP side (``listen`` empty: none) from resolved settings,
    every value checked (``ConfigError``)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    node_id = values["id"]
    if node_id <= 0:
        raise ConfigError(f"id must be positive, not {node_id}")
    raft, client = _addresses(values)
    advertise = checked_advertise(client, values["advertise"])
    # the Raft address as reported: its own --raft-advertise, else the host of --advertise
    checked_advertise(raft, values["raft_advertise"] or advertise, "raft_listen")
    if not 1 <= values["default_replication"] <= 512:
        raise ConfigError("default_replication must be between 1 and 512")
    config_member = role == "config" or values["config_member"]
    servers = tuple(a.strip() for a in values["config_servers"].split(",") if a.strip())
    if not config_member and not servers:
        raise ConfigError("config_servers is required (or config_member)")
    check_limits(values, *_LIMITS)
    trash_interval_ms = trash_interval(values["trash_interval"])
    tls = node_tls(values, role, node_id)
    check_listen((raft, client), tls, values["insecure"])
    http = http_settings(values, tls)
    return NodeConfig(
        node_id=node_id,
        listen=raft,
        data_dir=Path(values["data"]),
        client_listen=client,
        advertise=advertise,
        raft_advertise=values["raft_advertise"],
        raft_stream_port=_stream_port(values["raft_stream_port"]),
        peers=_peers(values, node_id),
        config_member=config_member,
        shards=_shards(values),
        config_servers=servers,
        host=HostConfig(
            tick_ms=values["tick_ms"],
            election_tick=values["election_tick"],
            snapshot_every=values["snapshot_every"],
            keep_after_snapshot=values["keep_log"],
            request_timeout=values["request_timeout"],
            quiesce_after_ticks=values["quiesce_after_ticks"],
            pack_proposals=values["pack_proposals"],
        ),
        session_ttl_ms=values["session_ttl_ms"],
        lease_ttl_ms=values["lease_ttl_ms"],
        txn_prepare_timeout_ms=values["txn_prepare_timeout_ms"],
        txn_retention_ms=values["txn_retention_ms"],
        min_replicas=values["min_replicas"],
        join=values["join"],
        default_replication=values["default_replication"],
        chunk_dead_after_s=values["chunk_dead_after"],
        vnodes=values["vnodes"],
        map_refresh_s=values["map_refresh"],
        superuser_group=values["superuser_group"],
        audit_log=Path(values["audit_log"]) if values["audit_log"] else None,
        trash_interval_ms=trash_interval_ms,
        **{name: values[name] for name in _LIMITS},
        tls=tls,
    ), http


async def serve(config: NodeConfig, http: HttpSettings | None = None) -> None:
    """Run the node until SIGTERM/SIGINT; with ``http.listen``, also its HTTP side
    (``keelfs.web``: health, metrics, Raft state, the dashboard), started before READY."""
    stop = stop_on_signals()
    node = MetaNode(config)
    web: Any = None
    try:
        await node.start()
        info = node.ready_info()
        if http is not None and http.listen:
            from keelfs.web.app import meta_web_server  # aiohttp loads only when asked for

            web = meta_web_server(node, http)
            await web.start()
            info["http"], info["http_url"] = web.address, web.url
        announce_ready(info)
        log.info("node %d serving: %s", config.node_id, info)
        await serve_until_stopped(stop, node.tasks)
        log.info("node %d stopping", config.node_id)
    finally:
        if web is not None:
            await web.stop()
        await node.stop()
