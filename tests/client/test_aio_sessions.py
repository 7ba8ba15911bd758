"""The asyncio client waits for a session of a full pool without polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator
from typing import Any

from keelfs.client import AsyncClient
from keelfs.client._core import Session, SessionPool, WaitSession


def test_a_request_waiting_for_a_session_sleeps_until_one_is_returned() -> None:
    pool = SessionPool("shard-1", max_sessions=1)
    assert pool.take() is None
    held = pool.add(1, 60_000)
    looks = 0

    def plan() -> Generator[WaitSession, Any, Session]:
        nonlocal looks
        while True:
            looks += 1
            got = pool.take()
            if isinstance(got, Session):
                return got
            yield WaitSession(pool, 5.0)

    async def main() -> tuple[Session, float]:
        client = AsyncClient("127.0.0.1:1")  # no call is made: the plan only waits
        try:
            loop = asyncio.get_running_loop()
            loop.call_later(0.2, pool.release, held)
            t0 = time.monotonic()
            got = await client._drive(plan())
            return got, time.monotonic() - t0
        finally:
            await client.close()

    got, waited = asyncio.run(main())
    assert got is held
    assert 0.15 <= waited < 1.0  # woken by the release, not by the 5 s timeout
    assert looks == 2  # once before the wait, once when woken (polling looked ~100 times)


def test_a_waiter_whose_wait_timed_out_does_not_swallow_the_next_release() -> None:
    pool = SessionPool("shard-1", max_sessions=1)
    assert pool.take() is None
    held = pool.add(1, 60_000)

    async def main() -> float:
        client = AsyncClient("127.0.0.1:1")
        try:
            await client._drive(_wait_once(pool, 0.05))  # times out, its waker stays queued
            loop = asyncio.get_running_loop()
            loop.call_later(0.1, pool.release, held)
            t0 = time.monotonic()
            await client._drive(_wait_once(pool, 5.0))
            return time.monotonic() - t0
        finally:
            await client.close()

    assert asyncio.run(main()) < 1.0


def _wait_once(pool: SessionPool, timeout: float) -> Generator[WaitSession, Any, None]:
    yield WaitSession(pool, timeout)
