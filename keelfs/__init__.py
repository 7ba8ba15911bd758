"""keelfs: a distributed file system whose masters never stop being available.

``keelfs.connect(address)`` gives a :class:`keelfs.client.Client` (``open``, ``ls``, ``stat``,
``mkdir``, ``delete``, ``rename``, ``put``, ``get``, ...); ``keelfs.client.AsyncClient`` has the
same verbs for asyncio.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["connect"]


def __getattr__(name: str) -> Any:
    # ``keelfs.connect`` without importing the client (and grpc) with the package itself
    if name == "connect":
        return importlib.import_module("keelfs.client.connect").connect
    raise AttributeError(f"module 'keelfs' has no attribute {name!r}")
