"""Epoch fencing per shard, and its persistence across restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from keelfs.chunk.fencing import EpochTable
from keelfs.errors import Fenced, InvalidArgument, KeelError


def test_epochs_are_kept_per_shard_and_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "epochs.json"
    table = EpochTable(path)
    table.admit("shard-1", 3)
    table.admit("shard-2", 1)
    table.admit("shard-1", 3)  # the same epoch again is fine
    with pytest.raises(Fenced) as exc:
        table.admit("shard-1", 2)
    assert exc.value.current_epoch == 3
    assert exc.value.details == {"shard_id": "shard-1", "epoch": 2, "current_epoch": 3}
    table.admit("shard-2", 7)  # shards do not fence each other
    again = EpochTable(path)
    assert again.snapshot() == {"shard-1": 3, "shard-2": 7}
    with pytest.raises(Fenced):
        again.admit("shard-2", 6)
    assert not again.check("shard-1", 3) and again.check("shard-1", 4)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_bad_fences_are_invalid(tmp_path: Path) -> None:
    table = EpochTable(tmp_path / "e.json")
    with pytest.raises(InvalidArgument):
        table.admit("shard-1", 0)
    with pytest.raises(InvalidArgument):
        table.admit("", 1)


def test_fenced_round_trips_through_details() -> None:
    err = Fenced("shard-1", 2, 5)
    back = KeelError.from_details(err.to_details())
    assert back == err and isinstance(back, Fenced)
