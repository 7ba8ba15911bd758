"""The config group's record of chunk servers' administrative states (decommission,
maintenance): durable, versioned with the ShardMap, bad input refused changing nothing."""

from __future__ import annotations

import pytest
from meta_helpers import Driver, state

from keelfs.meta.commands import (
    AddShard,
    RegisterChunkServer,
    RegisterMaster,
    SetServerAdminState,
    UnregisterChunkServer,
)
from keelfs.meta.shardmap import ConfigStateMachine, ServerAdminState


@pytest.fixture
def config() -> Driver:
    d = Driver(ConfigStateMachine())
    for node in (1, 2, 3):
        d.ok(RegisterMaster(node, f"10.0.0.{node}:7000"))
    d.ok(AddShard("shard-1", (1, 2, 3)))
    d.ok(RegisterChunkServer("cs-1", "10.1.0.1:9000", "/rack-a"))
    d.ok(RegisterChunkServer("cs-2", "10.1.0.2:9000", "/rack-b"))
    return d


def test_states_are_recorded_and_bump_the_map_version(config: Driver) -> None:
    v0 = config.sm.shard_map().version
    assert config.ok(SetServerAdminState("cs-1", "decommissioning")) == {"version": v0 + 1}
    since = config.now
    config.advance(500)
    # the same state again (a retry): nothing changes, not even the version
    assert config.ok(SetServerAdminState("cs-1", "decommissioning")) == {"version": v0 + 1}
    until = config.now + 60_000
    assert config.ok(SetServerAdminState("cs-2", "maintenance", until)) == {"version": v0 + 2}
    assert config.sm.server_admin_states() == {
        "cs-1": ServerAdminState("cs-1", "decommissioning", 0, since),
        "cs-2": ServerAdminState("cs-2", "maintenance", until, config.now),
    }
    assert config.ok(SetServerAdminState("cs-1", "in_service")) == {"version": v0 + 3}
    assert config.ok(SetServerAdminState("cs-1", "in_service")) == {"version": v0 + 3}
    assert set(config.sm.server_admin_states()) == {"cs-2"}


def test_unregistering_forgets_the_state(config: Driver) -> None:
    config.ok(SetServerAdminState("cs-1", "decommissioning"))
    config.ok(UnregisterChunkServer("cs-1"))
    assert config.sm.server_admin_states() == {}


def test_bad_input_changes_nothing(config: Driver) -> None:
    before = state(config.sm)
    config.err(SetServerAdminState("cs-9", "decommissioning"), "NOT_FOUND")
    config.err(SetServerAdminState("cs-1", "retired"), "INVALID_ARGUMENT")
    config.err(SetServerAdminState("cs 1", "decommissioning"), "INVALID_ARGUMENT")
    config.err(SetServerAdminState("cs-1", "maintenance"), "INVALID_ARGUMENT")  # no end
    config.err(SetServerAdminState("cs-1", "decommissioning", 5), "INVALID_ARGUMENT")
    assert state(config.sm) == before
