"""The reads (``GetFileInfo``) of a ``Namespace.Batch`` served together: one read barrier per
shard for all of them, then each answered from the state at once, where each used to be a task
running the whole handler of its own (and asking for a barrier of its own).

Why: small files are kept inline in their metadata record, so reading one is a
``GetFileInfo``; a member serving many concurrent readers spent most of its CPU on the Python
around each batch item (a task, the handler's coroutines, the caller read again from the
call's metadata, a barrier's future, deadline and bookkeeping per item), not on the lookup.
A batch of N reads now costs one caller lookup, one barrier per shard, and the lookup and
encoding of each item (``docs/benchmarks.md``, "Small reads of a Batch served together").

Linearizability is unchanged: the barrier is asked for after every item of the batch arrived
(the batch did), so it is one each item's own barrier could have shared
(``RaftGroup.read_barrier``: barriers asked for in one turn share a ReadIndex request); each
item is then answered from the state only after it, and after its directory is checked again
for a move and its path for a transaction's lock, as ``NamespaceServicer.GetFileInfo`` does.

Only the common case is taken here: an item whose handler would wait or refuse before its
lookup (a bad path, a replay, a map to fetch first, a redirect, a directory moving, a path
locked, the stored record asked for) or whose barrier failed is left to its own handler, which
answers it as it always did. A lookup the state refuses (no such file, no permission) is
answered through ``ServicerBase.serve``, as its handler's would be (its error and audit record;
any other exception as the handler's: ``INTERNAL``, logged).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keelfs.master import namespace_requests as requests
from keelfs.master.batch import Aborted, ItemContext, ServeTogether, error_reply
from keelfs.master.servicer import Audited
from keelfs.meta import paths
from keelfs.meta.ranges import FROZEN
from keelfs.rpc.pb import meta_pb2 as pb

if TYPE_CHECKING:
    from keelfs.master.member import Member
    from keelfs.master.namespace_service import NamespaceServicer
    from keelfs.meta.principals import Caller

__all__ = ["serve_reads_together"]

_METHOD = "GetFileInfo"
_AUDIT = "getfileinfo"
_MISSING = pb.BatchItemReply()


@dataclass(slots=True)
class _Read:
    position: int
    request: pb.GetFileInfoRequest
    path: str
    """The normal path (``request.path`` is what the audit log names)."""
    member: Member


def _plan(servicer: NamespaceServicer, items: Sequence[pb.BatchItem]) -> list[_Read]:
    """The reads of ``items`` that can be answered here without waiting before the barrier
    (module doc), in order."""
    node = servicer.node
    out: list[_Read] = []
    for position, item in enumerate(items):
        if item.method != _METHOD:
            continue
        try:
            request = pb.GetFileInfoRequest.FromString(item.request)
            if request.record:  # the stored record: for metadata nodes only, checked there
                continue
            path = requests.path(request.path, read=True)
            member = node.route_at_once(request.header, path)
        except Exception:  # refused before any lookup: its handler answers
            continue
        if member is not None:
            out.append(_Read(position, request, path, member))
    return out


def _settled(read: _Read) -> bool:
    """Nothing the handler would wait for after its barrier: ``read``'s directory is not
    moving (``MetaNode.check_moves``) and, for a fresh read, no transaction locks its path
    (``MetaNode.wait_unlocked``)."""
    path, sm = read.path, read.member.sm
    state = sm.range_of(path if path == paths.ROOT else paths.parent(path))
    if state is not None and state.state != FROZEN:
        return False
    return read.request.stale_ok or not sm.lock_holder(path)


async def _refused(exc: Exception) -> Any:
    raise exc


async def _answer(
    servicer: NamespaceServicer, reads: list[_Read], caller: Caller, context: Any
) -> tuple[list[pb.BatchItemReply], list[int]]:
    """The replies of ``reads`` in order, past one barrier per member; the positions of
    those left to their own handlers (their reply in the list is ``_MISSING``)."""
    timeout = servicer.timeout(context)
    fresh: dict[int, Member] = {id(r.member): r.member for r in reads if not r.request.stale_ok}
    members = list(fresh.values())
    results = await asyncio.gather(
        *(m.group.read_barrier(timeout) for m in members), return_exceptions=True
    )
    failed = {
        id(m)
        for m, result in zip(members, results, strict=True)
        if isinstance(result, BaseException)
    }
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, Exception):
            raise result  # cancelled: as each of its own barriers would be
    out: list[pb.BatchItemReply] = []
    alone: list[int] = []
    item_context: ItemContext | None = None
    # Each member's reply info (its term and applied index now), made once for the items
    # answered until the next wait: nothing applies between them (no await), so each
    # item's own would be the same.
    infos: dict[int, pb.ReplyInfo] = {}
    for read in reads:
        if (not read.request.stale_ok and id(read.member) in failed) or not _settled(read):
            alone.append(read.position)
            out.append(_MISSING)
            continue
        info = infos.get(id(read.member))
        if info is None:
            info = infos[id(read.member)] = servicer.node.reply_info(read.member)
        try:
            reply = servicer.file_info_reply(
                read.member, read.path, read.request.read, caller, info
            )
        except Exception as exc:  # a refusal (a KeelError), or a bug: as its handler says it
            if item_context is None:
                item_context = ItemContext(context)
            audit = Audited(_AUDIT, read.request.path, change=False)
            infos.clear()  # entries may be applied while it is served
            try:
                await servicer.serve(item_context, _refused(exc), audit)
            except Aborted as aborted:
                out.append(error_reply(aborted.code, aborted.message, aborted.trailers))
                continue
            raise AssertionError("serve() returned for a refused read") from exc
        out.append(pb.BatchItemReply(reply=reply.SerializeToString()))
    return out, alone


async def serve_reads_together(
    servicer: NamespaceServicer,
    items: Sequence[pb.BatchItem],
    context: Any,
    alone: Callable[[pb.BatchItem], Awaitable[pb.BatchItemReply]],
    then: ServeTogether | None = None,
) -> list[pb.BatchItemReply]:
    """The replies to ``items``, in order: the reads answered together, every other item
    served by ``then`` (another way of serving items together) or by ``alone`` (its own
    handler), concurrently with them."""
    reads = _plan(servicer, items) if any(i.method == _METHOD for i in items) else []
    caller: Caller | None = None
    if reads:
        try:
            caller = servicer.caller(context)
        except Exception:  # each item's own handler says why, as it always did
            reads = []
    taken = {r.position for r in reads}
    rest = [i for i in range(len(items)) if i not in taken]
    replies: list[pb.BatchItemReply] = [_MISSING] * len(items)

    async def others(positions: list[int]) -> None:
        if not positions:
            return
        chosen = [items[i] for i in positions]
        if then is not None and len(chosen) > 1:
            answered = await then(servicer, chosen, context, alone)
        else:
            answered = list(await asyncio.gather(*(alone(item) for item in chosen)))
        for i, reply in zip(positions, answered, strict=True):
            replies[i] = reply

    async def mine() -> None:
        if not reads:
            return
        assert caller is not None
        answered, left = await _answer(servicer, reads, caller, context)
        for read, reply in zip(reads, answered, strict=True):
            replies[read.position] = reply
        await others(left)

    if reads and rest:
        await asyncio.gather(mine(), others(rest))
    elif reads:
        await mine()
    else:
        await others(rest)
    assert all(r is not _MISSING for r in replies), "every item is answered once"
    return replies
