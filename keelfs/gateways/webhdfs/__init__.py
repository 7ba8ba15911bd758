"""The WebHDFS gateway: Hadoop's REST API (``/webhdfs/v1/<path>?op=...``) over the keelfs
client library (``keelfs.client.AsyncClient``), on aiohttp. ``docs/webhdfs.md`` lists the
operations and the differences from Hadoop.

- ``errors``: every ``KeelError`` code as Hadoop's ``RemoteException`` (one table);
- ``shapes``: the JSON bodies Hadoop documents (``FileStatus``, ``ContentSummary``, ...);
- ``app``: the aiohttp application, the per-user clients and the operations.
"""

from keelfs.gateways.webhdfs.app import GatewaySettings, WebHdfsGateway

__all__ = ["GatewaySettings", "WebHdfsGateway"]
