"""keelfs: a distributed file system whose masters never stop being available.

``keelfs.connect(address)`` gives a :class:`keelfs.client.Client` (``open``, ``ls``, ``stat``,
``mkdir``, ``delete``, ``rename``, ``put``, ``get``, ...); ``keelfs.client.AsyncClient`` has the
same verbs for asyncio.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keelfs.client import Client

__all__ = ["DEFAULT_ADDRESS", "connect"]

DEFAULT_ADDRESS = "127.0.0.1:7001"
"""Where ``keelfs server`` listens by default."""


def connect(address: str | None = None, **options: Any) -> Client:
    """A client of the cluster at ``address``: any config server or master (the client finds
    the rest), or several separated by commas; default ``$KEELFS_ADDRESS``, else
    ``127.0.0.1:7001``. ``options`` go to :class:`keelfs.client.Client`."""
    import grpc

    from keelfs.client import Client
    from keelfs.meta.pb import meta_pb2 as pb
    from keelfs.meta.pb import meta_pb2_grpc as pb_grpc

    where = address or os.environ.get("KEELFS_ADDRESS") or DEFAULT_ADDRESS
    seeds = [a.strip() for a in where.split(",") if a.strip()]
    # any metadata node knows the config servers (Node.Registry): a master's address works too
    config_servers: list[str] = []
    for seed in seeds:
        try:
            with grpc.insecure_channel(seed) as channel:
                stub: Any = pb_grpc.NodeStub(channel)
                reply = stub.Registry(pb.RegistryRequest(), timeout=3.0)
        except grpc.RpcError:
            continue
        config_servers = list(reply.config_servers)
        break
    return Client(config_servers or seeds, **options)
