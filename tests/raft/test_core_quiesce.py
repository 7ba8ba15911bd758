"""Quiescence: idle groups stop heartbeating and ticking, and wake on any activity.

Not in the Raft paper; it is how multi-raft systems (CockroachDB) keep thousands of idle groups
cheap. What must hold: an idle group sends nothing; activity of any kind wakes it; a quiesced
follower whose leader is gone elects a new one once the runtime says the leader is unreachable;
a leader's lease is not extended by time spent quiesced.
"""

from __future__ import annotations

from core_helpers import MT, Network

from keelfs.raft.core import ReadOnlyOption, StateType

QUIESCE = 5


def quiet_cluster(**kw: object) -> Network:
    net = Network((1, 2, 3), quiesce_after_ticks=QUIESCE, **kw)
    net.elect(1)
    net.propose(1, b"x")
    net.deliver()
    net.tick(n=QUIESCE + 2)
    return net


def test_idle_leader_quiesces_and_the_group_goes_silent() -> None:
    net = quiet_cluster()
    assert [net.raft(i).quiesced for i in (1, 2, 3)] == [True, True, True]
    assert any(m.type is MT.HEARTBEAT and m.quiesce for m in net.sent)
    sent = len(net.sent)
    net.tick(n=100)  # ten election timeouts
    assert len(net.sent) == sent, "a quiesced group must send nothing"
    assert net.leader() == 1 and net.raft(1).term == net.raft(2).term


def test_a_proposal_wakes_everyone() -> None:
    net = quiet_cluster()
    net.propose(1, b"y")
    net.deliver()
    assert not any(net.raft(i).quiesced for i in (1, 2, 3))
    assert all(net.raft(i).log.committed == net.raft(1).log.last_index() for i in (1, 2, 3))
    net.tick(n=QUIESCE + 2)
    assert all(net.raft(i).quiesced for i in (1, 2, 3))


def test_client_activity_on_a_follower_wakes_the_leader() -> None:
    net = quiet_cluster()
    net.nodes[2].wake()
    net.deliver()
    assert not net.raft(1).quiesced and not net.raft(2).quiesced
    net.tick(n=3 * 10)  # the leader heartbeats again, so nobody campaigns
    assert net.leader() == 1


def test_dead_leader_is_replaced_once_the_runtime_reports_it() -> None:
    net = quiet_cluster()
    net.isolate(1)  # the leader's node is gone
    net.tick([2, 3], n=100)
    assert net.raft(2).state is StateType.FOLLOWER and net.raft(2).lead == 1, (
        "without a failure detector a quiesced follower keeps waiting"
    )
    net.nodes[2].wake(leader_unreachable=True)  # what the transport tells the runtime
    net.tick([2, 3], n=30)
    leaders = [i for i in (2, 3) if net.raft(i).state is StateType.LEADER]
    assert len(leaders) == 1 and net.raft(leaders[0]).term > net.raft(1).term


def test_quiesced_time_does_not_extend_the_lease() -> None:
    net = quiet_cluster(read_only_option=ReadOnlyOption.LEASE_BASED)
    net.isolate(1)
    net.tick(n=100)  # quiesced leader: its tick count does not move
    net.nodes[1].read_index(b"r")
    net.flush()
    assert net.read_states[1] == [], "a lease read right after waking must wait for a round"
