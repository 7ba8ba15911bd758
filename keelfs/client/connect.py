"""``keelfs.connect``: a client from any metadata node's address."""

from __future__ import annotations

import os
from typing import Any

import grpc

from keelfs.client.sync import Client
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.rpc.pb import meta_pb2_grpc as pb_grpc

__all__ = ["DEFAULT_ADDRESS", "connect"]

DEFAULT_ADDRESS = "127.0.0.1:7001"
"""Where ``keelfs server`` listens by default."""


def connect(address: str | None = None, **options: Any) -> Client:
    """A client of the cluster at ``address``: any config server or master (the client finds
    the rest), or several separated by commas; default ``$KEELFS_ADDRESS``, else
    ``127.0.0.1:7001``. ``options`` go to :class:`keelfs.client.Client`."""
    where = address or os.environ.get("KEELFS_ADDRESS") or DEFAULT_ADDRESS
    seeds = [a.strip() for a in where.split(",") if a.strip()]
    return Client(config_servers_of(seeds) or seeds, **options)


def config_servers_of(seeds: list[str]) -> list[str] | None:
    """The config servers' client addresses, asked of the first of ``seeds`` that answers:
    any metadata node knows them (``Node.Registry``), so a master's address works too. None
    if no seed answers; a node that knows none gives an empty list."""
    for seed in seeds:
        try:
            with grpc.insecure_channel(seed) as channel:
                stub: Any = pb_grpc.NodeStub(channel)
                reply = stub.Registry(pb.RegistryRequest(), timeout=3.0)
        except grpc.RpcError:
            continue
        return list(reply.config_servers)
    return None
