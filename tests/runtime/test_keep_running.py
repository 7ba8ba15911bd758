"""``keep_running``: a background loop that fails is logged and started again, never silently
gone; cancelling it stops it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from keelfs.runtime.lifecycle import keep_running


def test_a_failing_loop_is_logged_and_started_again_until_it_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[float] = []

    async def loop() -> None:
        runs.append(asyncio.get_running_loop().time())
        if len(runs) < 3:
            raise RuntimeError(f"failure {len(runs)}")

    with caplog.at_level(logging.ERROR, logger="keelfs.runtime.lifecycle"):
        asyncio.run(keep_running("trash", loop, pause_s=(0.02, 1.0)))
    assert len(runs) == 3
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.exc_info[1].args[0] for r in failures if r.exc_info and r.exc_info[1]] == [
        "failure 1",
        "failure 2",
    ]
    assert all("trash failed" in r.getMessage() for r in failures)
    assert runs[1] - runs[0] >= 0.02 and runs[2] - runs[1] >= 0.04  # the pause doubles


def test_cancelling_stops_the_loop_and_is_not_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    runs = 0

    async def loop() -> None:
        nonlocal runs
        runs += 1
        await asyncio.sleep(3600)

    async def main() -> None:
        task = asyncio.create_task(keep_running("maintenance", loop, pause_s=(0.01, 0.01)))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.ERROR, logger="keelfs.runtime.lifecycle"):
        asyncio.run(main())
    assert runs == 1 and not caplog.records


def test_a_loop_that_turns_its_cancel_into_an_error_is_not_started_again() -> None:
    runs = 0

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs > 1:
            return  # started again (the fault): end, so that the test fails and does not hang
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    async def main() -> None:
        task = asyncio.create_task(keep_running("stubborn", loop, pause_s=(0.01, 0.01)))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(RuntimeError):
            await task

    asyncio.run(main())
    assert runs == 1
