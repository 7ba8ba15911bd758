"""Directory quotas on the masters: setting them on every shard, reading them, and each shard
leader's reports of its usage to the other shards (the design and what is guaranteed:
``keelfs.meta.quotas``).

- ``SetQuota`` (superusers, as HDFS's ``dfsadmin -setQuota``): the master serving it checks
  the directory exists, then proposes ``set_quota`` on every shard of its map with one version
  (its clock), through the internal ``Move`` RPC (which proposes a servers-only command on a
  shard's leader). A shard it could not reach learns the quota from the others' next reports,
  which carry every quota's limits (the newest version wins, so a clear is not undone).
- ``GetQuota``: one shard's view (the limits and what it holds under the directory); the
  client sums the shards (``keelfs.client``'s ``quota``).
- Reports: every :data:`REPORT_INTERVAL_S`, the leader of each shard sends the other shards
  ``quota_report`` with what it holds under each quota directory, when that changed (and at
  least every :data:`REPORT_AT_LEAST_S` regardless, so that a restarted or new shard hears).

A directory that holds a quota (or has one below it) cannot be renamed or deleted until the
quota is cleared (:func:`refuse_quota_roots`): the quota is kept by path on every shard.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from keelfs.errors import InvalidArgument, KeelError, NotADirectory, PermissionDenied
from keelfs.master.member import now_ms
from keelfs.master.servicer import Audited
from keelfs.meta import paths
from keelfs.meta.commands import QuotaReport, SetQuota
from keelfs.meta.namespace import ShardStateMachine
from keelfs.meta.principals import Caller
from keelfs.rpc.pb import meta_pb2 as pb

if TYPE_CHECKING:
    from keelfs.master.node import MetaNode

__all__ = ["REPORT_INTERVAL_S", "QuotaReporter", "QuotaServiceMixin", "refuse_quota_roots"]

log = logging.getLogger(__name__)

REPORT_INTERVAL_S = 1.0
REPORT_AT_LEAST_S = 30.0


def refuse_quota_roots(sm: ShardStateMachine, path: str, what: str) -> None:
    """``InvalidArgument`` if ``path`` is or holds a directory with a quota."""
    roots = sm.quota_roots_at_or_under(paths.normalize(path))
    if roots:
        raise InvalidArgument(
            f"cannot {what} {path}: {roots[0]} has a quota (keelfs quota clear {roots[0]} first)",
            "path",
        )


class QuotaServiceMixin:
    """Mixed into ``NamespaceServicer`` (which provides ``node``, ``serve``, ``timeout``)."""

    node: MetaNode

    if TYPE_CHECKING:

        async def serve(self, context: Any, work: Any, audit: Any = None) -> Any: ...
        def caller(self, context: Any) -> Caller: ...
        def timeout(self, context: Any) -> float: ...

    async def SetQuota(self, request: pb.SetQuotaRequest, context: Any) -> pb.SetQuotaReply:  # noqa: N802
        caller = self.caller(context)

        async def work() -> pb.SetQuotaReply:
            path = paths.normalize(request.path)
            names = None if request.clear or not request.HasField("names") else request.names
            space = None if request.clear or not request.HasField("space") else request.space
            if not request.clear and names is None and space is None:
                raise InvalidArgument("give a names or space quota, or clear", "names")
            version = now_ms()
            command = SetQuota(path, names, space, version)
            command.validate()
            if not caller.superuser:
                raise PermissionDenied(
                    path,
                    caller.user,
                    message=f"setting quotas is for superusers, not {caller.user}",
                )
            timeout = self.timeout(context)
            if not (await self.node.internal.stat(path, deadline=timeout)).is_dir:
                raise NotADirectory(path)
            shards = sorted(self.node.shard_map.shards)
            for shard in shards:
                await self.node.internal.move_command(
                    shard, SetQuota.op, command.args(), deadline=timeout
                )
            if not request.clear:
                await self._first_exchange(path, shards, timeout)
            return pb.SetQuotaReply(version=version)

        return await self.serve(context, work(), Audited("setQuota", request.path))

    async def _first_exchange(self, path: str, shards: list[str], timeout: float) -> None:
        """Tell every shard what the others hold under ``path`` now, before the request is
        answered: without it each would count only its own part until the first periodic
        reports."""
        internal = self.node.internal
        for shard in shards:
            view = json.loads((await internal.get_quota_view(path, shard, timeout)).json)
            usage = json.dumps({path: view["here"]})
            for other in shards:
                if other != shard:
                    args = QuotaReport(shard, usage).args()
                    await internal.move_command(other, QuotaReport.op, args, deadline=timeout)

    async def GetQuota(self, request: pb.GetQuotaRequest, context: Any) -> pb.GetQuotaReply:  # noqa: N802
        async def work() -> pb.GetQuotaReply:
            path = paths.normalize(request.path)
            member = await self.node.shard_member(request.header, request.group)
            await self.node.read(member, False, self.timeout(context))
            sm: ShardStateMachine = member.sm
            return pb.GetQuotaReply(
                json=json.dumps(sm.quota(path)), info=self.node.reply_info(member)
            )

        return await self.serve(context, work())


class QuotaReporter:
    """Each shard this master leads reports its quota usage to the other shards."""

    def __init__(self, node: MetaNode) -> None:
        self.node = node
        self._sent: dict[tuple[str, str], tuple[str, float]] = {}
        """(from shard, to shard) -> (the report last sent, when)."""

    async def loop(self) -> None:
        while True:
            await asyncio.sleep(REPORT_INTERVAL_S)
            for member in list(self.node.shards.values()):
                if not member.group.is_leader:
                    continue
                try:
                    await self.report(member.group_id, member.sm)
                except KeelError as exc:  # the next round sends it again
                    log.info("%s: quota report failed: %s", member.group_id, exc)

    async def report(self, shard: str, sm: ShardStateMachine) -> int:
        """Send ``shard``'s usage to every other shard that has not had it; how many sent."""
        limits = sm.quota_limits_report()
        if not limits:
            return 0
        args = QuotaReport(shard, json.dumps(sm.quota_usage_report()), json.dumps(limits)).args()
        body = json.dumps(args, sort_keys=True)
        sent = 0
        now = time.monotonic()
        for other in sorted(self.node.shard_map.shards):
            if other == shard:
                continue
            last = self._sent.get((shard, other))
            if last is not None and last[0] == body and now - last[1] < REPORT_AT_LEAST_S:
                continue
            await self.node.internal.move_command(other, QuotaReport.op, args)
            self._sent[(shard, other)] = (body, now)
            sent += 1
        return sent
