"""The chunk server's reporting rounds (``keelfs.chunk.reporting.Reporter``) without processes:
which master gets a full block report. A master left out of some rounds (its shard left the
map for a while and came back) missed the increments meanwhile and must get a full report
again; before, it got increments only, and replicas finalized while it was left out were never
located there ("block N has no live replica" once its shard served the file again)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from chunk_keys import Access, provision, signer

from keelfs.chunk.events import EventKind, ReplicaEvent
from keelfs.chunk.node import ChunkNode, ChunkNodeConfig
from keelfs.chunk.reporting import Reporter
from keelfs.datapath.client import AsyncChunkClient
from keelfs.datapath.replica import ReplicaInfo, ReplicaState
from keelfs.rpc.pb import meta_pb2 as mpb


class _Node:
    config = SimpleNamespace(tls=None, rack="")

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


def _verify(block_id: int, token: int) -> mpb.ChunkCommand:
    ref = mpb.ReplicaReport(block_id=block_id, gen_stamp=1)
    access = signer().sign(block_id, 1, Access.READ, "shard-1", 3)
    return mpb.ChunkCommand(
        kind="verify", shard="shard-1", epoch=3, blocks=[ref], token=token, block_tokens=[access]
    )


def test_a_verify_command_rereads_the_replica_and_reports_what_it_found(tmp_path: Path) -> None:
    """Issue 12: before a master trims the other replicas of a block it asks the server of
    each replica it keeps to verify it. The server re-reads it now (the scanner may not come
    to it for hours): a replica rotted on disk is found corrupt and reported as such; a good
    one is noted, with the command's token, for every master in the next round."""
    sent: list[mpb.ChunkHeartbeatRequest] = []

    async def main() -> None:
        config = ChunkNodeConfig(
            provision(tmp_path), server_id="a", io_threads=0, scan_interval_s=0
        )
        node = ChunkNode(config)
        await node.start()
        reporter = Reporter(node, ["127.0.0.1:9"])
        try:
            async with AsyncChunkClient(signer=signer()) as client:
                for block_id in (7, 8):
                    data = bytes([block_id]) * 100_000
                    await client.write_block([node.address], block_id, 1, data, "shard-1", 3)
            node.take_events()
            rotten = node.store._finalized[8].data_path  # a byte flips; its checksum stays
            raw = bytearray(rotten.read_bytes())
            raw[4242] ^= 0xFF
            rotten.write_bytes(bytes(raw))

            worker = asyncio.create_task(reporter._execute_commands())
            reporter._commands.put_nowait(_verify(7, 71))
            reporter._commands.put_nowait(_verify(8, 81))
            deadline = time.monotonic() + 10.0
            while reporter.stats["commands"] + reporter.stats["refused"] < 2:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.01)
            worker.cancel()
            events = node.take_events().events
            assert [(e.kind, e.replica.block_id) for e in events] == [(EventKind.CORRUPT, 8)]

            async def masters() -> list[str]:
                return ["m1"]

            async def send(address: str, req: mpb.ChunkHeartbeatRequest) -> None:
                sent.append(req)

            reporter._masters = masters  # type: ignore[method-assign]
            reporter._send = send  # type: ignore[method-assign]
            await reporter._round(list(events))
        finally:
            await reporter.meta.close()
            await node.stop()

    asyncio.run(main())
    [req] = sent
    assert [(v.block_id, v.gen_stamp, v.token) for v in req.verified] == [(7, 1, 71)]
    assert [r.block_id for r in req.corrupt] == [8]


def _finalized(block_id: int) -> ReplicaEvent:
    info = ReplicaInfo(block_id, 1, 10, ReplicaState.FINALIZED, "shard-1", 65_536)
    return ReplicaEvent(EventKind.FINALIZED, info)


def test_a_frozen_master_holds_back_no_report_to_the_others() -> None:
    """A master that does not answer (SIGSTOP: its connection open and silent) must not delay
    the other masters' news of finalized replicas: a writer's ``Complete`` waits for that news
    at the new leader. Before, a round waited for every master's answer, so the news of block
    2 reached m2 only after m1's heartbeat had timed out. What m1 missed meanwhile goes with
    its next heartbeat."""
    sent: list[tuple[str, list[int], bool]] = []

    async def main() -> None:
        reporter = Reporter(_Node(), ["127.0.0.1:9"])  # type: ignore[arg-type]
        m1_frozen = asyncio.Event()

        async def masters() -> list[str]:
            return ["m1", "m2"]

        async def send(address: str, req: mpb.ChunkHeartbeatRequest) -> None:
            sent.append((address, [r.block_id for r in req.replicas], req.full_report))
            if address == "m1" and len([s for s in sent if s[0] == "m1"]) == 2:
                await m1_frozen.wait()  # its second heartbeat hangs until thawed
            reporter._known.add(address)
            if req.full_report:
                reporter._needs_full.discard(address)

        reporter._masters = masters  # type: ignore[method-assign]
        reporter._send = send  # type: ignore[method-assign]
        try:
            async with asyncio.timeout(10):  # (a round that waits for m1 never ends)
                await reporter._round([])  # first contact: full reports
                await reporter._round([_finalized(1)])  # m1 freezes on this one
                await reporter._round([_finalized(2)])
                await reporter._round([_finalized(3)])
            assert [s for s in sent if s[0] == "m2"][1:] == [("m2", [1], False)] + [
                ("m2", [2], False),
                ("m2", [3], False),
            ]
            m1_frozen.set()
            await asyncio.sleep(0)
            await reporter._round([_finalized(4)])
            assert [s for s in sent if s[0] == "m1"][1:] == [
                ("m1", [1], False),
                ("m1", [2, 3, 4], False),
            ]
        finally:
            await reporter.close()

    asyncio.run(main())


def test_a_full_report_taken_before_another_was_asked_for_does_not_answer_it() -> None:
    """A full report on its way to a slow master, and meanwhile events are lost again (the
    queue overflowed): when the old full report arrives, the master still needs a new one.
    Before, its arrival cleared the flag and the lost events never reached that master."""
    sent: list[bool] = []

    async def main() -> None:
        reporter = Reporter(_Node(), ["127.0.0.1:9"])  # type: ignore[arg-type]
        slow = asyncio.Event()

        class Stub:
            async def ChunkHeartbeat(  # noqa: N802
                self, req: mpb.ChunkHeartbeatRequest, timeout: float
            ) -> mpb.ChunkHeartbeatReply:
                sent.append(req.full_report)
                if len(sent) == 2:
                    await slow.wait()
                return mpb.ChunkHeartbeatReply()

        async def masters() -> list[str]:
            return ["m1"]

        reporter._masters = masters  # type: ignore[method-assign]
        reporter._stub = lambda address: Stub()  # type: ignore[method-assign]
        try:
            async with asyncio.timeout(10):
                await reporter._round([])  # first contact: full, answered
                await asyncio.sleep(0)
                reporter._want_full(reporter._known)  # events lost: a full report again
                await reporter._round([])  # ... which is slow to arrive
                reporter._want_full(reporter._known)  # lost again meanwhile
                slow.set()
                while reporter._lanes["m1"].busy():
                    await asyncio.sleep(0.01)
                assert "m1" in reporter._needs_full
                await reporter._round([])
                assert sent == [True, True, True]
        finally:
            await reporter.close()

    asyncio.run(main())
