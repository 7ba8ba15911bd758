"""Fixtures for the metadata tests (helpers in ``meta_helpers``).

``shard`` is a RocksDB-backed shard member with its root directory formatted; ``mem_shard``
the same in memory. This directory goes on ``sys.path`` so the helpers import however pytest is
launched.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
for _p in (str(_HERE.parents[1]), str(_HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from meta_helpers import Driver, formatted  # noqa: E402

from keelfs.meta.namespace import ShardStateMachine  # noqa: E402


@pytest.fixture
def shard(tmp_path: Path) -> Iterator[Driver]:
    sm = ShardStateMachine(tmp_path / "shard", shard_id="shard-1")
    try:
        yield formatted(sm)
    finally:
        sm.close()


@pytest.fixture
def mem_shard() -> Driver:
    return formatted(ShardStateMachine(None, shard_id="shard-1"))
