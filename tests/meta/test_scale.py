"""Scale smoke test: 20,000 files in one RocksDB-backed shard, listed page by page, with no
per-file state held in Python."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import pytest
from meta_helpers import formatted

from keelfs.meta.commands import Create, Delete, Mkdir
from keelfs.meta.kvstore import READ_CACHE_ENTRIES
from keelfs.meta.namespace import ShardStateMachine
from keelfs.meta.records import DECODED_ENTRIES, FileInfo, Inode

N = 20_000


@pytest.mark.slow
def test_twenty_thousand_files(tmp_path: Path) -> None:
    sm = ShardStateMachine(tmp_path / "db")
    d = formatted(sm)
    s = d.session()
    d.ok(Mkdir("/big"))
    start = time.perf_counter()
    for i in range(N):
        r = d.apply(Create(f"/big/file-{i:06d}"), s, i + 1)
        assert r.ok
    elapsed = time.perf_counter() - start
    print(f"\n{N} creates in {elapsed:.2f}s ({N / elapsed:,.0f}/s)")

    # the state machine holds no per-file Python structures: everything is in RocksDB, but
    # for bounded caches (decoded records, point reads) that do not grow with the files
    gc.collect()
    held = sum(1 for o in gc.get_objects() if isinstance(o, Inode | FileInfo))
    assert held <= DECODED_ENTRIES < N, held
    for owner in (sm, sm._store):
        for name, value in vars(owner).items():
            if hasattr(value, "__len__"):
                limit = READ_CACHE_ENTRIES if name == "_cache" else 100
                assert len(value) <= limit < N, (name, len(value))

    # paginate through everything
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = sm.list_dir("/big", start_after=cursor, limit=1000)
        pages += 1
        seen += [e.name for e in page.entries]
        if page.cursor is None:
            break
        cursor = page.cursor
    assert pages == N // 1000 + 1 or pages == N // 1000
    assert seen == [f"file-{i:06d}" for i in range(N)]
    assert sm.content_summary("/").file_count == N
    assert sm.stat("/big/file-012345").lease_holder == s

    # restart: nothing to rebuild in memory, the namespace is simply there
    index = sm.applied_index()
    sm.close()
    sm = ShardStateMachine(tmp_path / "db")
    assert sm.applied_index() == index
    assert len(sm.list_dir("/big", start_after="file-019990").entries) == 9

    d.sm = sm
    assert d.ok(Delete("/big", recursive=True))["files"] == N
    assert sm.list_dir("/").entries == ()
    sm.close()
