"""The seeded workload: namespace clients whose history is checked for linearizability.

Each namespace client runs creates, deletes, no-overwrite renames (across shards: the two
directories are chosen on different shards) and stats of four names, ``<a>/x, <a>/y, <b>/x,
<b>/y``, back to back, and records every operation with its virtual invoke and return times
(``HistoryRecorder``). A create that succeeds is completed at once (the name is a file either
way). What the model cannot express is mapped as ``tests/master/test_txn_linearizability.py``
does: a rename refused because its source is still open (``LEASE_CONFLICT``) is the read it
made, ``stat(src) -> True``; an operation that ended with a retryable error is of unknown
outcome (a read: no outcome at all).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from keelfs.client import AsyncClient
from keelfs.errors import AlreadyExists, KeelError, LeaseConflict, NotFound, RetryableError
from keelfs.testing.linearizability import HistoryRecorder, Operation

__all__ = ["BUSY", "NamespaceWorkload", "busy_as_stat", "refusal_outcome"]

NAMES = ("x", "y")
BUSY = "busy"


def busy_as_stat(history: list[Operation]) -> list[Operation]:
    """``history`` with each ``busy`` rename as the read it made: ``stat(src)``."""
    out = []
    for op in history:
        if op.outcome_known and op.input[0] == "rename" and op.output == BUSY:
            op = Operation(op.client_id, op.call, op.ret, ("stat", op.input[1]), True)
        out.append(op)
    return out


def refusal_outcome(kind: str, exc: KeelError) -> str | None:
    """What a namespace operation refused with ``exc`` records in the history for
    ``FileNamespaceModel`` (None: not an outcome of the model: the caller re-raises). A rename
    refused with ``LEASE_CONFLICT`` is ``BUSY`` (recorded as ``stat(src) -> True``)."""
    if isinstance(exc, AlreadyExists) and kind in ("create", "rename"):
        return "exists"
    if isinstance(exc, LeaseConflict) and kind == "create":
        return "exists"
    if isinstance(exc, LeaseConflict) and kind == "rename":
        return BUSY
    if isinstance(exc, NotFound) and kind in ("delete", "rename"):
        return "not_found"
    return None


async def _perform(fs: AsyncClient, op: tuple[Any, ...]) -> Any:
    kind = op[0]
    try:
        if kind == "create":
            await fs.create(op[1])
        elif kind == "delete":
            await fs.delete(op[1])
        elif kind == "rename":
            await fs.rename(op[1], op[2])
        else:
            return await fs.exists(op[1])
    except (AlreadyExists, LeaseConflict, NotFound) as exc:
        outcome = refusal_outcome(kind, exc)
        if outcome is None:
            raise
        return outcome
    return "ok"


@dataclass
class NamespaceWorkload:
    a: str
    b: str
    clock: Callable[[], float]
    trace: Callable[[str], None]
    rec: HistoryRecorder = field(init=False)
    failures: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.rec = HistoryRecorder(clock=self.clock)

    @property
    def paths(self) -> list[str]:
        return [f"{d}/{n}" for d in (self.a, self.b) for n in NAMES]

    async def client_loop(self, c: int, fs: AsyncClient, rng: random.Random, until: float) -> None:
        loop = asyncio.get_running_loop()
        plan: list[tuple[Any, ...]] = []
        while loop.time() < until:
            if not plan:
                plan = self._pick(rng)
            op = plan.pop(0)
            out = await self.run(c, fs, op)
            if op[0] == "rename" and (out == "ok" or rng.random() < 0.3):
                plan = [("stat", op[1]), ("stat", op[2])]
            if not plan:
                await asyncio.sleep(rng.uniform(0.0, 0.05))

    def _pick(self, rng: random.Random) -> list[tuple[Any, ...]]:
        src_dir, dst_dir = (self.a, self.b) if rng.random() < 0.5 else (self.b, self.a)
        p, q = f"{src_dir}/{rng.choice(NAMES)}", f"{dst_dir}/{rng.choice(NAMES)}"
        r = rng.random()
        if r < 0.3:
            return [("create", p)]
        if r < 0.45:
            return [("delete", p)]
        if r < 0.85:
            return [("rename", p, q)]
        return [("stat", f"{d}/{n}") for d in (src_dir, dst_dir) for n in NAMES]

    async def run(self, c: Any, fs: AsyncClient, op: tuple[Any, ...]) -> str:
        kind = op[0]
        h = self.rec.invoke(c, op)
        try:
            out = await _perform(fs, op)
        except RetryableError as exc:
            if kind == "stat":
                self.rec.fail_definite(h)
            else:
                self.rec.fail_unknown(h)
            result = f"? ({type(exc).__name__})"
        except KeelError as exc:
            self.rec.fail_unknown(h)
            self.failures.append(f"{op}: {exc!r}")
            result = f"! ({type(exc).__name__})"
        else:
            self.rec.complete(h, out)
            if kind == "create" and out == "ok":
                await self._close(fs, op[1])
            result = str(out)
        self.outcomes[f"{kind} -> {result}"] += 1
        self.trace(f"ns c{c} {op} -> {result}")
        return result

    @staticmethod
    async def _close(fs: AsyncClient, path: str) -> None:
        # deleted or taken over meanwhile, or left open (renames then see LEASE_CONFLICT)
        with contextlib.suppress(NotFound, LeaseConflict, RetryableError):
            await fs.complete(path)

    async def final_stats(self, fs: AsyncClient, timeout: float) -> None:
        """Once the clients stopped and the cluster healed: stat every name (recorded)."""
        loop = asyncio.get_running_loop()
        for path in self.paths:
            deadline = loop.time() + timeout
            while True:
                h = self.rec.invoke("final", ("stat", path))
                try:
                    exists = await fs.exists(path)
                except RetryableError:
                    self.rec.fail_definite(h)
                    if loop.time() >= deadline:
                        self.failures.append(f"{path} stays unavailable after healing")
                        break
                    await asyncio.sleep(0.2)
                    continue
                self.rec.complete(h, exists)
                break

    def history(self) -> list[Operation]:
        return busy_as_stat(self.rec.history())
