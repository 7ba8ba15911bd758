"""fsspec's own reusable test suite (``fsspec.tests.abstract``) run against keelfs: a real
cluster (3 co-hosted masters, 3 chunk servers), one for the whole module."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

fsspec = pytest.importorskip("fsspec")
from fsspec.tests import abstract  # noqa: E402

from keelfs.fsspec import KeelFileSystem  # noqa: E402
from keelfs.meta.records import MAX_INLINE_BYTES  # noqa: E402
from keelfs.server.layout import ADMIN_USER  # noqa: E402
from keelfs.server.metacluster import MetaCluster  # noqa: E402
from keelfs.testing.tiers import starts_processes  # noqa: E402
from keelfs.tls.certs import issue_client  # noqa: E402
from keelfs.tls.credentials import TlsSettings, open_channel  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


_SCENARIOS: dict[str, str] = {}
"""Scenario name -> its source tree on the module's cluster (built on first use)."""


@pytest.fixture(scope="module")
@starts_processes
def keel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeelFileSystem]:
    c = MetaCluster(tmp_path_factory.mktemp("fsspec"), shards=("shard-1",))
    with c, pytest.MonkeyPatch.context() as mp:
        _present_certificates(c, mp)
        c.start_chunk_servers(3, "--no-fsync-on-close")
        fs = KeelFileSystem(c.config_addresses[0], skip_instance_cache=True)
        _SCENARIOS.clear()
        yield fs
        _SCENARIOS.clear()
        fs.close()
        # the instances fsspec.open/filesystem made (and cached) for the tests' URLs
        for cached in list(KeelFileSystem._cache.values()):
            cached.close()


def _present_certificates(cluster: MetaCluster, mp: pytest.MonkeyPatch) -> None:
    """With TLS (the suite's TLS tier), every file system made here presents a certificate
    from the cluster's directory: the admin's unless told a user (``$KEELFS_TLS_DIR`` and
    ``$KEELFS_USER``, as the CLI and fsspec read them), and ann's and bob's."""
    if cluster.tls_dir is None:
        return
    for user in ("ann", "bob"):
        issue_client(cluster.tls_dir, user)
    mp.setenv("KEELFS_TLS_DIR", str(cluster.tls_dir))
    mp.setenv("KEELFS_USER", ADMIN_USER)


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

    # The suite reads its remote source trees and never changes them (copies go to fs_target):
    # each is built once per module, not before every test (a file create is three Raft
    # commits and a pipeline write; rebuilding them made the suite three times slower).
    def _scenario(self, fs: KeelFileSystem, name: str, build: Any) -> str:
        if name not in _SCENARIOS:
            _SCENARIOS[name] = build(fs, posixpath.join, f"/scenarios/{name}")
        return _SCENARIOS[name]

    @pytest.fixture
    def fs_bulk_operations_scenario_0(self, keel: KeelFileSystem) -> str:
        return self._scenario(keel, "bulk0", self._bulk_operations_scenario_0)

    @pytest.fixture
    def fs_glob_edge_cases_files(self, keel: KeelFileSystem) -> str:
        return self._scenario(keel, "glob", self._glob_edge_cases_files)

    @pytest.fixture
    def fs_dir_and_file_with_same_name_prefix(self, keel: KeelFileSystem) -> str:
        return self._scenario(keel, "prefix", self._dir_and_file_with_same_name_prefix)

    @pytest.fixture
    def fs_10_files_with_hashed_names(self, keel: KeelFileSystem) -> str:
        return self._scenario(keel, "hashed", self._10_files_with_hashed_names)


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


def test_url_without_host_uses_keelfs_address(
    keel: KeelFileSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEELFS_ADDRESS", keel.address)
    writing = fsspec.open("keelfs:///env/a.txt", "wb", skip_instance_cache=True)
    with writing as f:
        f.write(b"from the environment")
    writing.fs.close()
    with fsspec.open(f"keelfs://{keel.address}/env/a.txt", "rb") as f:
        assert f.read() == b"from the environment"
    of = fsspec.open("keelfs:///env/a.txt", "rb", skip_instance_cache=True)
    assert of.fs.client is not keel.client and of.path == "/env/a.txt"
    try:
        with of as f:
            f.seek(5)
            assert f.read(3) == b"the"
    finally:
        of.fs.close()
    keel.mv("/env/a.txt", "/env/b.txt")  # keelfs's atomic rename
    assert keel.ls("/env", detail=False) == ["/env/b.txt"]
    assert keel.modified("/env/b.txt").year >= 2024
    with pytest.raises(FileNotFoundError):
        keel.cat_file("/env/a.txt")
    assert keel.cat_file("/env/b.txt", start=-11) == b"environment"


def test_chmod_chown_and_a_reader_without_read(keel: KeelFileSystem) -> None:
    keel.pipe_file("/perm/f", b"only for ann")  # small: its data is inline in its record
    keel.pipe_file("/perm/big", b"b" * (MAX_INLINE_BYTES + 1))  # in a block
    for path in ("/perm/f", "/perm/big"):
        keel.chown(path, "ann", "staff")
        keel.chmod(path, 0o600)
    info = keel.info("/perm/f")
    assert (info["owner"], info["group"], info["mode"]) == ("ann", "staff", 0o600)
    ann = KeelFileSystem(keel.address, user="ann", skip_instance_cache=True)
    bob = KeelFileSystem(keel.address, user="bob", skip_instance_cache=True)
    try:
        assert ann.cat_file("/perm/f") == b"only for ann"
        with pytest.raises(PermissionError):
            bob.cat_file("/perm/f")
        assert bob.info("/perm/f")["size"] == 12  # he reaches it: he may stat it, but ...
        for user, readable in (("bob", False), ("ann", True)):
            # ... its blocks come with replica locations and READ tokens to a reader only
            blocks = _raw_stat(keel.address, "/perm/big", user).info.blocks
            assert blocks and all(bool(b.locations and b.token) is readable for b in blocks)
            # and an inline file's data only to a reader's request (which bob's is refused)
            assert not _raw_stat(keel.address, "/perm/f", user).info.HasField("inline_data")
        assert _raw_stat(keel.address, "/perm/f", "ann", read=True).info.inline_data == (
            b"only for ann"
        )
        with pytest.raises(grpc.RpcError) as refused:
            _raw_stat(keel.address, "/perm/f", "bob", read=True)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(PermissionError):
            bob.chmod("/perm/f", 0o644)
        with pytest.raises(PermissionError):
            ann.chown("/perm/f", "bob")  # only a superuser gives a file away
    finally:
        ann.client.close()
        bob.client.close()


def _raw_stat(address: str, path: str, user: str, read: bool = False) -> Any:
    from keelfs.client.identity import USER_METADATA_KEY
    from keelfs.rpc.pb import meta_pb2, meta_pb2_grpc

    tls_dir = os.environ.get("KEELFS_TLS_DIR")  # set by the fixture in the TLS tier
    tls = TlsSettings.for_user(Path(tls_dir), user) if tls_dir else None
    with open_channel(address, tls) as channel:
        return meta_pb2_grpc.NamespaceStub(channel).GetFileInfo(
            meta_pb2.GetFileInfoRequest(path=path, read=read),
            metadata=[(USER_METADATA_KEY, user)],
            timeout=10,
        )


def test_close_ends_the_client_and_leaves_the_instance_cache(keel: KeelFileSystem) -> None:
    fs = fsspec.filesystem("keelfs", address=keel.address)
    assert fsspec.filesystem("keelfs", address=keel.address) is fs  # cached
    fs.pipe_file("/close/x", b"1")
    fs.close()
    with pytest.raises(RuntimeError, match="client is closed"):
        fs.cat_file("/close/x")
    fresh = fsspec.filesystem("keelfs", address=keel.address)
    try:
        assert fresh is not fs and fresh.cat_file("/close/x") == b"1"
    finally:
        fresh.close()


def test_checksum_and_ukey_are_the_file_checksum(keel: KeelFileSystem) -> None:
    data = b"c" * (MAX_INLINE_BYTES + 10)
    keel.pipe_file("/sum/a", data)
    keel.pipe_file("/sum/b", data)
    keel.pipe_file("/sum/c", data[:-1] + b"d")
    c = keel.client.checksum("/sum/a")
    assert keel.checksum("/sum/a") == int(c.hex, 16) == keel.checksum("/sum/b")
    assert keel.ukey("/sum/a") == f"{c.algorithm}:{c.hex}" == keel.ukey("/sum/b")
    assert keel.checksum("/sum/c") != keel.checksum("/sum/a")
    assert keel.ukey("/sum/c") != keel.ukey("/sum/a")
    assert isinstance(keel.checksum("/sum"), int) and keel.ukey("/sum")  # a directory
    with pytest.raises(FileNotFoundError):
        keel.checksum("/sum/missing")
