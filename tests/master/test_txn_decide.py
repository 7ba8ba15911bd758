"""The coordinator's driving loop (``TxnManager``) when its decision cannot be recorded.

No processes: a fake node applies proposals to in-memory shard state machines and serves the
participant RPCs from them; a test makes the coordinator's shard refuse what a real one may
refuse. Whatever is refused, the loop must end with a recorded decision (or back off), never
spin: before, a refused commit was ignored and the coordinator prepared and proposed again at
once, for ever, holding every lock (and so any resharding freeze) and leaving the client with
"outcome unknown"."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "meta"))

from meta_helpers import Driver, formatted  # noqa: E402

from keelfs.errors import KeelError, Redirect, Unavailable  # noqa: E402
from keelfs.master import transactions  # noqa: E402
from keelfs.master.transactions import TxnManager  # noqa: E402
from keelfs.meta.commands import (  # noqa: E402
    Command,
    CompleteFile,
    Create,
    Mkdir,
    Result,
    TxnBegin,
    TxnDecide,
    TxnFinish,
    TxnPrepare,
)
from keelfs.meta.namespace import ShardStateMachine  # noqa: E402
from keelfs.meta.transactions import Step, encode_part  # noqa: E402


class _Group:
    is_leader = True


class _Member:
    def __init__(self, driver: Driver, group_id: str) -> None:
        self.driver, self.sm, self.group_id, self.group = driver, driver.sm, group_id, _Group()


class _Reply:
    def __init__(self, value: dict[str, Any]) -> None:
        self.state = str(value.get("state", "unknown"))
        self.error = json.dumps(value["error"]) if value.get("error") else ""


class _Internal:
    def __init__(self, shards: dict[str, _Member]) -> None:
        self.shards = shards

    async def _apply(self, shard: str, cmd: Command) -> _Reply:
        return _Reply(self.shards[shard].driver.apply(cmd).unwrap())

    async def txn_prepare(
        self, shard: str, txn_id: int, coordinator: str, part: str, deadline: float
    ) -> _Reply:
        return await self._apply(shard, TxnPrepare(txn_id, coordinator, part))

    async def txn_finish(self, shard: str, txn_id: int, commit: bool, deadline: float) -> _Reply:
        return await self._apply(shard, TxnFinish(txn_id, commit))


class _Node:
    """What ``TxnManager`` uses of a ``MetaNode``; ``refuse(cmd)`` may return the error the
    coordinator's shard answers instead of applying ``cmd``."""

    def __init__(self, shards: dict[str, _Member]) -> None:
        self.internal = _Internal(shards)
        self.refuse: Callable[[Command], KeelError | None] = lambda cmd: None
        self.proposed: list[Command] = []

    async def propose(
        self, member: _Member, command: Command, header: Any, timeout: float
    ) -> tuple[Result, int, int]:
        self.proposed.append(command)
        refused = self.refuse(command)
        if refused is not None:
            return Result.failure(refused), 0, 0
        return member.driver.apply(command), member.driver.index, 1

    async def read(self, member: _Member, stale_ok: bool, timeout: float) -> None:
        """A read barrier: the fake's state is always current."""


def _rename_in_flight() -> tuple[_Node, _Member, _Member, int]:
    """A cross-shard rename of /src/f (shard-a, coordinating) to /dst/g (shard-b), begun."""
    a = formatted(ShardStateMachine(shard_id="shard-a"))
    b = formatted(ShardStateMachine(shard_id="shard-b"))
    a.ok(Mkdir("/src"))
    b.ok(Mkdir("/dst"))
    s = a.session()
    a.ok(Create("/src/f"), s, 1)
    a.ok(CompleteFile("/src/f"), s, 2)
    record = a.sm.entry_record("/src/f")  # type: ignore[attr-defined]
    own = [Step("entry", "/src/f", record), Step("del_entry", "/src/f"), Step("touch", "/src")]
    theirs = [
        Step("dir", "/dst"),
        Step("absent", "/dst/g"),
        Step("put_entry", "/dst/g", record),
        Step("touch", "/dst"),
    ]
    parts = json.dumps({"shard-b": encode_part(theirs)})
    a.ok(TxnBegin(7, encode_part(own), parts, "rename", "{}"))
    members = {"shard-a": _Member(a, "shard-a"), "shard-b": _Member(b, "shard-b")}
    return _Node(members), members["shard-a"], members["shard-b"], 7


def _is_commit(cmd: Command) -> bool:
    return isinstance(cmd, TxnDecide) and cmd.commit


def test_a_commit_that_cannot_be_applied_is_aborted_instead_of_retried_for_ever() -> None:
    node, a, b, txn_id = _rename_in_flight()
    moved = Redirect("/src", "shard-c", 9)
    node.refuse = lambda cmd: moved if _is_commit(cmd) else None
    manager = TxnManager(node)  # type: ignore[arg-type]

    async def main() -> None:
        await asyncio.wait_for(manager._coordinate(a, txn_id), 10)  # type: ignore[arg-type]

    asyncio.run(main())
    record = a.sm.transaction(txn_id)
    assert record is not None and record.state == "aborted", record
    assert record.error is not None and record.error["code"] == "REDIRECT"
    assert not record.unacked  # the participant was told, and let go of its locks
    assert b.sm.transaction(txn_id).state == "aborted"
    assert b.sm.lock_holder("/dst/g") == 0 and a.sm.lock_holder("/src/f") == 0
    assert a.sm.exists("/src/f") and not b.sm.exists("/dst/g")
    assert sum(1 for c in node.proposed if _is_commit(c)) == 1


def test_a_decision_that_cannot_be_recorded_at_all_is_retried_with_back_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node, a, _, txn_id = _rename_in_flight()
    node.refuse = lambda cmd: (
        Unavailable("full", message="no space") if isinstance(cmd, TxnDecide) else None
    )
    manager = TxnManager(node)  # type: ignore[arg-type]
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def recorded_sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) == 8:
            a.group.is_leader = False  # type: ignore[misc]  # the loop must end there
        await real_sleep(0)

    monkeypatch.setattr(transactions.asyncio, "sleep", recorded_sleep)

    async def main() -> None:
        await asyncio.wait_for(manager._coordinate(a, txn_id), 10)  # type: ignore[arg-type]

    asyncio.run(main())
    assert len(delays) == 8, delays
    assert delays == sorted(delays) and delays[-1] > delays[0]
    assert delays[-1] <= transactions._RETRY_MAX_S
    assert a.sm.transaction(txn_id).state == "pending"  # nothing could be recorded


def test_a_participant_refusing_the_decision_does_not_stall_recovery() -> None:
    """Recovery starts the driving of every open record; one whose participant keeps
    refusing the decision backs off on its own instead of holding up the recovery of
    every other record (and every other shard) this node leads."""
    node, a, b, txn_id = _rename_in_flight()
    b.driver.ok(TxnPrepare(txn_id, "shard-a", a.sm.transaction(txn_id).participants["shard-b"]))
    a.driver.ok(TxnDecide(txn_id, True))  # decided, not yet delivered (the leader changed)
    refusing = node.internal

    async def refuse_finish(shard: str, txn: int, commit: bool, deadline: float) -> _Reply:
        raise Unavailable("busy", message="the participant refuses for now")

    refusing.txn_finish = refuse_finish  # type: ignore[method-assign]
    manager = TxnManager(node)  # type: ignore[arg-type]

    async def main() -> bool:
        await asyncio.wait_for(manager._recover(a), 5)  # type: ignore[arg-type]
        driving = manager._driving.get(("shard-a", txn_id))
        still_trying = driving is not None and not driving.done()
        a.group.is_leader = False  # type: ignore[misc]
        if driving is not None:
            driving.cancel()
        return still_trying

    assert asyncio.run(main())  # recovery returned while the delivery goes on by itself


def test_a_transaction_with_its_own_shard_as_participant_is_never_begun() -> None:
    """A rename planned while a shard was removed can find both names on its own shard: it
    must not become a transaction with itself (it would abort and then deliver its decision
    to itself for ever, "transaction N is coordinated here"); the client retries."""
    node, a, _, _ = _rename_in_flight()
    manager = TxnManager(node)  # type: ignore[arg-type]
    proposed = len(node.proposed)
    steps = [Step("present", "/src/f")]

    async def main() -> None:
        await manager.run(a, "rename", steps, {"shard-a": steps}, None, 5.0, Mkdir("/x"))  # type: ignore[arg-type]

    with pytest.raises(Unavailable, match="map changed"):
        asyncio.run(main())
    assert len(node.proposed) == proposed


def test_a_recorded_transaction_with_itself_as_participant_ends() -> None:
    """Such records exist in clusters that ran the old planner: they are aborted and their
    delivery to themselves is acknowledged, so they leave the open set."""
    node, a, _, _ = _rename_in_flight()
    a.driver.ok(Create("/src/h"), a.driver.session(), 1)
    part = encode_part([Step("dir", "/src"), Step("absent", "/src/k")])
    a.driver.ok(
        TxnBegin(
            9,
            encode_part([Step("present", "/src/h")]),
            json.dumps({"shard-a": part}),
            "rename",
            "{}",
        )
    )
    manager = TxnManager(node)  # type: ignore[arg-type]

    async def main() -> None:
        await asyncio.wait_for(manager._coordinate(a, 9), 10)  # type: ignore[arg-type]

    asyncio.run(main())
    record = a.sm.transaction(9)
    assert record is not None and record.state == "aborted" and not record.unacked
    assert all(r.txn_id != 9 for r in a.sm.open_transactions())
