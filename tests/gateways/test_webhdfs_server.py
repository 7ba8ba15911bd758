"""``keelfs server --webhdfs-listen``: the all-in-one server runs the gateway in its own
process and prints where; HdfsCLI writes and reads through it. The setting is checked."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from hdfs import InsecureClient

from keelfs.runtime.processes import (
    free_ports,
    hard_kill,
    read_ready_line,
    spawn_tracked,
    wait_until,
)
from keelfs.server.embedded import ServerConfig
from keelfs.server.settings import SERVER_SETTINGS, ConfigError, resolve

pytestmark = [pytest.mark.timeout(180)]


def _config(**given: Any) -> ServerConfig:
    flags = {s.name: given.get(s.name) for s in SERVER_SETTINGS}
    return ServerConfig.from_resolved(resolve(SERVER_SETTINGS, "server", flags, environ={}))


def test_webhdfs_listen_is_off_by_default_and_checked(tmp_path: Path) -> None:
    assert _config().webhdfs() == ""
    assert _config(webhdfs_listen="off").webhdfs() == ""
    assert _config(webhdfs_listen="127.0.0.1:0").webhdfs() == "127.0.0.1:0"
    with pytest.raises(ConfigError, match="loopback only"):
        _config(webhdfs_listen="0.0.0.0:9870")
    with pytest.raises(ConfigError, match="no TLS"):
        ServerConfig(webhdfs_listen="127.0.0.1:9870", tls_dir=str(tmp_path)).webhdfs()


def test_webhdfs_token_secret_file_is_checked(tmp_path: Path) -> None:
    short, good = tmp_path / "short", tmp_path / "secret"
    short.write_text("too short")
    good.write_text("s" * 40)
    listen = "127.0.0.1:0"
    assert _config(webhdfs_listen=listen).webhdfs_token_secret() is None
    assert (
        _config(webhdfs_listen=listen, webhdfs_token_secret_file=str(good)).webhdfs_token_secret()
        == good
    )
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        _config(webhdfs_listen=listen, webhdfs_token_secret_file=str(short))
    with pytest.raises(ConfigError, match="webhdfs_token_secret_file"):
        _config(webhdfs_listen=listen, webhdfs_token_secret_file=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="no gateway"):
        _config(webhdfs_token_secret_file=str(good))


@pytest.mark.process
def test_keelfs_server_serves_webhdfs(tmp_path: Path) -> None:
    client, raft, chunk = free_ports(3)
    secret = tmp_path / "token-secret"
    secret.write_text("k" * 48)
    cmd = [
        sys.executable, "-m", "keelfs.cli.main", "server",
        "--data", str(tmp_path / "data"),
        "--listen", f"127.0.0.1:{client}",
        "--raft-listen", f"127.0.0.1:{raft}",
        "--chunk-listen", f"127.0.0.1:{chunk}",
        "--http-listen", "off",
        "--webhdfs-listen", "127.0.0.1:0",
        "--webhdfs-token-secret-file", str(secret),
        "--no-fsync-on-close",
    ]  # fmt: skip
    stdout = tmp_path / "stdout"
    proc = spawn_tracked(cmd, stdout, tmp_path / "stderr", "keelfs server")
    try:
        ready = wait_until(
            lambda: read_ready_line(stdout) if proc.poll() is None else None, 60, "server READY"
        )
        assert ready["webhdfs_url"].startswith("http://127.0.0.1:")
        assert f"WebHDFS              {ready['webhdfs_url']}/webhdfs/v1/" in stdout.read_text()
        hdfs = InsecureClient(ready["webhdfs_url"], user=getpass.getuser())
        hdfs.write("/hello.txt", data=b"hello webhdfs")
        with hdfs.read("/hello.txt", offset=6) as reader:
            assert reader.read() == b"webhdfs"
        assert hdfs.list("/") == ["hello.txt"]
        # delegation tokens (--webhdfs-token-secret-file): one issued, then used alone
        url = f"{ready['webhdfs_url']}/webhdfs/v1/"
        issued = requests.get(
            url, params={"op": "GETDELEGATIONTOKEN", "user.name": getpass.getuser()}, timeout=30
        )
        assert issued.status_code == 200, issued.text
        token = issued.json()["Token"]["urlString"]
        listed = requests.get(url, params={"op": "LISTSTATUS", "delegation": token}, timeout=30)
        assert listed.status_code == 200, listed.text
        names = [f["pathSuffix"] for f in listed.json()["FileStatuses"]["FileStatus"]]
        assert names == ["hello.txt"]
    finally:
        hard_kill(proc)
