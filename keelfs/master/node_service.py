"""The ``keelfs.meta.v1.Node`` service of a master: this process's status, failpoints (tests),
and the administration ``keelfs admin`` asks of it (``keelfs.master.admin``)."""

from __future__ import annotations

from typing import Any

from keelfs import failpoints
from keelfs.errors import InvalidArgument
from keelfs.master import admin
from keelfs.master.servicer import ServicerBase
from keelfs.rpc.pb import meta_pb2 as pb

__all__ = ["NodeServicer"]


class NodeServicer(ServicerBase):
    """``keelfs.meta.v1.Node``: status of this process, failpoints, administration."""

    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusReply:  # noqa: N802
        return self.node.status()

    async def SetFailpoint(  # noqa: N802
        self, request: pb.SetFailpointRequest, context: Any
    ) -> pb.SetFailpointReply:
        async def work() -> pb.SetFailpointReply:
            try:
                failpoints.arm(request.name, request.action)
            except ValueError as exc:
                raise InvalidArgument(str(exc), "name") from None
            return pb.SetFailpointReply()

        return await self.serve(context, work())

    # -- administration (keelfs admin; keelfs.master.admin) ---------------------------------
    async def TransferLeader(  # noqa: N802
        self, request: pb.TransferLeaderRequest, context: Any
    ) -> pb.TransferLeaderReply:
        work = admin.transfer_leader(self.node, request, self.timeout(context))
        return await self.serve(context, work)

    async def AddMember(  # noqa: N802
        self, request: pb.AddMemberRequest, context: Any
    ) -> pb.MembershipReply:
        work = admin.add_member(self.node, request, admin.admin_timeout(context))
        return await self.serve(context, work)

    async def RemoveMember(  # noqa: N802
        self, request: pb.RemoveMemberRequest, context: Any
    ) -> pb.MembershipReply:
        work = admin.remove_member(self.node, request, admin.admin_timeout(context))
        return await self.serve(context, work)

    async def Registry(  # noqa: N802
        self, request: pb.RegistryRequest, context: Any
    ) -> pb.RegistryReply:
        async def work() -> pb.RegistryReply:
            return admin.registry(self.node)

        return await self.serve(context, work())

    async def Backup(self, request: pb.BackupRequest, context: Any) -> None:  # noqa: N802
        """Streamed through ``context.write`` (so that a failure, before or during the
        stream, leaves through ``serve`` as every other answer does)."""

        async def work() -> None:
            async for message in admin.backup(self.node, request, admin.admin_timeout(context)):
                await context.write(message)

        await self.serve(context, work())

    async def BalanceStep(  # noqa: N802
        self, request: pb.BalanceStepRequest, context: Any
    ) -> pb.BalanceStepReply:
        async def work() -> pb.BalanceStepReply:
            return admin.balance_step(self.node, request)

        return await self.serve(context, work())
