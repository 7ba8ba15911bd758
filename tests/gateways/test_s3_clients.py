"""Other S3 clients against the gateway: s3fs (its file system verbs, then fsspec's own
abstract test suite through it, as s3fs runs it against moto) and
``pyarrow.fs.S3FileSystem`` writing and reading a partitioned Parquet dataset."""

from __future__ import annotations

import itertools
import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateways.s3_helpers import ACCESS_KEY, SECRET_KEY, Gateway

s3fs = pytest.importorskip("s3fs")
from fsspec.tests import abstract  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

_names = itertools.count(1)


def _s3fs(gateway: Gateway) -> Any:
    return s3fs.S3FileSystem(
        key=ACCESS_KEY,
        secret=SECRET_KEY,
        endpoint_url=gateway.endpoint,
        client_kwargs={"region_name": "us-east-1"},
        config_kwargs={"s3": {"addressing_style": "path"}, "signature_version": "s3v4"},
        skip_instance_cache=True,
        use_listings_cache=False,
    )


def test_s3fs_put_get_ls_rm(gateway: Gateway, tmp_path: Path) -> None:
    fs = _s3fs(gateway)
    fs.mkdir("s3fs-basics")
    local = tmp_path / "local.bin"
    local.write_bytes(b"x" * 100_000)
    fs.put(str(local), "s3fs-basics/dir/local.bin")
    fs.pipe("s3fs-basics/dir/sub/small", b"small")
    fs.pipe("s3fs-basics/top", b"top")
    assert sorted(fs.ls("s3fs-basics")) == ["s3fs-basics/dir", "s3fs-basics/top"]
    assert fs.isdir("s3fs-basics/dir") and fs.isfile("s3fs-basics/top")
    assert fs.info("s3fs-basics/dir/local.bin")["size"] == 100_000
    assert sorted(fs.find("s3fs-basics")) == [
        "s3fs-basics/dir/local.bin", "s3fs-basics/dir/sub/small", "s3fs-basics/top",
    ]  # fmt: skip
    fs.get("s3fs-basics/dir/local.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == local.read_bytes()
    assert fs.cat("s3fs-basics/dir/local.bin", start=10, end=20) == b"x" * 10
    with fs.open("s3fs-basics/written", "wb", block_size=5 * 2**20) as f:
        for _ in range(3):
            f.write(b"w" * (3 * 2**20))  # 9 MiB: a multipart upload
    assert fs.info("s3fs-basics/written")["size"] == 9 * 2**20
    fs.rm("s3fs-basics/dir", recursive=True)
    assert not fs.exists("s3fs-basics/dir/local.bin")
    assert sorted(fs.ls("s3fs-basics")) == ["s3fs-basics/top", "s3fs-basics/written"]
    fs.rm("s3fs-basics", recursive=True)
    assert not fs.exists("s3fs-basics")


def test_pyarrow_parquet_dataset(gateway: Gateway) -> None:
    pa = pytest.importorskip("pyarrow")
    ds = pytest.importorskip("pyarrow.dataset")
    pq = pytest.importorskip("pyarrow.parquet")
    from pyarrow import fs as pafs

    host = gateway.endpoint.removeprefix("http://")
    fs = pafs.S3FileSystem(
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        endpoint_override=host,
        scheme="http",
        region="us-east-1",
        allow_bucket_creation=True,
    )
    fs.create_dir("arrow-data")
    table = pa.table(
        {
            "year": [2020, 2020, 2021, 2022, 2022, 2022],
            "city": ["a", "b", "c", "d", "e", "f"],
            "value": [1.5, 2.5, 3.5, 4.5, 5.5, 6.5],
        }
    )
    ds.write_dataset(
        table,
        "arrow-data/events",
        format="parquet",
        partitioning=["year"],
        partitioning_flavor="hive",
        filesystem=fs,
    )
    back = ds.dataset(
        "arrow-data/events", format="parquet", partitioning="hive", filesystem=fs
    ).to_table()
    assert back.sort_by("city").select(["city", "value"]) == table.select(["city", "value"])
    assert sorted(back.column("year").to_pylist()) == sorted(table.column("year").to_pylist())
    selectors = fs.get_file_info(pafs.FileSelector("arrow-data/events", recursive=True))
    files = sorted(i.path for i in selectors if i.type == pafs.FileType.File)
    assert len(files) == 3 and all(f.endswith(".parquet") for f in files)
    pq.write_table(table, "arrow-data/one.parquet", filesystem=fs)
    assert pq.read_table("arrow-data/one.parquet", filesystem=fs) == table


# -- fsspec's abstract suite through s3fs ------------------------------------------------------
_SCENARIOS: dict[str, str] = {}
"""Scenario name -> its source tree (built on first use, in the module's bucket)."""


@pytest.fixture(scope="module")
def s3fs_fs(gateway: Gateway) -> Iterator[Any]:
    fs = _s3fs(gateway)
    fs.mkdir("abstract")
    _SCENARIOS.clear()
    yield fs
    _SCENARIOS.clear()


class S3fsFixtures(abstract.AbstractFixtures):  # type: ignore[misc]
    """As s3fs's own derived fixtures (no empty directories), each test in its own prefix of
    one bucket. The suite reads its source trees and never changes them (copies go to
    ``fs_target``): each is built once per module, as ``tests/fsspec`` does."""

    @pytest.fixture
    def fs(self, s3fs_fs: Any) -> Any:
        s3fs_fs.invalidate_cache()
        return s3fs_fs

    @pytest.fixture
    def fs_join(self) -> Any:
        return posixpath.join

    @pytest.fixture
    def fs_path(self, s3fs_fs: Any) -> Iterator[str]:
        path = f"abstract/t-{next(_names)}"
        yield path
        if s3fs_fs.exists(path):
            s3fs_fs.rm(path, recursive=True)

    @pytest.fixture
    def supports_empty_directories(self) -> bool:
        return False

    def _scenario(self, fs: Any, name: str, build: Any) -> str:
        if name not in _SCENARIOS:
            _SCENARIOS[name] = build(fs, posixpath.join, f"abstract/scenarios/{name}")
        return _SCENARIOS[name]

    @pytest.fixture
    def fs_bulk_operations_scenario_0(self, s3fs_fs: Any) -> str:
        return self._scenario(s3fs_fs, "bulk0", self._bulk_operations_scenario_0)

    @pytest.fixture
    def fs_glob_edge_cases_files(self, s3fs_fs: Any) -> str:
        return self._scenario(s3fs_fs, "glob", self._glob_edge_cases_files)

    @pytest.fixture
    def fs_dir_and_file_with_same_name_prefix(self, s3fs_fs: Any) -> str:
        return self._scenario(s3fs_fs, "prefix", self._dir_and_file_with_same_name_prefix)

    @pytest.fixture
    def fs_10_files_with_hashed_names(self, s3fs_fs: Any) -> str:
        return self._scenario(s3fs_fs, "hashed", self._10_files_with_hashed_names)


class TestS3fsCopy(abstract.AbstractCopyTests, S3fsFixtures):  # type: ignore[misc]
    pass


class TestS3fsGet(abstract.AbstractGetTests, S3fsFixtures):  # type: ignore[misc]
    pass


class TestS3fsPut(abstract.AbstractPutTests, S3fsFixtures):  # type: ignore[misc]
    pass


class TestS3fsOpen(abstract.AbstractOpenTests, S3fsFixtures):  # type: ignore[misc]
    def test_open_exclusive(self, fs: Any, fs_target: str) -> None:
        """s3fs checks ``"x"`` when the file is committed (a PUT with ``If-None-Match: *``,
        which the gateway refuses with 412 when the key exists), not when it is opened as the
        suite's own version expects."""
        fs.pipe(fs_target, b"data")
        with pytest.raises(FileExistsError), fs.open(fs_target, "xb") as f:
            f.write(b"other")
        assert fs.cat(fs_target) == b"data"


class TestS3fsPipe(abstract.AbstractPipeTests, S3fsFixtures):  # type: ignore[misc]
    pass
