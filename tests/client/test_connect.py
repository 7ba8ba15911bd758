"""Where the CLI and ``keelfs.connect`` look for the cluster (``keelfs.client.connect``):
``--address``, else ``$KEELFS_ADDRESS``, else the running local cluster, else the default."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from keelfs.client.connect import (
    DEFAULT_ADDRESS,
    forget_local_cluster,
    local_cluster_record,
    parse_addresses,
    record_local_cluster,
    resolve_seeds,
)


@pytest.fixture
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("KEELFS_ADDRESS", raising=False)
    return tmp_path / "state"


NO_SUCH_PID = 2**22 + 1  # above Linux's largest pid_max: no process has it


def test_a_comma_list_is_several_addresses() -> None:
    assert parse_addresses(" 10.0.0.1:7001, 10.0.0.2:7001 ,") == ["10.0.0.1:7001", "10.0.0.2:7001"]
    with pytest.raises(ValueError, match="no address"):
        parse_addresses(" , ")


def test_the_flag_then_the_environment_then_the_local_cluster_then_the_default(
    state_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert resolve_seeds(None).addresses == [DEFAULT_ADDRESS]
    record_local_cluster(tmp_path / "c", ["127.0.0.1:5001", "127.0.0.1:5002"], [os.getpid()])
    assert local_cluster_record() == state_home / "keelfs" / "local-cluster.json"
    local = resolve_seeds(None)
    assert local.addresses == ["127.0.0.1:5001", "127.0.0.1:5002"]
    assert str(tmp_path / "c") in local.origin
    monkeypatch.setenv("KEELFS_ADDRESS", "127.0.0.1:6001,127.0.0.1:6002")
    assert resolve_seeds(None).addresses == ["127.0.0.1:6001", "127.0.0.1:6002"]
    assert resolve_seeds("127.0.0.1:7777").addresses == ["127.0.0.1:7777"]


def test_a_local_cluster_that_stopped_is_not_used(state_home: Path, tmp_path: Path) -> None:
    record_local_cluster(tmp_path / "c", ["127.0.0.1:5001"], [NO_SUCH_PID])
    assert resolve_seeds(None).addresses == [DEFAULT_ADDRESS]


def test_down_forgets_only_its_own_cluster(state_home: Path, tmp_path: Path) -> None:
    record_local_cluster(tmp_path / "c", ["127.0.0.1:5001"], [os.getpid()])
    forget_local_cluster(tmp_path / "other")  # another cluster's down: not ours to forget
    assert resolve_seeds(None).addresses == ["127.0.0.1:5001"]
    forget_local_cluster(tmp_path / "c")
    assert not local_cluster_record().exists()
    assert resolve_seeds(None).addresses == [DEFAULT_ADDRESS]


def test_an_unreadable_record_counts_as_none(state_home: Path) -> None:
    local_cluster_record().parent.mkdir(parents=True)
    local_cluster_record().write_text("{not json")
    assert resolve_seeds(None).addresses == [DEFAULT_ADDRESS]
