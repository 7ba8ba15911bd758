"""Fixtures for the metadata service tests: real-process clusters, always cleaned up.

``shared_cluster`` (module-scoped) is one co-hosted cluster (3 processes, each hosting a
config-group member and a member of shard-1 and shard-2) for tests that do not kill anything;
``make_cluster(**kwargs)`` starts a fresh ``MetaCluster`` for one test. At teardown every
process is killed by pid; when a test failed, the tail of each node's log is printed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from keelfs.master import batch  # noqa: E402
from keelfs.rpc.pb import meta_pb2 as pb  # noqa: E402
from keelfs.server.metacluster import MetaCluster  # noqa: E402
from keelfs.testing.tiers import starts_processes  # noqa: E402


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, Any]:
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep


def _dump(cluster: MetaCluster) -> None:
    for node_id in sorted(cluster.nodes):
        print(f"----- node {node_id} log (tail) -----")
        print(cluster.log_tail(node_id, 30))


@pytest.fixture(scope="module")
@starts_processes
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetaCluster]:
    cluster = MetaCluster(tmp_path_factory.mktemp("meta"))
    try:
        cluster.start()
        yield cluster
    except BaseException:
        _dump(cluster)
        raise
    finally:
        cluster.stop_all()


@pytest.fixture(scope="module")
@starts_processes
def failpoint_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetaCluster]:
    """3 config servers and 3 masters per shard, one role per process (a coordinator's and a
    participant's leaders are different processes), accepting ``Node.SetFailpoint``, with a
    3 s prepare timeout for cross-shard transactions."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KEELFS_FAILPOINTS", "")
        cluster = MetaCluster(
            tmp_path_factory.mktemp("txn"),
            layout="separate",
            node_args=("--txn-prepare-timeout-ms", "3000"),
        )
        try:
            cluster.start()
            yield cluster
        except BaseException:
            _dump(cluster)
            raise
        finally:
            cluster.stop_all()


@pytest.fixture
@starts_processes
def make_cluster(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., MetaCluster]]:
    clusters: list[MetaCluster] = []

    def make(**kwargs: Any) -> MetaCluster:
        cluster = MetaCluster(tmp_path / f"cluster{len(clusters)}", **kwargs)
        clusters.append(cluster)
        return cluster.start()

    try:
        yield make
    finally:
        rep = getattr(request.node, "rep_call", None)
        failed = rep is None or rep.failed
        for cluster in clusters:
            if failed:
                _dump(cluster)
            cluster.stop_all()


@pytest.fixture
def no_item_handlers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The methods of the items a batch hands to their own handlers."""
    alone: list[str] = []
    one = batch._one

    async def counted(servicer: Any, item: pb.BatchItem, context: Any) -> Any:
        alone.append(item.method)
        return await one(servicer, item, context)

    monkeypatch.setattr(batch, "_one", counted)
    return alone
