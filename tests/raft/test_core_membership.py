"""Single-server membership changes with learners: Raft dissertation §4.1-§4.2.3 and
docs/membership.md (the rules the core enforces)."""

from __future__ import annotations

import pytest
from core_helpers import ELECTION, MT, Network, conf, config, log_terms

from keelfs.raft.core import Raft, StateType
from keelfs.raft.errors import ProposalDropped
from keelfs.raft.messages import ConfChange, ConfChangeType, Entry, EntryType, Message
from keelfs.raft.progress import ProgressState
from keelfs.raft.storage import MemoryStorage

ADD = ConfChangeType.ADD_LEARNER
PROMOTE = ConfChangeType.PROMOTE
REMOVE = ConfChangeType.REMOVE


def _cc(kind: ConfChangeType, node_id: int) -> ConfChange:
    return ConfChange(kind, node_id, b"addr-%d" % node_id)


def test_core_learner_is_replicated_to_but_neither_votes_nor_counts() -> None:
    """Dissertation §4.2.1: new servers join as non-voting members — the leader replicates to
    them, but they are not counted for commitment or elections (and never campaign). The
    configuration takes effect as soon as its entry is appended (§4.1)."""
    net = Network()
    net.elect(1)
    net.add(4)
    r1 = net.raft(1)
    index, _ = net.nodes[1].propose_conf_change(_cc(ADD, 4))
    assert r1.conf == conf([1, 2, 3], [4])  # before it commits
    assert 4 in r1.prs
    net.deliver()
    assert r1.log.committed == index
    r4 = net.raft(4)
    assert r4.conf == conf([1, 2, 3], [4])
    assert log_terms(r4) == log_terms(r1)

    # a learner's acknowledgement does not commit anything
    net.isolate(2)
    net.isolate(3)
    x, _ = net.propose(1, b"x")
    net.deliver()
    assert r1.prs[4].match == x
    assert r1.log.committed == index

    # a learner never campaigns, however long it hears nothing
    net.heal()
    net.deliver()
    net.isolate(4)
    n_sent = len(net.sent)
    net.tick([4], n=5 * ELECTION)
    assert r4.state is StateType.FOLLOWER
    assert not [m for m in net.sent[n_sent:] if m.frm == 4]

    # and a candidate does not ask it for a vote
    net.heal()
    net.nodes[2].campaign()
    asked = {m.to for m in net.pending(lambda m: m.type in (MT.PRE_VOTE, MT.VOTE))}
    assert asked == {1, 3}


def test_core_promotion_refused_until_learner_caught_up() -> None:
    """Dissertation §4.2.1: a new server is promoted only once it has caught up (here: within
    ``max_learner_lag`` entries of the commit index); earlier the leader refuses with a retryable
    ProposalDropped and changes nothing. Once promoted it counts for the quorum."""
    net = Network(max_learner_lag=2)
    net.elect(1)
    net.add(4, max_learner_lag=2)
    net.isolate(4)
    net.nodes[1].propose_conf_change(_cc(ADD, 4))
    for k in range(5):
        net.propose(1, b"p%d" % k)
    net.deliver()
    r1 = net.raft(1)
    last = r1.log.last_index()
    assert r1.log.committed == last and r1.prs[4].match == 0
    with pytest.raises(ProposalDropped):
        net.nodes[1].propose_conf_change(_cc(PROMOTE, 4))
    assert r1.log.last_index() == last and r1.conf == conf([1, 2, 3], [4])

    net.heal()
    net.tick([1])
    net.deliver()
    assert r1.prs[4].match == last
    index, _ = net.nodes[1].propose_conf_change(_cc(PROMOTE, 4))
    assert r1.conf == conf([1, 2, 3, 4])
    net.deliver()
    assert r1.log.committed == index
    assert net.raft(4).conf == conf([1, 2, 3, 4])

    # four voters: two are no longer a majority
    net.isolate(3)
    net.isolate(4)
    y, _ = net.propose(1, b"y")
    net.deliver()
    assert r1.log.committed == index < y


def test_core_second_conf_change_refused_while_one_is_uncommitted() -> None:
    """Dissertation §4.1: "a leader ... must wait for the previous change to be committed
    before proposing the next" (rule 2: pending_conf_index <= commit)."""
    net = Network()
    net.elect(1)
    net.add(4)
    net.add(5)
    r1 = net.raft(1)
    first, _ = net.nodes[1].propose_conf_change(_cc(ADD, 4))
    assert r1.pending_conf_index == first
    with pytest.raises(ProposalDropped):
        net.nodes[1].propose_conf_change(_cc(ADD, 5))
    assert r1.log.last_index() == first
    net.propose(1, b"normal entries are fine")
    net.deliver()
    assert r1.log.committed >= first
    net.nodes[1].propose_conf_change(_cc(ADD, 5))
    assert r1.conf == conf([1, 2, 3], [4, 5])


def test_core_no_conf_change_before_leaders_noop_commits() -> None:
    """Rule 3 (Ongaro, raft-dev 2015, the single-server membership bug): a new leader accepts
    no configuration change until an entry of its own term (its no-op) is committed."""
    net = Network()
    net.nodes[1].campaign()
    net.deliver(lambda m: m.type not in (MT.APP, MT.APP_RESP))
    r1 = net.raft(1)
    assert r1.state is StateType.LEADER and r1.log.committed < r1.log.last_index()
    with pytest.raises(ProposalDropped):
        net.nodes[1].propose_conf_change(_cc(ADD, 4))
    net.propose(1, b"normal proposals are accepted")
    net.deliver()
    assert r1.log.committed == r1.log.last_index()
    net.nodes[1].propose_conf_change(_cc(ADD, 4))
    assert 4 in r1.conf.learners


def test_core_removing_a_follower_shrinks_the_quorum_once_appended() -> None:
    """Dissertation §4.1: the new configuration is used "as soon as it is added to that
    server's log" — including to commit its own entry. With 4 voters, 2 cannot commit; after
    the leader appends remove(4) the same 2 are a majority of {1, 2, 3}."""
    net = Network(ids=(1, 2, 3, 4))
    net.elect(1)
    r1 = net.raft(1)
    net.isolate(3)
    net.isolate(4)
    x, _ = net.propose(1, b"x")
    net.deliver()
    assert r1.log.committed < x
    index, _ = net.nodes[1].propose_conf_change(_cc(REMOVE, 4))
    assert r1.conf == conf([1, 2, 3])
    assert 4 not in r1.prs
    net.deliver()
    assert r1.log.committed == index
    assert net.raft(2).conf == conf([1, 2, 3])
    assert [e.data for e in net.applied[2] if e.type is EntryType.NORMAL and e.data] == [b"x"]


def test_core_leader_removing_itself_hands_over_then_steps_down() -> None:
    """docs/membership.md rule 5 (dissertation §4.2.2): a leader that removes itself stops
    counting its own vote at once, keeps leading until the removal commits, then hands
    leadership to the most up-to-date voter with TimeoutNow and steps down; it never campaigns
    again (rule 6)."""
    net = Network()
    net.elect(1)
    r1 = net.raft(1)
    term = r1.term
    index, _ = net.nodes[1].propose_conf_change(_cc(REMOVE, 1))
    assert r1.conf == conf([2, 3])
    assert r1.state is StateType.LEADER
    with pytest.raises(ProposalDropped):
        net.propose(1, b"no new work for a departing leader")

    # node 2's ack alone: 1 + 2 were a majority of {1, 2, 3} but are not one of {2, 3}
    net.deliver(lambda m: 3 not in (m.to, m.frm))
    assert r1.prs[2].match == index
    assert r1.log.committed < index
    assert r1.state is StateType.LEADER

    n_sent = len(net.sent)
    net.deliver(lambda m: m.type is not MT.TIMEOUT_NOW)
    assert r1.log.committed == index
    handover = [m for m in net.sent[n_sent:] if m.type is MT.TIMEOUT_NOW]
    assert len(handover) == 1 and handover[0].frm == 1
    target = handover[0].to
    assert target in (2, 3)
    assert r1.state is StateType.FOLLOWER  # steps down as it hands over
    net.deliver()
    rt = net.raft(target)
    assert rt.state is StateType.LEADER and rt.term == term + 1
    assert rt.conf == conf([2, 3])
    assert rt.log.committed > index

    net.isolate(1)
    n_sent = len(net.sent)
    net.tick([1], n=5 * ELECTION)
    assert not [m for m in net.sent[n_sent:] if m.frm == 1]


def test_core_removed_leader_steps_down_if_handover_is_lost() -> None:
    """docs/membership.md rule 5: if the handover does not finish, the removed leader does not
    keep the group: the remaining voters elect a leader among themselves."""
    net = Network()
    net.elect(1)
    net.drop = lambda m: m.type is MT.TIMEOUT_NOW
    net.nodes[1].propose_conf_change(_cc(REMOVE, 1))
    net.deliver()
    assert net.raft(1).state is StateType.FOLLOWER
    for _ in range(4 * ELECTION):
        net.tick()
        if any(net.raft(i).state is StateType.LEADER for i in (2, 3)):
            break
    assert net.leader() in (2, 3)


def test_core_removing_the_last_voter_is_refused() -> None:
    """docs/membership.md rule 5: a configuration with no voters could never make progress
    again, so removing the last voter is refused (and changes nothing)."""
    net = Network(ids=(1,), learners=(2,))
    net.elect(1)
    net.deliver()
    r1 = net.raft(1)
    last = r1.log.last_index()
    with pytest.raises(ValueError):
        net.nodes[1].propose_conf_change(_cc(REMOVE, 1))
    assert r1.log.last_index() == last and r1.conf == conf([1], [2])
    net.nodes[1].propose_conf_change(_cc(REMOVE, 2))  # a learner may go
    assert r1.conf == conf([1])


@pytest.mark.parametrize(
    "cc",
    [
        ConfChange(ADD, 2),  # already a voter
        ConfChange(ADD, 4),  # already a learner
        ConfChange(PROMOTE, 2),  # not a learner
        ConfChange(PROMOTE, 9),  # not a member
        ConfChange(REMOVE, 9),  # not a member
        ConfChange(ADD, 0),  # not a node id
    ],
)
def test_core_invalid_conf_change_refused(cc: ConfChange) -> None:
    """A change that makes no sense for the current configuration is refused with ValueError
    and nothing is appended."""
    net = Network(learners=(4,))
    net.elect(1)
    r1 = net.raft(1)
    last = r1.log.last_index()
    with pytest.raises(ValueError):
        net.nodes[1].propose_conf_change(cc)
    assert r1.log.last_index() == last and r1.conf == conf([1, 2, 3], [4])


def test_core_configuration_reverts_when_its_entry_is_truncated() -> None:
    """Dissertation §4.1: "a log entry for a configuration change can be removed (if leadership
    changes); in this case, a server must be prepared to fall back to the previous
    configuration in its log"."""
    r = Raft(config(1), MemoryStorage(conf([1, 2, 3])))
    cc = Entry(2, 3, _cc(ADD, 4).encode(), EntryType.CONF_CHANGE)
    r.step(Message(MT.APP, 1, 2, 2, log_term=1, index=1, entries=(Entry(2, 2), cc), commit=2))
    assert r.conf == conf([1, 2, 3], [4])
    r.step(Message(MT.APP, 1, 3, 3, log_term=2, index=2, entries=(Entry(3, 3, b"x"),)))
    assert log_terms(r) == [(2, 2), (3, 3)]
    assert r.conf == conf([1, 2, 3])
    assert r.conf_state_at(3) == conf([1, 2, 3])


def test_core_new_node_learns_membership_from_bootstrap_snapshot() -> None:
    """storage.py: every group starts from a bootstrap snapshot, so a node that joins with an
    empty log is caught up by InstallSnapshot and learns the founding members from it."""
    net = Network()
    net.elect(1)
    net.add(4)
    net.nodes[1].propose_conf_change(_cc(ADD, 4))
    net.deliver()
    assert any(m.type is MT.SNAP and m.to == 4 for m in net.sent)
    assert net.storages[4].snapshot_meta().index == 1
    assert net.raft(1).prs[4].state is ProgressState.REPLICATE
    assert net.raft(4).conf == conf([1, 2, 3], [4])
