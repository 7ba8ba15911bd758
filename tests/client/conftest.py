"""A co-hosted metadata cluster (3 processes) shared by this directory's process tests; every
process is killed at teardown, and the logs are printed if the cluster failed to start."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keelfs.server.chunkservers import LocalChunkServers
from keelfs.server.metacluster import MetaCluster
from keelfs.testing.tiers import starts_processes


@pytest.fixture(scope="module")
@starts_processes
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetaCluster]:
    c = MetaCluster(tmp_path_factory.mktemp("meta"))
    try:
        c.start()
        yield c
    except BaseException:
        for node_id in sorted(c.nodes):
            print(f"----- node {node_id} log (tail) -----\n{c.log_tail(node_id, 30)}")
        raise
    finally:
        c.stop_all()


@pytest.fixture(scope="module")
@starts_processes
def data_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[MetaCluster, LocalChunkServers]]:
    """One shard on 3 co-hosted masters plus 4 chunk servers reporting to them (a dead one is
    declared dead after 2 s): the data path's process tests (``test_files``,
    ``test_data_faults``)."""
    c = MetaCluster(
        tmp_path_factory.mktemp("data"), shards=("shard-1",), node_args=("--chunk-dead-after", "2")
    )
    try:
        c.start()
        servers = c.start_chunk_servers(4, "--no-fsync-on-close")
        yield c, servers
    except BaseException:
        for node_id in sorted(c.nodes):
            print(f"----- node {node_id} log (tail) -----\n{c.log_tail(node_id, 30)}")
        raise
    finally:
        c.stop_all()
