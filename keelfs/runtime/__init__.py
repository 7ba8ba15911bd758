"""The asyncio runtime that turns the pure Raft core into running, durable Raft groups.

``RaftHost`` is one process's multi-raft host: one RocksDB engine, one transport, one tick
timer and one ready loop for every group it holds. ``RaftGroup`` is one group's member on this
host: proposals return futures resolved with the state machine's result. Its errors are
``keelfs.errors``' ``NotLeader``, ``Unavailable`` and ``OutcomeUnknown`` (see
``keelfs.runtime.group``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keelfs.runtime.group import RaftGroup
    from keelfs.runtime.host import HostConfig, RaftHost
    from keelfs.runtime.statemachine import StateMachine

_HOMES = {
    "HostConfig": "keelfs.runtime.host",
    "RaftHost": "keelfs.runtime.host",
    "RaftGroup": "keelfs.runtime.group",
    "StateMachine": "keelfs.runtime.statemachine",
}


def __getattr__(name: str) -> Any:
    """The package's names, loaded when first used: the light modules of this package (the
    process lifecycle every role command uses) must not pull in RocksDB and the Raft core at
    ``keelfs`` start-up."""
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "HostConfig",
    "RaftGroup",
    "RaftHost",
    "StateMachine",
]
