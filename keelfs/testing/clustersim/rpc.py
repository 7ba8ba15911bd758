"""In-process RPC between simulated nodes: what gRPC would carry, as direct servicer calls.

A client's ``Call`` (``keelfs.client._core``) reaches the servicer registered at its address
as ``servicer.<Method>(request, context)``, with the request and the reply copied through
their wire encoding (nothing is shared between caller and callee). The answer comes back as
gRPC would give it: the reply, or an ``AioRpcError`` carrying the ``keelfs-error`` trailer
the servicer aborted with (``keelfs.rpc.grpc_errors.abort``), ``UNAVAILABLE`` "failed to
connect" when the node is down (never sent), ``DEADLINE_EXCEEDED`` when the request or its
reply is lost or slow, and ``UNAVAILABLE`` when the server crashed while handling it.

Faults use the Raft network's rules (``LocalNetwork``: its partitions and blocks, its drop
rate, delay and jitter, from its seeded rng), so a partition cuts RPCs and Raft alike.
"""

from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass, field
from typing import Any

import grpc

from keelfs.client._core import Call
from keelfs.transport.local import LocalNetwork

__all__ = ["RpcNet", "rpc_error"]


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str, trailers: Any) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.trailers = tuple(trailers or ())


class _Context:
    """The part of a ``grpc.aio.ServicerContext`` the servicers use."""

    def __init__(self, deadline: float) -> None:
        self._deadline = deadline

    def time_remaining(self) -> float:
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> None:
        raise _Abort(code, details, trailing_metadata)


def rpc_error(code: grpc.StatusCode, details: str, trailers: Any = ()) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), details=details
    )


@dataclass
class _Server:
    node_id: int
    services: dict[str, Any]
    context: contextvars.Context
    """The node's context: its handlers run (and are paused) as that node."""
    handling: dict[asyncio.Task[Any], None] = field(default_factory=dict)
    """In-flight handlers, in arrival order (a set's order would follow their addresses)."""


class RpcNet:
    def __init__(self, network: LocalNetwork) -> None:
        self.network = network
        self._servers: dict[str, _Server] = {}
        self.calls = 0
        self.lost = 0

    def serve(self, address: str, node_id: int, services: dict[str, Any]) -> None:
        self._servers[address] = _Server(node_id, services, contextvars.copy_context())

    def crash(self, address: str) -> None:
        """The node at ``address`` is gone: nothing reaches it, its handlers stop mid-way."""
        server = self._servers.pop(address, None)
        if server is not None:
            for task in list(server.handling):
                task.cancel()

    def _lost(self, frm: int, to: int) -> bool:
        net = self.network
        if frm == to:
            return False
        return net.blocked(frm, to) or bool(net.drop_rate and net.rng.random() < net.drop_rate)

    def _delay(self, frm: int, to: int) -> float:
        net = self.network
        if frm == to:
            return 0.0
        return net.delay + (net.rng.uniform(0.0, net.jitter) if net.jitter else 0.0)

    async def invoke(self, frm: int, call: Call) -> Any:
        """The reply to ``call`` sent from node ``frm`` (0: an outside client), or the
        ``grpc.RpcError`` it failed with."""
        self.calls += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + call.timeout
        server = self._servers.get(call.address)
        if server is None:
            return rpc_error(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")
        to = server.node_id
        if self._lost(frm, to):
            return await self._time_out(deadline)
        await asyncio.sleep(self._delay(frm, to))
        if self._servers.get(call.address) is not server:
            return rpc_error(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")
        method = getattr(server.services[call.service], call.method)
        request = type(call.request).FromString(call.request.SerializeToString())
        task = loop.create_task(method(request, _Context(deadline)), context=server.context.copy())
        server.handling[task] = None
        task.add_done_callback(lambda t: server.handling.pop(t, None))
        try:
            reply = await asyncio.wait_for(task, max(0.0, deadline - loop.time()))
        except TimeoutError:
            return rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        except _Abort as abort:
            reply = abort
        except asyncio.CancelledError:
            if task.cancelled() and not _current_cancelling():
                return rpc_error(grpc.StatusCode.UNAVAILABLE, "Socket closed")
            raise
        if self._lost(to, frm):
            return await self._time_out(deadline)
        await asyncio.sleep(self._delay(to, frm))
        if loop.time() > deadline:
            return rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        if isinstance(reply, _Abort):
            return rpc_error(reply.code, reply.details, reply.trailers)
        return type(reply).FromString(reply.SerializeToString())

    async def _time_out(self, deadline: float) -> grpc.aio.AioRpcError:
        self.lost += 1
        await asyncio.sleep(max(0.0, deadline - asyncio.get_running_loop().time()))
        return rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")


def _current_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
