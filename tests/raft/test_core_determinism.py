"""Determinism: the core does no I/O and draws all randomness from ``Config.rng``, so a
scripted run replays exactly from its seeds (what the simulator's one-line replay relies on)."""

from __future__ import annotations

import random

from core_helpers import Network

from keelfs.raft.core import StateType
from keelfs.raft.errors import ProposalDropped
from keelfs.raft.messages import ConfChange, ConfChangeType, HardState, Message


def _leader(net: Network) -> int | None:
    leaders = [i for i, n in net.nodes.items() if n.raft.state is StateType.LEADER]
    return max(leaders, key=lambda i: net.raft(i).term) if leaders else None


def _scenario(seed: int) -> tuple[list[Message], dict[int, HardState], dict[int, list[bytes]]]:
    """Five nodes elect a leader by timeout, take writes and reads, lose the leader to a
    partition, heal, transfer leadership, snapshot, add a learner."""
    net = Network(
        ids=(1, 2, 3, 4, 5),
        seed=seed,
        max_size_per_msg=256,
        max_inflight_msgs=4,
        snapshot_chunk_size=64,
        snapshot_window=2,
    )
    isolated = None
    for t in range(400):
        net.tick()
        ld = _leader(net)
        if ld is None:
            continue
        node = net.nodes[ld]
        try:
            if t % 5 == 0:
                node.propose(b"k%d=%d" % (t % 7, t))
            if t % 11 == 0:
                node.read_index(b"r%d" % t)
            if t == 120:
                isolated = ld
                net.isolate(ld)
            if t == 200:
                net.heal()
            if t == 260:
                node.transfer_leader(1 if ld != 1 else 2)
            if t == 300:
                net.snapshot_and_compact(ld, b"image-%d" % t * 10)
            if t == 320:
                net.add(6, seed=seed * 1000 + 6)
                node.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 6))
        except ProposalDropped:
            pass
    assert isolated is not None
    hard = {i: net.storages[i].hard_state for i in net.nodes}
    applied = {i: [e.data for e in net.applied[i]] for i in net.nodes}
    return net.sent, hard, applied


def test_core_same_seeds_replay_identical_message_sequence() -> None:
    """Same seeds, same script: the same messages in the same order (whatever the global
    ``random`` state), and the same persisted and applied results."""
    saved = random.getstate()
    try:
        random.seed(1)
        a = _scenario(seed=5)
        random.seed(2)
        b = _scenario(seed=5)
    finally:
        random.setstate(saved)
    assert len(a[0]) > 1000
    assert a[0] == b[0]
    assert a[1] == b[1]
    assert a[2] == b[2]
    terms = {hs.term for hs in a[1].values()}
    assert max(terms) >= 4  # the script did go through several elections


def test_core_different_seeds_give_different_runs() -> None:
    """Control: the seed does matter (election timing differs), so the test above is not
    comparing two runs that could not differ."""
    assert _scenario(seed=5)[0] != _scenario(seed=6)[0]
