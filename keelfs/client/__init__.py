"""The keelfs client library: ``Client`` (synchronous, thread-safe) and ``AsyncClient``.

::

    from keelfs.client import Client

    with Client("127.0.0.1:7101") as fs:        # any one config server's client address
        fs.mkdir("/data/logs", parents=True)
        fs.create("/data/logs/today")
        for entry in fs.ls("/data/logs"):
            print(entry.path, entry.length)

Both take the address of ANY config server, fetch and cache the ShardMap and each group's
leader, follow ``NOT_LEADER`` hints and ``REDIRECT``s, retry retryable failures with back-off
within a deadline, and make writes exactly-once with client sessions (``keelfs.client._core``
describes the policy). Errors are the ``keelfs.errors`` tree; a write that may or may not
have been applied raises its ``OutcomeUnknown`` (an ``Unavailable``), also exported here.
"""

from keelfs.client._ops import AclStatus, DeleteResult, SnapshotInfo
from keelfs.client.aio import AsyncClient
from keelfs.client.sync import Client
from keelfs.datapath.file_checksum import FileChecksum
from keelfs.errors import OutcomeUnknown

__all__ = [
    "AclStatus",
    "AsyncClient",
    "Client",
    "DeleteResult",
    "FileChecksum",
    "OutcomeUnknown",
    "SnapshotInfo",
]
