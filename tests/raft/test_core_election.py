"""Leader election: Raft paper §5.2 and §5.4.1, dissertation §4.2.3, §6.2 and §9.6.

In the style of etcd-io/raft's raft_paper_test.go: each test names the rule it checks.
"""

from __future__ import annotations

import random

import pytest
from core_helpers import ELECTION, MT, Network, conf, config, fingerprint, storage_with

from keelfs.raft.core import Raft, StateType
from keelfs.raft.messages import Entry, EntryType, HardState, Message
from keelfs.raft.storage import MemoryStorage


def _election_gaps(seed: int, rounds: int = 40) -> list[int]:
    """Ticks between consecutive campaigns of a lone node (pre-vote off, nobody answers).

    Every campaign bumps the term, so the gaps are the randomized election timeouts drawn one
    after the other.
    """
    r = Raft(config(1, seed, pre_vote=False), MemoryStorage(conf([1, 2, 3])))
    gaps: list[int] = []
    ticks, term = 0, r.term
    while len(gaps) < rounds:
        r.tick()
        r.msgs.clear()
        ticks += 1
        if r.term != term:
            gaps.append(ticks)
            ticks, term = 0, r.term
    return gaps


def test_core_election_timeout_is_randomized_within_range() -> None:
    """§5.2: "election timeouts are chosen randomly from a fixed interval"; here
    [election_tick, 2 * election_tick)."""
    gaps = _election_gaps(seed=3, rounds=200)
    assert all(ELECTION <= g < 2 * ELECTION for g in gaps), gaps
    assert len(set(gaps)) >= ELECTION // 2, "timeouts are not spread over the interval"


def test_core_election_timeout_comes_from_injected_rng() -> None:
    """All randomness comes from Config.rng: the same seed replays the same timeouts (whatever
    the global ``random`` state), different seeds give different ones."""
    saved = random.getstate()
    try:
        random.seed(1)
        a = _election_gaps(seed=11)
        random.seed(2)
        b = _election_gaps(seed=11)
    finally:
        random.setstate(saved)
    c = _election_gaps(seed=12)
    assert a == b
    assert a != c


@pytest.mark.parametrize("pre_vote", [False, True])
def test_core_follower_campaigns_after_election_timeout(pre_vote: bool) -> None:
    """§5.2: "If a follower receives no communication over a period of time called the election
    timeout, then it ... begins an election": it increments its term, votes for itself and
    sends RequestVote to every other server. With pre-vote (§9.6) it first asks for pre-votes
    for term+1 without changing its own term or vote."""
    r = Raft(config(1, pre_vote=pre_vote), MemoryStorage(conf([1, 2, 3])))
    timeout = r.randomized_election_timeout
    assert ELECTION <= timeout < 2 * ELECTION
    for _ in range(timeout - 1):
        r.tick()
    assert r.state is StateType.FOLLOWER
    assert r.msgs == []
    r.tick()
    sent = sorted((m.to, m.type, m.term, m.log_term, m.index) for m in r.msgs)
    if pre_vote:
        assert r.state is StateType.PRE_CANDIDATE
        assert r.hard_state() == HardState(1, 0, 1)
        assert sent == [(2, MT.PRE_VOTE, 2, 1, 1), (3, MT.PRE_VOTE, 2, 1, 1)]
    else:
        assert r.state is StateType.CANDIDATE
        assert r.hard_state() == HardState(2, 1, 1)
        assert sent == [(2, MT.VOTE, 2, 1, 1), (3, MT.VOTE, 2, 1, 1)]


def test_core_candidate_becomes_leader_with_majority_and_follower_on_append() -> None:
    """§5.2: a candidate wins once it has votes from a majority; a candidate that receives
    AppendEntries from a leader of its own term returns to follower state."""
    r = Raft(config(1, pre_vote=False), MemoryStorage(conf([1, 2, 3, 4, 5])))
    r.step(Message(MT.HUP, 1, 1))
    assert r.state is StateType.CANDIDATE and r.term == 2
    r.step(Message(MT.VOTE_RESP, 1, 2, 2))
    assert r.state is StateType.CANDIDATE  # 2 of 5
    r.step(Message(MT.VOTE_RESP, 1, 3, 2))
    assert r.state is StateType.LEADER and r.lead == 1

    c = Raft(config(1, pre_vote=False), MemoryStorage(conf([1, 2, 3])))
    c.step(Message(MT.HUP, 1, 1))
    assert c.state is StateType.CANDIDATE
    c.step(Message(MT.APP, 1, 2, 2, log_term=1, index=1))
    assert c.state is StateType.FOLLOWER and c.lead == 2 and c.term == 2


def test_core_candidate_loses_when_majority_rejects() -> None:
    """§5.2: a candidate that cannot get a majority does not become leader; once a majority has
    refused, it stops being a candidate (etcd: returns to follower at its term)."""
    r = Raft(config(1, pre_vote=False), MemoryStorage(conf([1, 2, 3])))
    r.step(Message(MT.HUP, 1, 1))
    r.step(Message(MT.VOTE_RESP, 1, 2, 2, reject=True))
    assert r.state is StateType.CANDIDATE
    r.step(Message(MT.VOTE_RESP, 1, 3, 2, reject=True))
    assert r.state is StateType.FOLLOWER and r.term == 2 and r.vote == 1


@pytest.mark.parametrize(
    ("cand_last_term", "cand_last_index", "granted"),
    [
        (1, 9, False),  # older last term loses even with a longer log
        (2, 2, False),  # same last term, shorter log
        (2, 3, True),  # same last term, same length
        (2, 7, True),  # same last term, longer log
        (3, 2, True),  # newer last term wins even with a shorter log
    ],
)
def test_core_vote_refused_to_candidate_with_stale_log(
    cand_last_term: int, cand_last_index: int, granted: bool
) -> None:
    """§5.4.1: "the voter denies its vote if its own log is more up-to-date than that of the
    candidate": compare last terms, then lengths."""
    st = storage_with(terms=[2, 2], term=2)  # log 1/1, 2/2, 2/3
    r = Raft(config(1), st)
    r.step(Message(MT.VOTE, 1, 2, 4, log_term=cand_last_term, index=cand_last_index))
    assert [(m.type, m.to, m.reject) for m in r.msgs] == [(MT.VOTE_RESP, 2, not granted)]
    assert r.msgs[0].term == 4
    assert r.term == 4  # a higher term is adopted either way
    assert r.vote == (2 if granted else 0)


def test_core_one_vote_per_term_first_come_first_served() -> None:
    """§5.2: "Each server will vote for at most one candidate in a given term, on a
    first-come-first-served basis" — and the vote survives a restart (Figure 2: votedFor is
    persistent state)."""
    st = MemoryStorage(conf([1, 2, 3]))
    r = Raft(config(1), st)
    r.step(Message(MT.VOTE, 1, 2, 2, log_term=1, index=1))
    assert [(m.to, m.reject) for m in r.msgs] == [(2, False)]
    r.msgs.clear()
    r.step(Message(MT.VOTE, 1, 3, 2, log_term=1, index=1))
    assert [(m.to, m.reject) for m in r.msgs] == [(3, True)]
    r.msgs.clear()
    r.step(Message(MT.VOTE, 1, 2, 2, log_term=1, index=1))  # a retry by the same candidate
    assert [(m.to, m.reject) for m in r.msgs] == [(2, False)]
    assert r.hard_state() == HardState(2, 2, 1)

    st.set_hard_state(r.hard_state())
    restarted = Raft(config(1, seed=99), st)
    restarted.step(Message(MT.VOTE, 1, 3, 2, log_term=1, index=1))
    assert [(m.to, m.reject) for m in restarted.msgs] == [(3, True)]
    assert restarted.vote == 2


@pytest.mark.parametrize("pre_vote", [True, False])
def test_core_pre_vote_does_not_bump_terms(pre_vote: bool) -> None:
    """Dissertation §9.6: with Pre-Vote, a server rejoining from a partition with a stale log
    first learns it cannot win, so neither it nor the voters increment their terms and the
    leader is not disrupted. (Without pre-vote — the control case — the terms do go up.)"""
    net = Network(check_quorum=False, pre_vote=pre_vote)
    net.elect(1)
    net.isolate(3)
    net.propose(1, b"while 3 was away")
    net.deliver()
    terms = {i: net.raft(i).term for i in (1, 2, 3)}
    net.heal()
    r3 = net.raft(3)
    for _ in range(2 * ELECTION):
        net.tick([3])
        if r3.state is not StateType.FOLLOWER or r3.term != terms[3]:
            break
    if pre_vote:
        assert any(m.type is MT.PRE_VOTE and m.frm == 3 for m in net.sent)
        assert not any(m.type is MT.VOTE and m.frm == 3 for m in net.sent)
        assert {i: net.raft(i).term for i in (1, 2, 3)} == terms
        assert r3.state is StateType.FOLLOWER
        assert net.raft(1).state is StateType.LEADER
        assert net.raft(2).vote == 1
    else:
        assert net.raft(3).term > terms[3]
        assert net.raft(1).term > terms[1]
        assert net.raft(1).state is not StateType.LEADER


@pytest.mark.parametrize("vote_type", [MT.VOTE, MT.PRE_VOTE])
@pytest.mark.parametrize("receiver", [1, 2])
def test_core_leader_lease_ignores_disruptive_votes(vote_type: MT, receiver: int) -> None:
    """Dissertation §4.2.3: "if a server receives a RequestVote request within the minimum
    election timeout of hearing from a current leader, it does not update its term or grant its
    vote" (CheckQuorum's leader lease). Applies to the leader itself and to its followers, and to
    pre-votes as well. Once the lease has run out the request is considered again."""
    net = Network(check_quorum=True)
    net.elect(1)
    r = net.raft(receiver)
    last = r.log.last_index()
    # node 3 is disruptive: a higher term and a log at least as up to date as anybody's
    req = Message(vote_type, receiver, 3, r.term + 5, log_term=r.term, index=last + 10)
    before = fingerprint(r)
    net.nodes[receiver].step(req)
    assert fingerprint(r) == before
    assert net.pending(lambda m: m.frm == receiver) == []

    # out of lease: the request is handled (granted, since 3's log is up to date)
    r.election_elapsed = ELECTION
    net.nodes[receiver].step(req)
    resp = net.take(lambda m: m.frm == receiver and m.to == 3)
    assert [(m.type, m.reject) for m in resp] == [
        (MT.VOTE_RESP if vote_type is MT.VOTE else MT.PRE_VOTE_RESP, False)
    ]
    if vote_type is MT.VOTE:
        assert r.term == req.term and r.vote == 3


def test_core_check_quorum_leader_steps_down_without_majority() -> None:
    """Dissertation §6.2: "a leader steps down if an election timeout elapses without a
    successful round of heartbeats to a majority of its cluster" — and not while a majority
    answers."""
    net = Network(check_quorum=True)
    net.elect(1)
    r1 = net.raft(1)
    term = r1.term
    net.isolate(3)  # a majority (1, 2) is still there
    net.tick(n=5 * ELECTION)
    assert r1.state is StateType.LEADER

    net.isolate(1)
    net.tick([1], n=ELECTION)
    assert r1.state is StateType.LEADER, "stepped down before an election timeout had elapsed"
    net.tick([1], n=ELECTION)
    assert r1.state is StateType.FOLLOWER
    assert r1.lead == 0 and r1.term == term


def test_core_leader_appends_noop_at_start_of_term() -> None:
    """§8 / dissertation §6.4: "each leader commit[s] a blank no-op entry into the log at the
    start of its term"; it is replicated and committed like any entry."""
    net = Network()
    net.nodes[2].campaign()
    net.flush()
    net.deliver(lambda m: m.type not in (MT.APP, MT.APP_RESP))
    r2 = net.raft(2)
    assert r2.state is StateType.LEADER
    assert r2.log.last_index() == 2
    noop = r2.log.slice(2, 3, 1 << 20)[0]
    assert noop == Entry(r2.term, 2, b"", EntryType.NORMAL)
    assert r2.log.committed == 1
    net.deliver()
    for i in (1, 2, 3):
        assert net.raft(i).log.committed == 2
        assert net.applied[i] == [noop]
