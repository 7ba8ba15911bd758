"""Commitment: Raft paper §5.3, §5.4.2 (Figure 8) and Figure 2's AppendEntries receiver rules."""

from __future__ import annotations

from core_helpers import MT, Network, config, log_terms, storage_with

from keelfs.raft.core import Raft, StateType
from keelfs.raft.messages import Entry, Message


def _figure8_network() -> Network:
    """Node 1 holds an uncommitted entry 2/2 from an old term; nodes 2 and 3 never got it.

    All three are at term 3, so node 1 becomes the leader of term 4 with that term-2 entry
    in its log: the situation of Figure 8 (c)-(d) as seen by the new leader.
    """
    storages = {
        1: storage_with(terms=[2], term=3, data=lambda i: b"old"),
        2: storage_with(terms=[], term=3),
        3: storage_with(terms=[], term=3),
    }
    # a tiny max_size_per_msg makes the old entry travel alone, before the leader's no-op
    return Network(storages=storages, max_size_per_msg=30, pre_vote=False)


def test_core_leader_does_not_commit_previous_term_entry_by_counting_replicas() -> None:
    """§5.4.2 / Figure 8: "Raft never commits log entries from previous terms by counting
    replicas. Only log entries from the leader's current term are committed by counting
    replicas". The term-2 entry is stored on every server, but while the leader's own term-4
    no-op is not acknowledged the commit index must not move; once the no-op is acknowledged
    both commit together (the Log Matching Property)."""
    net = _figure8_network()
    # The no-op (term 4) is lost on its way to followers that already hold the old entry.
    # (The leader's first append, sent before the old entry, is rejected anyway: the followers
    # lack index 2, and the leader backs off and sends 2/2 on its own.)
    net.drop = lambda m: (
        m.type is MT.APP
        and any(e.term == 4 for e in m.entries)
        and net.raft(m.to).log.last_index() >= 2
    )
    net.elect(1)
    r1 = net.raft(1)
    assert r1.term == 4
    assert log_terms(r1) == [(2, 2), (3, 4)]
    for i in (2, 3):
        assert log_terms(net.raft(i)) == [(2, 2)], "the old entry was not replicated alone"
        assert r1.prs[i].match == 2
    assert r1.log.committed == 1
    assert all(net.raft(i).log.committed == 1 for i in (1, 2, 3))
    assert all(net.applied[i] == [] for i in (1, 2, 3))

    net.heal()
    net.tick([1])  # a heartbeat round makes the leader resend what was lost
    net.deliver()
    for i in (1, 2, 3):
        assert net.raft(i).log.committed == 3
        assert [(e.index, e.term) for e in net.applied[i]] == [(2, 2), (3, 4)]


def test_core_leader_ignores_acks_of_old_term_entries_for_commit() -> None:
    """§5.4.2, with crafted acknowledgements: acks that reach only the old-term entry leave the
    commit index alone; one ack of the current term's entry from a majority commits both."""
    st = storage_with(terms=[2, 2], term=3)
    r = Raft(config(1, pre_vote=False), st)
    r.step(Message(MT.HUP, 1, 1))
    r.step(Message(MT.VOTE_RESP, 1, 2, 4))
    assert r.state is StateType.LEADER and r.log.last_index() == 4
    r.step(Message(MT.APP_RESP, 1, 2, 4, index=3))
    r.step(Message(MT.APP_RESP, 1, 3, 4, index=3))
    assert r.prs[2].match == r.prs[3].match == 3
    assert r.log.committed == 1
    r.step(Message(MT.APP_RESP, 1, 3, 4, index=4))
    assert r.log.committed == 4


def test_core_follower_commit_stops_at_last_entry_matched_by_append() -> None:
    """Figure 2, AppendEntries receiver rule 5: "If leaderCommit > commitIndex, set commitIndex =
    min(leaderCommit, index of last new entry)". The follower holds a divergent uncommitted tail
    beyond the entries the append carries; the append's commit is larger than what it matched,
    and the follower must not commit (or apply) its divergent tail."""
    st = storage_with(terms=[2, 2, 2], term=2)  # 2/2 2/3 2/4 — 3 and 4 will turn out divergent
    net = Network(storages={1: st})
    f = net.raft(1)
    # the leader of term 3 has 2/2 then 3/3 ... committed up to 4; it sends entry 2 only
    app = Message(MT.APP, 1, 2, 3, log_term=1, index=1, entries=(Entry(2, 2, b"e2"),), commit=4)
    net.step(app)
    net.flush()
    assert f.log.committed == 2
    assert log_terms(f) == [(2, 2), (3, 2), (4, 2)]  # matched entries: the tail is kept
    assert [e.index for e in net.applied[1]] == [2]
    resp = net.take(lambda m: m.frm == 1)
    assert [(m.type, m.index, m.reject) for m in resp] == [(MT.APP_RESP, 2, False)]

    # an empty append (a probe) matching at 2 does not commit the tail either
    net.step(Message(MT.APP, 1, 2, 3, log_term=2, index=2, commit=4))
    net.flush()
    assert f.log.committed == 2

    # a heartbeat's commit is bounded by what the leader knows we matched (min(match, commit))
    # — here the leader replaces the tail and only then is 4 committed
    new = (Entry(3, 3, b"n3"), Entry(3, 4, b"n4"))
    net.step(Message(MT.APP, 1, 2, 3, log_term=2, index=2, entries=new, commit=4))
    net.flush()
    assert f.log.committed == 4
    assert [(e.index, e.term, e.data) for e in net.applied[1]] == [
        (2, 2, b"e2"),
        (3, 3, b"n3"),
        (4, 3, b"n4"),
    ]


def test_core_follower_truncates_conflicting_suffix() -> None:
    """§5.3 / Figure 2 rule 3: "If an existing entry conflicts with a new one (same index but
    different terms), delete the existing entry and all that follow it"; entries that match
    are kept (rule 4: append any new entries not already in the log)."""
    st = storage_with(terms=[2, 2, 2], term=2)
    net = Network(storages={1: st})
    net.step(
        Message(
            MT.APP,
            1,
            2,
            3,
            log_term=2,
            index=2,
            entries=(Entry(3, 3, b"x"),),
            commit=1,
        )
    )
    net.flush()
    f = net.raft(1)
    assert log_terms(f) == [(2, 2), (3, 3)]
    assert [(e.index, e.term) for e in net.storages[1].entries(2, 4, 1 << 20)] == [(2, 2), (3, 3)]
    # a reordered, older append of a prefix does not truncate what we have
    net.step(Message(MT.APP, 1, 2, 3, log_term=1, index=1, entries=(Entry(2, 2, b"e2"),)))
    net.flush()
    assert log_terms(f) == [(2, 2), (3, 3)]


def test_core_entry_committed_once_replicated_on_majority() -> None:
    """§5.3: "A log entry is committed once the leader that created the entry has replicated it
    on a majority of the servers"; the leader then tells the followers (leaderCommit)."""
    net = Network(ids=(1, 2, 3, 4, 5))
    net.elect(1)
    net.isolate(4)
    net.isolate(5)
    index, _ = net.propose(1, b"x")
    net.deliver()
    assert net.raft(1).log.committed == index  # 1, 2, 3 of 5
    assert net.raft(2).log.committed == index
    net.isolate(3)
    index2, _ = net.propose(1, b"y")
    net.deliver()
    assert net.raft(1).log.committed == index  # only 1, 2 of 5
    assert net.raft(1).log.last_index() == index2
