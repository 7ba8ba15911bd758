"""A deterministic asyncio event loop on virtual time.

``SimLoop`` is asyncio's own selector loop with a selector that never waits: when nothing is
ready, the loop asks the selector to wait until the next timer, and the selector instead moves
the virtual clock there. So a run does in milliseconds what takes seconds of timers, and, with
no thread and no socket involved, the order in which callbacks run depends only on what the
code does: the same program with the same seeds runs the same way every time.

- ``run_in_executor`` (and so ``asyncio.to_thread``) runs the function at once, on the loop;
- ``virtual_clock(loop)`` patches ``time.monotonic``/``time.time`` (and their ``_ns`` twins,
  ``perf_counter``) to the loop's clock while the simulation runs: keelfs code reads them
  directly (lease and session times, chunk-server liveness, deadlines);
- a loop that has nothing ready and no timer is stuck for good: ``Deadlock``; so is one that
  runs ``LIVELOCK_ITERATIONS`` iterations without its clock moving;
- ``pause(node)`` freezes a simulated process as ``SIGSTOP`` would: every callback that runs
  in that node's context (``NODE``: its tasks, its timers, the messages and requests that
  arrive for it) is held, and ``resume(node)`` lets them run, in their order, as if no time
  had passed for it (a paused leader wakes up still believing it leads);
- the cyclic garbage collector runs only at fixed points of the run (every
  ``COLLECT_EVERY`` loop iterations; ``deterministic_gc`` turns automatic collection off
  meanwhile): what a collection finalizes (an abandoned async generator's ``aclose``, for
  one) schedules callbacks, and automatic collections come after a count of allocations that
  differs with what the process did before the run (compiling modules, say).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import selectors
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["NODE", "Deadlock", "SimLoop", "deterministic_gc", "virtual_clock"]

NODE: contextvars.ContextVar[int] = contextvars.ContextVar("clustersim_node", default=0)
"""The simulated process a callback belongs to (0: none, never paused). A node's tasks are
started in a context that sets it, and inherit it."""

COLLECT_EVERY = 5_000
LIVELOCK_ITERATIONS = 1_000_000
"""Loop iterations without virtual time moving: something spins (a busy retry without a
sleep), which on virtual time never ends. The run fails with ``Deadlock``."""

EPOCH_S = 1_780_000_000.0
"""What the virtual wall clock reads at virtual time 0 (a fixed calendar instant)."""


class Deadlock(RuntimeError):
    """Nothing is ready and no timer is set: the simulated world cannot move any more."""


class _NoWaitSelector(selectors.BaseSelector):
    """Registers what the loop asks (its self-pipe) and never reports an event; a wait is a
    jump of the virtual clock."""

    def __init__(self) -> None:
        self._keys: dict[Any, selectors.SelectorKey] = {}
        self.advance: Callable[[float], None] = lambda _s: None

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        return self._keys.pop(fd)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise Deadlock("no callback is ready and no timer is set")
        if timeout > 0:
            self.advance(timeout)
        return []

    def get_map(self) -> Any:
        return self._keys

    def close(self) -> None:
        self._keys.clear()


class SimLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _NoWaitSelector()
        super().__init__(selector)
        self._now = 0.0
        self._clock_resolution = 1e-6
        selector.advance = self._advance
        self.jumps = 0
        self.iterations = 0
        self._still_at = 0.0
        self._still_for = 0
        self._paused: dict[
            int, list[tuple[Callable[..., Any], tuple[Any, ...], contextvars.Context]]
        ] = {}

    def _advance(self, seconds: float) -> None:
        self._now += seconds
        self.jumps += 1

    def time(self) -> float:
        return self._now

    def _run_once(self) -> None:
        self.iterations += 1
        if self.iterations % COLLECT_EVERY == 0:
            gc.collect()
        if self._now != self._still_at:
            self._still_at, self._still_for = self._now, 0
        self._still_for += 1
        if self._still_for > LIVELOCK_ITERATIONS:
            raise Deadlock(f"livelock: {LIVELOCK_ITERATIONS} loop iterations at t={self._now:.6f}")
        super()._run_once()  # type: ignore[misc]

    # -- pausing a node ---------------------------------------------------------------------
    def pause(self, node: int) -> None:
        self._paused.setdefault(node, [])

    def resume(self, node: int) -> None:
        for callback, args, ctx in self._paused.pop(node, []):
            super().call_soon(self._gated, callback, args, ctx, context=ctx)

    @property
    def paused(self) -> list[int]:
        return sorted(self._paused)

    def _gated(
        self, callback: Callable[..., Any], args: tuple[Any, ...], ctx: contextvars.Context
    ) -> None:
        held = self._paused.get(NODE.get()) if self._paused else None
        if held is not None:
            held.append((callback, args, ctx))
        else:
            callback(*args)

    def call_soon(  # type: ignore[override]
        self, callback: Callable[..., Any], *args: Any, context: contextvars.Context | None = None
    ) -> asyncio.Handle:
        ctx = context if context is not None else contextvars.copy_context()
        return super().call_soon(self._gated, callback, args, ctx, context=ctx)

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., Any],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        ctx = context if context is not None else contextvars.copy_context()
        return super().call_at(when, self._gated, callback, args, ctx, context=ctx)

    def run_in_executor(  # type: ignore[override]
        self, executor: Any, func: Callable[..., Any], *args: Any
    ) -> Any:
        fut = self.create_future()
        try:
            fut.set_result(func(*args))
        except BaseException as exc:  # noqa: BLE001  # handed to the awaiting caller
            fut.set_exception(exc)
        return fut


@contextlib.contextmanager
def virtual_clock(loop: SimLoop) -> Iterator[None]:
    """Make the ``time`` module read ``loop``'s virtual clock until the block ends."""
    names = ("monotonic", "monotonic_ns", "time", "time_ns", "perf_counter", "perf_counter_ns")
    saved = {name: getattr(time, name) for name in names}
    patched: dict[str, Callable[[], Any]] = {
        "monotonic": lambda: loop._now,
        "monotonic_ns": lambda: int(loop._now * 1e9),
        "time": lambda: EPOCH_S + loop._now,
        "time_ns": lambda: int((EPOCH_S + loop._now) * 1e9),
        "perf_counter": lambda: loop._now,
        "perf_counter_ns": lambda: int(loop._now * 1e9),
    }
    for name, fn in patched.items():
        setattr(time, name, fn)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(time, name, fn)


@contextlib.contextmanager
def deterministic_gc() -> Iterator[None]:
    """Collect now and let only ``SimLoop`` collect (at fixed points) until the block ends."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
