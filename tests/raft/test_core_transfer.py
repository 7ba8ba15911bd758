"""Leadership transfer: Raft dissertation §3.10."""

from __future__ import annotations

import pytest
from core_helpers import ELECTION, MT, Network, fingerprint

from keelfs.raft.core import StateType
from keelfs.raft.errors import ProposalDropped
from keelfs.raft.messages import ConfChange, ConfChangeType


def _index_of(net: Network, pred) -> int:  # noqa: ANN001 - a message predicate
    return next(k for k, m in enumerate(net.sent) if pred(m))


def test_core_transfer_to_caught_up_target_sends_timeout_now_at_once() -> None:
    """Dissertation §3.10: once the target's log is up to date the leader "sends it a
    TimeoutNow request", which makes the target start an election at once; it wins in the next
    term and the old leader steps down."""
    net = Network()
    net.elect(1)
    term = net.raft(1).term
    net.nodes[1].transfer_leader(2)
    assert [(m.type, m.to) for m in net.pending()] == [(MT.TIMEOUT_NOW, 2)]
    net.deliver()
    assert net.raft(2).state is StateType.LEADER and net.raft(2).term == term + 1
    assert net.raft(1).state is StateType.FOLLOWER and net.raft(1).lead == 2
    assert net.raft(1).lead_transferee == 0


def test_core_transfer_to_lagging_target_replicates_first() -> None:
    """Dissertation §3.10 step 2: "The prior leader transfers its log entries to the target
    server"; TimeoutNow is sent only once the target's log matches the leader's."""
    net = Network()
    net.elect(1)
    net.isolate(3)
    for k in range(3):
        net.propose(1, b"p%d" % k)
    net.deliver()
    net.heal()
    last = net.raft(1).log.last_index()
    net.nodes[1].transfer_leader(3)
    assert net.raft(1).lead_transferee == 3
    first = net.pending()
    assert [(m.type, m.to) for m in first] == [(MT.APP, 3)]
    net.deliver()
    caught_up = _index_of(
        net, lambda m: m.type is MT.APP_RESP and m.frm == 3 and not m.reject and m.index == last
    )
    timeout_now = _index_of(net, lambda m: m.type is MT.TIMEOUT_NOW)
    assert caught_up < timeout_now
    assert net.raft(3).state is StateType.LEADER


def test_core_proposals_dropped_during_transfer() -> None:
    """Dissertation §3.10: "the prior leader stops accepting new client requests" while a
    transfer is in progress (the proposer may retry, at the new leader)."""
    net = Network()
    net.elect(1)
    net.isolate(3)
    net.propose(1, b"x")
    net.deliver()
    net.nodes[1].transfer_leader(3)
    r1 = net.raft(1)
    before = r1.log.last_index()
    with pytest.raises(ProposalDropped):
        net.propose(1, b"y")
    with pytest.raises(ProposalDropped):
        net.nodes[1].propose_batch([b"a", b"b"])
    with pytest.raises(ProposalDropped):
        net.nodes[1].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    assert r1.log.last_index() == before


def test_core_transfer_aborted_after_an_election_timeout() -> None:
    """Dissertation §3.10: "If the transfer does not complete after about one election timeout,
    the prior leader aborts the transfer and resumes accepting client requests"."""
    net = Network()
    net.elect(1)
    net.isolate(3)
    net.propose(1, b"x")
    net.deliver()
    r1 = net.raft(1)
    net.nodes[1].transfer_leader(3)
    net.tick([1, 2], n=ELECTION - 1)
    assert r1.lead_transferee == 3
    with pytest.raises(ProposalDropped):
        net.propose(1, b"y")
    net.tick([1, 2])
    assert r1.lead_transferee == 0
    assert r1.state is StateType.LEADER
    index, _ = net.propose(1, b"y")
    net.deliver()
    assert r1.log.committed == index


@pytest.mark.parametrize("target", [1, 4, 9])
def test_core_transfer_to_self_learner_or_stranger_is_ignored(target: int) -> None:
    """Dissertation §3.10 transfers leadership to another *voting* server; a transfer to the
    leader itself, to a learner (which cannot be elected) or to a non-member does nothing."""
    net = Network(learners=(4,))
    net.elect(1)
    r1 = net.raft(1)
    before = fingerprint(r1)
    net.nodes[1].transfer_leader(target)
    assert fingerprint(r1) == before
    net.deliver()
    assert not any(m.type is MT.TIMEOUT_NOW for m in net.sent)
    net.propose(1, b"still accepting")


def test_core_timeout_now_campaign_skips_pre_vote_and_overrides_lease() -> None:
    """Dissertation §3.10 step 3 with §9.6 and §4.2.3: the target of TimeoutNow starts a real
    election at once (no Pre-Vote round) and its RequestVote is marked so that voters still
    inside their leader lease grant it instead of ignoring it as disruptive."""
    net = Network(pre_vote=True, check_quorum=True)
    net.elect(1)
    term = net.raft(1).term
    net.drop = lambda m: m.type is MT.VOTE and m.to == 1  # node 3's vote is needed
    n_sent = len(net.sent)
    net.nodes[1].transfer_leader(2)
    net.deliver()
    from2 = [m for m in net.sent[n_sent:] if m.frm == 2 and m.type in (MT.VOTE, MT.PRE_VOTE)]
    assert [(m.type, m.to, m.term, m.force) for m in from2] == [
        (MT.VOTE, 1, term + 1, True),
        (MT.VOTE, 3, term + 1, True),
    ]
    assert net.raft(2).state is StateType.LEADER
    assert net.raft(3).vote == 2 and net.raft(3).term == term + 1


def test_core_transfer_request_forwarded_by_follower() -> None:
    """A transfer asked of a follower is forwarded to the leader, which runs it."""
    net = Network()
    net.elect(1)
    net.nodes[2].transfer_leader(3)
    assert [(m.type, m.to) for m in net.pending()] == [(MT.TRANSFER_LEADER, 1)]
    net.deliver()
    assert net.raft(3).state is StateType.LEADER


def test_core_forwarded_transfer_reaching_leaderless_follower_is_not_an_error() -> None:
    """errors.py: "Malformed or stale messages from peers are not errors: the core ignores or
    rejects them". Node 2 forwards a transfer request to leader 1; before it arrives node 1 has
    stepped down (CheckQuorum) and knows no leader. Receiving the delayed request must not raise
    (the runtime feeds peer messages to ``step`` from its transport callback)."""
    net = Network()
    net.elect(1)
    net.nodes[2].transfer_leader(3)
    held = net.take(lambda m: m.type is MT.TRANSFER_LEADER)
    assert [(m.frm, m.to) for m in held] == [(2, 1)]
    net.isolate(1)
    net.tick([1], n=2 * ELECTION)
    r1 = net.raft(1)
    assert r1.state is StateType.FOLLOWER and r1.lead == 0 and r1.term == held[0].term
    net.heal()
    before = fingerprint(r1)
    net.nodes[1].step(held[0])
    assert fingerprint(r1) == before
