"""What every metadata servicer shares: per-request time limits, the caller, the error
boundary and the audit log."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from keelfs.errors import KeelError, NotLeader, PermissionDenied
from keelfs.master.audit import client_ip
from keelfs.meta.principals import Caller
from keelfs.rpc import grpc_errors
from keelfs.tls.identity import Peer

if TYPE_CHECKING:
    from keelfs.master.node import MetaNode

log = logging.getLogger("keelfs.master")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Audited:
    """What the audit log says of a request (``keelfs.master.audit``): HDFS's command name,
    its paths, and whether it changes the namespace (a change is logged when it succeeds as
    well; any request when it is denied)."""

    cmd: str
    src: str
    dst: str | None = None
    change: bool = True


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

    def caller(self, context: Any) -> Caller:
        """Who the request of ``context`` acts for (``keelfs.master.callers``)."""
        return self.node.callers.caller_of(context)

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

    def check_metadata_node(self, context: Any, what: str) -> None:
        """With TLS, ``PermissionDenied`` unless a master or config server is calling: for the
        parts of client methods that only masters may ask for (``ListDir``'s stored records,
        which hold inline files' data and writers' session ids, read past the permission
        checks a client's view of them gets). Without TLS nobody is authenticated, and
        internal methods are open as well (``docs/security.md``)."""
        authenticator = self.node.authenticator
        if authenticator is None:
            return
        who = authenticator.identity_of(context)
        if not (isinstance(who, Peer) and who.raft_node is not None):
            raise PermissionDenied(what, str(who), message=f"{what} is for metadata nodes only")

    async def serve(self, context: Any, work: Awaitable[T], audit: Audited | None = None) -> T:
        """Run one request's ``work``; any failure leaves through ``grpc_errors.abort``, a
        ``NotLeader`` naming the leader's client address (``MetaNode.for_clients``).
        ``audit``: what to write to the audit log of it."""
        try:
            reply = await work
            if audit is not None and audit.change:
                self._audit(context, audit, True, reply)
            return reply
        except PermissionDenied as exc:
            if audit is not None:
                self._audit(context, audit, False, None)
            err: KeelError = exc
        except NotLeader as exc:
            err = self.node.for_clients(exc)
        except KeelError as exc:
            err = exc
        except Exception as exc:  # anything but a KeelError is a bug (or a stray timeout)
            err = grpc_errors.from_exception(exc)
            if err.code == grpc_errors.INTERNAL_CODE:
                log.exception("request failed unexpectedly")
        await grpc_errors.abort(context, err)

    def _audit(self, context: Any, audit: Audited, allowed: bool, reply: Any) -> None:
        log_ = self.node.audit
        if not log_.enabled:
            return
        try:
            caller = self.caller(context)
        except KeelError:  # no usable identity: the denial said so; log who it claimed
            caller = Caller("unknown")
        log_.record(
            allowed, caller, client_ip(context), audit.cmd, audit.src, audit.dst, _perm(reply)
        )


def _perm(reply: Any) -> str | None:
    """``owner:group:mode`` of the file or directory a reply describes (HDFS's ``perm``)."""
    info = getattr(reply, "info", None)
    if info is None or not hasattr(info, "owner") or not info.owner:
        return None
    return f"{info.owner}:{info.group}:{info.mode:04o}"
