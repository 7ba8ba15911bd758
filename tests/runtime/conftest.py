"""Fixtures for the runtime tests: real-process clusters that are always cleaned up.

``make_cluster(n=3, **kwargs)`` starts a :class:`~keelfs.server.kvcluster.ProcessCluster`
under the test's ``tmp_path``; at teardown every process is killed, and when the test failed
the tail of each node's log is printed (pytest shows it with the failure).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

from keelfs.server.kvcluster import ProcessCluster
from keelfs.testing.tiers import starts_processes


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None]:
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep


@pytest.fixture
@starts_processes
def make_cluster(
    tmp_path: Any, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ProcessCluster]]:
    clusters: list[ProcessCluster] = []

    def make(n: int = 3, **kwargs: Any) -> ProcessCluster:
        cluster = ProcessCluster(tmp_path / f"cluster{len(clusters)}", n, **kwargs)
        clusters.append(cluster)
        return cluster.start()

    try:
        yield make
    finally:
        rep = getattr(request.node, "rep_call", None)
        failed = rep is None or rep.failed
        for cluster in clusters:
            if failed:
                for node_id in sorted(cluster.nodes):
                    print(f"----- node {node_id} log (tail) -----")
                    print(cluster.log_tail(node_id, 30))
            cluster.stop_all()
