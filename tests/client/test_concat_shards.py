"""Concat on a namespace of two shards (no chunk servers: the files are inline or empty):
the files of one directory are joined by one command; sources whose entries are on other
shards than the target's by a transaction (``keelfs.master.cross_shard.concat``), with the
same checks, all or nothing."""

from __future__ import annotations

import pytest

from keelfs.errors import InvalidArgument, LeaseConflict, NotFound
from keelfs.server.metacluster import MetaCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _dirs_on_two_shards(fs: object) -> tuple[str, str]:
    m = fs.shard_map()  # type: ignore[attr-defined]
    here = m.shard_for_path("/cs0/t")
    there = next(f"/cs{i}" for i in range(1, 60) if m.shard_for_path(f"/cs{i}/s") != here)
    return "/cs0", there


def test_concat_in_one_directory_and_across_shards(cluster: MetaCluster) -> None:
    fs = cluster.client()
    home, away = _dirs_on_two_shards(fs)
    for d in (home, away):
        fs.mkdir(d, parents=True)
    fs.write_bytes(f"{home}/t", b"ab")
    fs.write_bytes(f"{home}/s", b"cd")
    fs.write_bytes(f"{away}/s", b"ef")
    fs.write_bytes(f"{away}/u", b"gh")
    info = fs.concat(f"{home}/t", [f"{home}/s"])  # one shard: one command
    assert info.length == 4 and fs.read_bytes(f"{home}/t") == b"abcd"
    assert not fs.exists(f"{home}/s")
    fs.write_bytes(f"{home}/s2", b"ij")
    info = fs.concat(f"{home}/t", [f"{away}/s", f"{home}/s2", f"{away}/u"])  # a transaction
    assert info.length == 10 and fs.read_bytes(f"{home}/t") == b"abcdefijgh"
    for gone in (f"{away}/s", f"{home}/s2", f"{away}/u"):
        assert not fs.exists(gone)


def test_a_refused_cross_shard_concat_changes_nothing(cluster: MetaCluster) -> None:
    fs = cluster.client()
    home, away = _dirs_on_two_shards(fs)
    fs.mkdir(f"{home}/r", parents=True)
    fs.mkdir(f"{away}/r", parents=True)
    fs.write_bytes(f"{home}/r/t", b"t")
    fs.write_bytes(f"{away}/r/s", b"s")
    with pytest.raises(NotFound):
        fs.concat(f"{home}/r/t", [f"{away}/r/s", f"{away}/r/missing"])
    with pytest.raises(InvalidArgument):
        fs.concat(f"{home}/r/t", [f"{away}/r/s", f"{away}/r/s"])
    fs.create(f"{away}/r/open")
    try:
        with pytest.raises(LeaseConflict):
            fs.concat(f"{home}/r/t", [f"{away}/r/s", f"{away}/r/open"])
    finally:
        fs.complete(f"{away}/r/open")
    with pytest.raises(NotFound):
        fs.concat(f"{home}/r/none", [f"{away}/r/s"])
    assert fs.read_bytes(f"{home}/r/t") == b"t" and fs.read_bytes(f"{away}/r/s") == b"s"
