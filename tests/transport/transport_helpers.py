"""Helpers for the transport tests.

pytest-asyncio is not a dependency: every test is a plain function that calls :func:`run`, which
wraps the coroutine in ``asyncio.run`` with a hard timeout so a hung stream fails the test fast.
Tests register what they start on an ``AsyncExitStack`` so transports are stopped even when an
assertion fails midway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from keelfs.raft.messages import Message
from keelfs.runtime.processes import free_ports

T = TypeVar("T")


def run(coro_fn: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
    """Run ``coro_fn()`` on a fresh event loop, failing if it takes longer than ``timeout``."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro_fn(), timeout)

    return asyncio.run(bounded())


def free_port() -> int:
    """A port that was free a moment ago (for servers that must start later on a known port)."""
    return free_ports(1)[0]


class Inbox:
    """An ``on_messages`` callback that records batches and lets a test await arrivals."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, Message]]] = []
        self.messages: list[tuple[str, Message]] = []
        self._changed = asyncio.Event()

    def __call__(self, batch: list[tuple[str, Message]]) -> None:
        self.batches.append(list(batch))
        self.messages.extend(batch)
        self._changed.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        """Wait until at least ``count`` messages have arrived in total."""

        async def loop() -> None:
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(loop(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"got {len(self.messages)} of {count} messages within {timeout}s"
            ) from None


async def eventually(
    predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` every 10 ms until it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.01)
