"""The creates of a ``Namespace.Batch`` proposed together (``keelfs.master.batch_creates``), on
one metadata node in this process (config group and ``shard-1``, one member each), its
servicer called directly: each item keeps what its own RPC would get (its own outcome and
error, the caller's rights and the directory's quota checked per item, its audit record,
exactly-once replies); items that cannot be proposed at once are answered by their own
handler, exactly as before; a proposal without an outcome in time ends ``OUTCOME_UNKNOWN``."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from keelfs.client.identity import USER_METADATA_KEY
from keelfs.master import batch, batch_creates
from keelfs.master.node import MetaNode, NodeConfig
from keelfs.meta.principals import Caller
from keelfs.rpc import grpc_errors
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.server.embedded import _free_port, _set_up

pytestmark = pytest.mark.timeout(120)

SHARD = "shard-1"


class Context:
    """A servicer context: ``user`` names the caller (simple mode; None: the superuser)."""

    def __init__(self, user: str | None = None, remaining: float = 10.0) -> None:
        self.user = user
        self.remaining = remaining

    def time_remaining(self) -> float:
        return self.remaining

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return () if self.user is None else ((USER_METADATA_KEY, self.user),)

    def auth_context(self) -> dict[str, Any]:
        return {}

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5000"

    async def abort(self, code: grpc.StatusCode, details: str = "", trailers: Any = ()) -> None:
        raise AssertionError(f"the whole batch was refused: {code} {details}")


class Audit:
    """Stands in for the node's audit log: what it was asked to record."""

    enabled = True

    def __init__(self) -> None:
        self.lines: list[tuple[bool, str, str, str]] = []

    def record(self, allowed: bool, caller: Caller, ip: str, cmd: str, src: str, *_: Any) -> None:
        self.lines.append((allowed, caller.user, cmd, src))


class Node:
    """One ``MetaNode`` on an event loop of its own thread."""

    def __init__(self, data: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        raft = f"127.0.0.1:{_free_port('127.0.0.1')}"
        config = NodeConfig(
            node_id=1,
            listen=raft,
            data_dir=data,
            client_listen=f"127.0.0.1:{_free_port('127.0.0.1')}",
            peers={1: raft},
            config_member=True,
            shards=(SHARD,),
        )
        self.meta = MetaNode(config)
        self.run(self.meta.start())
        self.run(_set_up(self.meta, time.monotonic() + 60))
        self.servicer = self.meta.shards and _servicer(self.meta)
        self.sessions: dict[str | None, list[Any]] = {}

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self.meta.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def header(self, user: str | None = None, slot: int = 0) -> pb.RequestHeader:
        """The next request header of session ``slot`` of ``user`` (registered as that user:
        a session is its owner's alone)."""
        mine = self.sessions.setdefault(user, [])
        while len(mine) <= slot:
            reply = self.run(
                self.servicer.RegisterSession(pb.RegisterSessionRequest(group=SHARD), Context(user))
            )
            mine.append([reply.session_id, 0])
        session = mine[slot]
        session[1] += 1
        return pb.RequestHeader(
            session_id=session[0], seq=session[1], map_version=self.meta.shard_map.version
        )

    def batch(self, items: list[pb.BatchItem], context: Context | None = None) -> list[Any]:
        request = pb.BatchRequest(items=items)
        reply = self.run(self.servicer.Batch(request, context or Context()))
        assert len(reply.items) == len(items)
        return list(reply.items)

    def one(self, method: str, request: Any, context: Context | None = None) -> Any:
        """``request`` as its own RPC (through ``Batch``'s per-item path): the item reply."""
        item = pb.BatchItem(method=method, request=request.SerializeToString())
        return self.run(batch._one(self.servicer, item, context or Context()))

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        request = pb.MkdirRequest(header=self.header(), path=path, mode=mode)
        self.run(self.servicer.Mkdir(request, Context()))


def _servicer(meta: MetaNode) -> Any:
    from keelfs.master.namespace_service import NamespaceServicer

    return NamespaceServicer(meta)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = Node(tmp_path_factory.mktemp("batch-creates"))
    try:
        yield n
    finally:
        n.stop()


def create(node: Node, path: str, user: str | None = None, slot: int = 0) -> pb.BatchItem:
    request = pb.CreateRequest(header=node.header(user, slot), path=path)
    return pb.BatchItem(method="Create", request=request.SerializeToString())


def create_inline(node: Node, path: str, data: bytes, slot: int = 0) -> pb.BatchItem:
    request = pb.CreateInlineRequest(header=node.header(None, slot), path=path, data=data)
    return pb.BatchItem(method="CreateInline", request=request.SerializeToString())


def info(reply: Any) -> pb.FileInfo:
    assert reply.status == 0, (reply.status, reply.message)
    return pb.FileInfoReply.FromString(reply.reply).info


def error_code(reply: Any) -> str:
    assert reply.status != 0, "the item succeeded"
    err = grpc_errors.decode_error(reply.error)
    return str(err.code)


def test_creates_are_proposed_together_each_with_its_own_outcome(
    node: Node, no_item_handlers: list[str]
) -> None:
    node.mkdir("/t1")
    node.batch([create_inline(node, "/t1/taken", b"complete")])
    no_item_handlers.clear()
    shard = node.meta.shards[SHARD].group
    items = [create(node, f"/t1/f{i}", slot=i) for i in range(8)]
    items.insert(3, create(node, "/t1/taken", slot=8))
    items.append(create_inline(node, "/t1/small", b"x" * 4096, slot=9))
    before = shard.applied_index()
    replies = node.batch(items)
    assert no_item_handlers == [], "creates must not run one handler each"
    names = [f"/t1/f{i}" for i in range(3)] + ["/t1/taken"] + [f"/t1/f{i}" for i in range(3, 8)]
    for name, reply in zip([*names, "/t1/small"], replies, strict=True):
        if name == "/t1/taken":
            assert error_code(reply) == "ALREADY_EXISTS"
        else:
            assert info(reply).path == name
    assert info(replies[-1]).length == 4096
    assert shard.applied_index() - before <= 2, "ten creates of one round share an entry"


def test_a_retried_batch_gets_its_first_replies(node: Node) -> None:
    node.mkdir("/t2")
    items = [create(node, f"/t2/f{i}", slot=i) for i in range(4)]
    first = node.batch(items)
    again = node.batch(items)  # same sessions and seqs: the reply cache answers
    assert [info(r).path for r in again] == [info(r).path for r in first]
    fresh = node.batch([create(node, "/t2/f0", slot=0), create(node, "/t2/f9", slot=1)])
    assert error_code(fresh[0]) == "ALREADY_EXISTS" and info(fresh[1]).path == "/t2/f9"


def test_rights_are_checked_per_item_and_each_is_audited(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    node.mkdir("/open", 0o777)
    node.mkdir("/closed", 0o755)
    audit = Audit()
    monkeypatch.setattr(node.meta, "audit", audit)
    user = "batch-user-not-on-this-host"
    items = [
        create(node, "/open/a", user, 0),
        create(node, "/closed/b", user, 1),
        create(node, "/open/c", user, 2),
    ]
    replies = node.batch(items, Context(user))
    assert info(replies[0]).owner == user and info(replies[2]).owner == user
    assert error_code(replies[1]) == "PERMISSION_DENIED"
    assert sorted(audit.lines) == [
        (False, user, "create", "/closed/b"),
        (True, user, "create", "/open/a"),
        (True, user, "create", "/open/c"),
    ]


def test_the_quota_is_checked_per_item(node: Node) -> None:
    node.mkdir("/q")
    request = pb.SetQuotaRequest(path="/q", names=4)  # the directory and three files
    node.run(node.servicer.SetQuota(request, Context()))
    replies = node.batch([create(node, f"/q/f{i}", slot=i) for i in range(5)])
    made = [r for r in replies if r.status == 0]
    refused = [error_code(r) for r in replies if r.status != 0]
    assert len(made) == 3 and refused == ["QUOTA_EXCEEDED"] * 2, refused


def test_items_refused_before_proposing_answer_as_their_own_rpc(
    node: Node, no_item_handlers: list[str]
) -> None:
    node.mkdir("/t3")
    no_session = pb.CreateRequest(path="/t3/nosession")
    bad_path = pb.CreateRequest(header=node.header(slot=1), path="t3/relative")
    newer = node.header(slot=3)
    newer.map_version += 5  # a map this node must fetch first: its own handler waits for it
    stale_map = pb.CreateRequest(header=newer, path="/t3/m")
    items = [
        create(node, "/t3/ok0", slot=0),
        pb.BatchItem(method="Create", request=no_session.SerializeToString()),
        pb.BatchItem(method="Create", request=bad_path.SerializeToString()),
        pb.BatchItem(method="Create", request=b"\xff\xff not a request"),
        pb.BatchItem(method="GetFileInfo", request=_stat("/t3")),
        pb.BatchItem(method="Create", request=stale_map.SerializeToString()),
        create(node, "/t3/ok1", slot=2),
    ]
    replies = node.batch(items)
    assert info(replies[0]).path == "/t3/ok0" and info(replies[6]).path == "/t3/ok1"
    assert info(replies[4]).path == "/t3"
    # the read is answered with the batch's other reads (``keelfs.master.batch_reads``)
    assert no_item_handlers == ["Create", "Create", "Create", "Create"]
    for position, method, request in (
        (1, "Create", no_session),
        (2, "Create", bad_path),
    ):
        alone = node.one(method, request)
        assert (replies[position].status, replies[position].error) == (alone.status, alone.error)
    assert error_code(replies[1]) == "INVALID_ARGUMENT"
    assert error_code(replies[2]) == "INVALID_PATH"
    assert error_code(replies[3]) == "INVALID_ARGUMENT"
    assert replies[5].status != 0


def _stat(path: str) -> bytes:
    return pb.GetFileInfoRequest(path=path).SerializeToString()


def test_a_proposal_without_an_outcome_in_time_is_outcome_unknown(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    node.mkdir("/t4")
    group = node.meta.shards[SHARD].group
    held: list[asyncio.Future[Any]] = []

    def never(data: bytes, *, packable: bool = False) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        held.append(fut)
        return fut

    items = [create(node, f"/t4/f{i}", slot=i) for i in range(3)]
    monkeypatch.setattr(group, "enqueue", never)
    replies = node.batch(items, Context(remaining=0.3))
    monkeypatch.undo()
    assert [error_code(r) for r in replies] == ["OUTCOME_UNKNOWN"] * 3
    assert len(held) == 3 and all(f.cancelled() for f in held)


def test_a_cancelled_batch_cancels_the_proposals_it_waits_for(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a cancelled handler's own wait would: a proposal not yet in a round is dropped."""
    node.mkdir("/t6")
    group = node.meta.shards[SHARD].group
    held: list[asyncio.Future[Any]] = []

    def never(data: bytes, *, packable: bool = False) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        held.append(fut)
        return fut

    items = [create(node, f"/t6/f{i}", slot=i) for i in range(3)]
    monkeypatch.setattr(group, "enqueue", never)

    async def cancelled() -> None:
        call = asyncio.ensure_future(node.servicer.Batch(pb.BatchRequest(items=items), Context()))
        while len(held) < 3:
            await asyncio.sleep(0.01)
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call

    node.run(cancelled())
    monkeypatch.undo()
    assert len(held) == 3 and all(f.cancelled() for f in held)


def test_a_lone_item_and_batches_without_creates_take_the_item_handlers(
    node: Node, no_item_handlers: list[str]
) -> None:
    node.mkdir("/t5")
    (reply,) = node.batch([create(node, "/t5/alone")])
    assert info(reply).path == "/t5/alone"
    # (neither creates nor reads: a batch's reads are served together, test_batch_reads)
    header = pb.RequestHeader(map_version=node.meta.shard_map.version)
    listing = pb.ListDirRequest(header=header, path="/t5", limit=10).SerializeToString()
    node.batch([pb.BatchItem(method="ListDir", request=listing)] * 2)
    assert no_item_handlers == ["Create", "ListDir", "ListDir"]


def test_together_covers_the_create_handlers() -> None:
    """The methods served together are exactly the handlers built on ``_info_write`` with
    the ``create`` audit name: a new one must be added there deliberately."""
    assert set(batch_creates.TOGETHER) == {"Create", "CreateInline"}
