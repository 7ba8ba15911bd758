"""The shard leader's block maintenance (``keelfs.master.replication``), in process.

A ``ReplicationMonitor`` is driven with a small stand-in for its ``MetaNode``: real shard
state machines (``keelfs.meta``, in memory), a real ``ChunkRegistry`` fed with heartbeats and
block reports, and Raft groups reduced to "leader or not, at which term".
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

_META_TESTS = Path(__file__).resolve().parent.parent / "meta"
if str(_META_TESTS) not in sys.path:
    sys.path.insert(0, str(_META_TESTS))

from meta_helpers import Driver, formatted  # noqa: E402

from keelfs.datapath.tokens import Access, BlockKey, TokenVerifier  # noqa: E402
from keelfs.errors import PermissionDenied  # noqa: E402
from keelfs.master.block_keys import BlockKeys  # noqa: E402
from keelfs.master.blocks import ChunkRegistry, Replica  # noqa: E402
from keelfs.master.member import Member  # noqa: E402
from keelfs.master.replication import ReplicationMonitor  # noqa: E402
from keelfs.meta.commands import (  # noqa: E402
    AddBlock,
    CompleteFile,
    Create,
    Delete,
    Mkdir,
    MoveFreeze,
    MoveIngest,
    MoveSettle,
    SetReplication,
    TxnFinish,
    TxnPrepare,
)
from keelfs.meta.namespace import ShardStateMachine  # noqa: E402
from keelfs.meta.ring import key_hash  # noqa: E402
from keelfs.meta.shard_records import _entry_key  # noqa: E402
from keelfs.meta.transactions import Step, encode_part  # noqa: E402
from keelfs.rpc.pb import meta_pb2 as pb  # noqa: E402


@dataclass
class _Raft:
    term: int = 1


@dataclass
class _RawNode:
    raft: _Raft = field(default_factory=_Raft)


@dataclass
class FakeGroup:
    """What the monitor reads of a Raft group: whether this node leads it, and the term."""

    is_leader: bool = True
    node: _RawNode = field(default_factory=_RawNode)


class FakeNode:
    """The parts of ``MetaNode`` the monitor uses."""

    def __init__(self, *members: Member) -> None:
        self.shards = {m.group_id: m for m in members}
        self.chunks = ChunkRegistry()
        self.proposed: list[Any] = []
        self.block_keys = BlockKeys(self)  # type: ignore[arg-type]
        self.block_keys.ring.update([BlockKey(1, bytes(32))])

    async def propose(self, member: Member, command: Any, header: Any, timeout: float) -> Any:
        self.proposed.append(command)
        raise AssertionError(f"unexpected proposal {command}")


def _member(shard: str, sm: Any, term: int = 1) -> Member:
    return Member(shard, FakeGroup(node=_RawNode(_Raft(term))), sm)  # type: ignore[arg-type]


def _report(reg: ChunkRegistry, servers: list[str], blocks: list[tuple[int, Replica]]) -> None:
    for i, sid in enumerate(servers):
        reg.heartbeat(sid, f"127.0.0.1:{7000 + i}", "", 1 << 40, i << 20, 0)
        reg.full_report(sid, blocks)


Commands = dict[str, list[pb.ChunkCommand]]


def _walk(monitor: ReplicationMonitor, member: Member, servers: list[str]) -> Commands:
    """One walk of ``member``'s shard, and the commands each server then gets."""
    asyncio.run(monitor.tick(member))
    return {s: monitor.take_commands(s) for s in servers}


def _deleted(commands: Commands, block: int) -> list[str]:
    return sorted(
        s
        for s, cs in commands.items()
        for c in cs
        if c.kind == "delete" and c.blocks[0].block_id == block
    )


def _verifies(commands: Commands) -> list[tuple[str, pb.ChunkCommand]]:
    return [(s, c) for s, cs in commands.items() for c in cs if c.kind == "verify"]


def _answer_good(monitor: ReplicationMonitor, commands: Commands) -> None:
    """Every server asked to verify a replica finds it good and says so."""
    for server_id, c in _verifies(commands):
        for b in c.blocks:
            monitor.verified(server_id, b.block_id, b.gen_stamp, c.token)


# -- (a) a deposed leader's queued commands --------------------------------------------------
def _delete(shard: str, epoch: int, block_id: int = 5) -> pb.ChunkCommand:
    ref = pb.ReplicaReport(block_id=block_id, gen_stamp=1)
    return pb.ChunkCommand(kind="delete", shard=shard, epoch=epoch, blocks=[ref])


def test_a_deposed_leaders_queued_commands_are_never_handed_out() -> None:
    member = _member("shard-1", None, term=3)
    monitor = ReplicationMonitor(FakeNode(member))  # type: ignore[arg-type]
    monitor._queue("cs-1", _delete("shard-1", 3))
    assert [c.epoch for c in monitor.take_commands("cs-1")] == [3]  # still the leader at 3

    monitor._queue("cs-1", _delete("shard-1", 3))
    member.group.is_leader = False  # deposed before cs-1 heartbeated
    assert monitor.take_commands("cs-1") == []

    # leader again, at a later term: what was decided at term 3 is not sent at term 5 either
    monitor._queue("cs-1", _delete("shard-1", 3))
    member.group.is_leader, member.group.node.raft.term = True, 5
    monitor._queue("cs-1", _delete("shard-1", 5, block_id=6))
    assert [(c.epoch, c.blocks[0].block_id) for c in monitor.take_commands("cs-1")] == [(5, 6)]
    assert monitor.take_commands("cs-1") == []  # dropped, not kept for later

    monitor._queue("cs-1", _delete("shard-9", 5))  # a shard this node does not host
    assert monitor.take_commands("cs-1") == []


def test_commands_leave_with_a_token_for_each_block_and_wait_for_the_keys() -> None:
    """Issue [9]: a chunk server acts only on tokens; each command gets one per block, for
    its mode, stamp and fence, signed as it leaves (it may have waited long). Without a key
    yet, commands stay queued rather than leave unsigned."""
    member = _member("shard-1", None, term=3)
    node = FakeNode(member)
    monitor = ReplicationMonitor(node)  # type: ignore[arg-type]
    keys = node.block_keys.ring
    node.block_keys.ring = type(keys)()
    node.block_keys.signer.ring = node.block_keys.ring
    monitor._queue("cs-1", _delete("shard-1", 3))
    assert monitor.take_commands("cs-1") == []
    node.block_keys.ring.update(keys.known())
    [command] = monitor.take_commands("cs-1")
    verifier = TokenVerifier(node.block_keys.ring)
    [token] = command.block_tokens
    verifier.check(token, 5, 1, Access.DELETE, ("shard-1", 3))
    with pytest.raises(PermissionDenied):
        verifier.check(token, 5, 1, Access.DELETE, ("shard-1", 4))


# -- (b) a file whose directory is being moved between shards --------------------------------
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _excess_deletes(member: Member, servers: list[str], block: int) -> list[str]:
    """The servers a fresh monitor of ``member``'s shard (its leader) tells to delete
    ``block`` within two walks (the kept replicas verified good in between), all the
    ``servers`` holding it."""
    node = FakeNode(member)
    _report(node.chunks, servers, [(block, Replica(1, 10, "src"))])
    monitor = ReplicationMonitor(node)  # type: ignore[arg-type]
    first = _walk(monitor, member, servers)
    _answer_good(monitor, first)
    return _deleted(first, block) + _deleted(_walk(monitor, member, servers), block)


def test_during_a_move_exactly_one_shard_maintains_a_files_blocks() -> None:
    """Both shards hold the file's record from the copy until the source drops its leftover;
    had both leaders trimmed the excess replica on their own, two of four would be deleted
    from a file that wants three."""
    src = formatted(ShardStateMachine(shard_id="src"))
    dst = Driver(ShardStateMachine(shard_id="dst"))
    src.ok(Mkdir("/d"))
    sid = src.session()
    src.ok(Create("/d/f", replication=3), sid, 1)
    src.ok(AddBlock("/d/f", 77, 1), sid, 2)
    src.ok(CompleteFile("/d/f", 10), sid, 3)
    servers = ["cs-1", "cs-2", "cs-3", "cs-4"]
    s_member, d_member = _member("src", src.sm), _member("dst", dst.sm)
    assert len(_excess_deletes(s_member, servers, 77)) == 1  # one replica too many

    h = key_hash("/d")
    ranges = (f"{h}:{h}",)
    src.ok(MoveFreeze(7, ranges, "dst"))
    page = src.sm.move_records(7)  # type: ignore[attr-defined]
    keys, values = tuple(_b64(k) for k, _ in page), tuple(_b64(v) for _, v in page)
    dst.ok(MoveIngest(7, ranges, "src", keys, values))
    # copying: the source (frozen, still serving) trims; the target's copy is invisible
    assert len(_excess_deletes(s_member, servers, 77)) == 1
    assert _excess_deletes(d_member, servers, 77) == []

    src.ok(MoveSettle(7, ranges, "dst", True, True, 42))
    # between the two settles neither trims (a repair waits; nothing is deleted twice)
    assert _excess_deletes(s_member, servers, 77) == []
    assert _excess_deletes(d_member, servers, 77) == []

    dst.ok(MoveSettle(7, ranges, "src", False, True, 42))
    # switched: the target maintains; the source's leftover record (MOVED) is not its business
    assert _excess_deletes(s_member, servers, 77) == []
    assert len(_excess_deletes(d_member, servers, 77)) == 1


def test_during_a_move_only_the_serving_shard_re_replicates() -> None:
    src = formatted(ShardStateMachine(shard_id="src"))
    dst = Driver(ShardStateMachine(shard_id="dst"))
    src.ok(Mkdir("/d"))
    sid = src.session()
    src.ok(Create("/d/f", replication=3), sid, 1)
    src.ok(AddBlock("/d/f", 78, 1), sid, 2)
    src.ok(CompleteFile("/d/f", 10), sid, 3)
    h = key_hash("/d")
    ranges = (f"{h}:{h}",)
    src.ok(MoveFreeze(8, ranges, "dst"))
    page = src.sm.move_records(8)  # type: ignore[attr-defined]
    keys, values = tuple(_b64(k) for k, _ in page), tuple(_b64(v) for _, v in page)
    dst.ok(MoveIngest(8, ranges, "src", keys, values))

    def replications(member: Member) -> int:
        node = FakeNode(member)
        _report(node.chunks, ["cs-1"], [(78, Replica(1, 10, "src"))])
        _report(node.chunks, ["cs-2", "cs-3", "cs-4"], [])
        monitor = ReplicationMonitor(node)  # type: ignore[arg-type]
        asyncio.run(monitor.tick(member))
        return sum(c.kind == "replicate" for c in monitor.take_commands("cs-1"))

    assert replications(_member("src", src.sm)) == 1
    assert replications(_member("dst", dst.sm)) == 0


def test_excess_trims_in_flight_are_not_chosen_again_from_other_replicas() -> None:
    """Found by the whole-cluster simulator (keelfs.testing.clustersim): a file set to one
    replica has three; the first walk tells the two fullest servers to delete theirs, and
    before they have reported the deletions the servers' use changes, so the next walk ranks
    them differently. It must not pick the replica it kept as "extra" too: all three
    would be gone."""
    sm = formatted(ShardStateMachine(shard_id="src"))
    sm.ok(Mkdir("/d"))
    sid = sm.session()
    sm.ok(Create("/d/f", replication=1), sid, 1)
    sm.ok(AddBlock("/d/f", 79, 1), sid, 2)
    sm.ok(CompleteFile("/d/f", 10), sid, 3)
    member = _member("src", sm.sm)
    node = FakeNode(member)
    servers = ["cs-1", "cs-2", "cs-3"]
    _report(node.chunks, servers, [(79, Replica(1, 10, "src"))])
    monitor = ReplicationMonitor(node)  # type: ignore[arg-type]
    told: set[str] = set()

    def walk() -> None:
        for _ in range(2):  # the second walk acts on the verification asked by the first
            commands = _walk(monitor, member, servers)
            _answer_good(monitor, commands)
            told.update(_deleted(commands, 79))

    walk()
    assert len(told) == 2
    for i, s in enumerate(reversed(servers)):  # the use of each server changes: a new order
        node.chunks.heartbeat(s, f"127.0.0.1:{7000 + i}", "", 1 << 40, i << 20, 0)
    walk()
    assert len(told) == 2, f"every replica of a referenced block told to go: {sorted(told)}"


def test_a_trim_is_not_handed_out_for_a_block_the_shard_no_longer_references() -> None:
    """Found by the whole-cluster simulator: a shard trims an excess replica of a file, the
    command waits for its server (down for a while), and meanwhile the file is renamed to
    another shard, whose leader trims the same block's replicas its own way. Handed out
    late, the first shard's command deleted the last replica. A maintenance delete leaves
    only while its shard still references the block (else the new owner maintains it)."""
    sm = formatted(ShardStateMachine(shard_id="src"))
    sm.ok(Mkdir("/d"))
    sid = sm.session()
    sm.ok(Create("/d/f", replication=1), sid, 1)
    sm.ok(AddBlock("/d/f", 81, 1), sid, 2)
    sm.ok(CompleteFile("/d/f", 10), sid, 3)
    member = _member("src", sm.sm)
    node = FakeNode(member)
    _report(node.chunks, ["cs-1", "cs-2"], [(81, Replica(1, 10, "src"))])
    monitor = ReplicationMonitor(node)  # type: ignore[arg-type]
    _answer_good(monitor, _walk(monitor, member, ["cs-1", "cs-2"]))
    asyncio.run(monitor.tick(member))
    (trimmed,) = [
        s for s in ("cs-1", "cs-2") if any(c.kind == "delete" for c in monitor._commands.get(s, []))
    ]
    sm.ok(Delete("/d/f"), sid, 4)  # the file is no longer this shard's (renamed away)
    assert not sm.sm.referenced_blocks([81])
    assert monitor.take_commands(trimmed) == []


# -- (c) an excess trim relies on the replicas it keeps: they are verified first ------------
def _file_with_one_block(shard: str, block: int, replication: int) -> Driver:
    d = formatted(ShardStateMachine(shard_id=shard))
    d.ok(Mkdir("/d"))
    sid = d.session()
    d.ok(Create("/d/f", replication=3), sid, 1)
    d.ok(AddBlock("/d/f", block, 1), sid, 2)
    d.ok(CompleteFile("/d/f", 10), sid, 3)
    if replication != 3:
        d.ok(SetReplication("/d/f", replication), sid, 4)  # setrep down: excess replicas
    return d


def test_an_excess_trim_waits_until_the_kept_replica_is_verified() -> None:
    """Issue 12, the last data-loss window: a file set to one replica has two, both reported
    good, and the one the walk keeps (on the server with most free space) has rotted
    silently (its server's scanner has not come to it yet). Trimming the other on the word
    of the last report deletes the only good copy. The trim waits until the kept replica's
    server has re-read it; it finds it corrupt, and the good copy stays."""
    d = _file_with_one_block("src", 83, 1)
    member = _member("src", d.sm)
    node = FakeNode(member)
    servers = ["cs-1", "cs-2"]
    _report(node.chunks, servers, [(83, Replica(1, 10, "src"))])  # cs-1 has the most free
    monitor = ReplicationMonitor(node)  # type: ignore[arg-type]

    first = _walk(monitor, member, servers)
    assert _deleted(first, 83) == [], (
        f"excess replica told to go while the kept one is unverified: {_deleted(first, 83)}"
    )
    assert [(s, [b.block_id for b in c.blocks]) for s, c in _verifies(first)] == [("cs-1", [83])]
    node.chunks.mark_corrupt("cs-1", 83)  # cs-1's scan of the replica fails: reported
    second = _walk(monitor, member, servers)
    assert _deleted(second, 83) == ["cs-1"]  # the corrupt one goes; cs-2's, the good one, stays
    assert _verifies(second) == []


def test_an_excess_trim_is_done_once_every_kept_replica_answered_its_verify() -> None:
    d = _file_with_one_block("src", 84, 1)
    member = _member("src", d.sm)
    node = FakeNode(member)
    servers = ["cs-1", "cs-2", "cs-3"]
    _report(node.chunks, servers, [(84, Replica(1, 10, "src"))])
    monitor = ReplicationMonitor(node)  # type: ignore[arg-type]
    [(asked, verify)] = _verifies(_walk(monitor, member, servers))
    assert asked == "cs-1"
    monitor.verified("cs-1", 84, 1, verify.token ^ 2)  # a note for another decision
    monitor.verified("cs-2", 84, 1, verify.token)  # not a replica the trim keeps
    monitor.verified("cs-1", 84, 2, verify.token)  # another stamp
    again = _walk(monitor, member, servers)
    assert _deleted(again, 84) == [] and _verifies(again) == []  # asked recently: waits
    monitor.verified("cs-1", 84, 1, verify.token)
    assert _deleted(_walk(monitor, member, servers), 84) == ["cs-2", "cs-3"]


def test_an_excess_trim_does_not_leave_once_its_kept_replica_is_reported_corrupt() -> None:
    """The kept replica verified good, the trims were queued, and before the servers to
    trim heartbeat the kept one is reported corrupt: the trims are not handed out."""
    d = _file_with_one_block("src", 86, 1)
    member = _member("src", d.sm)
    node = FakeNode(member)
    servers = ["cs-1", "cs-2"]
    _report(node.chunks, servers, [(86, Replica(1, 10, "src"))])
    monitor = ReplicationMonitor(node)  # type: ignore[arg-type]
    asyncio.run(monitor.tick(member))
    _answer_good(monitor, {"cs-1": monitor.take_commands("cs-1")})
    asyncio.run(monitor.tick(member))  # cs-2's trim is queued, waiting for its heartbeat
    node.chunks.mark_corrupt("cs-1", 86)
    assert _deleted({"cs-2": monitor.take_commands("cs-2")}, 86) == []
    # the next walk sees one good replica, wanted: nothing of cs-2's is deleted
    assert "cs-2" not in _deleted(_walk(monitor, member, servers), 86)


def test_a_file_a_directory_move_brings_here_is_trimmed_by_one_shard_only() -> None:
    """A cross-shard directory move has every shard of the subtree as a participant: the
    shard gaining a file may apply the commit before the shard losing it. Until the loser
    applies it too, both hold the file's entry; had both trimmed its excess replicas on
    their own, two of four would go from a file that wants three. The loser's entry is
    locked by the transaction until then: it does not trim (nor hands out a trim it queued
    before); the gainer does."""
    old = _file_with_one_block("old", 85, 3)
    new = formatted(ShardStateMachine(shard_id="new"))
    new.ok(Mkdir("/e"))
    servers = ["cs-1", "cs-2", "cs-3", "cs-4"]
    o_member, n_member = _member("old", old.sm), _member("new", new.sm)

    early = FakeNode(o_member)  # the loser's leader queued a trim before the move began
    _report(early.chunks, servers, [(85, Replica(1, 10, "src"))])
    early_monitor = ReplicationMonitor(early)  # type: ignore[arg-type]
    _answer_good(early_monitor, _walk(early_monitor, o_member, servers))
    asyncio.run(early_monitor.tick(o_member))

    sm: Any = old.sm
    record = bytes(sm._store.get(_entry_key("/d/f")) or b"").decode()
    loses = encode_part([Step("entry", "/d/f", record), Step("del_entry", "/d/f")])
    gains = encode_part([Step("dir", "/e"), Step("put_entry", "/e/f", record)])
    old.ok(TxnPrepare(11, "coord", loses))
    new.ok(TxnPrepare(11, "coord", gains))
    new.ok(TxnFinish(11, True))  # the gainer applied the commit first
    assert old.sm.referenced_blocks([85]) and new.sm.referenced_blocks([85])  # type: ignore[attr-defined]

    assert _deleted({s: early_monitor.take_commands(s) for s in servers}, 85) == []
    assert _excess_deletes(o_member, servers, 85) == []
    loser = FakeNode(o_member)
    _report(loser.chunks, servers, [(85, Replica(1, 10, "src"))])
    walked = _walk(ReplicationMonitor(loser), o_member, servers)  # type: ignore[arg-type]
    assert _verifies(walked) == []  # no trim even begins there
    assert len(_excess_deletes(n_member, servers, 85)) == 1
    old.ok(TxnFinish(11, True))
    assert not old.sm.referenced_blocks([85])  # type: ignore[attr-defined]


def test_a_small_shard_is_walked_again_only_after_a_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pass over a shard that fits in a tick used to start again at the next tick (every
    0.5 s: half the leader's CPU on a shard of a few thousand files serving reads); the next
    one now waits for half a chunk server's dead-after time since the last began. Deletions
    keep their pace, and a pass under way goes on at every tick."""
    d = formatted(ShardStateMachine(shard_id="s"))
    d.ok(Mkdir("/d"))
    sid = d.session()
    for i in range(3):
        d.ok(Create(f"/d/f{i}"), sid, 2 * i + 1)
        d.ok(CompleteFile(f"/d/f{i}", 0), sid, 2 * i + 2)
    member = _member("s", d.sm)
    node = FakeNode(member)
    node.chunks.dead_after_s = 0.4
    monitor = ReplicationMonitor(node)  # type: ignore[arg-type]
    pages: list[str | None] = []
    files_page = d.sm.maintained_files_page
    ticks = 0

    def counted(cursor: str | None, limit: int, scan_limit: int, **kwargs: Any) -> Any:
        pages.append(cursor)
        return files_page(cursor, limit, scan_limit, **kwargs)

    real_tick = monitor.tick

    async def counted_tick(m: Member, *args: Any, **kwargs: Any) -> None:
        nonlocal ticks
        ticks += 1
        await real_tick(m, *args, **kwargs)

    monkeypatch.setattr(d.sm, "maintained_files_page", counted)
    monkeypatch.setattr(monitor, "tick", counted_tick)
    monkeypatch.setattr("keelfs.master.replication.TICK_S", 0.01)
    monkeypatch.setattr(monitor.orphans, "run", lambda member: asyncio.sleep(3600))

    async def lead_for(seconds: float) -> None:
        task = asyncio.ensure_future(monitor._lead(member))
        await asyncio.sleep(seconds)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(lead_for(0.5))
    assert ticks >= 10, ticks
    assert 1 <= len(pages) <= 3, f"{len(pages)} passes in {ticks} ticks"
