"""The creates of a ``Namespace.Batch`` served together: one pass that proposes them all, one
wait for their outcomes, where each used to be a task running the whole handler of its own.

Why: a shard leader under many concurrent creates spent more of its CPU on the Python around
each batch item (a task per item, the handler's coroutines, the caller read again from the
call's metadata, the command validated twice, a timer per proposal) than on the proposal;
a batch of N creates now costs one caller lookup, one log time per shard, one timer and one
wait, and the handler's per-item work without the task and coroutines around it
(``docs/benchmarks.md``, "Creates of a Batch served together").

What each ``Create`` and ``CreateInline`` item still gets on its own, exactly as its own RPC
(``NamespaceServicer.Create``, ``MetaNode.propose``): its request decoded and checked, its
command built for the caller and validated, routed by its path, proposed with its own session
and seq (exactly-once) and the caller's identity (the state machine checks permissions and
quotas per command when it applies it), its own outcome, error and audit record
(``ServicerBase.serve``), and a path a cross-shard transaction locks proposed again after a
wait (``MetaNode.propose_while_locked``). Every reply waits for its command's commit (a
majority holds it) and apply, as before.

Only the common case is taken here: an item that would wait before proposing (a replay, a map
to fetch, a directory moving here) or be refused before proposing (a bad request or path, a
redirect, no session, not the leader, a full queue) is left to its own handler, which answers
it as it always did; nothing of such an item was proposed here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keelfs.errors import OutcomeUnknown
from keelfs.master import namespace_requests as requests
from keelfs.master.batch import Aborted, ItemContext, error_reply
from keelfs.master.servicer import Audited
from keelfs.meta.commands import Command
from keelfs.meta.principals import Caller
from keelfs.meta.records import FileInfo
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.rpc.wire import file_info_to_pb, session_id_from_pb

if TYPE_CHECKING:
    from keelfs.master.member import Member
    from keelfs.master.namespace_service import NamespaceServicer

__all__ = ["TOGETHER", "Together", "plan_together", "serve_together"]

Build = Callable[[Any, int, Caller, str], Command]

TOGETHER: dict[str, tuple[type[Any], Build]] = {
    "Create": (pb.CreateRequest, requests.create),
    "CreateInline": (pb.CreateInlineRequest, requests.create_inline),
}
"""Batch methods served together: request type and the command builder their handler uses
(``NamespaceServicer.Create``/``CreateInline``, audited as ``create``)."""

_AUDIT = "create"
_MISSING = pb.BatchItemReply()


@dataclass(slots=True)
class _Proposed:
    position: int
    path: str
    """The request's path as sent (what the audit log names)."""
    header: pb.RequestHeader
    command: Command
    member: Member
    future: asyncio.Future[Any]


@dataclass(slots=True)
class Together:
    """The items of one batch proposed together (``proposed``) and the positions of those
    left to their own handlers (``alone``)."""

    proposed: list[_Proposed]
    alone: list[int]
    caller: Caller | None
    deadline: float
    timeout: float

    async def replies(self, servicer: NamespaceServicer, context: Any) -> list[pb.BatchItemReply]:
        """Each proposed item's reply, in ``proposed``'s order, once every one has its
        outcome (or the request's time is up: those still waiting end ``OutcomeUnknown``,
        as a proposal that timed out does)."""
        if not self.proposed:
            return []
        futures = [p.future for p in self.proposed]
        try:
            _, pending = await asyncio.wait(futures, timeout=self.timeout)
        except BaseException:  # the call was cancelled: as each of its own waits would be
            for fut in futures:
                fut.cancel()
            raise
        for fut in pending:
            fut.cancel()
        item_context = ItemContext(context)
        out: list[pb.BatchItemReply] = []
        for p in self.proposed:
            work = self._finish(servicer, p)
            try:
                reply = await servicer.serve(item_context, work, Audited(_AUDIT, p.path))
            except Aborted as aborted:
                out.append(error_reply(aborted.code, aborted.message, aborted.trailers))
            else:
                out.append(pb.BatchItemReply(reply=reply.SerializeToString()))
        return out

    async def _finish(self, servicer: NamespaceServicer, p: _Proposed) -> pb.FileInfoReply:
        """The rest of ``NamespaceServicer._info_write`` once ``p``'s proposal has an outcome."""
        fut = p.future
        if fut.cancelled():
            raise OutcomeUnknown("timed out", message="proposal timed out; its outcome is unknown")
        exc = fut.exception()
        if exc is not None:
            raise exc
        node = servicer.node
        result, index, term = await node.propose_while_locked(
            p.member, p.command, p.header, self.caller, self.deadline, fut.result()
        )
        info = FileInfo.from_dict(result.unwrap())
        return pb.FileInfoReply(
            info=file_info_to_pb(info, session_id_from_pb(p.header.session_id)),
            reply=node.reply_info(p.member, index, term),
        )


def plan_together(
    servicer: NamespaceServicer, items: Sequence[pb.BatchItem], context: Any
) -> Together:
    """Propose every item of ``items`` that can be proposed at once (module doc), in order;
    the others' positions go to ``Together.alone``."""
    together = Together([], [], None, 0.0, servicer.timeout(context))
    together.deadline = time.monotonic() + together.timeout
    try:
        caller = together.caller = servicer.caller(context)
    except Exception:  # each item's own handler says why, as it always did
        together.alone = list(range(len(items)))
        return together
    log_times: dict[str, int] = {}
    for position, item in enumerate(items):
        way = TOGETHER.get(item.method)
        proposed = None
        if way is not None:
            try:
                proposed = _propose(servicer, position, item, way, caller, log_times)
            except Exception:  # refused before anything was proposed: its handler answers
                proposed = None
        if proposed is None:
            together.alone.append(position)
        else:
            together.proposed.append(proposed)
    return together


def _propose(
    servicer: NamespaceServicer,
    position: int,
    item: pb.BatchItem,
    way: tuple[type[Any], Build],
    caller: Caller,
    log_times: dict[str, int],
) -> _Proposed | None:
    """``item`` proposed as its handler would propose it, or None where the handler would
    first wait (module doc)."""
    request_type, build = way
    node = servicer.node
    request = request_type.FromString(item.request)
    header = request.header
    normal = requests.path(request.path)
    command = build(request, node.config.default_replication, caller, normal)
    command.validate()
    member = node.route_at_once(header, normal)
    if member is None:
        return None
    node.check_session(command, header)
    now = log_times.get(member.group_id)
    if now is None:
        now = log_times[member.group_id] = member.log_time()
    data = node.envelope(member, command, header, caller, now)
    packable = command.op in member.sm.packable_ops
    future = member.group.enqueue(data, packable=packable)
    return _Proposed(position, request.path, header, command, member, future)


async def serve_together(
    servicer: NamespaceServicer,
    items: Sequence[pb.BatchItem],
    context: Any,
    alone: Callable[[pb.BatchItem], Awaitable[pb.BatchItemReply]],
) -> list[pb.BatchItemReply]:
    """The replies to ``items``, in order: the creates proposed together, every other item
    run by ``alone`` (its own handler), concurrently with them."""
    if not any(item.method in TOGETHER for item in items):
        return list(await asyncio.gather(*(alone(item) for item in items)))
    together = plan_together(servicer, items, context)
    replies: list[pb.BatchItemReply] = [_MISSING] * len(items)
    mine = together.replies(servicer, context)
    if together.alone:
        others = asyncio.gather(*(alone(items[i]) for i in together.alone))
        proposed, by_themselves = await asyncio.gather(mine, others)
        for i, reply in zip(together.alone, by_themselves, strict=True):
            replies[i] = reply
    else:
        proposed = await mine
    for p, reply in zip(together.proposed, proposed, strict=True):
        replies[p.position] = reply
    assert all(r is not _MISSING for r in replies), "every item is answered once"
    return replies
