"""The reads of a ``Namespace.Batch`` served together (``keelfs.master.batch_reads``), on one
metadata node in this process (``test_batch_creates.Node``), its servicer called directly:
one read barrier for all of a batch's reads and no handler per item, each item still answered
as its own ``GetFileInfo`` would be (its content, its error, its audit record); items that
would wait or be refused before their lookup, and every read of a batch whose barrier failed,
are answered by their own handler, exactly as before."""

from __future__ import annotations

from typing import Any

import pytest
from test_batch_creates import Audit, Context, Node, create, create_inline, error_code, info

from keelfs.errors import Unavailable
from keelfs.rpc.pb import meta_pb2 as pb

pytestmark = pytest.mark.timeout(120)

SHARD = "shard-1"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Any:
    n = Node(tmp_path_factory.mktemp("batch-reads"))
    try:
        yield n
    finally:
        n.stop()


@pytest.fixture
def barriers(node: Node, monkeypatch: pytest.MonkeyPatch) -> list[float | None]:
    """The read barriers asked of shard-1's group (their timeouts)."""
    group = node.meta.shards[SHARD].group
    asked: list[float | None] = []
    barrier = group.read_barrier

    async def counted(timeout: float | None = None) -> None:
        asked.append(timeout)
        await barrier(timeout)

    monkeypatch.setattr(group, "read_barrier", counted)
    return asked


def stat(
    node: Node, path: str, *, read: bool = True, map_version: int | None = None, **kw: Any
) -> pb.BatchItem:
    version = node.meta.shard_map.version if map_version is None else map_version
    request = pb.GetFileInfoRequest(
        header=pb.RequestHeader(map_version=version), path=path, read=read, **kw
    )
    return pb.BatchItem(method="GetFileInfo", request=request.SerializeToString())


def test_reads_share_one_barrier_and_keep_their_own_answers(
    node: Node, no_item_handlers: list[str], barriers: list[float | None]
) -> None:
    node.mkdir("/r1")
    contents = {f"/r1/f{i}": bytes([i]) * (100 + i) for i in range(6)}
    node.batch([create_inline(node, p, d, slot=i) for i, (p, d) in enumerate(contents.items())])
    no_item_handlers.clear()
    barriers.clear()
    items = [stat(node, p) for p in contents]
    items.insert(2, stat(node, "/r1/missing"))
    items.append(stat(node, "/r1", read=False))
    replies = node.batch(items)
    assert no_item_handlers == [], "reads must not run one handler each"
    assert len(barriers) == 1, f"{len(barriers)} barriers for one batch of reads"
    names = [*list(contents)[:2], "/r1/missing", *list(contents)[2:], "/r1"]
    for name, reply in zip(names, replies, strict=True):
        if name == "/r1/missing":
            assert error_code(reply) == "NOT_FOUND"
        elif name == "/r1":
            assert info(reply).kind == pb.DIRECTORY and not info(reply).HasField("inline_data")
        else:
            assert info(reply).path == name and info(reply).inline_data == contents[name]
    whole = pb.FileInfoReply.FromString(replies[0].reply)
    assert whole.reply.group == SHARD and whole.reply.leader
    # the reply info the answered items share is the member's own at the answer, whole (the
    # node's background loops may apply an entry after the batch: no later index than now's)
    now = node.meta.reply_info(node.meta.shards[SHARD])
    shared = [
        pb.FileInfoReply.FromString(reply.reply).reply
        for name, reply in zip(names, replies, strict=True)
        if name != "/r1/missing"
    ]
    assert all(r == shared[0] for r in shared)
    first = shared[0]
    assert (first.node_id, first.group, first.map_version, first.leader) == (
        now.node_id,
        now.group,
        now.map_version,
        now.leader,
    )
    assert 0 < first.index <= now.index


def test_a_stale_read_asks_no_barrier(
    node: Node, no_item_handlers: list[str], barriers: list[float | None]
) -> None:
    node.mkdir("/r2")
    node.batch([create_inline(node, "/r2/a", b"stale ok")])
    barriers.clear()
    no_item_handlers.clear()
    replies = node.batch([stat(node, "/r2/a", stale_ok=True), stat(node, "/r2/a", stale_ok=True)])
    assert [info(r).inline_data for r in replies] == [b"stale ok"] * 2
    assert barriers == [] and no_item_handlers == []


def test_rights_are_checked_per_item_and_a_denial_is_audited(
    node: Node, monkeypatch: pytest.MonkeyPatch, no_item_handlers: list[str]
) -> None:
    node.mkdir("/r3", 0o755)
    open_item = create_inline(node, "/r3/open", b"for all", slot=0)
    request = pb.CreateInlineRequest(
        header=node.header(None, 1), path="/r3/private", data=b"mine", mode=0o600
    )
    private = pb.BatchItem(method="CreateInline", request=request.SerializeToString())
    node.batch([open_item, private])
    no_item_handlers.clear()
    audit = Audit()
    monkeypatch.setattr(node.meta, "audit", audit)
    user = "batch-reader-not-on-this-host"
    replies = node.batch(
        [stat(node, "/r3/open"), stat(node, "/r3/private"), stat(node, "/r3/private", read=False)],
        Context(user),
    )
    assert info(replies[0]).inline_data == b"for all"
    assert error_code(replies[1]) == "PERMISSION_DENIED"
    stat_only = info(replies[2])  # anyone who reaches the file may stat it, not read it
    assert stat_only.path == "/r3/private" and not stat_only.HasField("inline_data")
    assert audit.lines == [(False, user, "getfileinfo", "/r3/private")]
    assert no_item_handlers == []


def test_items_that_would_wait_or_be_refused_go_to_their_own_handler(
    node: Node, no_item_handlers: list[str]
) -> None:
    node.mkdir("/r4")
    node.batch([create_inline(node, "/r4/a", b"a")])
    no_item_handlers.clear()
    newer = node.meta.shard_map.version + 5  # a map this node must fetch first
    items = [
        stat(node, "/r4/a"),
        stat(node, "r4/relative"),
        stat(node, "/r4/a", record=True),
        stat(node, "/r4/a", map_version=newer),
    ]
    replies = node.batch(items, Context(remaining=1.0))
    assert sorted(no_item_handlers) == ["GetFileInfo"] * 3
    assert info(replies[0]).inline_data == b"a"
    assert error_code(replies[1]) == "INVALID_PATH"
    assert pb.FileInfoReply.FromString(replies[2].reply).record, "the stored record, as asked"
    assert replies[3].status != 0  # its own handler waited for a map that never came


def test_a_failed_barrier_leaves_every_read_to_its_own_handler(
    node: Node, monkeypatch: pytest.MonkeyPatch, no_item_handlers: list[str]
) -> None:
    node.mkdir("/r5")
    node.batch([create_inline(node, f"/r5/f{i}", b"x" * i, slot=i) for i in range(3)])
    no_item_handlers.clear()
    group = node.meta.shards[SHARD].group
    barrier = group.read_barrier
    failures = [Unavailable("leader changed", message="retry")]

    async def once_failing(timeout: float | None = None) -> None:
        if failures:
            raise failures.pop()
        await barrier(timeout)

    monkeypatch.setattr(group, "read_barrier", once_failing)
    replies = node.batch([stat(node, f"/r5/f{i}") for i in range(3)])
    assert no_item_handlers == ["GetFileInfo"] * 3, "each read asks its own barrier again"
    assert [info(r).inline_data for r in replies] == [b"", b"x", b"xx"]


def test_reads_and_creates_of_one_batch_each_get_their_answer(
    node: Node, no_item_handlers: list[str]
) -> None:
    node.mkdir("/r6")
    node.batch([create_inline(node, "/r6/old", b"old")])
    no_item_handlers.clear()
    items = [
        stat(node, "/r6/old"),
        create(node, "/r6/new", slot=0),
        stat(node, "/r6/old", read=False),
        pb.BatchItem(method="Mkdir", request=pb.MkdirRequest(
            header=node.header(slot=1), path="/r6/dir").SerializeToString()),
    ]  # fmt: skip
    replies = node.batch(items)
    assert info(replies[0]).inline_data == b"old"
    assert pb.FileInfoReply.FromString(replies[1].reply).info.path == "/r6/new"
    assert info(replies[2]).length == 3
    assert replies[3].status == 0
    assert no_item_handlers == ["Mkdir"], "only the item served neither way runs its handler"


def test_a_lookup_that_fails_unexpectedly_fails_its_item_alone(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    node.mkdir("/r7")
    node.batch([create_inline(node, f"/r7/f{i}", b"ok", slot=i) for i in range(2)])
    answer = node.servicer.file_info_reply

    def broken(member: Any, path: str, *args: Any) -> Any:
        if path == "/r7/f0":
            raise RuntimeError("a bug")
        return answer(member, path, *args)

    monkeypatch.setattr(node.servicer, "file_info_reply", broken)
    replies = node.batch([stat(node, "/r7/f0"), stat(node, "/r7/f1")])
    assert replies[0].status == 13, "INTERNAL, as its own handler would answer"
    assert info(replies[1]).inline_data == b"ok"
