"""A co-hosted metadata cluster (3 processes) shared by this directory's process tests; every
process is killed at teardown, and the logs are printed if the cluster failed to start."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keelfs.master.cluster import MetaCluster


@pytest.fixture(scope="module")
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
