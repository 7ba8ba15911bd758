"""Log replication: Raft paper §5.3 (consistency check, back-off), dissertation §10.2.1
(batching and pipelining), and etcd-io/raft's probe/replicate/snapshot progress states."""

from __future__ import annotations

from core_helpers import MT, Network, log_terms, of_type, storage_with

from keelfs.raft.messages import Message
from keelfs.raft.progress import ProgressState


def _entry_bytes(m: Message) -> int:
    return sum(e.size() for e in m.entries)


def test_core_many_proposals_travel_in_one_append() -> None:
    """Dissertation §10.2.1 (batching): entries proposed together are sent to each follower in
    one AppendEntries."""
    net = Network()
    net.elect(1)
    first, _ = net.propose(1, b"warm-up")
    net.deliver()
    out = net.nodes[1].propose_batch([b"a", b"b", b"c"])
    assert [i for i, _ in out] == [first + 1, first + 2, first + 3]
    apps = net.pending(of_type(MT.APP, frm=1))
    assert sorted(m.to for m in apps) == [2, 3]
    for m in apps:
        assert [e.data for e in m.entries] == [b"a", b"b", b"c"]
    net.deliver()
    assert all(net.raft(i).log.committed == first + 3 for i in (1, 2, 3))


def test_core_append_size_bounded_by_max_size_per_msg() -> None:
    """Dissertation §10.2.1: batches are bounded (here by ``max_size_per_msg`` bytes, an entry
    counting its payload plus a fixed overhead); an entry larger than the bound still travels,
    alone."""
    limit = 200
    net = Network(max_size_per_msg=limit)
    net.elect(1)
    start = len(net.sent)
    items = [b"%010d" % i for i in range(20)]  # 10 + 24 = 34 bytes each: 5 fit in 200
    net.nodes[1].propose_batch(items)
    first = net.pending(of_type(MT.APP, frm=1, to=2))
    assert len(first) == 1 and len(first[0].entries) == 5
    net.nodes[1].propose(b"x" * (2 * limit))  # larger than a whole message
    net.deliver()
    apps = [m for m in net.sent[start:] if m.type is MT.APP and m.entries]
    assert apps
    for m in apps:
        assert _entry_bytes(m) <= limit or len(m.entries) == 1, m.describe()
    assert max(len(m.entries) for m in apps) == 5
    assert any(len(m.entries) == 1 and _entry_bytes(m) > limit for m in apps)
    for i in (2, 3):
        got = [e.data for e in net.applied[i] if e.data]
        assert got == [*items, b"x" * (2 * limit)]


def test_core_replicate_state_pipelines_within_max_inflight_msgs() -> None:
    """Dissertation §10.2.1 (pipelining): in replicate state the leader sends appends without
    waiting for answers, but no more than ``max_inflight_msgs`` unacknowledged ones; it stops at
    the window and sends more as acknowledgements free it."""
    net = Network(max_inflight_msgs=2, max_size_per_msg=1)  # one entry per message
    net.elect(1)
    r1 = net.raft(1)
    assert r1.prs[2].state is ProgressState.REPLICATE
    base = r1.log.last_index()
    for k in range(5):
        net.propose(1, b"p%d" % k)
    to2 = net.pending(of_type(MT.APP, frm=1, to=2))
    assert [[e.index for e in m.entries] for m in to2] == [[base + 1], [base + 2]]
    assert r1.prs[2].inflights.full()

    # node 2 acknowledges the first append: exactly one more goes out
    first = net.take(lambda m: m is to2[0])[0]
    net.step(first)
    net.deliver(of_type(MT.APP_RESP, frm=2))
    to2 = net.pending(of_type(MT.APP, frm=1, to=2))
    assert [[e.index for e in m.entries] for m in to2 if m.entries] == [[base + 2], [base + 3]]

    net.deliver()
    assert log_terms(net.raft(2))[-5:] == [(base + k, r1.term) for k in range(1, 6)]
    assert all(net.raft(i).log.committed == base + 5 for i in (1, 2, 3))


def test_core_probe_state_sends_one_append_at_a_time() -> None:
    """§5.3 / etcd probe state: until the leader knows where a follower's log matches, it
    sends one AppendEntries at a time and waits for the answer."""
    net = Network()
    net.nodes[1].campaign()
    net.deliver(lambda m: m.type not in (MT.APP, MT.APP_RESP))
    r1 = net.raft(1)
    assert r1.prs[2].state is ProgressState.PROBE
    for k in range(3):
        net.propose(1, b"p%d" % k)
    assert len(net.pending(of_type(MT.APP, frm=1, to=2))) == 1
    net.deliver()
    assert r1.prs[2].state is ProgressState.REPLICATE
    assert r1.prs[2].match == r1.log.last_index()


def _rejections(net: Network, frm: int) -> int:
    return sum(1 for m in net.sent if m.type is MT.APP_RESP and m.frm == frm and m.reject)


def test_core_fast_backoff_skips_a_whole_divergent_term() -> None:
    """§5.3: "the follower can include the term of the conflicting entry and the first index it
    stores for that term. With this information, the leader can decrement nextIndex to bypass
    all of the conflicting entries in that term; one AppendEntries RPC will be required for
    each term with conflicting entries, rather than one RPC per entry". Node 2 holds 100
    uncommitted entries of term 3 where the new leader has 50 of term 2."""
    storages = {
        1: storage_with(terms=[2] * 50, term=3),
        2: storage_with(terms=[3] * 100, term=3),
        3: storage_with(terms=[2] * 50, term=3),
    }
    net = Network(storages=storages)
    net.elect(1)
    net.deliver()
    assert log_terms(net.raft(2)) == log_terms(net.raft(1))
    assert net.raft(2).log.last_index() == 52
    assert _rejections(net, 2) <= 2, "back-off took one round trip per entry"
    assert _rejections(net, 3) == 0


def test_core_fast_backoff_over_several_terms() -> None:
    """§5.3 fast back-off when the follower's log is shorter and spans several terms: the
    leader jumps straight to the last index where the terms can agree."""
    leader_log = [2] * 9 + [5] * 50  # 2..10 term 2, 11..60 term 5
    follower_log = [2] * 19 + [3] * 20  # 2..20 term 2, 21..40 term 3
    storages = {
        1: storage_with(terms=leader_log, term=5),
        2: storage_with(terms=follower_log, term=3),
        3: storage_with(terms=leader_log, term=5),
    }
    net = Network(storages=storages)
    net.elect(1)
    net.deliver()
    assert log_terms(net.raft(2)) == log_terms(net.raft(1))
    assert _rejections(net, 2) <= 2
    apps_to_2 = [m for m in net.sent if m.type is MT.APP and m.to == 2 and m.entries]
    assert min(m.index for m in apps_to_2) == 10  # resent from the last agreeing index


def _follow_states(net: Network, leader: int, follower: int) -> list[ProgressState]:
    """Deliver everything one message at a time, recording the follower's progress state."""
    seen = [net.raft(leader).prs[follower].state]
    while True:
        net.flush()
        if not net.queue:
            return seen
        net.step(net.queue.pop(0))
        pr = net.raft(leader).prs.get(follower)
        if pr is not None and pr.state is not seen[-1]:
            seen.append(pr.state)


def test_core_progress_probe_replicate_snapshot_transitions() -> None:
    """etcd-io/raft progress states: a new leader probes (PROBE), streams once the follower has
    acknowledged (REPLICATE), falls back to probing on a rejection, switches to SNAPSHOT when the
    entries the follower needs are compacted, and back to REPLICATE once it is installed."""
    net = Network()
    net.nodes[1].campaign()
    net.deliver(lambda m: m.type not in (MT.APP, MT.APP_RESP))
    assert _follow_states(net, 1, 2) == [ProgressState.PROBE, ProgressState.REPLICATE]
    r1 = net.raft(1)

    # the follower loses its tail of appends: the leader learns of it through a rejection
    net.drop = lambda m: m.type is MT.APP and m.to == 2
    net.propose(1, b"lost-1")
    net.propose(1, b"lost-2")
    net.deliver()
    net.heal()
    net.tick([1], deliver=False)
    states = _follow_states(net, 1, 2)
    assert states == [ProgressState.REPLICATE, ProgressState.PROBE, ProgressState.REPLICATE]
    assert r1.prs[2].match == r1.log.last_index()

    # now the follower misses entries the leader compacts away
    net.isolate(2)
    for k in range(5):
        net.propose(1, b"c%d" % k)
    net.deliver()
    net.snapshot_and_compact(1, b"image")
    assert r1.log.first_index() > r1.prs[2].match + 1
    net.heal()
    net.tick([1], deliver=False)
    states = _follow_states(net, 1, 2)
    assert ProgressState.SNAPSHOT in states
    assert states[-1] is ProgressState.REPLICATE
    assert r1.prs[2].match == r1.log.last_index()
    assert net.installed[2] == [b"image"]
    assert log_terms(net.raft(2)) == log_terms(r1)
