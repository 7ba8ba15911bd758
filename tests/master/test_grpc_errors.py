"""The one boundary between keelfs errors and gRPC: every class there and back, unchanged."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest

from keelfs import errors
from keelfs.errors import (
    AlreadyExists,
    DirectoryNotEmpty,
    InvalidArgument,
    InvalidPath,
    IsADirectory,
    KeelError,
    LeaseConflict,
    NotADirectory,
    NotFound,
    NotLeader,
    OutcomeUnknown,
    PermissionDenied,
    Redirect,
    SessionExpired,
    Unavailable,
)
from keelfs.rpc import grpc_errors

EXAMPLES: list[KeelError] = [
    NotLeader("shard-1", 3, "10.0.0.3:7001"),
    NotLeader("config"),
    Redirect("/a/b", "shard-2", 17, {"4": "10.0.0.4:7001"}),
    Unavailable("no leader yet"),
    OutcomeUnknown("timed out", message="proposal timed out"),
    InvalidArgument("replication must be in 1..512", "replication"),
    InvalidPath("a/b", "not absolute"),
    NotFound("/x"),
    NotFound("shard-9", "shard"),
    NotFound("99", "node"),
    AlreadyExists("/x"),
    NotADirectory("/f"),
    IsADirectory("/d"),
    DirectoryNotEmpty("/d"),
    LeaseConflict("/f", 12),
    SessionExpired(42),
]


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, md: tuple[Any, ...] = ()) -> None:
        self._code, self._details, self._md = code, details, md

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[Any, ...]:
        return self._md


class FakeContext:
    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]] | None = None

    async def abort(self, code: grpc.StatusCode, details: str, md: Any) -> None:
        self.aborted = (code, details, md)
        raise RuntimeError("aborted")  # as grpc.aio does: abort never returns


def _through_the_wire(err: KeelError) -> tuple[grpc.StatusCode, KeelError | None]:
    ctx = FakeContext()
    with pytest.raises(RuntimeError, match="aborted"):
        asyncio.run(grpc_errors.abort(ctx, err))
    assert ctx.aborted is not None
    code, details, md = ctx.aborted
    return code, grpc_errors.error_from_rpc(FakeRpcError(code, details, md))


def test_every_error_class_has_a_status_code() -> None:
    codes = {cls.code for cls in vars(errors).values() if isinstance(cls, type)
             and issubclass(cls, KeelError) and "code" in cls.__dict__}  # fmt: skip
    assert codes - {"UNKNOWN"} == set(grpc_errors.STATUS_OF_CODE)


@pytest.mark.parametrize("err", EXAMPLES, ids=lambda e: f"{e.code}-{e.message[:20]}")
def test_round_trip_keeps_class_and_details(err: KeelError) -> None:
    code, back = _through_the_wire(err)
    assert code is grpc_errors.status_of(err)
    assert back == err and type(back) is type(err)
    assert back.retryable == err.retryable


def test_status_codes_by_category() -> None:
    S = grpc.StatusCode
    assert grpc_errors.status_of(NotLeader("g")) is S.FAILED_PRECONDITION
    assert grpc_errors.status_of(Redirect("/a", "s", 1)) is S.FAILED_PRECONDITION
    assert grpc_errors.status_of(Unavailable("x")) is S.UNAVAILABLE
    assert grpc_errors.status_of(InvalidPath("x", "y")) is S.INVALID_ARGUMENT
    assert grpc_errors.status_of(NotFound("/x")) is S.NOT_FOUND
    assert grpc_errors.status_of(AlreadyExists("/x")) is S.ALREADY_EXISTS
    assert grpc_errors.status_of(KeelError("bug")) is S.INTERNAL


def test_outcome_unknown_is_told_apart_from_unavailable() -> None:
    """``UNAVAILABLE`` means "not applied" only: a write of unknown outcome has its own code
    (and is still an ``Unavailable`` to a caller that only backs off)."""
    _, back = _through_the_wire(OutcomeUnknown("timed out"))
    assert isinstance(back, OutcomeUnknown) and back.code == "OUTCOME_UNKNOWN"
    assert isinstance(back, Unavailable)
    _, plain = _through_the_wire(Unavailable("no leader"))
    assert plain is not None and type(plain) is Unavailable


def test_long_details_are_clipped_to_fit_grpc_metadata() -> None:
    path = "/" + "\u00e9" * 4000
    code, back = _through_the_wire(InvalidPath(path, "path of 8001 bytes (at most 4096)"))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert isinstance(back, InvalidPath) and back.reason.startswith("path of 8001")
    assert len(grpc_errors.encode_error(InvalidPath(path, "r"))) < 4096
    assert grpc_errors.encode_error(InvalidPath(path, "r")).isascii()


def test_other_exceptions_get_their_meaning() -> None:
    assert isinstance(grpc_errors.from_exception(TimeoutError()), Unavailable)
    bug = grpc_errors.from_exception(ZeroDivisionError("x"))
    assert bug.code == grpc_errors.INTERNAL_CODE and not bug.retryable
    same = NotFound("/x")
    assert grpc_errors.from_exception(same) is same


def test_the_raft_address_of_a_not_leader_never_crosses_the_wire() -> None:
    """The runtime names the leader by its Raft address; that stays in the process."""
    err = NotLeader("shard-1", 2, raft_address="10.0.0.2:7000")
    _, back = _through_the_wire(err)
    assert isinstance(back, NotLeader) and back.leader_id == 2
    assert back.leader_address is None and back.raft_address is None
    assert "10.0.0.2:7000" not in grpc_errors.encode_error(err).replace(err.message, "")


def test_failures_without_a_trailer() -> None:
    assert grpc_errors.error_from_rpc(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "x")) is None
    big = grpc_errors.transport_failure(
        FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max"),
        "a:1",
        "Create",
    )
    assert isinstance(big.error, InvalidArgument) and big.error.details["argument"] == "request"
    # a server at its maximum_concurrent_rpcs never started the call: back off and retry
    busy = grpc_errors.transport_failure(
        FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!"),
        "a:1",
        "Create",
    )
    assert busy.error is None and busy.never_sent
    wrong = grpc_errors.transport_failure(
        FakeRpcError(grpc.StatusCode.UNIMPLEMENTED, "Method not found!"), "a:1", "AddShard"
    )
    assert isinstance(wrong.error, InvalidArgument)
    down = grpc_errors.transport_failure(
        FakeRpcError(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses"), "a", "m"
    )
    assert down.error is None and down.never_sent
    lost = grpc_errors.transport_failure(
        FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), "a", "m"
    )
    assert lost.error is None and not lost.never_sent


def test_an_unreadable_trailer_is_an_internal_error() -> None:
    md = ((grpc_errors.ERROR_KEY, "{not json"),)
    err = grpc_errors.error_from_rpc(FakeRpcError(grpc.StatusCode.INTERNAL, "x", md))
    assert err is not None and err.code == grpc_errors.INTERNAL_CODE
    md = ((grpc_errors.ERROR_KEY, json.dumps({"code": "FROM_THE_FUTURE", "message": "m"})),)
    err = grpc_errors.error_from_rpc(FakeRpcError(grpc.StatusCode.INTERNAL, "x", md))
    assert err is not None and err.code == "FROM_THE_FUTURE" and err.message == "m"


def test_a_refusal_by_the_access_interceptor_is_final() -> None:
    """A TLS port's interceptor (``keelfs.rpc.access``) refuses a method the caller's class
    may not call with a bare PERMISSION_DENIED (no ``keelfs-error`` trailer): asking again
    cannot help. It used to be taken for a transient failure and retried until the deadline
    (``keelfs admin decommission`` as a non-admin user: 15 s, then "deadline passed")."""
    refused = grpc_errors.transport_failure(
        FakeRpcError(
            grpc.StatusCode.PERMISSION_DENIED,
            "/keelfs.meta.v1.Config/SetServerAdminState is an admin method: not user alice",
        ),
        "a:1",
        "SetServerAdminState",
    )
    assert isinstance(refused.error, PermissionDenied)
    assert "not user alice" in refused.error.message and refused.never_sent
