"""Bad input: malformed, misaddressed, non-member and stale messages (errors.py and
docs/architecture.md: "malformed, misaddressed or non-member messages are dropped and counted
(Raft.ignored); a broken internal invariant raises InvariantViolation at once"), and the
stale-term rules of Raft paper §5.1 ("If a server receives a request with a stale term number,
it rejects the request") with etcd-io/raft's responses for CheckQuorum / Pre-Vote."""

from __future__ import annotations

import struct

import pytest
from core_helpers import ELECTION, MT, Network, config, fingerprint, storage_with

from keelfs.raft.core import Raft, StateType
from keelfs.raft.errors import InvariantViolation
from keelfs.raft.messages import (
    MAX_WIRE_INT,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    SnapshotMeta,
)
from keelfs.raft.rawnode import RawNode
from keelfs.raft.storage import MemoryStorage

TERM = 3


def _follower(**cfg: object) -> Raft:
    """Node 1: log 1/1 (snapshot), 2/2, 3/2, 4/3; commit 3; term 3; no leader known."""
    return Raft(config(1, **cfg), storage_with(terms=[2, 2, TERM], term=TERM, commit=3))


def _cc_entry(index: int, data: bytes) -> Entry:
    return Entry(TERM, index, data, EntryType.CONF_CHANGE)


def _app(**kw: object) -> Message:
    """A well-formed append from leader 2 (matching at 4/3, one new entry, commit 5)."""
    base: dict[str, object] = dict(
        type=MT.APP,
        to=1,
        frm=2,
        term=TERM,
        log_term=TERM,
        index=4,
        entries=(Entry(TERM, 5, b"x"),),
        commit=5,
    )
    base.update(kw)
    return Message(**base)  # type: ignore[arg-type]


_SNAP_META = SnapshotMeta(9, TERM)

MALFORMED_FOR_FOLLOWER = {
    "from-node-0": _app(frm=0),
    "from-itself": _app(frm=1),
    "to-another-node": _app(to=5),
    "term-0": _app(term=0),
    "negative-index": _app(index=-1, entries=()),
    "negative-commit": _app(commit=-1),
    "negative-log-term": _app(log_term=-1),
    "heartbeat-negative-commit": Message(MT.HEARTBEAT, 1, 2, TERM, commit=-1),
    "non-contiguous-entries": _app(entries=(Entry(TERM, 5), Entry(TERM, 7))),
    "entries-not-after-index": _app(entries=(Entry(TERM, 6),)),
    "term-decreasing-entries": _app(index=3, log_term=2, entries=(Entry(3, 4), Entry(2, 5))),
    "entry-term-below-log-term": _app(entries=(Entry(2, 5),)),
    "entry-term-above-message-term": _app(entries=(Entry(TERM + 1, 5),)),
    "log-term-above-message-term": _app(log_term=TERM + 1),
    "conf-change-too-short": _app(entries=(_cc_entry(5, b"\x01\x00"),)),
    "conf-change-unknown-kind": _app(entries=(_cc_entry(5, struct.pack(">BQ", 9, 4)),)),
    "snap-without-snapshot": Message(MT.SNAP, 1, 2, TERM, snap_data=b"img", snap_done=True),
    "snap-at-index-0": Message(MT.SNAP, 1, 2, TERM, snapshot=SnapshotMeta(0, TERM)),
    "snap-negative-offset": Message(MT.SNAP, 1, 2, TERM, snapshot=_SNAP_META, snap_offset=-1),
    "local-hup-from-peer": Message(MT.HUP, 1, 2),
    "local-beat-from-peer": Message(MT.BEAT, 1, 2),
    "local-prop-from-peer": Message(MT.PROP, 1, 2, entries=(Entry(0, 0, b"p"),)),
    "prop-with-term-from-peer": Message(MT.PROP, 1, 2, TERM, entries=(Entry(0, 0, b"p"),)),
    "hup-with-term-from-peer": Message(MT.HUP, 1, 2, TERM + 1),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_FOR_FOLLOWER))
def test_core_malformed_message_ignored_and_counted(name: str) -> None:
    """A message no correct peer would send changes nothing — hard state, log, commit, role,
    timers, outputs — and is counted in ``Raft.ignored``."""
    r = _follower()
    before = fingerprint(r)
    r.step(MALFORMED_FOR_FOLLOWER[name])
    assert fingerprint(r) == before
    assert r.ignored == 1


def test_core_well_formed_append_accepted_by_the_same_follower() -> None:
    """Control for the cases above: the unaltered append is accepted."""
    r = _follower()
    r.step(_app())
    assert r.ignored == 0
    assert r.log.last_index() == 5 and r.log.committed == 5
    assert [(m.type, m.index, m.reject) for m in r.msgs] == [(MT.APP_RESP, 5, False)]


def test_core_rawnode_refuses_local_message_types_from_step() -> None:
    """RawNode.step is for peers' messages; local kinds go through the dedicated methods."""
    st = storage_with(terms=[2, 2, TERM], term=TERM, commit=3)
    node = RawNode(config(1), st)
    before = fingerprint(node.raft)
    for t in (MT.HUP, MT.BEAT, MT.PROP):
        node.step(Message(t, 1, 1))
    assert fingerprint(node.raft) == before
    assert node.raft.ignored == 3


def _leader() -> Network:
    net = Network()
    net.elect(1)
    net.propose(1, b"a")
    net.deliver()
    return net


def _leader_cases(term: int, last: int) -> dict[str, Message]:
    return {
        "app-resp-beyond-last-index": Message(MT.APP_RESP, 1, 2, term, index=last + 5),
        "app-resp-from-non-member": Message(MT.APP_RESP, 1, 9, term, index=last),
        "app-resp-reject-from-non-member": Message(
            MT.APP_RESP, 1, 9, term, index=last, reject=True, reject_hint=0
        ),
        "heartbeat-resp-from-non-member": Message(MT.HEARTBEAT_RESP, 1, 9, term),
        "snap-resp-from-non-member": Message(
            MT.SNAP_RESP, 1, 9, term, snapshot=SnapshotMeta(1, 1), snap_offset=10
        ),
        "read-index-from-non-member": Message(MT.READ_INDEX, 1, 9, term, context=b"r"),
        "app-resp-from-node-0": Message(MT.APP_RESP, 1, 0, term, index=last),
    }


@pytest.mark.parametrize("name", sorted(_leader_cases(1, 1)))
def test_core_leader_ignores_bogus_responses(name: str) -> None:
    """A leader keeps progress only for members; responses from anybody else, and an
    acknowledgement of entries it never had, change nothing and are counted."""
    net = _leader()
    r1 = net.raft(1)
    m = _leader_cases(r1.term, r1.log.last_index())[name]
    before = fingerprint(r1)
    r1.step(m)
    assert fingerprint(r1) == before
    assert r1.ignored == 1


def test_core_heartbeat_ack_of_unsent_read_round_is_ignored() -> None:
    """Dissertation §6.4: a read is confirmed only by acknowledgements of a heartbeat round the
    leader started after the read. An ack echoing a round number the leader never used proves
    nothing (compare APP_RESP acknowledging beyond the last index, which is ignored)."""
    net = _leader()
    r1 = net.raft(1)
    net.nodes[1].read_index(b"A")
    sent = net.take()  # the read's heartbeats are lost
    seq = max(m.read_seq for m in sent if m.type is MT.HEARTBEAT)
    before = fingerprint(r1)
    r1.step(Message(MT.HEARTBEAT_RESP, 1, 2, r1.term, read_seq=seq + 5))
    assert r1.read_states == []
    assert fingerprint(r1) == before
    assert r1.ignored == 1


_CONF = ConfState(frozenset({1, 2, 3}))

# Messages no correct peer sends (each once let through by Raft._valid, now ignored).
ACCEPTED_MALFORMED = [
    pytest.param(
        _app(entries=(_cc_entry(5, ConfChange(ConfChangeType.ADD_LEARNER, 0).encode()),)),
        id="conf-change-add-learner-node-0",
    ),
    pytest.param(
        _app(entries=(_cc_entry(5, ConfChange(ConfChangeType.PROMOTE, 0).encode()),)),
        id="conf-change-promote-node-0",
    ),
    pytest.param(
        Message(MT.VOTE, 1, 2, TERM + 1, log_term=TERM + 5, index=1),
        id="vote-log-term-above-message-term",
    ),
    pytest.param(
        Message(MT.SNAP, 1, 2, TERM, snapshot=SnapshotMeta(9, TERM + 2, _CONF), snap_done=True),
        id="snap-term-above-message-term",
    ),
    pytest.param(
        Message(MT.READ_INDEX_RESP, 1, 9, TERM, index=1, context=b"r"),
        id="read-index-resp-from-non-member",
    ),
]


@pytest.mark.parametrize("msg", ACCEPTED_MALFORMED)
def test_core_malformed_message_ignored_and_counted_more(msg: Message) -> None:
    """More messages no correct peer sends (messages.py: node ids are positive; a node's log
    never holds a term above its current term, so neither can a candidate's last log term or a
    leader's snapshot; only the leader answers ReadIndex requests): like the cases above they
    must change nothing and be counted."""
    r = _follower()
    before = fingerprint(r)
    r.step(msg)
    assert fingerprint(r) == before
    assert r.ignored == 1


@pytest.mark.parametrize("check_quorum", [True, False])
@pytest.mark.parametrize("msg_type", [MT.APP, MT.HEARTBEAT])
def test_core_stale_append_or_heartbeat_answered_with_current_term(
    msg_type: MT, check_quorum: bool
) -> None:
    """§5.1: a request with a stale term is rejected and the reply carries the current term,
    so that a deposed leader learns it. With CheckQuorum or Pre-Vote (etcd-io/raft) the reply
    is an AppendEntries response at our term — otherwise the message is just dropped. Either
    way our state does not change."""
    r = _follower(check_quorum=check_quorum, pre_vote=check_quorum)
    before = fingerprint(r)
    r.step(Message(msg_type, 1, 2, TERM - 1, log_term=1, index=1, commit=1))
    out = r.msgs[:]
    r.msgs.clear()
    assert fingerprint(r) == before
    if check_quorum:
        assert [(m.type, m.to, m.term, m.reject) for m in out] == [(MT.APP_RESP, 2, TERM, False)]
    else:
        assert out == []


def test_core_stale_pre_vote_rejected_with_current_term() -> None:
    """§9.6 with §5.1: a pre-vote for a term not above ours is refused, with our term."""
    r = _follower()
    before = fingerprint(r)
    r.step(Message(MT.PRE_VOTE, 1, 2, TERM - 1, log_term=TERM - 1, index=100))
    out = r.msgs[:]
    r.msgs.clear()
    assert fingerprint(r) == before
    assert [(m.type, m.to, m.term, m.reject) for m in out] == [(MT.PRE_VOTE_RESP, 2, TERM, True)]


@pytest.mark.parametrize(
    "msg",
    [
        Message(MT.VOTE, 1, 2, TERM - 1, log_term=TERM, index=100),
        Message(MT.VOTE_RESP, 1, 2, TERM - 1),
        Message(MT.APP_RESP, 1, 2, TERM - 1, index=4),
        Message(MT.SNAP, 1, 2, TERM - 1, snapshot=SnapshotMeta(9, 1), snap_done=True),
        Message(MT.TIMEOUT_NOW, 1, 2, TERM - 1),
        Message(MT.READ_INDEX_RESP, 1, 2, TERM - 1, index=4, context=b"r"),
    ],
    ids=lambda m: m.type.name,
)
def test_core_other_stale_messages_dropped_silently(msg: Message) -> None:
    """§5.1: other messages with a stale term are dropped: no reply, no change."""
    r = _follower()
    before = fingerprint(r)
    r.step(msg)
    assert fingerprint(r) == before


def test_core_deposed_leader_steps_down_on_learning_newer_term() -> None:
    """§5.1: "If a candidate or leader discovers that its term is out of date, it immediately
    reverts to follower state" — here through the reply to its stale heartbeat."""
    net = Network()
    net.elect(1)
    net.isolate(1)
    for _ in range(4 * ELECTION):
        net.tick([2, 3])
        new = [i for i in (2, 3) if net.raft(i).state is StateType.LEADER]
        if new:
            break
    assert len(new) == 1
    net.heal()
    r1, rn = net.raft(1), net.raft(new[0])
    assert r1.state is StateType.LEADER and r1.term < rn.term
    net.tick([1])
    assert r1.state is StateType.FOLLOWER
    assert r1.term == rn.term
    assert net.leader() == new[0]


def test_core_invariant_violation_commit_beyond_last_index() -> None:
    """log.py: committed never passes last_index(); trying raises InvariantViolation and leaves
    the commit index alone."""
    r = _follower()
    last = r.log.last_index()
    with pytest.raises(InvariantViolation):
        r.log.commit_to(last + 1)
    assert r.log.committed == 3


def test_core_invariant_violation_append_below_commit() -> None:
    """log.py: an append never truncates a committed entry."""
    r = _follower()
    with pytest.raises(InvariantViolation):
        r.log.append([Entry(5, 3, b"overwrite committed")])
    assert r.log.last_index() == 4 and r.log.term(3) == 2


def test_core_invariant_violation_applied_beyond_commit() -> None:
    r = _follower()
    with pytest.raises(InvariantViolation):
        r.log.applied_to(4)


def test_core_invariant_violation_hard_state_commit_outside_log() -> None:
    """A persisted commit index beyond the persisted log means storage lost entries."""
    st = storage_with(terms=[2], term=2, commit=2)
    st.set_hard_state(HardState(2, 0, 5))
    with pytest.raises(InvariantViolation):
        Raft(config(1), st)


def test_core_invariant_violation_progress_beyond_log() -> None:
    """A follower's progress pointing past the leader's log is a leader bug, not bad input."""
    net = _leader()
    r1 = net.raft(1)
    r1.prs[2].next = r1.log.last_index() + 5
    with pytest.raises(InvariantViolation):
        net.propose(1, b"b")


def test_core_invariant_violation_ready_protocol() -> None:
    """rawnode.py: ready() twice without advance(), or advance() with another Ready, is a
    caller bug."""
    node = RawNode(config(1), storage_with(terms=[2], term=2))
    node.campaign()
    rd = node.ready()
    with pytest.raises(InvariantViolation):
        node.ready()
    node.advance(rd)
    with pytest.raises(InvariantViolation):
        node.advance(rd)


# ---------------------------------------------------------------------------- issue [9]
HUGE = 2**64 - 1
FIRST_OUT_OF_RANGE = MAX_WIRE_INT + 1

OUT_OF_RANGE = {
    "heartbeat-term-2^64-1-from-stranger": Message(MT.HEARTBEAT, 1, 99, HUGE, commit=100),
    "heartbeat-term-2^63-from-member": Message(MT.HEARTBEAT, 1, 2, FIRST_OUT_OF_RANGE),
    "vote-term-2^63": Message(MT.VOTE, 1, 2, FIRST_OUT_OF_RANGE, log_term=TERM, index=9),
    "append-index-2^63": _app(index=FIRST_OUT_OF_RANGE, entries=()),
    "append-commit-2^63": _app(commit=FIRST_OUT_OF_RANGE),
    "append-entry-index-2^63": _app(
        index=MAX_WIRE_INT, log_term=TERM, entries=(Entry(TERM, FIRST_OUT_OF_RANGE),)
    ),
    "heartbeat-commit-2^63": Message(MT.HEARTBEAT, 1, 2, TERM, commit=FIRST_OUT_OF_RANGE),
    "heartbeat-carrying-entries": Message(MT.HEARTBEAT, 1, 2, TERM, entries=(Entry(HUGE, 5),)),
    "from-node-2^63": _app(frm=FIRST_OUT_OF_RANGE),
    "negative-reject-hint": Message(MT.APP_RESP, 1, 2, TERM, reject=True, reject_hint=-1),
    "read-seq-2^63": Message(MT.HEARTBEAT, 1, 2, TERM, read_seq=FIRST_OUT_OF_RANGE),
    "snap-offset-2^63": Message(
        MT.SNAP, 1, 2, TERM, snapshot=_SNAP_META, snap_offset=FIRST_OUT_OF_RANGE
    ),
    "snap-index-2^63": Message(MT.SNAP, 1, 2, TERM, snapshot=SnapshotMeta(FIRST_OUT_OF_RANGE, 1)),
    "snap-conf-node-2^63": Message(
        MT.SNAP,
        1,
        2,
        TERM,
        snapshot=SnapshotMeta(9, TERM, ConfState(frozenset({2, FIRST_OUT_OF_RANGE}))),
        snap_done=True,
    ),
    "conf-change-node-2^63": _app(
        entries=(_cc_entry(5, struct.pack(">BQ", ConfChangeType.ADD_LEARNER, 2**63)),)
    ),
}


@pytest.mark.parametrize("name", sorted(OUT_OF_RANGE))
def test_core_drops_integers_out_of_range(name: str) -> None:
    """messages.MAX_WIRE_INT: a term (or index, commit, offset, node id) of 2**63 or more is
    dropped from anybody. The reported attack: a heartbeat with term 2**64-1 was adopted and
    persisted; the node could then never campaign (term + 1) nor restart (storage)."""
    r = _follower()
    before = fingerprint(r)
    r.step(OUT_OF_RANGE[name])
    assert fingerprint(r) == before
    assert r.ignored == 1


def _led_follower() -> Raft:
    """Node 1 as ``_follower``, but it has heard from leader 2 in term 3."""
    r = _follower()
    r.step(Message(MT.HEARTBEAT, 1, 2, TERM, commit=3))
    r.msgs.clear()
    assert r.lead == 2 and r.ignored == 0
    return r


IMPOSTORS = {
    "append": _app(frm=3),
    "append-from-stranger": _app(frm=99),
    "heartbeat": Message(MT.HEARTBEAT, 1, 3, TERM, commit=4),
    "snapshot": Message(
        MT.SNAP, 1, 3, TERM, snapshot=SnapshotMeta(9, TERM, _CONF), snap_data=b"x", snap_done=True
    ),
    "timeout-now": Message(MT.TIMEOUT_NOW, 1, 3, TERM),
    "read-index-resp": Message(MT.READ_INDEX_RESP, 1, 3, TERM, index=4, context=b"r"),
}


@pytest.mark.parametrize("name", sorted(IMPOSTORS))
def test_core_drops_leader_messages_from_anybody_but_the_terms_leader(name: str) -> None:
    """There is one leader per term (§5.2): at the current term, what only a leader sends is
    taken only from the leader we know. A forged append in the name of member 3 would
    otherwise commit an entry at 5 that leader 2's own entry 3/5 never replaces (same index
    and term): the logs would diverge silently."""
    r = _led_follower()
    before = fingerprint(r)
    r.step(IMPOSTORS[name])
    assert fingerprint(r) == before
    assert r.ignored == 1


def test_core_leader_drops_append_from_another_node_in_its_term() -> None:
    net = _leader()
    r1 = net.raft(1)
    last = r1.log.last_index()
    m = Message(MT.APP, 1, 2, r1.term, log_term=r1.term, index=last, commit=last)
    before = fingerprint(r1)
    r1.step(m)
    assert fingerprint(r1) == before
    assert r1.ignored == 1


STRANGERS = {
    "vote-higher-term": Message(MT.VOTE, 1, 99, TERM + 2, log_term=TERM, index=9),
    "pre-vote-higher-term": Message(MT.PRE_VOTE, 1, 99, TERM + 2, log_term=TERM, index=9),
    "vote-resp-higher-term": Message(MT.VOTE_RESP, 1, 99, TERM + 2),
    "pre-vote-resp": Message(MT.PRE_VOTE_RESP, 1, 99, TERM + 1),
    "app-resp-higher-term": Message(MT.APP_RESP, 1, 99, TERM + 2, index=1),
    "timeout-now": Message(MT.TIMEOUT_NOW, 1, 99, TERM + 1),
    "transfer-leader": Message(MT.TRANSFER_LEADER, 1, 99, TERM, index=2),
}


@pytest.mark.parametrize("name", sorted(STRANGERS))
def test_core_drops_votes_responses_and_requests_from_non_members(name: str) -> None:
    """Node 99 is in no configuration: its votes, responses and requests are dropped whatever
    their term (a higher one would otherwise depose our leader or bump our term)."""
    r = _follower()
    before = fingerprint(r)
    r.step(STRANGERS[name])
    assert fingerprint(r) == before
    assert r.ignored == 1


def test_core_node_without_configuration_takes_only_a_leaders_traffic() -> None:
    """A joiner (empty storage) knows no configuration, so it cannot tell members: it takes
    what a leader sends (how it learns the configuration) and drops the rest."""
    r = Raft(config(4), MemoryStorage())
    before = fingerprint(r)
    r.step(Message(MT.VOTE, 4, 1, 2, log_term=2, index=9))
    r.step(Message(MT.APP_RESP, 4, 1, 2, index=1))
    assert fingerprint(r) == before and r.ignored == 2
    r.step(Message(MT.HEARTBEAT, 4, 1, 2, commit=0))
    assert r.ignored == 2 and r.term == 2 and r.lead == 1


def test_core_drops_messages_from_a_removed_member() -> None:
    """A node whose removal is in our log is no member: even a leader's kind of message from it
    (at a higher term, as a removed node that missed its removal sends) is dropped."""
    net = _leader()
    net.nodes[1].propose_conf_change(ConfChange(ConfChangeType.REMOVE, 3))
    net.deliver(lambda m: m.to != 3)
    r2 = net.raft(2)
    assert 3 not in r2.conf.voters and r2.log.committed == r2.log.last_index()
    before = fingerprint(r2)
    r2.step(Message(MT.HEARTBEAT, 2, 3, r2.term + 3, commit=1))
    r2.step(Message(MT.PRE_VOTE, 2, 3, r2.term + 3, log_term=r2.term, index=99))
    assert fingerprint(r2) == before
    assert r2.ignored == 2


def test_core_leader_removing_itself_is_followed_until_the_removal_commits() -> None:
    """A follower's latest configuration drops the leader as soon as the removal entry is in
    its log, but the leader stays a member of the committed configuration until the entry
    commits, so its appends (which commit the removal) are still taken."""
    net = _leader()
    net.nodes[1].propose_conf_change(ConfChange(ConfChangeType.REMOVE, 1))
    net.deliver()
    for i in (2, 3):
        r = net.raft(i)
        assert 1 not in r.conf.voters
        assert r.log.committed == r.log.last_index()
    assert net.raft(1).state is StateType.FOLLOWER
    net.tick([2, 3], n=3 * ELECTION)
    assert net.leader() in (2, 3)
