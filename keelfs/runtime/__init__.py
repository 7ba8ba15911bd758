"""The asyncio runtime that turns the pure Raft core into running, durable Raft groups.

``RaftHost`` is one process's multi-raft host: one RocksDB engine, one transport, one tick
timer and one ready loop for every group it holds. ``RaftGroup`` is one group's member on this
host: proposals return futures resolved with the state machine's result. Its errors are
``keelfs.errors``' ``NotLeader``, ``Unavailable`` and ``OutcomeUnknown`` (see
``keelfs.runtime.group``).
"""

from keelfs.runtime.group import RaftGroup
from keelfs.runtime.host import HostConfig, RaftHost
from keelfs.runtime.statemachine import StateMachine

__all__ = [
    "HostConfig",
    "RaftGroup",
    "RaftHost",
    "StateMachine",
]
