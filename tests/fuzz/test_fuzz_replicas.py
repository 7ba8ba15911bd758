"""Random-but-valid command sequences applied to two replicas of the metadata state machines
(a data shard and the config group): every entry applies or answers an error (a handler may
raise only ``KeelError``; anything else stops every replica on that entry), the two replicas
answer alike and hold the same records after each entry, and an entry answered with an error
changed nothing but the bookkeeping every entry moves (applied index, clock, the session's
reply)."""

from __future__ import annotations

import base64
import json

import pytest
from fuzz_helpers import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from keelfs.errors import KeelError
from keelfs.meta import commands as c
from keelfs.meta import transactions as tx
from keelfs.meta.kvstore import KEY_END, REPLICATED_START
from keelfs.meta.machine import MetaStateMachine
from keelfs.meta.namespace import ShardStateMachine
from keelfs.meta.records import BlockInfo, Inode
from keelfs.meta.shardmap import ConfigStateMachine

T0 = 1_700_000_000_000
PATHS = ["/", "/a", "/b", "/a/b", "/a/c", "/b/a", "/a/b/c"]
BOOKKEEPING = (b"\x01clock", b"\x01s", b"\x01t")
"""Key prefixes an entry answered with an error still writes: the clock, the session records
and their expiry index."""

PATH = st.sampled_from(PATHS)
SMALL = st.one_of(st.integers(0, 5), st.sampled_from([0, 2**63 - 1, 64 * 1024, 3]))
NAME = st.sampled_from(["keelfs", "alice", "bob"])
SHARDS = st.sampled_from(["shard-1", "shard-2", "shard-3"])
TXN_ID = st.integers(1, 4)
RANGES = st.sampled_from([("0:" + str(2**64 - 1),), ("0:1000",), ("1000:2000", "5:9")])
BLOCK_ID = st.integers(1, 4)


def inodes() -> st.SearchStrategy[Inode]:
    blocks = st.lists(st.builds(BlockInfo, BLOCK_ID, st.integers(1, 3), SMALL), max_size=2)
    return st.one_of(
        st.builds(Inode, st.just("dir"), st.just(0o755), NAME, NAME, SMALL, SMALL),
        st.builds(
            Inode,
            st.just("file"),
            st.just(0o644),
            NAME,
            NAME,
            SMALL,
            SMALL,
            st.just(3),
            st.just(64 * 1024),
            blocks.map(tuple),
            st.booleans(),
            st.integers(0, 3),
        ),
    )


RECORD_STEPS = ["entry", "self", "put_entry", "put_self"]


def steps() -> st.SearchStrategy[tx.Step]:
    with_record = st.builds(
        tx.Step,
        st.sampled_from(RECORD_STEPS),
        PATH.filter(lambda p: p != "/"),
        inodes().map(lambda i: i.encode().decode()),
    )
    without = st.builds(
        tx.Step,
        st.sampled_from(sorted((tx.CHECKS | tx.CHANGES) - set(RECORD_STEPS))),
        PATH.filter(lambda p: p != "/"),
    )
    return st.one_of(with_record, without)


PART = st.lists(steps(), min_size=1, max_size=3).map(tx.encode_part)
ERROR = st.sampled_from(["", json.dumps({"code": "UNAVAILABLE", "message": "x"})])


def records() -> st.SearchStrategy[tuple[str, str]]:
    """A copied record (base64 key and value) as a move carries it."""
    entry = st.builds(lambda p: b"E" + p.encode(), st.sampled_from(["/\x00a", "/a\x00b", "/\x00b"]))
    self_key = st.builds(lambda p: b"D" + p.encode(), PATH)
    value = inodes().map(Inode.encode)
    return st.tuples(st.one_of(entry, self_key), value).map(
        lambda kv: (base64.b64encode(kv[0]).decode(), base64.b64encode(kv[1]).decode())
    )


def shard_commands() -> st.SearchStrategy[c.Command]:
    ingest = st.builds(
        lambda t, r, p, kv: c.MoveIngest(t, r, p, tuple(k for k, _ in kv), tuple(v for _, v in kv)),
        TXN_ID,
        RANGES,
        SHARDS,
        st.lists(records(), max_size=3),
    )
    return st.one_of(
        st.builds(c.Mkdir, PATH, st.just(0o755), NAME, NAME, st.booleans(), st.booleans()),
        st.builds(c.MkdirSelf, PATH),
        st.builds(c.Create, PATH, overwrite=st.booleans()),
        st.builds(c.AddBlock, PATH, BLOCK_ID, st.integers(1, 3), st.one_of(st.none(), SMALL)),
        st.builds(c.CompleteFile, PATH, st.one_of(st.none(), SMALL)),
        st.builds(c.UpdateBlock, PATH, BLOCK_ID, st.integers(1, 5)),
        st.builds(c.RecoverLease, PATH, SMALL, st.booleans()),
        st.builds(c.RenewLease),
        st.builds(c.Delete, PATH, st.booleans()),
        st.builds(c.Rename, PATH, PATH, st.booleans()),
        st.builds(c.SetReplication, PATH, st.integers(1, 4)),
        st.builds(c.SetTimes, PATH, st.one_of(st.none(), SMALL), st.one_of(st.none(), SMALL)),
        st.builds(c.SetPermission, PATH, st.sampled_from([0, 0o755, 0o7777])),
        st.builds(c.SetOwner, PATH, st.one_of(st.none(), NAME), st.one_of(st.none(), NAME)),
        st.builds(c.DequeueBlockDeletes, st.lists(BLOCK_ID, min_size=1, max_size=3).map(tuple)),
        st.builds(
            c.TxnBegin,
            TXN_ID,
            PART,
            st.dictionaries(SHARDS, PART, min_size=1, max_size=2).map(json.dumps),
        ),
        st.builds(c.TxnPrepare, TXN_ID, SHARDS, PART),
        st.builds(c.TxnDecide, TXN_ID, st.booleans(), ERROR),
        st.builds(c.TxnFinish, TXN_ID, st.booleans()),
        st.builds(c.TxnAcked, TXN_ID, SHARDS),
        st.builds(c.MoveFreeze, TXN_ID, RANGES, SHARDS),
        ingest,
        st.builds(c.MoveSettle, TXN_ID, RANGES, SHARDS, st.booleans(), st.booleans(), SMALL),
        st.builds(
            c.MoveDrop,
            TXN_ID,
            st.lists(records().map(lambda kv: kv[0]), max_size=2).map(tuple),
            st.booleans(),
        ),
        st.builds(c.Tick),
        st.builds(c.KeepAlive),
    )


def config_commands() -> st.SearchStrategy[c.Command]:
    node = st.integers(1, 4)
    members = st.lists(node, min_size=1, max_size=3, unique=True).map(tuple)
    return st.one_of(
        st.builds(c.RegisterMaster, node, st.sampled_from(["h:1", "h:2"])),
        st.builds(c.AddShard, SHARDS, members),
        st.builds(c.RemoveShard, SHARDS),
        st.builds(c.SetShardMembers, SHARDS, members),
        st.builds(c.RegisterChunkServer, st.sampled_from(["cs1", "cs2"]), st.just("h:3")),
        st.builds(c.UnregisterChunkServer, st.sampled_from(["cs1", "cs2"])),
        st.builds(c.IssueTxIds, st.integers(1, 3)),
        st.builds(c.SealRing),
        st.builds(c.BeginMove, st.integers(0, 3), TXN_ID),
        st.builds(c.SwitchMove, st.integers(0, 3), TXN_ID),
        st.builds(c.FinishMove, st.integers(0, 3), TXN_ID),
        st.builds(c.Tick),
    )


def records_of(
    sm: MetaStateMachine, leave_out: tuple[bytes, ...] = ()
) -> list[tuple[bytes, bytes]]:
    return [
        (k, v) for k, v in sm._store.scan(REPLICATED_START, KEY_END) if not k.startswith(leave_out)
    ]


class Pair:
    """Two replicas fed the same log, entry by entry (a session registered first)."""

    def __init__(self, a: MetaStateMachine, b: MetaStateMachine) -> None:
        self.replicas = (a, b)
        self.index = 0
        self.now = T0
        self.seq = 0
        self.session = int(self.entry(c.Envelope(c.RegisterSession(), T0)).value["session_id"])

    def entry(self, envelope: c.Envelope) -> c.Result:
        self.index += 1
        data = envelope.encode()
        a, b = self.replicas
        before = records_of(a, BOOKKEEPING)
        result_a, result_b = a.apply(self.index, data), b.apply(self.index, data)
        assert result_a.to_json() == result_b.to_json()
        assert records_of(a) == records_of(b)
        if not result_a.ok:
            assert KeelError.from_details(result_a.error or {}).code == result_a.code
            assert records_of(a, BOOKKEEPING) == before, result_a.error
        return result_a

    def command(self, command: c.Command, advance_ms: int) -> c.Result:
        if isinstance(command, c.Tick):
            self.now += advance_ms  # only a tick moves time: leases expire then
            return self.entry(c.Envelope(command, self.now))
        self.seq += 1
        return self.entry(c.Envelope(command, self.now, self.session, self.seq))


def run(pair: Pair, sequence: list[tuple[c.Command, int]]) -> None:
    for command, advance_ms in sequence:
        pair.command(command, advance_ms)


NAMESPACE = [
    (c.Mkdir("/a/b", parents=True), 0),
    (c.Mkdir("/b/a", parents=True), 0),
    (c.Create("/a/c"), 0),
    (c.AddBlock("/a/c", 1, 1), 0),
    (c.CompleteFile("/a/c", 10), 0),
    (c.Create("/a/b/c"), 0),
]
"""What the shard holds before the random commands: most of them then find their paths."""

MASTERS = [(c.RegisterMaster(n, f"h:{n}"), 0) for n in range(1, 5)] + [
    (c.AddShard("shard-1", (1, 2, 3)), 0),
    (c.SealRing(), 0),
]
"""What the config group holds before the random commands: masters to place shards on, a
sealed ring (adding or removing a shard then plans moves)."""

ADVANCE = st.sampled_from([0, 1, 30_000, 100_000])
"""Less than the session TTL: the session the commands are sent in lives on."""


@fuzz_settings(60)
@given(st.lists(st.tuples(shard_commands(), ADVANCE), min_size=1, max_size=25))
def test_shard_replicas_stay_identical(sequence: list[tuple[c.Command, int]]) -> None:
    a, b = (ShardStateMachine(None, shard_id="shard-1") for _ in range(2))
    pair = Pair(a, b)
    pair.entry(c.Envelope(c.MkdirSelf("/"), T0))
    run(pair, NAMESPACE)
    run(pair, sequence)


@fuzz_settings(60)
@given(st.lists(st.tuples(config_commands(), ADVANCE), min_size=1, max_size=25))
def test_config_replicas_stay_identical(sequence: list[tuple[c.Command, int]]) -> None:
    pair = Pair(ConfigStateMachine(None), ConfigStateMachine(None))
    run(pair, MASTERS)
    run(pair, sequence)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


INODE = Inode("dir", 0o755, "keelfs", "keelfs", 0, 0).encode()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"D/x", b"garbage"),  # a value that is no inode
        (b"D/x", b'[1,"d",493,"keelfs","keelfs",0,0,0,0,[],0,"me"]'),  # a holder that is text
        (b"D/\xff", INODE),  # a key that is no UTF-8
        (b"E\xff\x00a", INODE),
        (b"D/x//y", INODE),  # a path keelfs never writes
        (b"E/x\x00a/b", INODE),  # an entry name with a slash
        (b"E/x\x00", INODE),  # an entry with no name
    ],
)
def test_a_move_ingests_only_namespace_records(key: bytes, value: bytes) -> None:
    pair = Pair(*(ShardStateMachine(None, shard_id="shard-1") for _ in range(2)))
    pair.entry(c.Envelope(c.MkdirSelf("/"), T0))
    ingest = c.MoveIngest(1, ("0:" + str(2**64 - 1),), "shard-2", (b64(key),), (b64(value),))
    assert pair.command(ingest, 0).code == "INVALID_ARGUMENT"


@pytest.mark.parametrize("text", ["\u00b9:2", "1:\u0662", "1" * 5000 + ":2", "-1:2", "1:2:3"])
def test_a_hash_range_that_is_no_pair_of_decimal_numbers_is_invalid(text: str) -> None:
    with pytest.raises(KeelError):
        c.MoveFreeze(1, (text,), "shard-2").validate()
