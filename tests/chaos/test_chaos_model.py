"""The checker of ``keelfs chaos`` (``keelfs.chaos.model``), in process: what a run expects
from acknowledged outcomes only, and that ``verify`` reports a violation when the cluster
differs from that: an acknowledged file with other bytes, one deleted behind the run's back,
a deleted name that came back, a name nobody created, a refusal no state explains."""

from __future__ import annotations

from keelfs.chaos.model import (
    ABSENT,
    ANY,
    FAILED,
    OK,
    UNKNOWN,
    ContendedLog,
    ContendedOp,
    Expected,
    md5,
    verify,
)
from keelfs.chaos.workload import append_file, classify, put_file
from keelfs.client import OutcomeUnknown
from keelfs.errors import AlreadyExists, LeaseConflict, NotFound, SessionExpired, Unavailable

A, B = md5(b"a"), md5(b"b")


def cluster(files: dict[str, str]):  # type: ignore[no-untyped-def]
    """An ``observe`` over a fake namespace: path -> MD5 (absent when not there)."""

    def observe(path: str) -> tuple[str, int]:
        return files.get(path, ABSENT), 1

    return observe


def kinds(violations) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [(v.kind, v.path) for v in violations]


def test_an_acknowledged_file_read_back_intact_is_no_violation() -> None:
    e = Expected()
    e.write("/w/f1", A, OK)
    e.write("/w/f2", B, OK)
    e.delete("/w/f2", OK)
    checked, violations = verify(e, ContendedLog(), cluster({"/w/f1": A}), ["/w/f1"])
    assert violations == []
    assert (checked.files, checked.absent) == (1, 1)


def test_other_content_under_an_acknowledged_name_is_a_violation() -> None:
    e = Expected()
    e.write("/w/f1", A, OK)
    _, violations = verify(e, ContendedLog(), cluster({"/w/f1": B}))
    assert kinds(violations) == [("content", "/w/f1")]
    assert violations[0].expected == [A] and violations[0].found == B
    assert violations[0].history[-1].endswith(f"write {A[:8]}: ok")


def test_a_file_deleted_behind_the_runs_back_is_a_violation() -> None:
    e = Expected()
    e.write("/w/f1", A, OK)
    e.rename("/w/f1", "/w/g1", OK)
    _, violations = verify(e, ContendedLog(), cluster({}))
    assert kinds(violations) == [("missing", "/w/g1")]


def test_a_deleted_name_that_exists_again_is_a_violation() -> None:
    e = Expected()
    e.write("/w/f1", A, OK)
    e.delete("/w/f1", OK)
    _, violations = verify(e, ContendedLog(), cluster({"/w/f1": A}))
    assert kinds(violations) == [("present", "/w/f1")]


def test_a_name_no_operation_created_is_a_violation() -> None:
    _, violations = verify(Expected(), ContendedLog(), cluster({}), ["/w/stray"])
    assert kinds(violations) == [("unexpected", "/w/stray")]


def test_an_unreadable_name_is_a_violation() -> None:
    e = Expected()
    e.write("/w/f1", A, OK)

    def observe(path: str) -> tuple[str, int]:
        raise Unavailable("block has no live replica")

    _, violations = verify(e, ContendedLog(), observe)
    assert kinds(violations) == [("unreadable", "/w/f1")]


def test_unknown_outcomes_allow_both_results() -> None:
    e = Expected()
    e.write("/w/f1", A, OK)
    e.delete("/w/f1", UNKNOWN)
    assert e.get("/w/f1") == {A, ABSENT}
    e.write("/w/f2", A, OK)
    e.rename("/w/f2", "/w/f3", UNKNOWN)
    assert e.get("/w/f2") == {A, ABSENT} and e.get("/w/f3") == {A, ABSENT}
    for found in ({}, {"/w/f1": A}):
        _, violations = verify(e, ContendedLog(), cluster(found | {"/w/f3": A}))
        assert violations == []
    # ... but not a third one
    _, violations = verify(e, ContendedLog(), cluster({"/w/f1": B}))
    assert kinds(violations) == [("content", "/w/f1")]


def test_an_interrupted_write_makes_the_name_uncertain_until_acknowledged_again() -> None:
    e = Expected()
    e.write("/w/f1", A, UNKNOWN)
    checked, violations = verify(e, ContendedLog(), cluster({"/w/f1": B}))
    assert violations == [] and checked.uncertain == 1
    e.write("/w/f1", B, OK)
    assert e.certain("/w/f1") == B


def test_a_refusal_that_no_possible_state_explains_is_a_violation() -> None:
    e = Expected()
    e.write("/w/f1", A, OK)
    e.delete("/w/f1", FAILED, "NotFound")  # the file must exist
    e.write("/w/new", B, FAILED, "AlreadyExists")  # the name must not
    e.write("/w/f2", A, UNKNOWN)
    e.delete("/w/f2", FAILED, "NotFound")  # possible: the write may not have happened
    _, violations = verify(e, ContendedLog(), cluster({"/w/f1": A}))
    assert kinds(violations) == [("impossible", "/w/f1"), ("impossible", "/w/new")]


def test_a_refused_operation_changes_nothing() -> None:
    e = Expected()
    e.write("/w/f1", A, OK)
    e.write("/w/f1", B, FAILED, "LeaseConflict")
    e.rename("/w/f9", "/w/f1", FAILED, "NotFound")
    assert e.get("/w/f1") == {A}


def op(kind: str, path: str, start: float, end: float, outcome: str, **kw: str) -> ContendedOp:
    return ContendedOp(kind, path, start, end, outcome, **kw)  # type: ignore[arg-type]


def test_contended_names_follow_real_time_order_of_acknowledged_operations() -> None:
    log = ContendedLog()
    log.add(op("write", "/x/c0", 0, 1, OK, digest=A))
    log.add(op("write", "/x/c0", 2, 3, OK, digest=B))  # strictly after: only B may remain
    assert log.allowed("/x/c0") == {B}
    log.add(op("delete", "/x/c0", 2.5, 4, OK))  # overlaps the second write: either
    assert log.allowed("/x/c0") == {B, ABSENT}
    _, violations = verify(Expected(), log, cluster({"/x/c0": A}))
    assert kinds(violations) == [("content", "/x/c0")]


def test_a_contended_rename_moves_a_payload_and_never_copies_it() -> None:
    log = ContendedLog()
    log.add(op("write", "/x/c0", 0, 1, OK, digest=A))
    log.add(op("rename", "/x/c0", 2, 3, OK, dst="/x/c1"))
    assert log.allowed("/x/c0") == {ABSENT}
    assert log.allowed("/x/c1") == {A}
    _, violations = verify(Expected(), log, cluster({"/x/c1": A}))
    assert violations == []
    _, violations = verify(Expected(), log, cluster({"/x/c0": A, "/x/c1": A}))
    assert kinds(violations) == [("present", "/x/c0")]
    log.add(op("rename", "/x/c1", 4, 5, UNKNOWN, dst="/x/c0"))
    _, violations = verify(Expected(), log, cluster({"/x/c0": A, "/x/c1": A}))
    assert kinds(violations) == [("duplicate", "/x/c1")]


def test_a_contended_name_with_an_interrupted_write_is_not_checked() -> None:
    log = ContendedLog()
    log.add(op("write", "/x/c0", 0, 1, UNKNOWN, digest=A))
    assert ANY in log.allowed("/x/c0")
    log.add(op("write", "/x/c1", 0, 1, OK, digest=B))
    log.add(op("rename", "/x/c0", 2, 3, OK, dst="/x/c1"))  # may move what the write left
    assert ANY in log.allowed("/x/c1")


def test_names_an_unfinished_operation_may_change_are_not_checked() -> None:
    e = Expected()
    e.write("/w/f1", A, OK)
    checked, violations = verify(e, ContendedLog(), cluster({}), uncertain=["/w/f1"])
    assert violations == [] and checked.uncertain == 1


def test_outcomes_of_errors() -> None:
    assert classify(None) == (OK, "")
    assert classify(NotFound("/f", "file")) == (FAILED, "NotFound")
    assert classify(OutcomeUnknown("timed out")) == (UNKNOWN, "OutcomeUnknown")
    assert classify(SessionExpired("expired")) == (UNKNOWN, "SessionExpired")
    assert classify(ConnectionError()) == (UNKNOWN, "ConnectionError")


class FakeWriter:
    def __init__(self, fail_close: Exception | None) -> None:
        self.fail_close = fail_close
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        if self.fail_close is not None:
            raise self.fail_close

    def abort(self) -> None:
        pass


class FakeFs:
    def __init__(self, fail_open: Exception | None = None, fail_close: Exception | None = None):
        self.fail_open, self.fail_close = fail_open, fail_close

    def open(self, path: str, mode: str, **kw: object) -> FakeWriter:
        if self.fail_open is not None:
            raise self.fail_open
        return FakeWriter(self.fail_close)


def test_a_write_is_refused_only_by_its_create() -> None:
    """A refusal after the Create (a block allocation refused because the file moved to
    another shard mid-write) may have left part of the file: unknown, not refused."""
    assert put_file(FakeFs(), "/f", b"x", overwrite=False)[:2] == (OK, "")
    refused = put_file(FakeFs(fail_open=AlreadyExists("/f", "file")), "/f", b"x", overwrite=False)
    assert refused[:2] == (FAILED, "AlreadyExists")
    taken = put_file(FakeFs(fail_open=LeaseConflict("/f")), "/f", b"x", overwrite=True)
    assert taken[:2] == (FAILED, "LeaseConflict")
    late = put_file(FakeFs(fail_close=LeaseConflict("/f")), "/f", b"x", overwrite=False)
    assert late[:2] == (UNKNOWN, "LeaseConflict")
    lost = put_file(FakeFs(fail_close=Unavailable("replicas")), "/f", b"x", overwrite=False)
    assert lost[:2] == (UNKNOWN, "Unavailable")


def test_an_acknowledged_append_is_checked_and_an_interrupted_one_is_not() -> None:
    e = Expected()
    e.write("/w/f", md5(b"a"), OK)
    e.append("/w/f", md5(b"ab"), OK)
    assert e.certain("/w/f") == md5(b"ab")
    _, violations = verify(e, ContendedLog(), cluster({"/w/f": md5(b"a")}))
    assert kinds(violations) == [("content", "/w/f")]  # the append was lost
    assert violations[0].history[-1].endswith(f"append -> {md5(b'ab')[:8]}: ok")
    e.append("/w/f", md5(b"abc"), FAILED, "LeaseConflict")  # refused: nothing changed
    assert e.certain("/w/f") == md5(b"ab")
    e.append("/w/f", md5(b"abc"), UNKNOWN, "Unavailable")
    assert ANY in e.get("/w/f")
    checked, violations = verify(e, ContendedLog(), cluster({"/w/f": md5(b"abx")}))
    assert violations == [] and checked.uncertain == 1
    e.delete("/w/g", OK)
    e.append("/w/g", md5(b"x"), FAILED, "NotFound")
    assert e.violations == []
    e.write("/w/h", A, OK)
    e.append("/w/h", md5(b"ax"), FAILED, "NotFound")  # it must exist
    assert kinds(e.violations) == [("impossible", "/w/h")]


def test_an_append_is_refused_only_by_its_open() -> None:
    assert append_file(FakeFs(), "/f", b"x")[:2] == (OK, "")
    taken = append_file(FakeFs(fail_open=LeaseConflict("/f")), "/f", b"x")
    assert taken[:2] == (FAILED, "LeaseConflict")
    late = append_file(FakeFs(fail_close=Unavailable("replicas")), "/f", b"x")
    assert late[:2] == (UNKNOWN, "Unavailable")


def test_a_truncate_is_all_or_nothing() -> None:
    e = Expected()
    e.write("/w/f", md5(b"abcdef"), OK)
    e.truncate("/w/f", md5(b"abc"), OK)
    assert e.certain("/w/f") == md5(b"abc")
    e.truncate("/w/f", md5(b"a"), UNKNOWN, "Unavailable")
    assert e.get("/w/f") == {md5(b"abc"), md5(b"a")}  # the old or the new, nothing else
    _, violations = verify(e, ContendedLog(), cluster({"/w/f": md5(b"ab")}))
    assert kinds(violations) == [("content", "/w/f")]
    _, violations = verify(e, ContendedLog(), cluster({"/w/f": md5(b"abc")}))
    assert violations == []
    e.truncate("/w/f", md5(b""), FAILED, "LeaseConflict")
    assert e.get("/w/f") == {md5(b"abc"), md5(b"a")}
