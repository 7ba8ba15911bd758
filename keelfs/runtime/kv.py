"""A minimal replicated key-value state machine, used by tests and benchmarks.

Commands are small JSON objects: ``{"op": "put", "k": ..., "v": ...}`` returns the previous
value; ``{"op": "cas", "k", "old", "new"}`` returns whether it swapped; ``{"op": "delete", "k"}``
returns the previous value. Reads go through ``RaftGroup.read_barrier()`` then ``get``.
"""

from __future__ import annotations

import json
from typing import Any


def put(key: str, value: str) -> bytes:
    return json.dumps({"op": "put", "k": key, "v": value}, separators=(",", ":")).encode()


def cas(key: str, old: str | None, new: str) -> bytes:
    return json.dumps({"op": "cas", "k": key, "old": old, "new": new}).encode()


def delete(key: str) -> bytes:
    return json.dumps({"op": "delete", "k": key}).encode()


class KVStateMachine:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self._applied = 0

    def apply(self, index: int, data: bytes) -> Any:
        self._applied = index
        cmd = json.loads(data)
        op, key = cmd["op"], cmd["k"]
        if op == "put":
            prev = self.data.get(key)
            self.data[key] = cmd["v"]
            return prev
        if op == "cas":
            if self.data.get(key) != cmd["old"]:
                return False
            self.data[key] = cmd["new"]
            return True
        if op == "delete":
            return self.data.pop(key, None)
        raise ValueError(f"unknown op {op!r}")

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def applied_index(self) -> int:
        return self._applied

    def snapshot(self) -> bytes:
        return json.dumps({"applied": self._applied, "data": self.data}).encode()

    def restore(self, data: bytes, index: int) -> None:
        if not data:
            self.data, self._applied = {}, index
            return
        img = json.loads(data)
        self.data, self._applied = img["data"], index
