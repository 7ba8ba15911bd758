"""The error tree: stable codes, structured details, and the round trip through details."""

from __future__ import annotations

import json

import pytest

from keelfs import errors
from keelfs.errors import (
    AlreadyExists,
    ChecksumMismatch,
    CorruptReplica,
    DirectoryNotEmpty,
    Fenced,
    Internal,
    InvalidArgument,
    InvalidPath,
    IsADirectory,
    KeelError,
    LeaseConflict,
    NotADirectory,
    NotFound,
    NotLeader,
    OperationError,
    OutcomeUnknown,
    PermissionDenied,
    PipelineBroken,
    QuotaExceeded,
    Redirect,
    ResourceExhausted,
    RetryableError,
    SessionExpired,
    StaleGeneration,
    Unavailable,
)

EXAMPLES: list[KeelError] = [
    NotLeader("shard-1", 3, "10.0.0.3:7000"),
    NotLeader("shard-1"),
    NotLeader("shard-1", 2, raft_address="10.0.0.2:7000"),
    Redirect("/a/b", "shard-2", 17, {"4": "10.0.0.4:7000"}),
    Unavailable("no leader yet"),
    OutcomeUnknown("timed out"),
    InvalidArgument("replication must be in 1..512", "replication"),
    InvalidPath("a/b", "not absolute"),
    NotFound("/x"),
    NotFound("shard-9", "shard"),
    AlreadyExists("/x"),
    NotADirectory("/f"),
    IsADirectory("/d"),
    DirectoryNotEmpty("/d"),
    LeaseConflict("/f", "alice"),
    SessionExpired(42),
    PermissionDenied("/home/alice", "bob"),
    ResourceExhausted("sessions", 4096),
    QuotaExceeded("/q", "space", 1000, 900, 200),
    Fenced("shard-1", 3, 4),
    StaleGeneration(7, 2, 3),
    CorruptReplica(7, 2, 65536, "crc mismatch"),
    ChecksumMismatch(7, 0, "packet 1"),
    PipelineBroken(7, 1024, ["10.0.0.5:9000"], "timeout"),
    Internal("internal error: KeyError: 'x'"),
]

CODES = {
    NotLeader: "NOT_LEADER",
    Redirect: "REDIRECT",
    Unavailable: "UNAVAILABLE",
    OutcomeUnknown: "OUTCOME_UNKNOWN",
    InvalidArgument: "INVALID_ARGUMENT",
    InvalidPath: "INVALID_PATH",
    NotFound: "NOT_FOUND",
    AlreadyExists: "ALREADY_EXISTS",
    NotADirectory: "NOT_A_DIRECTORY",
    IsADirectory: "IS_A_DIRECTORY",
    DirectoryNotEmpty: "DIRECTORY_NOT_EMPTY",
    LeaseConflict: "LEASE_CONFLICT",
    SessionExpired: "SESSION_EXPIRED",
    PermissionDenied: "PERMISSION_DENIED",
    ResourceExhausted: "RESOURCE_EXHAUSTED",
    QuotaExceeded: "QUOTA_EXCEEDED",
    Fenced: "FENCED",
    StaleGeneration: "STALE_GENERATION",
    CorruptReplica: "CORRUPT_REPLICA",
    ChecksumMismatch: "CHECKSUM_MISMATCH",
    PipelineBroken: "PIPELINE_BROKEN",
    Internal: "INTERNAL",
}


def test_codes_are_stable_and_unique() -> None:
    for cls, code in CODES.items():
        assert cls.code == code
    assert len({cls.code for cls in CODES}) == len(CODES)


def test_every_concrete_error_class_is_covered() -> None:
    concrete = {
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type)
        and issubclass(obj, KeelError)
        and obj is not KeelError
        and "code" in vars(obj)
    }
    assert concrete == set(CODES)
    assert {type(e) for e in EXAMPLES} == set(CODES)


def test_tree_shape() -> None:
    retryable = {NotLeader, Redirect, Unavailable, OutcomeUnknown, PipelineBroken}
    for cls in retryable:
        assert issubclass(cls, RetryableError) and cls.retryable
    assert not Internal.retryable and not issubclass(Internal, OperationError)
    for cls in set(CODES) - retryable - {Internal}:
        assert issubclass(cls, OperationError) and not cls.retryable
    assert issubclass(InvalidPath, InvalidArgument)
    assert issubclass(OutcomeUnknown, Unavailable)  # a caller that only backs off catches both
    # the tree is drawn in the module docstring, with every code
    for code in CODES.values():
        assert code in (errors.__doc__ or "")


@pytest.mark.parametrize("err", EXAMPLES, ids=lambda e: type(e).__name__)
def test_details_round_trip_through_json(err: KeelError) -> None:
    details = err.to_details()
    assert details["code"] == err.code
    assert details["message"] == str(err)
    wire = json.loads(json.dumps(details))
    back = KeelError.from_details(wire)
    assert type(back) is type(err)
    assert back == err
    assert back.to_details() == details


def test_structured_details() -> None:
    e = NotLeader("shard-1", 3, "10.0.0.3:7000")
    assert (e.leader_id, e.leader_address) == (3, "10.0.0.3:7000")
    assert "node 3" in str(e)
    r = Redirect("/a/b", "shard-2", 17)
    assert (r.shard_id, r.map_version) == ("shard-2", 17)
    p = InvalidPath("a", "not absolute")
    assert (p.path, p.reason, p.details["argument"]) == ("a", "not absolute", "path")
    assert LeaseConflict("/f", "alice").holder == "alice"
    assert NotFound("shard-9", "shard").kind == "shard"


def test_unknown_fields_are_dropped_and_unknown_codes_kept() -> None:
    back = KeelError.from_details({"code": "NOT_FOUND", "message": "m", "name": "/x", "new": 1})
    assert isinstance(back, NotFound) and "new" not in back.details
    other = KeelError.from_details({"code": "FROM_THE_FUTURE", "message": "hello"})
    assert type(other) is KeelError
    assert other.code == "FROM_THE_FUTURE" and str(other) == "hello"


def test_errors_are_catchable_by_branch() -> None:
    with pytest.raises(RetryableError):
        raise KeelError.from_details(Unavailable("x").to_details())
    with pytest.raises(OperationError):
        raise KeelError.from_details(DirectoryNotEmpty("/d").to_details())
