"""The shard leader's structure lock: mkdirs share it, a rename excludes them."""

from __future__ import annotations

import asyncio

from keelfs.master.member import StructureLock


def test_shared_holders_run_together_and_exclusive_waits_for_them() -> None:
    async def main() -> list[str]:
        lock = StructureLock()
        events: list[str] = []

        async def mkdir(name: str, hold: float) -> None:
            async with lock.shared():
                events.append(f"+{name}")
                await asyncio.sleep(hold)
                events.append(f"-{name}")

        async def rename() -> None:
            async with lock.exclusive():
                events.append("+rename")
                await asyncio.sleep(0.01)
                events.append("-rename")

        a = asyncio.create_task(mkdir("a", 0.03))
        b = asyncio.create_task(mkdir("b", 0.03))
        await asyncio.sleep(0.005)
        r = asyncio.create_task(rename())
        await asyncio.sleep(0.005)
        c = asyncio.create_task(mkdir("c", 0.0))  # arrives after the rename: waits for it
        await asyncio.gather(a, b, r, c)
        return events

    events = asyncio.run(main())
    assert events[:2] == ["+a", "+b"]
    assert events.index("+rename") > max(events.index("-a"), events.index("-b"))
    assert events.index("+c") > events.index("-rename")
