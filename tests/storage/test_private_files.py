"""Data on disk is the keelfs user's alone: data roots 0700 (tightened if found wider), the
files keelfs writes itself 0600 — whatever the process's umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from keelfs.chunk.store import BlockStore
from keelfs.datapath.checksums import chunk_crcs
from keelfs.raft.messages import ConfState, SnapshotMeta
from keelfs.storage.rocks import RocksEngine
from keelfs.storage.snapshots import SnapshotStore

CS = 4096


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    """Under umask 022 a plain ``open`` makes 0644 files: keelfs must not rely on the umask."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_a_new_engine_directory_is_private(tmp_path: Path) -> None:
    engine = RocksEngine(tmp_path / "raft")
    try:
        assert mode(tmp_path / "raft") == 0o700
    finally:
        engine.close()


def test_an_existing_world_readable_data_root_is_tightened(tmp_path: Path) -> None:
    root = tmp_path / "raft"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    engine = RocksEngine(root)
    try:
        assert mode(root) == 0o700
    finally:
        engine.close()


def test_a_chunk_servers_directories_and_replica_files_are_private(tmp_path: Path) -> None:
    store = BlockStore.open(tmp_path / "blocks")
    data = os.urandom(2 * CS)
    store.write_replica(7, 1, "shard-1", data, CS)
    writer = store.create(8, 1, "shard-1", CS)
    writer.write(data[:CS], chunk_crcs(data[:CS], CS))
    assert mode(tmp_path / "blocks") == 0o700
    files = [p for p in (tmp_path / "blocks").rglob("*") if p.is_file()]
    assert any(p.name.startswith("blk_7_1") for p in files)
    assert any(p.name.startswith("blk_8_1") for p in files)
    wide = {str(p.relative_to(tmp_path)): oct(mode(p)) for p in files if mode(p) & 0o077}
    assert wide == {}


def test_snapshot_images_are_private(tmp_path: Path) -> None:
    snaps = SnapshotStore(tmp_path / "snaps")
    meta = SnapshotMeta(index=5, term=2, conf=ConfState(voters=(1, 2, 3)))
    snaps.create(meta, b"image bytes")
    images = [p for p in (tmp_path / "snaps").rglob("*") if p.is_file()]
    assert images
    assert {p.name: oct(mode(p)) for p in images if mode(p) & 0o077} == {}
