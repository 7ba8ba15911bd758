"""Linearizable reads with ReadIndex: Raft dissertation §6.4 (and §6.4.1 for lease reads)."""

from __future__ import annotations

import pytest
from core_helpers import ELECTION, MT, Network, conf, config, storage_with

from keelfs.raft.core import Raft, ReadOnlyOption, StateType
from keelfs.raft.errors import NotLeaderError
from keelfs.raft.messages import Message
from keelfs.raft.read_only import ReadState
from keelfs.raft.storage import MemoryStorage


def _round(net: Network, msgs: list[Message], to: int | None = None) -> None:
    """Deliver these heartbeats (only those to ``to``, if given) and the answers to them."""
    for m in msgs:
        if to is None or m.to == to:
            net.step(m)
    net.deliver(lambda m: m.type is MT.HEARTBEAT_RESP)


def test_core_read_confirmed_only_by_heartbeat_round_started_after_it() -> None:
    """Dissertation §6.4 step 3: the leader "sends a new round of heartbeats and waits for their
    acknowledgments from a majority" — a round that started *after* the read arrived.
    Acknowledgements of an older heartbeat prove nothing about a newer read: read A, a heartbeat,
    read B; only the acks of the heartbeats sent before B arrive — A is served, B is not."""
    net = Network()
    net.elect(1)
    n1 = net.nodes[1]
    commit = net.raft(1).log.committed

    def hb() -> list[Message]:
        return net.take(lambda m: m.type is MT.HEARTBEAT)

    net.tick([1], deliver=False)
    before_a = hb()  # a periodic heartbeat, before any read
    n1.read_index(b"A")
    for_a = hb()  # the round the read itself starts
    net.tick([1], deliver=False)
    after_a = hb()  # a periodic heartbeat after A, before B
    n1.read_index(b"B")
    for_b = hb()
    assert net.queue == []
    assert before_a and for_a and after_a and for_b

    _round(net, before_a)
    assert net.read_states[1] == []
    _round(net, for_a, to=2)  # node 2's acks: with the leader, a majority
    assert net.read_states[1] == [ReadState(commit, b"A")]
    _round(net, for_a + after_a)
    assert net.read_states[1] == [ReadState(commit, b"A")]
    _round(net, for_b, to=3)
    assert net.read_states[1] == [ReadState(commit, b"A"), ReadState(commit, b"B")]


def test_core_read_confirmed_by_a_later_periodic_heartbeat() -> None:
    """Dissertation §6.4: any heartbeat round started after the read arrived will do — here
    the read's own round is lost and the next periodic heartbeat confirms it."""
    net = Network()
    net.elect(1)
    net.nodes[1].read_index(b"A")
    lost = net.take(lambda m: m.type is MT.HEARTBEAT)
    assert lost
    net.tick([1])
    assert [rs.context for rs in net.read_states[1]] == [b"A"]


def test_core_read_index_is_commit_index_when_read_arrives() -> None:
    """Dissertation §6.4 step 2: "the leader ... record[s] its current commit index in a local
    variable readIndex"; an entry committed after the read arrived does not raise it."""
    net = Network()
    net.elect(1)
    commit = net.raft(1).log.committed
    net.nodes[1].read_index(b"r")
    net.propose(1, b"later")
    net.deliver()
    assert net.raft(1).log.committed == commit + 1
    assert net.read_states[1] == [ReadState(commit, b"r")]


def test_core_learner_acks_do_not_confirm_a_read() -> None:
    """Dissertation §6.4: the heartbeat round must be acknowledged by a majority of the
    *voting* members; a learner's answer does not count."""
    net = Network(learners=(4,))
    net.elect(1)
    net.nodes[1].read_index(b"r")
    round_ = net.take(lambda m: m.type is MT.HEARTBEAT)
    _round(net, round_, to=4)
    assert net.read_states[1] == []
    _round(net, round_, to=2)
    assert [rs.context for rs in net.read_states[1]] == [b"r"]


def test_core_read_on_new_leader_waits_for_its_noop_to_commit() -> None:
    """Dissertation §6.4 step 1: "If the leader has not yet marked an entry from its current
    term committed, it waits until it has done so" — its commit index may be behind. Here the
    entry 2/2 from an old term is on every server but not known committed; a read served at the
    new leader's commit index (1) could miss it, so the read index must be the no-op's (3)."""
    storages = {i: storage_with(terms=[2], term=2) for i in (1, 2, 3)}
    net = Network(storages=storages)
    net.nodes[1].campaign()
    net.deliver(lambda m: m.type not in (MT.APP, MT.APP_RESP))
    r1 = net.raft(1)
    assert r1.state is StateType.LEADER and r1.log.committed == 1
    net.nodes[1].read_index(b"r")
    net.flush()
    assert net.read_states[1] == []
    assert not net.pending(lambda m: m.type is MT.HEARTBEAT and m.read_seq)
    net.deliver()
    assert r1.log.committed == 3
    assert net.read_states[1] == [ReadState(3, b"r")]


def test_core_read_forwarded_from_follower_returns_leader_commit() -> None:
    """Dissertation §6.4: "followers ... issue a request to the leader for the current
    readIndex"; the leader runs the protocol and returns its commit index, which may be ahead
    of the follower's."""
    net = Network()
    net.elect(1)
    index, _ = net.propose(1, b"x")
    net.deliver(lambda m: m.type is not MT.APP or bool(m.entries))
    r1, r2 = net.raft(1), net.raft(2)
    assert r1.log.committed == index
    net.take(lambda m: m.type is MT.APP and m.to == 2)  # node 2 does not learn the commit
    assert r2.log.committed < index
    net.nodes[2].read_index(b"f")
    fwd = net.pending(lambda m: m.type is MT.READ_INDEX)
    assert [(m.frm, m.to, m.context) for m in fwd] == [(2, 1, b"f")]
    net.deliver()
    assert net.read_states[2] == [ReadState(index, b"f")]
    assert net.read_states[1] == []
    resp = [m for m in net.sent if m.type is MT.READ_INDEX_RESP]
    assert [(m.to, m.index, m.context) for m in resp] == [(2, index, b"f")]


def test_core_read_without_leader_is_refused() -> None:
    """A follower that knows no leader cannot get a read index: it says so (retryable) instead
    of waiting forever."""
    r = Raft(config(1), MemoryStorage(conf([1, 2, 3])))
    with pytest.raises(NotLeaderError):
        r.step(Message(MT.READ_INDEX, 1, 1, context=b"r"))
    assert r.msgs == []


@pytest.mark.parametrize("learners", [(), (2,)])
def test_core_single_voter_answers_read_at_once(learners: tuple[int, ...]) -> None:
    """Dissertation §6.4: with a single voter, the leader is trivially still the leader; the
    read is answered at once with its commit index, without any heartbeat round."""
    net = Network(ids=(1,), learners=learners)
    net.elect(1)
    net.deliver()
    r1 = net.raft(1)
    n_sent = len(net.sent)
    net.nodes[1].read_index(b"solo")
    assert r1.read_states == [ReadState(r1.log.committed, b"solo")]
    assert r1.msgs == []
    net.flush()
    assert net.sent[n_sent:] == []


def test_core_lease_based_read_answers_without_heartbeat_round() -> None:
    """Dissertation §6.4.1: with a lease, the leader answers a read from its commit index
    without a round of heartbeats — once a majority has answered a recent heartbeat (the lease)
    and an entry of its term is committed."""
    net = Network(read_only_option=ReadOnlyOption.LEASE_BASED, check_quorum=True)
    net.nodes[1].campaign()
    net.deliver(lambda m: m.type not in (MT.APP, MT.APP_RESP))
    net.nodes[1].read_index(b"early")
    net.flush()
    assert net.read_states[1] == []
    net.deliver()
    net.tick(n=2)  # heartbeat rounds answered by everybody
    r1 = net.raft(1)
    assert [rs.context for rs in net.read_states[1]] == [b"early"]
    n_sent = len(net.sent)
    net.nodes[1].read_index(b"lease")
    assert r1.read_states == [ReadState(r1.log.committed, b"lease")]
    net.flush()
    assert not any(m.type is MT.HEARTBEAT for m in net.sent[n_sent:])


def test_core_lease_based_read_waits_for_a_round_once_the_lease_has_lapsed() -> None:
    """Dissertation §6.4.1 and ReadOnlyOption.LEASE_BASED: the lease lasts less than an election
    timeout after the majority's last answer; a leader cut off for that long must not answer a
    read from its own state (another leader may have been elected) — the read falls back to a
    heartbeat round, which a cut-off leader cannot complete."""
    net = Network(read_only_option=ReadOnlyOption.LEASE_BASED, check_quorum=True)
    net.elect(1)
    net.tick(n=2)
    net.isolate(1)
    net.tick([1], n=ELECTION - 1)
    r1 = net.raft(1)
    assert r1.state is StateType.LEADER
    net.nodes[1].read_index(b"late")
    assert r1.read_states == []
    net.flush()
    assert net.read_states[1] == []


def test_core_lease_based_reads_need_check_quorum() -> None:
    """Dissertation §6.4.1: lease reads are only safe when the leader steps down on losing its
    majority (CheckQuorum); the configuration is refused without it."""
    cfg = config(1, read_only_option=ReadOnlyOption.LEASE_BASED, check_quorum=False)
    with pytest.raises(ValueError):
        cfg.validate()
    with pytest.raises(ValueError):
        Raft(cfg, MemoryStorage(conf([1, 2, 3])))
    config(1, read_only_option=ReadOnlyOption.LEASE_BASED, check_quorum=True).validate()


def test_core_lease_restarted_follower_refuses_votes_for_an_election_timeout() -> None:
    """Dissertation §6.4.1's lease counts on every member that answered the leader not voting
    for another candidate within an election timeout. A member that restarts forgets it
    answered: were it to vote at once, a candidate cut off from the leader could win with it
    and commit a write that the old leader's lease read does not see. So a node restarted
    with a term refuses (pre-)votes for its first election timeout (``Raft.restart_lease``);
    afterwards it votes as usual."""
    lease = {"read_only_option": ReadOnlyOption.LEASE_BASED, "check_quorum": True}
    net = Network(**lease)
    net.elect(1)
    net.tick(n=2)  # nodes 2 and 3 answered: node 1 holds its lease
    net.isolate(3)  # node 3 hears nobody and nobody hears it ...
    net.cut -= {(3, 2), (2, 3)}  # ... but node 2
    net.add(2, net.storages[2], **lease)  # node 2 restarts, forgetting it answered node 1
    net.cut |= {(1, 2), (2, 1)}
    net.nodes[3].campaign()
    net.deliver()
    assert net.raft(3).state is not StateType.LEADER
    assert net.raft(2).term == net.raft(1).term
    net.nodes[1].read_index(b"still the only leader")
    assert [rs.context for rs in net.raft(1).read_states] == [b"still the only leader"]

    net.tick([2, 3], n=2 * ELECTION)  # an election timeout later node 2 votes again
    assert not net.raft(2).restart_lease
    assert StateType.LEADER in (net.raft(2).state, net.raft(3).state)


def test_core_lease_never_started_node_votes_at_once() -> None:
    """A node that never had a term answered no leader: it votes at once (a new group elects
    its first leader without waiting)."""
    net = Network(read_only_option=ReadOnlyOption.LEASE_BASED, check_quorum=True)
    assert not any(net.raft(i).restart_lease for i in net.nodes)
    net.elect(2)


def test_core_lease_is_not_revived_by_late_answers_to_a_round_sent_before_time_was_lost() -> None:
    """The runtime tells the leader it lost track of time (``forget_lease``: its process was
    frozen, its ticks fell behind). Answers to a heartbeat round sent before that, read after
    it (queued in the socket while another leader was elected), must not make a lease again:
    on the leader's tick count that round looks recent. Found by a linearizability test: a
    leader frozen 1.5 s answered a stat from its old state right after it woke."""
    net = Network(read_only_option=ReadOnlyOption.LEASE_BASED, check_quorum=True)
    net.elect(1)
    net.tick(n=2)  # a lease: rounds answered by everybody
    net.tick([1], deliver=False)
    sent_before = net.take(lambda m: m.type is MT.HEARTBEAT)
    assert sent_before
    for m in sent_before:
        net.step(m)  # the followers answer this round ...
    late = net.take(lambda m: m.type is MT.HEARTBEAT_RESP)
    assert late
    net.nodes[1].forget_lease()  # ... and the leader is frozen before it reads the answers
    for m in late:
        net.step(m)
    r1 = net.raft(1)
    assert r1.state is StateType.LEADER
    net.nodes[1].read_index(b"after the freeze")
    assert r1.read_states == [], "answered from a lease of answers to a round sent before"
    net.flush()
    assert net.read_states[1] == []
    _round(net, net.take(lambda m: m.type is MT.HEARTBEAT))  # a round sent after: confirms it
    assert [rs.context for rs in net.read_states[1]] == [b"after the freeze"]
