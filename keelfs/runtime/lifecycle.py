"""How every keelfs process waits out its life: until asked to stop, or until a task it cannot
live without ends (fail-stop: a node whose Raft loop or reporting died must not keep answering
clients as if all were well)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

__all__ = ["until_stopped"]


async def until_stopped(
    stop: asyncio.Event, tasks: Iterable[asyncio.Task[object]]
) -> tuple[str, BaseException | None] | None:
    """Wait until ``stop`` is set (None) or one of ``tasks`` ends: then its name and the
    exception it ended with (None if it returned or was cancelled)."""
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
    if stopping in done:
        return None
    stopping.cancel()
    failed = next(iter(done))
    return failed.get_name(), None if failed.cancelled() else failed.exception()
