"""Concat on a namespace of two shards (no chunk servers: the files are empty or inline):
the files of one directory are joined in one command; sources whose entries are on another
shard than the target's are refused with a clear error, and nothing changes."""

from __future__ import annotations

import pytest

from keelfs.errors import InvalidArgument
from keelfs.server.metacluster import MetaCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_concat_in_one_directory_and_refused_across_shards(cluster: MetaCluster) -> None:
    fs = cluster.client()
    m = fs.shard_map()
    dirs = [f"/cs{i}" for i in range(40)]
    here = m.shard_for_path(f"{dirs[0]}/t")
    there = next(d for d in dirs if m.shard_for_path(f"{d}/s") != here)
    for d in (dirs[0], there):
        fs.mkdir(d, parents=True)
    fs.write_bytes(f"{dirs[0]}/t", b"ab")
    fs.write_bytes(f"{dirs[0]}/s", b"cd")
    fs.write_bytes(f"{there}/s", b"ef")
    info = fs.concat(f"{dirs[0]}/t", [f"{dirs[0]}/s"])
    assert info.length == 4 and fs.read_bytes(f"{dirs[0]}/t") == b"abcd"
    assert not fs.exists(f"{dirs[0]}/s")
    with pytest.raises(InvalidArgument, match="another shard"):
        fs.concat(f"{dirs[0]}/t", [f"{there}/s"])
    assert fs.read_bytes(f"{there}/s") == b"ef" and fs.read_bytes(f"{dirs[0]}/t") == b"abcd"
