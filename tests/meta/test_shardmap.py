"""The config group: ShardMap changes and versions, registries, tx ids, bad ids, snapshots."""

from __future__ import annotations

from pathlib import Path

import pytest
from meta_helpers import Driver, state

from keelfs.errors import NotFound, Redirect
from keelfs.meta import shardmap
from keelfs.meta.commands import (
    AddShard,
    IssueTxIds,
    RegisterChunkServer,
    RegisterMaster,
    RemoveShard,
    SetShardMembers,
    UnregisterChunkServer,
)
from keelfs.meta.ring import moved_keys
from keelfs.meta.shardmap import ConfigStateMachine, ShardMap


@pytest.fixture
def config() -> Driver:
    d = Driver(ConfigStateMachine())
    for node in (1, 2, 3, 4):
        d.ok(RegisterMaster(node, f"10.0.0.{node}:7000"))
    return d


def test_empty_map(config: Driver) -> None:
    m = config.sm.shard_map()
    assert (m.version, dict(m.shards)) == (0, {})
    with pytest.raises(Exception, match="no shards"):
        m.shard_for_path("/a")


def test_add_and_remove_shards_bump_the_version(config: Driver) -> None:
    assert config.ok(AddShard("shard-1", (1, 2, 3))) == {"version": 1}
    assert config.ok(AddShard("shard-2", (2, 3, 4))) == {"version": 2}
    m = config.sm.shard_map()
    assert m.members("shard-1") == {1: "10.0.0.1:7000", 2: "10.0.0.2:7000", 3: "10.0.0.3:7000"}
    assert set(m.ring.shards) == {"shard-1", "shard-2"}
    assert m.shard_for_path("/a/b") == m.ring.lookup("/a")
    assert m.shard_for_directory("/a") == m.ring.lookup("/a")
    assert config.ok(RemoveShard("shard-1")) == {"version": 3}
    m = config.sm.shard_map()
    assert list(m.shards) == ["shard-2"] and m.shard_for_path("/anything") == "shard-2"


def test_fetch_since_version(config: Driver) -> None:
    config.ok(AddShard("shard-1", (1,)))
    sm = config.sm
    assert sm.fetch_shard_map(None) == sm.shard_map()
    assert sm.fetch_shard_map(0) == sm.shard_map()
    assert sm.fetch_shard_map(1) is None  # unchanged
    config.ok(AddShard("shard-2", (2,)))
    fresh = sm.fetch_shard_map(1)
    assert fresh is not None and fresh.version == 2


def test_map_errors_change_nothing(config: Driver) -> None:
    config.ok(AddShard("shard-1", (1, 2)))
    before = state(config.sm)
    config.err(AddShard("shard-1", (3,)), "ALREADY_EXISTS")
    r = config.err(AddShard("shard-2", (1, 99)), "NOT_FOUND")  # unknown node id
    assert r.error is not None and (r.error["kind"], r.error["name"]) == ("node", "99")
    config.err(AddShard("shard-2", ()), "INVALID_ARGUMENT")
    config.err(AddShard("shard-2", (1, 1)), "INVALID_ARGUMENT")
    config.err(AddShard("shard-2", (0,)), "INVALID_ARGUMENT")
    config.err(AddShard("bad id!", (1,)), "INVALID_ARGUMENT")
    config.err(AddShard("", (1,)), "INVALID_ARGUMENT")
    r = config.err(RemoveShard("shard-9"), "NOT_FOUND")  # unknown shard id
    assert r.error is not None and r.error["kind"] == "shard"
    config.err(RemoveShard("shard-1"), "INVALID_ARGUMENT")  # the last one
    config.err(SetShardMembers("shard-9", (1,)), "NOT_FOUND")
    config.err(SetShardMembers("shard-1", (42,)), "NOT_FOUND")
    config.err(RegisterMaster(0, "x:1"), "INVALID_ARGUMENT")
    config.err(RegisterMaster(5, "has space:1"), "INVALID_ARGUMENT")
    config.err(RegisterMaster(5, ""), "INVALID_ARGUMENT")
    config.err(UnregisterChunkServer("cs-9"), "NOT_FOUND")
    config.err(RegisterChunkServer("cs 1", "h:1"), "INVALID_ARGUMENT")
    config.err(RegisterChunkServer("cs-1", "h:1", rack="no-slash"), "INVALID_ARGUMENT")
    config.err(IssueTxIds(0), "INVALID_ARGUMENT")
    config.err(IssueTxIds(10_001), "INVALID_ARGUMENT")
    assert state(config.sm) == before


def test_members_and_addresses(config: Driver) -> None:
    config.ok(AddShard("shard-1", (1, 2, 3)))
    assert config.ok(SetShardMembers("shard-1", (1, 2, 3))) == {"version": 1}  # no change
    assert config.ok(SetShardMembers("shard-1", (2, 3, 4))) == {"version": 2}
    assert set(config.sm.shard_map().members("shard-1")) == {2, 3, 4}
    # a member's new address is a map change; a non-member's is not
    assert config.ok(RegisterMaster(4, "10.9.9.4:7000")) == {"version": 3}
    assert config.sm.shard_map().members("shard-1")[4] == "10.9.9.4:7000"
    assert config.ok(RegisterMaster(1, "10.9.9.1:7000")) == {"version": 3}
    assert config.sm.masters()[1] == "10.9.9.1:7000"
    with pytest.raises(NotFound):
        config.sm.shard_map().members("shard-9")


def test_redirect_for_a_path(config: Driver) -> None:
    config.ok(AddShard("shard-1", (1,)))
    config.ok(AddShard("shard-2", (2, 3)))
    m = config.sm.shard_map()
    err = m.redirect("/a/b")
    assert isinstance(err, Redirect)
    assert err.shard_id == m.shard_for_path("/a/b") and err.map_version == 2
    assert err.details["addresses"] == {str(n): a for n, a in m.members(err.shard_id).items()}


def test_chunk_servers(config: Driver) -> None:
    assert config.ok(RegisterChunkServer("cs-1", "10.1.0.1:9000", "/rack-a")) == {
        "server_id": "cs-1",
        "new": True,
    }
    config.advance(1000)
    assert config.ok(RegisterChunkServer("cs-1", "10.1.0.9:9000", "/rack-a"))["new"] is False
    config.ok(RegisterChunkServer("cs-2", "10.1.0.2:9000"))
    servers = config.sm.chunk_servers()
    assert servers["cs-1"].address == "10.1.0.9:9000"
    assert servers["cs-1"].registered_ms == config.now - 1000  # first registration kept
    assert servers["cs-2"].rack == "/default-rack"
    config.ok(UnregisterChunkServer("cs-1"))
    assert list(config.sm.chunk_servers()) == ["cs-2"]


def test_tx_ids_are_unique_and_exactly_once(config: Driver) -> None:
    s = config.session()
    assert config.sm.next_tx_id() == 1
    first = config.ok(IssueTxIds(10), s, 1)
    assert first == {"first": 1, "count": 10}
    assert config.ok(IssueTxIds(10), s, 1) == first  # a retry is not a second reservation
    assert config.ok(IssueTxIds(5), s, 2) == {"first": 11, "count": 5}
    assert config.sm.next_tx_id() == 16


def test_add_shard_retry_returns_the_original_success(config: Driver) -> None:
    s = config.session()
    first = config.apply(AddShard("shard-1", (1,)), s, 1)
    assert config.apply(AddShard("shard-1", (1,)), s, 1) == first
    assert first.ok and config.sm.shard_map().version == 1


def test_resharding_moves_only_the_new_shards_directories(config: Driver) -> None:
    for i in range(4):
        config.ok(AddShard(f"shard-{i}", (1 + i % 4,)))
    old = config.sm.shard_map()
    config.ok(AddShard("shard-4", (1,)))
    new = config.sm.shard_map()
    dirs = [f"/d{i}" for i in range(2000)]
    moved = moved_keys(old.ring, new.ring, dirs)
    assert moved and all(dst == "shard-4" for _, dst in moved.values())


def test_map_encoding_round_trip(config: Driver) -> None:
    config.ok(AddShard("shard-1", (1, 2)))
    m = config.sm.shard_map()
    assert ShardMap.decode(m.encode()) == m
    assert ShardMap.from_dict(m.to_dict()).ring.points() == m.ring.points()


def test_config_snapshot_restart_and_determinism(tmp_path: Path, config: Driver) -> None:
    s = config.session()
    config.ok(AddShard("shard-1", (1, 2)), s, 1)
    config.ok(RegisterChunkServer("cs-1", "h:1"))
    config.ok(IssueTxIds(3))
    # replay into a RocksDB-backed config state machine: same bytes
    durable = ConfigStateMachine(tmp_path / "cfg")
    config.replay_into(durable)
    assert durable.snapshot() == config.sm.snapshot()
    durable.close()
    durable = ConfigStateMachine(tmp_path / "cfg")
    assert durable.applied_index() == config.index
    assert durable.shard_map() == config.sm.shard_map()
    durable.close()
    # an in-memory member restarts from a snapshot
    fresh = ConfigStateMachine()
    fresh.restore(config.sm.snapshot(), config.index)
    assert fresh.shard_map() == config.sm.shard_map()
    assert fresh.chunk_servers() == config.sm.chunk_servers()
    assert fresh.next_tx_id() == 4
    assert fresh.session(s) is not None


def test_block_keys_rotate_through_the_config_state(config: Driver) -> None:
    """Issue [9]: the block-token keys live in the config group's replicated state; each new
    key gets the next id, keys expired by the log's clock go, a replica replaying the log has
    the same keys, and the command's result never carries the secret."""
    from keelfs.master.block_keys import new_key, rotation_due
    from keelfs.meta.commands import AddBlockKey

    now = config.now
    every, activation = 3_600_000, 30_000
    assert config.sm.block_keys() == [] and rotation_due([], now, every, activation)
    first = new_key([], now, every_ms=every, activation_ms=activation)
    assert first.active_ms == now  # nothing was signed before: active at once
    assert config.ok(first) == {"key_id": 1}
    keys = config.sm.block_keys()
    assert [(k.key_id, k.secret.hex(), k.active_ms) for k in keys] == [(1, first.secret, now)]
    assert not rotation_due(keys, now + every - activation - 1, every, activation)
    later = now + every - activation
    assert rotation_due(keys, later, every, activation)
    second = new_key(keys, later, every_ms=every, activation_ms=activation)
    assert second.active_ms == later + activation and second.secret != first.secret
    assert config.ok(second, now=later) == {"key_id": 2}
    # the first key is accepted until the last token it signed expired, then dropped
    assert keys[0].expires_ms >= second.active_ms + 3_600_000
    third = new_key(config.sm.block_keys(), keys[0].expires_ms + 1)
    assert config.ok(third, now=keys[0].expires_ms + 1) == {"key_id": 3}
    assert [k.key_id for k in config.sm.block_keys()] == [2, 3]
    replica = ConfigStateMachine()
    config.replay_into(replica)
    assert replica.block_keys() == config.sm.block_keys()
    config.err(AddBlockKey("zz", 0, 1), "INVALID_ARGUMENT")
    config.err(AddBlockKey("ab" * 32, 10, 5), "INVALID_ARGUMENT")


def test_a_maps_owners_are_remembered_per_routing_key(
    config: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    config.ok(AddShard("shard-1", (1, 2, 3)))
    config.ok(AddShard("shard-2", (2, 3, 4)))
    m = config.sm.shard_map()
    hashed: list[int] = []
    real = shardmap.key_hash

    def counted(key: str) -> int:
        hashed.append(1)
        return real(key)

    monkeypatch.setattr(shardmap, "key_hash", counted)
    owners = {m.shard_for_path(f"/d/f{i}") for i in range(5)}
    assert owners == {m.ring.lookup("/d")} and len(hashed) == 1, "one directory: one hash"
    assert m.shard_for_path("/d/.snapshot/s1/f0") == m.ring.lookup("/d")  # the live path's
    for i in range(shardmap._OWNER_CACHE_KEYS + 10):
        assert m.shard_for_path(f"/many/d{i}/f") == m.ring.lookup(f"/many/d{i}")
    assert len(m._owner_of_key) <= shardmap._OWNER_CACHE_KEYS
