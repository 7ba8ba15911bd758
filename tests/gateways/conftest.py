"""A real cluster (one shard on 3 co-hosted masters, 3 chunk servers) and the S3 gateway in
its own process (``keelfs s3``), shared by a test module; every process is killed at
teardown, and the logs are printed if something failed to start."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keelfs.runtime.processes import hard_kill
from keelfs.server.metacluster import MetaCluster
from keelfs.testing.tiers import starts_processes
from tests.gateways.s3_helpers import Gateway, start_gateway


@pytest.fixture(scope="module")
@starts_processes
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("s3")
    c = MetaCluster(root, shards=("shard-1",))
    proc = None
    try:
        c.start()
        c.start_chunk_servers(3, "--no-fsync-on-close")
        proc, endpoint, user = start_gateway(c, root)
        yield Gateway(c, endpoint, proc, user)
    except BaseException:
        for node_id in sorted(c.nodes):
            print(f"----- node {node_id} log (tail) -----\n{c.log_tail(node_id, 30)}")
        err = root / "s3.err"
        if err.exists():
            print(f"----- s3 gateway log (tail) -----\n{err.read_text()[-4000:]}")
        raise
    finally:
        if proc is not None:
            hard_kill(proc)
        c.stop_all()
