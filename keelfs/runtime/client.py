"""Clients of the replicated KV service (``keelfs.runtime.server``, ``proto/kv.proto``).

``KVClient`` is synchronous (gRPC sync channels; safe to share between threads) and
``AsyncKVClient`` is its ``grpc.aio`` twin. Both take the client addresses of some members,
find the leader, follow ``NOT_LEADER`` hints (the leader's client address from the trailing
metadata, else an address learned earlier for that node id), and retry within a deadline with
exponential back-off.

Retries and outcomes
--------------------
What a failed attempt means for a write:

- ``FAILED_PRECONDITION`` (not the leader), ``ABORTED`` and a connection that could not be
  established: the write was certainly not applied, retrying is always safe;
- ``UNAVAILABLE`` after the request may have reached a server, ``DEADLINE_EXCEEDED``: the
  outcome is unknown.

With ``retry_unknown=True`` (the default) writes are retried after unknown outcomes too. A
retried ``put`` is idempotent for the KV model as long as nobody else writes the key meanwhile
(it writes the same value again); a retried ``cas`` may report ``swapped=False`` when the first
attempt did swap. This demo KV service does not deduplicate; exactly-once application is what
the metadata service's sessions add (``keelfs.meta.sessions``), and every write here carries
``(client_id, seq)`` as theirs do. With ``retry_unknown=False`` a write raises
:class:`OutcomeUnknownError` at the first unknown outcome instead, which is what a history
checker needs. When the deadline passes, :class:`OutcomeUnknownError` is raised if any attempt
had an unknown outcome, :class:`KVUnavailableError` (certainly not applied) otherwise.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from keelfs.runtime.kvwire import DEFAULT_GROUP, LEADER_ADDR_KEY, LEADER_ID_KEY
from keelfs.runtime.pb import kv_pb2 as pb
from keelfs.runtime.pb import kv_pb2_grpc as _pb_grpc

__all__ = [
    "AsyncKVClient",
    "CasResult",
    "KVClient",
    "KVError",
    "KVUnavailableError",
    "Membership",
    "OutcomeUnknownError",
    "PutResult",
    "WriteResult",
]

pb_grpc: Any = _pb_grpc  # generated, untyped

_BACKOFF_INITIAL = 0.02
_BACKOFF_MAX = 0.5
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 2000),  # the least time a connection attempt gets
]


class KVError(Exception):
    """A request the service refused for good (e.g. ``INVALID_ARGUMENT``)."""


class KVUnavailableError(KVError):
    """No attempt succeeded within the deadline; a write was certainly not applied."""


class OutcomeUnknownError(KVError):
    """A write may or may not have been applied."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Where an acknowledged write was committed, and which leader acknowledged it."""

    term: int
    index: int
    node_id: int


@dataclass(frozen=True, slots=True)
class PutResult(WriteResult):
    previous: str | None


@dataclass(frozen=True, slots=True)
class CasResult(WriteResult):
    swapped: bool


@dataclass(frozen=True, slots=True)
class Membership:
    voters: tuple[int, ...]
    learners: tuple[int, ...]


def _code(err: grpc.RpcError) -> grpc.StatusCode:
    code = err.code()
    assert isinstance(code, grpc.StatusCode)
    return code


def _details(err: grpc.RpcError) -> str:
    return str(err.details() or "")


def _trailers(err: grpc.RpcError) -> dict[str, str]:
    try:
        md = err.trailing_metadata()
    except Exception:
        return {}
    return {str(k): str(v) for k, v in (md or ())}


def _never_sent(err: grpc.RpcError) -> bool:
    """The channel had no connection to send the request on (gRPC's pick-first message)."""
    return _code(err) is grpc.StatusCode.UNAVAILABLE and "failed to connect" in _details(err)


class _Router:
    """Leader tracking and the retry policy, shared by the sync and async clients.

    Thread-safe. ``on_error`` returns how long to sleep before the next attempt, or raises.
    """

    def __init__(self, addresses: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._addresses: list[str] = list(dict.fromkeys(addresses))
        if not self._addresses:
            raise ValueError("need at least one address")
        self._by_id: dict[int, str] = {}
        self._leader: str | None = None
        self._next = random.randrange(len(self._addresses))

    @property
    def addresses(self) -> list[str]:
        with self._lock:
            return list(self._addresses)

    def learn(self, node_id: int, address: str) -> None:
        if node_id <= 0 or not address:
            return
        with self._lock:
            self._by_id[node_id] = address
            if address not in self._addresses:
                self._addresses.append(address)

    def target(self) -> str:
        with self._lock:
            if self._leader is not None:
                return self._leader
            address = self._addresses[self._next % len(self._addresses)]
            self._next += 1
            return address

    def succeeded(self, address: str, node_id: int, leader: bool) -> None:
        self.learn(node_id, address)
        if leader:
            with self._lock:
                self._leader = address

    def _forget(self, address: str) -> None:
        with self._lock:
            if self._leader == address:
                self._leader = None

    def on_error(self, address: str, err: grpc.RpcError, attempt: _Attempt) -> float:
        """Decide what to do after ``err`` from ``address``: sleep this long and retry."""
        code = _code(err)
        if code is grpc.StatusCode.FAILED_PRECONDITION:
            md = _trailers(err)
            leader_id = int(md.get(LEADER_ID_KEY, "0") or 0)
            hint = md.get(LEADER_ADDR_KEY, "")
            if hint:
                self.learn(leader_id, hint)
            else:
                with self._lock:
                    hint = self._by_id.get(leader_id, "")
            with self._lock:
                self._leader = hint if hint and hint != address else None
            attempt.last_error = f"{address}: {_details(err)}"
            if self._leader is not None and not attempt.redirected:
                attempt.redirected = True
                return 0.0  # follow a fresh hint at once
            return attempt.backoff()
        attempt.redirected = False
        attempt.last_error = f"{address}: {code.name}: {_details(err)}"
        if code is grpc.StatusCode.ABORTED:
            self._forget(address)  # maybe a removed member; a follower will redirect
            return attempt.backoff()
        if code in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.CANCELLED,
            grpc.StatusCode.UNKNOWN,
            grpc.StatusCode.INTERNAL,
        ):
            self._forget(address)
            if attempt.write and not _never_sent(err):
                attempt.unknown = True
                if not attempt.retry_unknown:
                    raise OutcomeUnknownError(attempt.last_error) from None
            return attempt.backoff()
        raise KVError(attempt.last_error) from None


class _Attempt:
    """The state of one logical request across its attempts."""

    __slots__ = ("write", "retry_unknown", "deadline", "unknown", "redirected", "last_error", "_b")

    def __init__(self, write: bool, retry_unknown: bool, deadline: float) -> None:
        self.write = write
        self.retry_unknown = retry_unknown
        self.deadline = time.monotonic() + deadline
        self.unknown = False
        self.redirected = False
        self.last_error = "no attempt made"
        self._b = _BACKOFF_INITIAL

    def backoff(self) -> float:
        b = self._b * random.uniform(0.5, 1.0)
        self._b = min(self._b * 2, _BACKOFF_MAX)
        return b

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def give_up(self) -> KVError:
        if self.unknown:
            return OutcomeUnknownError(f"deadline passed; last error: {self.last_error}")
        return KVUnavailableError(f"deadline passed; last error: {self.last_error}")


def _reply_node(reply: Any) -> int:
    info = getattr(reply, "info", None)
    return int(info.node_id if info is not None else getattr(reply, "node_id", 0))


def _write_info(info: Any) -> tuple[int, int, int]:
    return int(info.term), int(info.index), int(info.node_id)


class _Base:
    def __init__(
        self,
        addresses: Iterable[str],
        *,
        group: str = "",
        deadline: float = 10.0,
        attempt_timeout: float = 2.0,
        retry_unknown: bool = True,
        client_id: str | None = None,
    ) -> None:
        self._router = _Router(addresses)
        self.group = group
        self.deadline = deadline
        self.attempt_timeout = attempt_timeout
        self.retry_unknown = retry_unknown
        self.client_id = client_id or uuid.uuid4().hex
        self._seq = itertools.count(1)
        self._seq_lock = threading.Lock()

    @property
    def addresses(self) -> list[str]:
        return self._router.addresses

    def _next_seq(self) -> int:
        with self._seq_lock:
            return next(self._seq)

    def _put_request(self, key: str, value: str) -> pb.PutRequest:
        return pb.PutRequest(
            group=self.group, key=key, value=value, client_id=self.client_id, seq=self._next_seq()
        )

    def _cas_request(self, key: str, expected: str | None, new: str) -> pb.CasRequest:
        req = pb.CasRequest(
            group=self.group, key=key, new_value=new, client_id=self.client_id, seq=self._next_seq()
        )
        if expected is not None:
            req.expected = expected
        return req

    @staticmethod
    def _put_result(reply: Any) -> PutResult:
        prev = reply.previous if reply.HasField("previous") else None
        return PutResult(*_write_info(reply.info), previous=prev)

    @staticmethod
    def _cas_result(reply: Any) -> CasResult:
        return CasResult(*_write_info(reply.info), swapped=bool(reply.swapped))

    @staticmethod
    def _members(reply: Any) -> Membership:
        return Membership(tuple(reply.voters), tuple(reply.learners))


class KVClient(_Base):
    """Synchronous client; see the module docstring. Use as a context manager or ``close()``."""

    def __init__(self, addresses: Iterable[str], **kwargs: Any) -> None:
        super().__init__(addresses, **kwargs)
        self._channels: dict[str, tuple[grpc.Channel, Any]] = {}
        self._lock = threading.Lock()

    def _stub(self, address: str) -> Any:
        with self._lock:
            entry = self._channels.get(address)
            if entry is None:
                channel = grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
                entry = self._channels[address] = (channel, pb_grpc.KVStub(channel))
            return entry[1]

    def _call(
        self,
        method: str,
        request: Any,
        *,
        write: bool,
        deadline: float | None,
        leader_only: bool = True,
    ) -> Any:
        attempt = _Attempt(write, self.retry_unknown, deadline or self.deadline)
        while True:
            remaining = attempt.remaining()
            if remaining <= 0:
                raise attempt.give_up()
            address = self._router.target()
            try:
                reply = getattr(self._stub(address), method)(
                    request, timeout=min(self.attempt_timeout, remaining)
                )
            except grpc.RpcError as err:
                pause = self._router.on_error(address, err, attempt)
                time.sleep(max(0.0, min(pause, attempt.remaining())))
                continue
            self._router.succeeded(address, _reply_node(reply), leader_only)
            return reply

    # -- data -------------------------------------------------------------------------------
    def put(self, key: str, value: str, *, deadline: float | None = None) -> PutResult:
        reply = self._call("Put", self._put_request(key, value), write=True, deadline=deadline)
        return self._put_result(reply)

    def cas(
        self, key: str, expected: str | None, new: str, *, deadline: float | None = None
    ) -> CasResult:
        req = self._cas_request(key, expected, new)
        return self._cas_result(self._call("Cas", req, write=True, deadline=deadline))

    def get(
        self, key: str, *, linearizable: bool = True, deadline: float | None = None
    ) -> str | None:
        req = pb.GetRequest(group=self.group, key=key, linearizable=linearizable)
        reply = self._call("Get", req, write=False, deadline=deadline, leader_only=False)
        return reply.value if reply.HasField("value") else None

    # -- administration ---------------------------------------------------------------------
    def status(self, address: str, *, timeout: float = 2.0) -> dict[str, Any]:
        """One node's status (one attempt; raises ``grpc.RpcError`` if it does not answer)."""
        reply = self._stub(address).Status(pb.StatusRequest(), timeout=timeout, wait_for_ready=True)
        st: dict[str, Any] = json.loads(reply.json)
        self._router.learn(int(st.get("id", 0)), address)
        return st

    def leader(self, *, timeout: float = 1.0) -> tuple[int, str] | None:
        """Ask every known node; the (id, client address) of one that says it leads, with the
        highest term, or None."""
        best: tuple[int, int, str] | None = None
        for address in self.addresses:
            try:
                st = self.status(address, timeout=timeout)
            except grpc.RpcError:
                continue
            g = st["groups"].get(self.group or DEFAULT_GROUP)
            if g and g["state"] == "leader" and (best is None or g["term"] > best[0]):
                best = (g["term"], int(st["id"]), address)
        return None if best is None else (best[1], best[2])

    def transfer_leader(self, target: int, *, deadline: float | None = None) -> int:
        req = pb.TransferLeaderRequest(group=self.group, target=target)
        return int(
            self._call(
                "TransferLeader", req, write=False, deadline=deadline, leader_only=False
            ).leader
        )

    def add_member(
        self, node_id: int, raft_address: str, *, deadline: float | None = 60.0
    ) -> Membership:
        req = pb.AddMemberRequest(group=self.group, node_id=node_id, raft_address=raft_address)
        return self._members(
            self._call("AddMember", req, write=False, deadline=deadline, leader_only=False)
        )

    def remove_member(self, node_id: int, *, deadline: float | None = 60.0) -> Membership:
        req = pb.RemoveMemberRequest(group=self.group, node_id=node_id)
        return self._members(
            self._call("RemoveMember", req, write=False, deadline=deadline, leader_only=False)
        )

    def close(self) -> None:
        with self._lock:
            channels, self._channels = self._channels, {}
        for channel, _ in channels.values():
            channel.close()

    def __enter__(self) -> KVClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncKVClient(_Base):
    """``grpc.aio`` client with the same API as :class:`KVClient`, as coroutines.

    Create and use it on one event loop; ``await close()`` when done."""

    def __init__(self, addresses: Iterable[str], **kwargs: Any) -> None:
        super().__init__(addresses, **kwargs)
        self._channels: dict[str, tuple[Any, Any]] = {}

    def _stub(self, address: str) -> Any:
        entry = self._channels.get(address)
        if entry is None:
            channel = grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
            entry = self._channels[address] = (channel, pb_grpc.KVStub(channel))
        return entry[1]

    async def _call(
        self,
        method: str,
        request: Any,
        *,
        write: bool,
        deadline: float | None,
        leader_only: bool = True,
    ) -> Any:
        attempt = _Attempt(write, self.retry_unknown, deadline or self.deadline)
        while True:
            remaining = attempt.remaining()
            if remaining <= 0:
                raise attempt.give_up()
            address = self._router.target()
            try:
                reply = await getattr(self._stub(address), method)(
                    request, timeout=min(self.attempt_timeout, remaining)
                )
            except grpc.RpcError as err:
                pause = self._router.on_error(address, err, attempt)
                await asyncio.sleep(max(0.0, min(pause, attempt.remaining())))
                continue
            self._router.succeeded(address, _reply_node(reply), leader_only)
            return reply

    async def put(self, key: str, value: str, *, deadline: float | None = None) -> PutResult:
        req = self._put_request(key, value)
        return self._put_result(await self._call("Put", req, write=True, deadline=deadline))

    async def cas(
        self, key: str, expected: str | None, new: str, *, deadline: float | None = None
    ) -> CasResult:
        req = self._cas_request(key, expected, new)
        return self._cas_result(await self._call("Cas", req, write=True, deadline=deadline))

    async def get(
        self, key: str, *, linearizable: bool = True, deadline: float | None = None
    ) -> str | None:
        req = pb.GetRequest(group=self.group, key=key, linearizable=linearizable)
        reply = await self._call("Get", req, write=False, deadline=deadline, leader_only=False)
        return reply.value if reply.HasField("value") else None

    async def status(self, address: str, *, timeout: float = 2.0) -> dict[str, Any]:
        reply = await self._stub(address).Status(
            pb.StatusRequest(), timeout=timeout, wait_for_ready=True
        )
        st: dict[str, Any] = json.loads(reply.json)
        self._router.learn(int(st.get("id", 0)), address)
        return st

    async def transfer_leader(self, target: int, *, deadline: float | None = None) -> int:
        req = pb.TransferLeaderRequest(group=self.group, target=target)
        return int(
            (
                await self._call(
                    "TransferLeader", req, write=False, deadline=deadline, leader_only=False
                )
            ).leader
        )

    async def add_member(
        self, node_id: int, raft_address: str, *, deadline: float | None = 60.0
    ) -> Membership:
        req = pb.AddMemberRequest(group=self.group, node_id=node_id, raft_address=raft_address)
        return self._members(
            await self._call("AddMember", req, write=False, deadline=deadline, leader_only=False)
        )

    async def remove_member(self, node_id: int, *, deadline: float | None = 60.0) -> Membership:
        req = pb.RemoveMemberRequest(group=self.group, node_id=node_id)
        return self._members(
            await self._call("RemoveMember", req, write=False, deadline=deadline, leader_only=False)
        )

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel, _ in channels.values():
            await channel.close()

    async def __aenter__(self) -> AsyncKVClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
