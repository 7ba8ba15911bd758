"""Hostile input to the core (issue [9]): hypothesis feeds ``RawNode.step`` sequences of
arbitrary peer messages (any type, any sender — members, strangers, itself — and integers
small, near the log, at and beyond 2**63) into a follower, a candidate and a leader.

Whatever arrives, ``step`` raises nothing, and what the node would persist stays sane: the term
and the commit index never go down, the term stays at or below ``MAX_WIRE_INT`` (so it can be
stored and a campaign can still add one), the commit index never passes the last index. And
what ``Raft._accepts_sender`` promises to drop changes neither hard state, log nor
configuration. Messages in a member's name can of course move a node along: telling a member
from an impostor is the authenticated transport's job.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from core_helpers import MT, Network, log_entries
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keelfs.raft.core import Raft
from keelfs.raft.messages import (
    MAX_WIRE_INT,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Message,
    SnapshotMeta,
)
from keelfs.raft.rawnode import RawNode

REMOTE = [t for t in MT if t not in (MT.HUP, MT.BEAT, MT.PROP)]
STRANGER = 99
EDGES = [MAX_WIRE_INT + 1, 2**64 - 1]
senders = st.sampled_from([1, 2, 3, STRANGER, STRANGER, 0])

small = st.integers(min_value=0, max_value=12)
hostile = st.one_of(st.sampled_from(EDGES), st.integers(min_value=-2, max_value=-1))
conf_entries = st.builds(
    lambda kind, node: ConfChange(kind, node).encode(),
    st.sampled_from(ConfChangeType),
    st.sampled_from([1, 2, 3, 4, STRANGER, 0, 2**63]),
)
snapshots = st.builds(
    SnapshotMeta,
    index=small,
    term=small,
    conf=st.builds(ConfState, st.frozensets(st.sampled_from([1, 2, 3, 4, STRANGER]), max_size=4)),
)
INT_FIELDS = ["to", "frm", "term", "log_term", "index", "commit", "reject_hint", "read_seq"]


@st.composite
def messages(draw: st.DrawFn, to: int) -> Message:
    """A plausible message (what some member or stranger could send), then now and then one
    field made hostile: an integer out of range, another addressee, a bad entry."""
    mtype = draw(st.sampled_from(REMOTE))
    term = draw(small)
    log_term = draw(st.integers(min_value=0, max_value=term))
    index = draw(small)
    ents: tuple[Entry, ...] = ()
    if mtype is MT.APP:
        terms = sorted(draw(st.lists(st.integers(log_term, term), max_size=3)))
        ents = tuple(
            Entry(
                t,
                index + 1 + i,
                draw(st.one_of(st.binary(max_size=3), conf_entries)),
                draw(st.sampled_from(EntryType)),
            )
            for i, t in enumerate(terms)
        )
    m = Message(
        type=mtype,
        to=to,
        frm=draw(senders),
        term=term,
        log_term=log_term,
        index=index,
        entries=ents,
        commit=draw(small),
        reject=draw(st.booleans()),
        reject_hint=draw(small),
        context=draw(st.binary(max_size=3)),
        read_seq=draw(small),
        snapshot=draw(st.none() | snapshots),
        snap_offset=draw(small),
        snap_data=draw(st.binary(max_size=4)),
        snap_done=draw(st.booleans()),
        force=draw(st.booleans()),
        quiesce=draw(st.booleans()),
    )
    if draw(st.integers(0, 3)) == 0:
        field = draw(st.sampled_from([*INT_FIELDS, "entry", "addressee"]))
        if field == "entry":
            bad = Entry(draw(hostile), draw(hostile))
            m = replace(m, entries=(*m.entries, bad))
        elif field == "addressee":
            m = replace(m, to=draw(st.sampled_from([0, 5, STRANGER])))
        else:
            m = replace(m, **{field: draw(hostile)})  # type: ignore[arg-type]
    return m


def _cluster(role: str) -> Network:
    net = Network()
    net.elect(1)
    net.propose(1, b"a")
    net.deliver()
    if role == "candidate":
        net.nodes[2].campaign()
        net.take()
        net.flush()
    return net


def _node_of(net: Network, role: str) -> RawNode:
    return net.nodes[1 if role == "leader" else 2]


def _sane(node: RawNode, term: int, commit: int) -> None:
    r = node.raft
    assert term <= r.term <= MAX_WIRE_INT
    assert commit <= r.log.committed <= r.log.last_index()
    assert all(0 < e.index <= MAX_WIRE_INT and 0 <= e.term <= r.term for e in log_entries(r))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["follower", "candidate", "leader"]),
    st.lists(st.tuples(st.booleans(), st.data()), min_size=1, max_size=25),
)
def test_step_survives_any_message(role: str, steps: list[tuple[bool, st.DataObject]]) -> None:
    net = _cluster(role)
    node = _node_of(net, role)
    me = node.id
    for handle_ready, data in steps:
        m = data.draw(messages(me))
        r = node.raft
        before = (r.hard_state(), tuple(log_entries(r)), r.conf)
        must_drop = _must_drop(r, m)
        node.step(m)  # must not raise
        _sane(node, before[0].term, before[0].commit)
        if must_drop:
            assert (r.hard_state(), tuple(log_entries(r)), r.conf) == before, m.describe()
        if handle_ready:
            net.flush()  # persist, send (into the queue), apply, advance: as the runtime does
            net.take()


LEADER_TRAFFIC = (MT.APP, MT.HEARTBEAT, MT.SNAP)
FROM_THE_LEADER = (*LEADER_TRAFFIC, MT.TIMEOUT_NOW, MT.READ_INDEX_RESP)


def _must_drop(r: Raft, m: Message) -> bool:
    """What ``Raft._accepts_sender`` promises to drop (its docstring), seen from outside."""
    if m.to != r.id or m.frm in (0, r.id) or not _in_range(m):
        return True
    if m.type in FROM_THE_LEADER and m.term == r.term and r.lead not in (0, m.frm):
        return True  # one leader per term
    # A stranger's leader traffic may get in (the node cannot tell it from a member it has
    # not heard of yet); nothing else of a stranger's does.
    return m.frm == STRANGER and m.type not in LEADER_TRAFFIC


def _in_range(m: Message) -> bool:
    ints_ = [m.to, m.frm, m.term, m.log_term, m.index, m.commit, m.reject_hint, m.read_seq]
    ints_ += [m.snap_offset, *(e.term for e in m.entries), *(e.index for e in m.entries)]
    if m.snapshot is not None:
        ints_ += [m.snapshot.index, m.snapshot.term]
    return all(0 <= v <= MAX_WIRE_INT for v in ints_)


@pytest.mark.parametrize("mtype", [MT.READ_INDEX, MT.TRANSFER_LEADER])
def test_a_peer_message_claiming_to_come_from_this_node_is_dropped(mtype: MT) -> None:
    """Found by the fuzz above (seed 3): a follower that knows no leader took a read or a
    transfer "from itself" off the network as a local request and raised NotLeaderError."""
    net = _cluster("follower")
    node = _node_of(net, "follower")
    node.raft.lead = 0  # a follower between leaders (after a term bump it knows none)
    before = (node.raft.hard_state(), node.raft.ignored)
    node.step(Message(type=mtype, to=node.id, frm=node.id, term=0, context=b"x", index=1))
    assert node.raft.ignored == before[1] + 1
    assert node.raft.hard_state() == before[0]
