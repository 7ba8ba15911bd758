"""A replicated key-value server: one process, one Raft member, real gRPC.

It proves the Raft runtime with real processes (kill -9, partitions, restarts) apart from the
file system built on it.

Usage::

    python -m keelfs.runtime.server --id 1 --listen 127.0.0.1:7001 --data /var/kv/1 \\
        --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003      # first start only
    python -m keelfs.runtime.server --id 1 --listen 127.0.0.1:7001 --data /var/kv/1  # restarts
    python -m keelfs.runtime.server --id 4 --listen 127.0.0.1:7004 --data /var/kv/4 --join \\
        --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003      # then AddMember(4, ...)
    python -m keelfs.runtime.server --id 5 --listen 127.0.0.1:7005 --data /var/kv/5 \
        --join-via 127.0.0.1:7002     # any member's client address: it gets us added

Two listeners
-------------
``GrpcTransport`` creates and owns its gRPC server (it cannot be handed a shared one), so the
Raft transport listens on ``--listen`` and the client API (``proto/kv.proto``, service
``keelfs.kv.v1.KV``) on ``--client-listen``: by default the same host with port + 1, and also
a ``unix:/path`` socket (the partition tests reach servers in other network namespaces that
way). Membership stores Raft addresses only; each new leader records its *client* address in
the replicated KV directory (``KVStateMachine.nodes``) so that followers can send clients there.

Membership is sticky: ``--peers`` bootstraps the group the first time; afterwards the members
and their addresses come from ``--data`` and ``--peers`` is ignored. ``--join`` starts an empty
member that waits for the leader to add it (``AddMember``); with it, ``--peers`` only lists the
current members' Raft addresses so that the new member can answer them before it learns the
membership from the log (a snapshot carries member ids, not addresses).

Errors
------
A follower refuses writes, membership changes and transfers with ``FAILED_PRECONDITION``; the
trailing metadata ``keelfs-leader-id``, ``keelfs-leader-addr`` (client address) and
``keelfs-leader-raft-addr`` name the leader when known. ``ABORTED`` means certainly not
applied, ``UNAVAILABLE`` an unknown outcome (see ``proto/kv.proto``). Linearizable reads are
served by any member (ReadIndex, forwarded to the leader by followers).

Benchmarks: ``--groups N`` also hosts N more KV groups, ``g0`` .. ``g{N-1}``, each with its own
state machine and the same members (``keelfs bench idle``); ``LoadTest`` proposes puts from
inside the leader's process (``keelfs bench raft``).

Lifecycle: ``keelfs.runtime.lifecycle``, as every keelfs server: when serving, one line
``READY {json}`` (id, raft and client addresses, pid) on stdout; logs go to stderr; SIGTERM or
SIGINT stop the node cleanly (exit status 0); a failure exits with status 1 and a one-line
reason as the last line of stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import grpc

from keelfs.errors import NotLeader, OutcomeUnknown, Unavailable
from keelfs.raft.errors import ProposalDropped
from keelfs.runtime import kv
from keelfs.runtime.group import RaftGroup
from keelfs.runtime.host import HostConfig, RaftHost, add_host_arguments, host_config_from_args
from keelfs.runtime.kv import KVStateMachine
from keelfs.runtime.kvwire import (
    DEFAULT_GROUP,
    LEADER_ADDR_KEY,
    LEADER_ID_KEY,
    LEADER_RAFT_ADDR_KEY,
)
from keelfs.runtime.lifecycle import (
    ProcessFailed,
    announce_ready,
    configure_logging,
    run_process,
    serve_until_stopped,
    stop_on_signals,
)
from keelfs.runtime.pb import kv_pb2 as pb
from keelfs.runtime.pb import kv_pb2_grpc as _pb_grpc
from keelfs.transport.base import OnMessages, Transport
from keelfs.transport.grpc_transport import GrpcTransport, GrpcTransportConfig

__all__ = [
    "KVServer",
    "ServerConfig",
    "main",
    "parse_peers",
]

log = logging.getLogger("keelfs.runtime.server")

pb_grpc: Any = _pb_grpc  # generated, untyped


_MEMBERSHIP_TIMEOUT = 30.0
_LEARNER_CAUGHT_UP = 16
"""A learner within this many entries of the commit index is promoted."""

T = TypeVar("T")


@dataclass
class ServerConfig:
    node_id: int
    listen: str
    data_dir: Path
    client_listen: str = ""
    """Empty: the host of ``listen`` with its port + 1 (0 if ``listen`` asks for any port)."""
    peers: dict[int, str] | None = None
    join: bool = False
    join_via: str = ""
    """A client address of any current member: ask it (and so the leader) to add this node."""
    groups: int = 0
    """Extra KV groups ``g0`` .. ``g{groups-1}`` besides the default one (benchmarks)."""
    host: HostConfig = field(default_factory=HostConfig)

    def client_address(self) -> str:
        if self.client_listen:
            return self.client_listen
        host, _, port = self.listen.rpartition(":")
        return f"{host}:{int(port) + 1 if int(port) else 0}"


def parse_peers(text: str) -> dict[int, str]:
    """``"1=host:port,2=host:port"`` -> ``{1: "host:port", 2: "host:port"}``."""
    peers: dict[int, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        node, sep, address = item.partition("=")
        if not sep or not node.strip().isdigit() or not address.strip():
            raise ValueError(f"bad peer {item!r}: expected ID=HOST:PORT")
        peers[int(node)] = address.strip()
    return peers


class KVServer:
    """The node: a ``RaftHost`` with one KV group, and the gRPC client API in front of it."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.node_id = config.node_id
        self.host: RaftHost | None = None
        self.group: RaftGroup | None = None
        self.sm = KVStateMachine()
        self.sms: dict[str, KVStateMachine] = {DEFAULT_GROUP: self.sm}
        """Each hosted group's state machine."""
        self.client_address = config.client_address()
        self._server: Any = None
        self._tasks: list[asyncio.Task[None]] = []

    def _transport(self, on_messages: OnMessages) -> Transport:
        # Ping idle links every second: quiesced groups learn of a frozen or vanished leader
        # node from the link, since they exchange no Raft messages.
        tcfg = GrpcTransportConfig(keepalive_time_ms=1_000, keepalive_timeout_ms=1_000)
        return GrpcTransport(self.node_id, self.config.listen, on_messages, config=tcfg)

    @property
    def raft_address(self) -> str:
        assert self.host is not None
        transport = self.host.transport
        return transport.address if isinstance(transport, GrpcTransport) else self.config.listen

    async def start(self) -> None:
        cfg = self.config
        host = self.host = RaftHost(cfg.node_id, cfg.data_dir, self._transport, cfg.host)
        await host.start()
        self.group = self._open_group(DEFAULT_GROUP, self.sm)
        for i in range(cfg.groups):
            self.sms[f"g{i}"] = sm = KVStateMachine()
            self._open_group(f"g{i}", sm)
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        pb_grpc.add_KVServicer_to_server(_KVServicer(self), server)
        try:
            port = server.add_insecure_port(self.client_address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {self.client_address}: {exc}") from exc
        if port == 0:
            raise OSError(f"cannot listen on {self.client_address}")
        if not self.client_address.startswith("unix:"):
            self.client_address = f"{self.client_address.rpartition(':')[0]}:{port}"
        await server.start()
        self._server = server
        self._tasks.append(asyncio.create_task(self._announce_loop(), name="announce"))
        if cfg.join_via and not self.group.voters() and not self.group.learners():
            self._tasks.append(asyncio.create_task(self._join_via(cfg.join_via), name="join"))

    async def _join_via(self, member: str) -> None:
        """Join by naming any one member (seed 003): it points us at the leader, which adds
        this node as a learner, catches it up and promotes it."""
        from keelfs.runtime.client import AsyncKVClient

        assert self.host is not None
        raft_address = self.raft_address
        client = AsyncKVClient([member])
        try:
            while True:
                try:
                    await client.add_member(self.config.node_id, raft_address)
                    log.info("joined through %s", member)
                    return
                except Exception as exc:  # the cluster may be electing: keep asking
                    log.warning("join through %s failed (%s); retrying", member, exc)
                    await asyncio.sleep(1.0)
        finally:
            await client.close()

    def _open_group(self, group_id: str, sm: KVStateMachine) -> RaftGroup:
        cfg, host = self.config, self.host
        assert host is not None
        exists = group_id in host.engine.group_ids()
        if exists:
            if cfg.peers and group_id == DEFAULT_GROUP:
                log.info("membership comes from %s; --peers ignored", cfg.data_dir)
            return host.open_group(group_id, sm)
        if cfg.join:
            group = host.open_group(group_id, sm)
            if cfg.peers:
                # The address book of a member-to-be: who to answer until the log tells more.
                group.set_addresses(cfg.peers)
                for node_id, address in cfg.peers.items():
                    host.set_peer_address(node_id, address)
                group.storage.set_membership(group.addresses)
            return group
        if cfg.peers:
            return host.open_group(group_id, sm, cfg.peers)
        raise ProcessFailed(f"{cfg.data_dir} holds no group: pass --peers (bootstrap) or --join")

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._server is not None:
            await self._server.stop(0.2)
            self._server = None
        if self.host is not None:
            await self.host.stop()
            self.host = None

    def ready_info(self) -> dict[str, Any]:
        return {
            "id": self.node_id,
            "raft": self.raft_address,
            "client": self.client_address,
            "pid": os.getpid(),
            "data": str(self.config.data_dir),
        }

    async def _announce_loop(self) -> None:
        """Whenever this node leads, make sure the directory has its client address."""
        group = self.group
        assert group is not None
        while True:
            changed = group.leader_changes
            if group.is_leader and self.sm.nodes.get(self.node_id) != self.client_address:
                try:
                    await group.propose(kv.node(self.node_id, self.client_address))
                except (NotLeader, Unavailable):
                    await asyncio.sleep(0.1)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), 1.0)

    def status(self) -> dict[str, Any]:
        assert self.host is not None
        transport = self.host.transport
        peers: dict[str, Any] = {}
        if isinstance(transport, GrpcTransport):
            for peer in transport.peers():
                st = transport.peer_status(peer)
                if st is not None:
                    peers[str(peer)] = {"address": st.address, "connected": st.connected}
        return {
            **self.ready_info(),
            "groups": {gid: g.status().as_dict() for gid, g in self.host.groups.items()},
            "directory": {str(k): v for k, v in sorted(self.sm.nodes.items())},
            "peers": peers,
            "rounds": self.host.rounds,
        }


class _KVServicer:
    """The ``keelfs.kv.v1.KV`` service (duck-typed against the generated servicer)."""

    def __init__(self, server: KVServer) -> None:
        self._s = server

    # -- helpers ----------------------------------------------------------------------------
    async def _group(self, name: str, context: Any) -> RaftGroup:
        name = name or DEFAULT_GROUP
        assert self._s.host is not None
        group = self._s.host.groups.get(name)
        if group is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"no group {name!r} here")
        assert group is not None
        return group

    def _timeout(self, context: Any, default: float | None = None) -> float:
        assert self._s.host is not None
        limit = default if default is not None else self._s.host.config.request_timeout
        remaining = context.time_remaining()
        if remaining is None:
            return limit
        return max(0.01, min(limit, remaining - 0.05))

    async def _abort(self, context: Any, group: RaftGroup, exc: BaseException) -> NoReturn:
        if isinstance(exc, NotLeader):
            md: list[tuple[str, str]] = [(LEADER_ID_KEY, str(exc.leader_id))]
            client = self._s.sm.nodes.get(exc.leader_id) if exc.leader_id else None
            if client:
                md.append((LEADER_ADDR_KEY, client))
            if exc.raft_address:
                md.append((LEADER_RAFT_ADDR_KEY, exc.raft_address))
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc), tuple(md))
        if isinstance(exc, OutcomeUnknown):
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        if isinstance(exc, Unavailable | ProposalDropped):
            await context.abort(grpc.StatusCode.ABORTED, str(exc))
        if isinstance(exc, ValueError):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        raise exc

    async def _call(self, context: Any, group: RaftGroup, work: Awaitable[T]) -> T:
        try:
            return await work
        except (NotLeader, Unavailable, ProposalDropped, ValueError) as exc:
            await self._abort(context, group, exc)

    def _info(self, index: int, term: int) -> pb.WriteInfo:
        return pb.WriteInfo(term=term, index=index, node_id=self._s.node_id)

    # -- data -------------------------------------------------------------------------------
    async def Put(self, request: pb.PutRequest, context: Any) -> pb.PutReply:  # noqa: N802
        group = await self._group(request.group, context)
        cmd = kv.put(request.key, request.value)
        prev, index, term = await self._call(
            context, group, group.propose_entry(cmd, self._timeout(context))
        )
        reply = pb.PutReply(info=self._info(index, term))
        if prev is not None:
            reply.previous = prev
        return reply

    async def Cas(self, request: pb.CasRequest, context: Any) -> pb.CasReply:  # noqa: N802
        group = await self._group(request.group, context)
        expected = request.expected if request.HasField("expected") else None
        cmd = kv.cas(request.key, expected, request.new_value)
        swapped, index, term = await self._call(
            context, group, group.propose_entry(cmd, self._timeout(context))
        )
        return pb.CasReply(swapped=bool(swapped), info=self._info(index, term))

    async def Get(self, request: pb.GetRequest, context: Any) -> pb.GetReply:  # noqa: N802
        group = await self._group(request.group, context)
        linearizable = request.linearizable if request.HasField("linearizable") else True
        if linearizable:
            await self._call(context, group, group.read_barrier(self._timeout(context)))
        value = self._s.sms[group.group_id].get(request.key)
        reply = pb.GetReply(applied_index=group.applied_index(), node_id=self._s.node_id)
        if value is not None:
            reply.value = value
        return reply

    async def LoadTest(  # noqa: N802
        self, request: pb.LoadTestRequest, context: Any
    ) -> pb.LoadTestReply:
        """Propose ``count`` puts on this leader, ``inflight`` at a time (see kv.proto)."""
        group = await self._group(request.group, context)
        if not group.is_leader:
            await self._abort(context, group, group.not_leader_error())
        host = self._s.host
        assert host is not None
        left = request.count
        inflight = max(1, min(request.inflight or 1024, left or 1))
        value = "x" * request.value_bytes
        committed = failed = 0
        latencies: list[float] = []

        async def worker(w: int) -> None:
            nonlocal left, committed, failed
            cmd = kv.put(f"load/{w}", value)  # a bounded key space: each worker its own key
            while left > 0:
                left -= 1
                try:
                    await group.propose(cmd)
                except (NotLeader, Unavailable):
                    failed += 1
                    if not group.is_leader:
                        return
                else:
                    committed += 1

        async def one(i: int) -> None:
            nonlocal committed, failed
            t = time.perf_counter()
            try:
                await group.propose(kv.put(f"load/{i % 1024}", value))
            except (NotLeader, Unavailable):
                failed += 1
            else:
                latencies.append((time.perf_counter() - t) * 1000)
                committed += 1

        async def open_loop(count: int, rate: float) -> None:
            loop = asyncio.get_running_loop()
            start = loop.time()
            tasks = []
            for i in range(count):
                await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
                tasks.append(asyncio.create_task(one(i)))
            await asyncio.gather(*tasks)

        rounds0, cpu0, t0 = host.rounds, time.process_time(), time.perf_counter()
        if request.rate_ops > 0:
            await open_loop(request.count, request.rate_ops)
        else:
            await asyncio.gather(*(worker(w) for w in range(inflight)))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        return pb.LoadTestReply(
            committed=committed,
            failed=failed,
            elapsed_seconds=elapsed,
            cpu_seconds=cpu,
            synced_writes=host.rounds - rounds0,
            latencies_ms=latencies,
        )

    # -- administration ---------------------------------------------------------------------
    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusReply:  # noqa: N802
        return pb.StatusReply(json=json.dumps(self._s.status(), sort_keys=True))

    async def TransferLeader(  # noqa: N802
        self, request: pb.TransferLeaderRequest, context: Any
    ) -> pb.TransferLeaderReply:
        group = await self._group(request.group, context)
        target = request.target
        if not group.is_leader:
            await self._abort(context, group, group.not_leader_error())
        if target not in group.voters():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{target} is not a voter")
        if target != self._s.node_id:
            try:
                group.transfer_leader(target)
            except (NotLeader, Unavailable) as exc:
                await self._abort(context, group, exc)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout(context)
        while group.leader_id != target:
            changed = group.leader_changes
            remaining = deadline - loop.time()
            if remaining <= 0:
                await context.abort(
                    grpc.StatusCode.ABORTED,
                    f"transfer to {target} did not complete (leader: {group.leader_id or '?'})",
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(remaining, 0.05))
        return pb.TransferLeaderReply(leader=target, term=group.node.raft.term)

    async def AddMember(  # noqa: N802
        self, request: pb.AddMemberRequest, context: Any
    ) -> pb.MembershipReply:
        group = await self._group(request.group, context)
        node_id, address = request.node_id, request.raft_address
        if not address:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "raft_address is required")

        async def step() -> bool:
            if node_id in group.voters():
                return True
            if node_id not in group.learners():
                await group.add_learner(node_id, address)
                return False
            match = group.match_index(node_id)
            if match is None:
                raise group.not_leader_error()
            if match + _LEARNER_CAUGHT_UP >= group.commit_index():
                await group.promote(node_id)
            return False

        await self._membership(context, group, step)
        return self._members(group)

    async def RemoveMember(  # noqa: N802
        self, request: pb.RemoveMemberRequest, context: Any
    ) -> pb.MembershipReply:
        group = await self._group(request.group, context)
        node_id = request.node_id

        async def step() -> bool:
            if node_id not in group.voters() | group.learners():
                return True
            await group.remove_member(node_id)
            return False

        await self._membership(context, group, step)
        return self._members(group)

    async def _membership(
        self, context: Any, group: RaftGroup, step: Callable[[], Awaitable[bool]]
    ) -> None:
        """Run ``step`` until it reports done; it must be idempotent (it re-reads the
        configuration each time), so busy errors and unknown outcomes are simply retried."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout(context, _MEMBERSHIP_TIMEOUT)
        while True:
            if not group.is_leader:
                await self._abort(context, group, group.not_leader_error())
            try:
                if await step():
                    return
            except NotLeader as exc:
                await self._abort(context, group, exc)
            except (Unavailable, ProposalDropped) as exc:
                if loop.time() >= deadline:
                    await self._abort(context, group, exc)
                await asyncio.sleep(0.05)
            except ValueError as exc:
                await self._abort(context, group, exc)
            else:
                if loop.time() >= deadline:
                    await context.abort(grpc.StatusCode.ABORTED, "membership change timed out")
                await asyncio.sleep(0.02)

    @staticmethod
    def _members(group: RaftGroup) -> pb.MembershipReply:
        return pb.MembershipReply(voters=sorted(group.voters()), learners=sorted(group.learners()))


# ---------------------------------------------------------------------------------------------
# command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m keelfs.runtime.server",
        description="Run one member of a replicated key-value Raft group.",
    )
    p.add_argument("--id", type=int, required=True, help="this node's id (positive)")
    p.add_argument("--listen", required=True, help="Raft transport address HOST:PORT")
    p.add_argument(
        "--client-listen",
        default="",
        help="client API address HOST:PORT or unix:PATH (default: --listen's port + 1)",
    )
    p.add_argument("--data", required=True, type=Path, help="data directory")
    p.add_argument(
        "--peers",
        default="",
        help="ID=HOST:PORT,... every initial member's Raft address (first start only)",
    )
    p.add_argument("--join", action="store_true", help="start empty and wait to be added")
    p.add_argument(
        "--join-via",
        default="",
        metavar="HOST:PORT",
        help="start empty and ask this member (its client address) to add us; implies --join",
    )
    add_host_arguments(p)
    p.add_argument(
        "--groups", type=int, default=0, help="also host N KV groups g0..g{N-1} (benchmarks)"
    )
    p.add_argument("--log-level", default="INFO")
    return p


def config_from_args(argv: list[str] | None = None) -> ServerConfig:
    """The node's config; bad flags end the process with status 2 and the usage, before
    anything starts (``keelfs.runtime.lifecycle``)."""
    parser = _parser()
    ns = parser.parse_args(argv)
    if ns.id <= 0:
        parser.error("--id must be positive")
    if ns.groups < 0:
        parser.error("--groups must not be negative")
    try:
        peers = parse_peers(ns.peers) if ns.peers else None
    except ValueError as exc:
        parser.error(f"--peers: {exc}")
    if peers is not None and not ns.join and ns.id not in peers:
        parser.error(f"--peers must include this node ({ns.id})")
    configure_logging(ns.log_level, f"n{ns.id}")
    host = host_config_from_args(ns)
    return ServerConfig(
        node_id=ns.id,
        listen=ns.listen,
        data_dir=ns.data,
        client_listen=ns.client_listen,
        peers=peers,
        join=ns.join or bool(ns.join_via),
        join_via=ns.join_via,
        groups=ns.groups,
        host=host,
    )


async def serve(config: ServerConfig) -> None:
    """Run the node until SIGTERM/SIGINT (``keelfs.runtime.lifecycle``)."""
    stop = stop_on_signals()
    server = KVServer(config)
    try:
        await server.start()
        assert server.host is not None
        announce_ready(server.ready_info())
        log.info("node %d serving: %s", config.node_id, server.ready_info())
        await serve_until_stopped(stop, server.host.tasks)
        log.info("node %d stopping", config.node_id)
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    config = config_from_args(argv)
    return run_process("kv-server", lambda: serve(config))


if __name__ == "__main__":
    sys.exit(main())
