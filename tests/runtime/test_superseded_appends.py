"""``without_superseded_appends``: the empty append that only carried a commit index is not
sent when the same round sends that peer an append from the same point with entries."""

from __future__ import annotations

from keelfs.raft.messages import Entry, Message, MessageType
from keelfs.runtime.host import without_superseded_appends

APP = MessageType.APP
ENTRY = Entry(term=2, index=11, data=b"x")


def app(
    to: int, *, index: int = 10, commit: int = 9, term: int = 2, entries: bool = False
) -> Message:
    return Message(
        APP,
        to,
        1,
        term,
        log_term=2,
        index=index,
        commit=commit,
        entries=(ENTRY,) if entries else (),
    )


def test_an_empty_append_followed_by_one_from_the_same_point_is_dropped() -> None:
    commit_only, with_entries = app(2, commit=9), app(2, commit=9, entries=True)
    beat = Message(MessageType.HEARTBEAT, 3, 1, 2)
    assert without_superseded_appends([commit_only, beat, with_entries]) == [beat, with_entries]
    # one per peer: each peer's own later append decides
    msgs = [app(2), app(3), app(2, entries=True), app(3, entries=True)]
    assert without_superseded_appends(msgs) == msgs[2:]


def test_an_empty_append_that_says_more_or_from_elsewhere_is_kept() -> None:
    cases = [
        [app(2, commit=10), app(2, commit=9, entries=True)],  # a higher commit than the later
        [app(2, index=9), app(2, index=10, entries=True)],  # another point in the log
        [app(2, term=1), app(2, term=2, entries=True)],  # another term
        [app(2), app(3, entries=True)],  # another peer
        [app(2, entries=True), app(2, index=11)],  # the later one is the empty one
        [app(2)],
    ]
    for msgs in cases:
        assert without_superseded_appends(msgs) == msgs, msgs
