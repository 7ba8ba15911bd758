"""A minimal replicated key-value state machine, used by tests and benchmarks.

Commands are small JSON objects: ``{"op": "put", "k": ..., "v": ...}`` returns the previous
value; ``{"op": "cas", "k", "old", "new"}`` returns whether it swapped; ``{"op": "delete", "k"}``
returns the previous value. Reads go through ``RaftGroup.read_barrier()`` then ``get``.

``{"op": "node", "id": n, "client": address}`` records node ``n``'s client address in a small
replicated directory (``nodes``), kept apart from the data: ``keelfs.runtime.server`` has each
new leader record its own, so followers can point clients at the leader's client address.
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


def node(node_id: int, client_address: str) -> bytes:
    return json.dumps({"op": "node", "id": node_id, "client": client_address}).encode()


class KVStateMachine:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.nodes: dict[int, str] = {}
        """Node id -> client address (see the module docstring)."""
        self._applied = 0

    def apply(self, index: int, data: bytes) -> Any:
        self._applied = index
        cmd = json.loads(data)
        op = cmd["op"]
        if op == "node":
            self.nodes[int(cmd["id"])] = str(cmd["client"])
            return None
        key = cmd["k"]
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
        nodes = {str(k): v for k, v in self.nodes.items()}
        return json.dumps({"applied": self._applied, "data": self.data, "nodes": nodes}).encode()

    def restore(self, data: bytes, index: int) -> None:
        if not data:
            self.data, self.nodes, self._applied = {}, {}, index
            return
        img = json.loads(data)
        self.data, self._applied = img["data"], index
        self.nodes = {int(k): v for k, v in img.get("nodes", {}).items()}
