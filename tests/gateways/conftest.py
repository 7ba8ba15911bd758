"""Real clusters (one shard on 3 co-hosted masters, 3 chunk servers) with a gateway in its
own process in front, each shared by a test module: the S3 gateway (``keelfs s3``,
``gateway``) and the WebHDFS gateway (``keelfs webhdfs``, ``webhdfs_gateway`` and
``tls_webhdfs_gateway``). Every process is killed at teardown, and the logs are printed
if something failed to start."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keelfs.runtime.processes import hard_kill, read_ready_line, spawn_tracked, wait_until
from keelfs.server.layout import ADMIN_USER
from keelfs.server.metacluster import MetaCluster
from keelfs.testing.tiers import starts_processes
from tests.gateways.s3_helpers import Gateway, start_gateway


@dataclass
class WebHdfsProcess:
    cluster: MetaCluster
    url: str
    address: str
    process: Any
    log: Path
    token_secret: Path | None = None
    """The ``--token-secret-file`` the gateway signs delegation tokens with."""


def start_webhdfs(cluster: MetaCluster, directory: Path, *args: str) -> tuple[Any, dict[str, Any]]:
    """``keelfs webhdfs`` on a free loopback port for ``cluster``; its process and READY info."""
    out, err = directory / "webhdfs.out", directory / "webhdfs.err"
    command = [
        sys.executable,
        "-m",
        "keelfs.cli.main",
        "webhdfs",
        "--listen",
        "127.0.0.1:0",
        "--cluster",
        ",".join(cluster.config_addresses),
        *args,
    ]
    process = spawn_tracked(command, out, err, "webhdfs")
    try:
        ready = wait_until(
            lambda: read_ready_line(out) if process.poll() is None else None, 30, "gateway READY"
        )
    except BaseException:
        print(err.read_text(errors="replace")[-3000:])
        hard_kill(process)
        raise
    return process, ready


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


@pytest.fixture(scope="module")
@starts_processes
def webhdfs_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebHdfsProcess]:
    root = tmp_path_factory.mktemp("webhdfs")
    c = MetaCluster(root, shards=("shard-1",), tls=False, node_args=("--chunk-dead-after", "2"))
    process = None
    try:
        c.start()
        c.start_chunk_servers(3, "--no-fsync-on-close")
        secret = root / "token.secret"
        secret.write_text(secrets.token_urlsafe(48))
        args = ("--proxy-user", "gatekeeper", "--ls-limit", "4", "--token-secret-file", str(secret))
        process, ready = start_webhdfs(c, root, *args)
        log = root / "webhdfs.err"
        yield WebHdfsProcess(c, ready["url"], ready["webhdfs"], process, log, secret)
    except BaseException:
        for node_id in sorted(c.nodes):
            print(f"----- node {node_id} log (tail) -----\n{c.log_tail(node_id, 30)}")
        raise
    finally:
        if process is not None:
            hard_kill(process)
        c.stop_all()


@pytest.fixture(scope="module")
@starts_processes
def tls_webhdfs_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebHdfsProcess]:
    """A cluster with mutual TLS (one shard, one chunk server) and a gateway holding the
    admin user's certificate (``--tls-dir --user admin``)."""
    root = tmp_path_factory.mktemp("webhdfs-tls")
    c = MetaCluster(root, shards=("shard-1",), tls=True)
    process = None
    try:
        c.start()
        c.start_chunk_servers(1, "--no-fsync-on-close")
        assert c.tls_dir is not None
        process, ready = start_webhdfs(c, root, "--tls-dir", str(c.tls_dir), "--user", ADMIN_USER)
        yield WebHdfsProcess(c, ready["url"], ready["webhdfs"], process, root / "webhdfs.err")
    finally:
        if process is not None:
            hard_kill(process)
        c.stop_all()
