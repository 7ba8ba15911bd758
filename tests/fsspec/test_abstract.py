"""fsspec's own reusable test suite (``fsspec.tests.abstract``) run against keelfs: a real
cluster (3 co-hosted masters, 3 chunk servers), one for the whole module."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

fsspec = pytest.importorskip("fsspec")
from fsspec.tests import abstract  # noqa: E402

from keelfs.fsspec import KeelFileSystem  # noqa: E402
from keelfs.master.cluster import MetaCluster  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def keel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeelFileSystem]:
    c = MetaCluster(tmp_path_factory.mktemp("fsspec"), shards=("shard-1",))
    with c:
        c.start_chunk_servers(3, "--no-fsync-on-close")
        fs = KeelFileSystem(c.config_addresses[0], skip_instance_cache=True)
        yield fs
        fs.client.close()


class KeelFixtures(abstract.AbstractFixtures):  # type: ignore[misc]
    @pytest.fixture
    def fs(self, keel: KeelFileSystem) -> KeelFileSystem:
        return keel

    @pytest.fixture
    def fs_join(self) -> Any:
        return posixpath.join  # keeps a trailing slash: "a directory" to fsspec

    @pytest.fixture
    def fs_path(self, keel: KeelFileSystem, request: pytest.FixtureRequest) -> Iterator[str]:
        path = f"/t-{abs(hash(request.node.nodeid))}"
        keel.mkdir(path)
        yield path
        keel.rm(path, recursive=True)


class TestKeelCopy(abstract.AbstractCopyTests, KeelFixtures):  # type: ignore[misc]
    pass


class TestKeelGet(abstract.AbstractGetTests, KeelFixtures):  # type: ignore[misc]
    pass


class TestKeelPut(abstract.AbstractPutTests, KeelFixtures):  # type: ignore[misc]
    pass


class TestKeelOpen(abstract.AbstractOpenTests, KeelFixtures):  # type: ignore[misc]
    pass


class TestKeelPipe(abstract.AbstractPipeTests, KeelFixtures):  # type: ignore[misc]
    pass


def test_registered_protocol_and_pandas(keel: KeelFileSystem, tmp_path: Path) -> None:
    address = keel.address
    with fsspec.open(f"keelfs://{address}/pd/table.csv", "wb") as f:
        f.write(b"a,b\n1,2\n3,4\n")
    assert fsspec.filesystem("keelfs", address=address).cat_file("/pd/table.csv").startswith(b"a,b")
    pd = pytest.importorskip("pandas")
    df = pd.read_csv(f"keelfs://{address}/pd/table.csv")
    assert df["b"].sum() == 6
