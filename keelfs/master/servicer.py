"""What every metadata servicer shares: per-request time limits and the error boundary."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from keelfs.errors import KeelError, NotLeader, PermissionDenied
from keelfs.rpc import grpc_errors
from keelfs.tls.identity import Peer

if TYPE_CHECKING:
    from keelfs.master.node import MetaNode

log = logging.getLogger("keelfs.master")

T = TypeVar("T")


class ServicerBase:
    def __init__(self, node: MetaNode) -> None:
        self.node = node

    def timeout(self, context: Any) -> float:
        """How long this request may wait inside the node: the runtime's request timeout,
        cut to the client's remaining deadline (minus a margin to answer in)."""
        host = self.node.host
        limit = host.config.request_timeout if host is not None else 5.0
        remaining = context.time_remaining()
        if remaining is None:
            return limit
        return max(0.01, min(limit, remaining - 0.05))

    def check_caller_is(self, context: Any, role: str, node_id: str | int) -> None:
        """With TLS, ``PermissionDenied`` unless the call's certificate names node
        ``role``/``node_id``: what a chunk server's heartbeat or a master's registration says
        about itself must be what its certificate proves (a forged heartbeat with a huge
        capacity would steer placement; a forged registration reroutes clients). Without TLS
        there is nobody to check."""
        authenticator = self.node.authenticator
        if authenticator is None:
            return
        who = authenticator.identity_of(context)
        if who != Peer(role, str(node_id)):
            raise PermissionDenied(
                f"{role}/{node_id}",
                str(who),
                message=f"{who} may not speak for {role} {node_id}",
            )

    async def serve(self, context: Any, work: Awaitable[T]) -> T:
        """Run one request's ``work``; any failure leaves through ``grpc_errors.abort``, a
        ``NotLeader`` naming the leader's client address (``MetaNode.for_clients``)."""
        try:
            return await work
        except NotLeader as exc:
            err: KeelError = self.node.for_clients(exc)
        except KeelError as exc:
            err = exc
        except Exception as exc:  # anything but a KeelError is a bug (or a stray timeout)
            err = grpc_errors.from_exception(exc)
            if err.code == grpc_errors.INTERNAL_CODE:
                log.exception("request failed unexpectedly")
        await grpc_errors.abort(context, err)
