"""``GuardSpreader`` (``keelfs.master.guards``) against a fake node: what it sends every shard
after a change of a directory's permissions is the directory as it is once its lock is held,
not the change's own answer, so that two changes that reach the lock out of order (a grant,
then a revoke) leave every shard with the last one."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from keelfs.errors import NotFound
from keelfs.master.guards import GuardSpreader
from keelfs.meta import acls
from keelfs.meta.records import FileInfo
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.rpc.wire import file_info_to_pb


def directory(mode: int, acl: str = "") -> FileInfo:
    return FileInfo(
        "/home/ann", "dir", 0, mode, "ann", "staff", 1, 1, 0, 0, acl=acls.parse_spec(acl)
    )


@dataclass
class FakeInternal:
    now: FileInfo | None
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def stat(self, path: str, *, deadline: float | None = None) -> FileInfo:
        if self.now is None:
            raise NotFound(path)
        return self.now

    async def move_command(
        self, group: str, op: str, args: dict[str, Any], *, deadline: float | None = None
    ) -> dict[str, Any]:
        self.sent.append((group, args))
        return {"records": 0}


@dataclass
class FakeMap:
    shards: dict[str, Any]


@dataclass
class FakeNode:
    internal: FakeInternal
    shard_map: FakeMap = field(default_factory=lambda: FakeMap({"shard-1": 0, "shard-2": 0}))


def test_the_last_state_is_sent_whatever_the_changes_answered() -> None:
    granted = directory(0o710, "user:bob:--x,group::---")
    revoked = directory(0o700)
    node = FakeNode(FakeInternal(revoked))
    spreader = GuardSpreader(node)  # type: ignore[arg-type]
    # the grant's pass comes last, with the grant's answer: the revoke is what is sent
    asyncio.run(spreader.after_change(file_info_to_pb(granted), 5.0))
    assert [group for group, _ in node.internal.sent] == ["shard-1", "shard-2"] * 2
    for _, args in node.internal.sent:
        assert (args["mode"], args.get("acl", ())) == (0o700, ())  # no ACL: left out
    node.internal.sent.clear()
    node.internal.now = granted
    asyncio.run(spreader.after_change(file_info_to_pb(revoked), 5.0))
    assert {args["acl"] for _, args in node.internal.sent} == {("user:bob:--x", "group::---")}


def test_nothing_is_sent_for_a_file_or_a_directory_gone_meanwhile() -> None:
    node = FakeNode(FakeInternal(None))
    spreader = GuardSpreader(node)  # type: ignore[arg-type]
    asyncio.run(spreader.after_change(file_info_to_pb(directory(0o700)), 5.0))
    file = pb.FileInfo(path="/f", kind=pb.FILE, mode=0o600)
    asyncio.run(spreader.after_change(file, 5.0))
    assert node.internal.sent == []
