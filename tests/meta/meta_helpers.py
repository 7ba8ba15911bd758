"""Helpers for the metadata tests: state machines driven through encoded log entries.

``Driver`` applies commands the way the Raft runtime does (one encoded ``Envelope`` per entry,
consecutive indices, a leader clock it advances explicitly) and keeps the log it produced, so a
test can replay it into another state machine.
"""

from __future__ import annotations

import random
from typing import Any

from keelfs.meta.commands import Command, Envelope, MkdirSelf, RegisterSession, Result
from keelfs.meta.kvstore import SnapshotReader
from keelfs.meta.machine import MetaStateMachine
from keelfs.meta.namespace import ShardStateMachine
from keelfs.meta.principals import Caller

T0 = 1_700_000_000_000
"""A plausible leader clock (ms) to start from."""


class Driver:
    def __init__(self, sm: MetaStateMachine, now: int = T0) -> None:
        self.sm = sm
        self.index = sm.applied_index()
        self.now = now
        self.log: list[tuple[int, bytes]] = []

    def raw(self, data: bytes) -> Result:
        self.index += 1
        self.log.append((self.index, data))
        return self.sm.apply(self.index, data)

    def apply(
        self,
        cmd: Command,
        session: int = 0,
        seq: int = 0,
        now: int | None = None,
        caller: Caller | None = None,
    ) -> Result:
        if now is not None:
            self.now = now
        return self.raw(Envelope(cmd, self.now, session, seq, caller=caller).encode())

    def ok(
        self,
        cmd: Command,
        session: int = 0,
        seq: int = 0,
        now: int | None = None,
        caller: Caller | None = None,
    ) -> Any:
        result = self.apply(cmd, session, seq, now, caller)
        assert result.ok, result.error
        return result.value

    def err(
        self,
        cmd: Command,
        code: str,
        session: int = 0,
        seq: int = 0,
        now: int | None = None,
        caller: Caller | None = None,
    ) -> Result:
        result = self.apply(cmd, session, seq, now, caller)
        assert result.code == code, result
        return result

    def session(self, caller: Caller | None = None) -> int:
        """A new session of ``caller`` (the superuser by default). Its id is derived from the
        entry's index, not drawn at random, so that a replay of the same steps (another
        replica, a restart) gives the same state byte for byte."""
        chosen = f"{(self.index + 1) * 0x9E3779B97F4A7C15_F39CC0605CEDC835 % 2**128:032x}"
        return int(self.ok(RegisterSession(chosen), caller=caller)["session_id"])

    def advance(self, ms: int) -> None:
        self.now += ms

    def replay_into(self, sm: MetaStateMachine) -> None:
        for index, data in self.log:
            sm.apply(index, data)


def formatted(sm: ShardStateMachine) -> Driver:
    d = Driver(sm)
    d.ok(MkdirSelf("/"))
    return d


def state(sm: MetaStateMachine) -> list[tuple[bytes, bytes]]:
    """Every replicated record of ``sm`` (what a snapshot holds), in key order."""
    return list(SnapshotReader(sm.snapshot_chunks()))


def names(sm: ShardStateMachine, directory: str) -> list[str]:
    """All entry names of ``directory``, paging through ``list_dir``."""
    out: list[str] = []
    cursor = None
    while True:
        page = sm.list_dir(directory, start_after=cursor, limit=7)
        out += [e.name for e in page.entries]
        if page.cursor is None:
            return out
        cursor = page.cursor


def workload(d: Driver, seed: int, steps: int) -> None:
    """A seeded mix of every shard command, including failing ones and time passing far
    enough for sessions and leases to expire."""
    from keelfs.meta import commands as c

    rng = random.Random(seed)
    dirs = ["/", "/a", "/b", "/a/x", "/b/y", "/a/x/z"]
    sessions: list[int] = []
    seqs: dict[int, int] = {}
    last: dict[int, c.Command] = {}

    def some_path() -> str:
        return rng.choice(dirs).rstrip("/") + "/" + rng.choice(["f", "g", "h", "x", "y", "z"])

    for _ in range(steps):
        roll = rng.random()
        if roll < 0.1 or not sessions:
            sessions.append(d.session())
            continue
        s = rng.choice(sessions)
        d.advance(rng.choice([0, 10, 1000, 5_000]) if rng.random() < 0.97 else 70_000)
        cmd: c.Command = rng.choice(
            [
                c.Mkdir(rng.choice(dirs[1:]), parents=rng.random() < 0.5),
                c.Create(some_path(), overwrite=rng.random() < 0.3),
                c.AddBlock(some_path(), rng.randrange(1, 10**6), 1, rng.choice([None, 10])),
                c.CompleteFile(some_path(), rng.choice([None, 0, 5])),
                c.Delete(rng.choice(dirs[1:] + [some_path()]), recursive=rng.random() < 0.5),
                c.Rename(some_path(), some_path(), overwrite=rng.random() < 0.5),
                c.Rename(rng.choice(dirs[1:]), rng.choice(dirs[1:]) + "/m"),
                c.SetReplication(some_path(), rng.randrange(1, 5)),
                c.SetTimes(some_path(), mtime=rng.randrange(10**12)),
                c.SetOwner(some_path(), owner=f"u{rng.randrange(3)}"),
                c.RenewLease(),
                c.KeepAlive(),
                c.Tick(),
                c.CloseSession() if rng.random() < 0.1 else c.Tick(),
            ]
        )
        if rng.random() < 0.2 and s in last:
            cmd, seq = last[s], seqs[s]  # a retry of the session's last command
        else:
            seq = seqs[s] = seqs.get(s, 0) + 1
            last[s] = cmd
        if d.apply(cmd, s, seq).code == "SESSION_EXPIRED":
            sessions.remove(s)
