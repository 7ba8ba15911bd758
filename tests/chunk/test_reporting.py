"""The chunk server's reporting rounds (``keelfs.chunk.reporting.Reporter``) without processes:
which master gets a full block report. A master left out of some rounds (its shard left the
map for a while and came back) missed the increments meanwhile and must get a full report
again; before, it got increments only, and replicas finalized while it was left out were never
located there ("block N has no live replica" once its shard served the file again)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from keelfs.chunk.reporting import Reporter
from keelfs.rpc.pb import meta_pb2 as mpb


class _Node:
    def status(self) -> Any:
        return SimpleNamespace(
            server_id="cs0",
            address="127.0.0.1:1",
            rack="",
            capacity_bytes=100,
            used_bytes=0,
            being_written=0,
        )

    def block_report(self) -> list[Any]:
        return []


def test_a_master_left_out_of_some_rounds_gets_a_full_report_again() -> None:
    rounds = [["m1", "m2"], ["m1"], ["m1"], ["m1", "m2"]]
    sent: list[tuple[int, str, bool]] = []

    async def main() -> None:
        reporter = Reporter(_Node(), ["127.0.0.1:9"])  # type: ignore[arg-type]
        current = [0]  # the round under way

        async def masters() -> list[str]:
            return rounds[current[0]]

        async def send(address: str, req: mpb.ChunkHeartbeatRequest) -> None:
            sent.append((current[0], address, req.full_report))
            reporter._known.add(address)
            if req.full_report:
                reporter._needs_full.discard(address)

        reporter._masters = masters  # type: ignore[method-assign]
        reporter._send = send  # type: ignore[method-assign]
        for i in range(len(rounds)):
            current[0] = i
            await reporter._round([])
        await reporter.meta.close()

    asyncio.run(main())
    by_round: dict[int, dict[str, bool]] = {}
    for r, address, full in sent:
        by_round.setdefault(r, {})[address] = full
    assert by_round[0] == {"m1": True, "m2": True}  # first contact: full
    assert by_round[1] == {"m1": False} and by_round[2] == {"m1": False}
    assert by_round[3] == {"m1": False, "m2": True}  # m2 is back: full again
