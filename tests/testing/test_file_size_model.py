"""``FileSizeModel``: the file operations (append, truncate, concat, the trash) as a model the
linearizability checker steps, and histories it must accept or refuse."""

from __future__ import annotations

from typing import Any

from keelfs.testing.linearizability import (
    BUSY,
    TRASHED_ELSEWHERE,
    UNKNOWN,
    FileSizeModel,
    Operation,
    check,
)


def _run(model: FileSizeModel, ops: list[tuple[Any, Any]]) -> Any:
    state = model.init()
    for input, output in ops:
        ok, state = model.step(state, input, output)
        assert ok, (input, output, model.describe_state(state))
    return state


def test_sizes_follow_the_operations() -> None:
    m = FileSizeModel([("a", 2)])
    state = _run(
        m,
        [
            (("append", "a", 3), "ok"),
            (("stat", "a"), 5),
            (("truncate", "a", 9), "too_long"),
            (("truncate", "a", 1), "ok"),
            (("create", "b", 4), "ok"),
            (("create", "b", 1), "exists"),
            (("concat", "a", ("b",)), "ok"),
            (("stat", "a"), 5),
            (("stat", "b"), None),
            (("concat", "a", ("b",)), "not_found"),
            (("append", "b", 1), "not_found"),
        ],
    )
    assert m.describe_state(state) == "{live:a=5}"


def test_the_trash_keeps_one_copy_per_name() -> None:
    m = FileSizeModel([("a", 2)])
    _run(
        m,
        [
            (("trash", "a"), "ok"),
            (("stat", "a"), None),
            (("stat_trash", "a"), 2),
            (("create", "a", 7), "ok"),
            (("restore", "a"), "exists"),
            (("trash", "a"), TRASHED_ELSEWHERE),  # the trash's name is taken
            (("stat_trash", "a"), 2),
            (("restore", "a"), "ok"),
            (("stat", "a"), 2),
            (("restore", "a"), "not_found"),
            (("trash", "b"), "not_found"),
        ],
    )
    state = m.init()
    assert m.step(state, ("trash", "b"), TRASHED_ELSEWHERE)[0] is False


def test_busy_needs_a_file_and_changes_nothing() -> None:
    m = FileSizeModel([("a", 2)])
    state = m.init()
    assert m.step(state, ("append", "a", 1), BUSY) == (True, state)
    assert m.step(state, ("append", "b", 1), BUSY)[0] is False
    assert m.step(state, ("concat", "b", ("a",)), BUSY)[0] is True
    assert m.step(state, ("truncate", "a", 0), UNKNOWN)[1] != state


def _op(client: int, call: float, ret: float, input: Any, output: Any) -> Operation:
    return Operation(client, call, ret, input, output)


def test_a_lost_append_is_caught() -> None:
    """Two appends acknowledged one after the other, then a stat missing one of them."""
    history = [
        _op(0, 0, 1, ("create", "a", 1), "ok"),
        _op(0, 2, 3, ("append", "a", 2), "ok"),
        _op(1, 4, 5, ("append", "a", 2), "ok"),
        _op(2, 6, 7, ("stat", "a"), 3),
    ]
    assert not check(FileSizeModel(), history).ok
    history[-1] = _op(2, 6, 7, ("stat", "a"), 5)
    assert check(FileSizeModel(), history).ok


def test_a_concat_seen_half_done_is_caught() -> None:
    """The target grown while its source still shows: both visible at once."""
    history = [
        _op(0, 0, 10, ("concat", "a", ("b",)), "ok"),
        _op(1, 1, 2, ("stat", "a"), 3),
        _op(1, 3, 4, ("stat", "b"), 2),
    ]
    assert not check(FileSizeModel([("a", 1), ("b", 2)]), history).ok
    history[-1] = _op(1, 3, 4, ("stat", "b"), None)
    assert check(FileSizeModel([("a", 1), ("b", 2)]), history).ok
