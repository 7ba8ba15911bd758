"""``keelfs server``: its settings (flag over TOML over environment, checked without processes)
and the real process: it starts, prints its address, a file written with the client reads back,
SIGTERM exits 0, and a restart on the same data directory still has the file."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from keelfs.chunk.node import ChunkNodeConfig
from keelfs.cli.main import cli
from keelfs.client import Client
from keelfs.master.node import NodeConfig
from keelfs.runtime.processes import free_ports, hard_kill, read_ready_line, spawn_tracked
from keelfs.server.embedded import ServerConfig
from keelfs.server.settings import (
    CHUNKSERVER_SETTINGS,
    CONFIG_SERVER_SETTINGS,
    LOCAL_CLUSTER_SETTINGS,
    MASTER_SETTINGS,
    SERVER_SETTINGS,
    ConfigError,
    resolve,
)

pytestmark = [pytest.mark.timeout(180)]


# -- settings ----------------------------------------------------------------------------------


def _flags(**given: Any) -> dict[str, Any]:
    return {s.name: given.get(s.name) for s in SERVER_SETTINGS}


def test_flag_wins_over_toml_which_wins_over_env(tmp_path: Path) -> None:
    toml = tmp_path / "keelfs.toml"
    toml.write_text(
        '[server]\nhttp_listen = "127.0.0.1:9002"\nreplication = 2\ndata = "/from/toml"\n'
    )
    env = {
        "KEELFS_HTTP_LISTEN": "127.0.0.1:9003",
        "KEELFS_REPLICATION": "3",
        "KEELFS_LISTEN": "127.0.0.1:9101",
        "KEELFS_FSYNC_ON_CLOSE": "off",
    }
    r = resolve(SERVER_SETTINGS, "server", _flags(http_listen="127.0.0.1:9001"), toml, environ=env)
    assert r.values["http_listen"] == "127.0.0.1:9001" and r.sources["http_listen"] == "flag"
    assert r.values["replication"] == 2 and r.sources["replication"] == str(toml)
    assert r.values["data"] == Path("/from/toml")
    assert r.values["listen"] == "127.0.0.1:9101" and r.sources["listen"] == "env"
    assert r.values["fsync_on_close"] is False
    assert r.values["tick_ms"] == 15.0 and r.sources["tick_ms"] == "default"
    config = ServerConfig.from_resolved(r)
    # derived addresses: the Raft port below the client port, the chunk server's above it
    assert (config.raft_listen, config.chunk_listen) == ("127.0.0.1:9100", "127.0.0.1:9102")
    assert config.replication == 2


def test_config_file_from_the_environment(tmp_path: Path) -> None:
    toml = tmp_path / "k.toml"
    toml.write_text("[server]\nreplication = 4\n")
    r = resolve(SERVER_SETTINGS, "server", _flags(), environ={"KEELFS_CONFIG": str(toml)})
    assert r.values["replication"] == 4 and r.config_file == toml


def test_defaults_are_the_embedded_single_node_ones() -> None:
    config = ServerConfig.from_resolved(resolve(SERVER_SETTINGS, "server", _flags(), environ={}))
    assert config == ServerConfig(
        raft_listen="127.0.0.1:7000", chunk_listen="127.0.0.1:7002"
    )  # every other field at its default
    assert config.data == Path("keelfs-data") and config.replication == 1
    assert config.http_listen == "127.0.0.1:7080"


def test_the_embedded_nodes_get_the_code_defaults_and_the_limits_given(tmp_path: Path) -> None:
    config = ServerConfig.from_resolved(resolve(SERVER_SETTINGS, "server", _flags(), environ={}))
    node, chunk = config.node_config("127.0.0.1:7000"), config.chunk_config()
    defaults, chunk_defaults = NodeConfig(0, "", Path()), ChunkNodeConfig(Path())
    for name in ("superuser_group", "audit_log", *_META_LIMITS):
        assert getattr(node, name) == getattr(defaults, name), name
    assert chunk.reserved_bytes == chunk_defaults.reserved_bytes
    assert chunk.max_concurrent_rpcs == chunk_defaults.max_concurrent_rpcs

    given = {name: 7 + i for i, name in enumerate(_META_LIMITS)}
    flags = _flags(**given, chunk_max_concurrent_rpcs=3, reserved_bytes=10**9)
    env = {"KEELFS_AUDIT_LOG": str(tmp_path / "audit"), "KEELFS_SUPERUSER_GROUP": "ops"}
    config = ServerConfig.from_resolved(resolve(SERVER_SETTINGS, "server", flags, environ=env))
    node, chunk = config.node_config("127.0.0.1:7000"), config.chunk_config()
    assert {name: getattr(node, name) for name in _META_LIMITS} == given
    assert node.audit_log == tmp_path / "audit" and node.superuser_group == "ops"
    assert (chunk.max_concurrent_rpcs, chunk.reserved_bytes) == (3, 10**9)


def test_advertise_names_the_host_of_all_three_addresses() -> None:
    """A server listening on every interface tells others the host it is reached by: its
    master's client and Raft addresses and its chunk server's keep their ports."""
    flags = _flags(listen="0.0.0.0:7101", advertise="10.0.0.5", insecure=True)
    config = ServerConfig.from_resolved(resolve(SERVER_SETTINGS, "server", flags, environ={}))
    assert (config.raft_listen, config.chunk_listen) == ("0.0.0.0:7100", "0.0.0.0:7102")
    assert config.node_config(config.raft_listen).advertise == "10.0.0.5"
    assert config.chunk_config().advertise == "10.0.0.5"


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"listen": "0.0.0.0:7101"}, ["listen 0.0.0.0:7101 takes every interface", "--advertise"]),
        ({"chunk_listen": "0.0.0.0:7109"}, ["chunk_listen 0.0.0.0:7109"]),
        ({"listen": "0.0.0.0:7101", "advertise": "10.0.0.5:99"}, ["give a HOST only"]),
        ({"listen": "0.0.0.0:7101", "advertise": "0.0.0.0"}, ["not an address others can dial"]),
    ],
)
def test_a_wildcard_without_a_dialable_advertise_is_refused(
    given: dict[str, str], words: list[str]
) -> None:
    flags = _flags(**given, insecure=True)
    with pytest.raises(ConfigError) as err:
        ServerConfig.from_resolved(resolve(SERVER_SETTINGS, "server", flags, environ={}))
    for w in words:
        assert w in str(err.value)


_META_LIMITS = (
    "max_concurrent_rpcs",
    "max_sessions_per_user",
    "max_leases_per_session",
    "max_open_txns",
)


@pytest.mark.parametrize(
    ("toml", "env", "words"),
    [
        ("[server]\nreplicaton = 1\n", {}, ["unknown key", "replicaton"]),
        ("[server]\nreplication = '2'\n", {}, ["replication must be a int"]),
        ("[server\n", {}, ["not valid TOML"]),
        ("", {"KEELFS_REPLICATION": "two"}, ["KEELFS_REPLICATION"]),
        ("", {"KEELFS_FSYNC_ON_CLOSE": "maybe"}, ["KEELFS_FSYNC_ON_CLOSE"]),
    ],
)
def test_bad_settings_name_their_source(
    tmp_path: Path, toml: str, env: dict[str, str], words: list[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        resolve(SERVER_SETTINGS, "server", _flags(), path, environ=env)
    for w in words:
        assert w in str(err.value)


@pytest.mark.parametrize(
    "args",
    [
        ["--replication", "0"],
        ["--http-listen", "10.1.2.3:80"],
        ["--listen", "nowhere"],
        ["--log-level", "loud"],
        ["--config", "/nonexistent/keelfs.toml"],
        ["--max-sessions-per-user", "0"],
        ["--chunk-max-concurrent-rpcs", "0"],
        ["--reserved-bytes", "-5"],
    ],
)
def test_bad_flags_are_refused_before_anything_starts(tmp_path: Path, args: list[str]) -> None:
    r = CliRunner().invoke(cli, ["server", "--data", str(tmp_path / "d"), *args])
    assert r.exit_code == 2, r.output
    assert not (tmp_path / "d").exists()


# -- the process -------------------------------------------------------------------------------


class Server:
    def __init__(self, root: Path, data: Path) -> None:
        self.root = root
        self.data = data
        client, raft, chunk, http = free_ports(4)
        self.args = [
            "--data", str(data),
            "--listen", f"127.0.0.1:{client}",
            "--raft-listen", f"127.0.0.1:{raft}",
            "--chunk-listen", f"127.0.0.1:{chunk}",
            "--http-listen", f"127.0.0.1:{http}",
            "--no-fsync-on-close",
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> dict[str, Any]:
        self.starts += 1
        stdout = self.root / f"stdout{self.starts}.log"
        cmd = [sys.executable, "-m", "keelfs.cli.main", "server", *self.args]
        self.proc = spawn_tracked(cmd, stdout, self.root / "stderr.log", "keelfs server")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready = read_ready_line(stdout)
            if ready is not None:
                self.banner = stdout.read_text()
                return ready
            assert self.proc.poll() is None, (self.root / "stderr.log").read_text()
            time.sleep(0.05)
        raise AssertionError("keelfs server not READY in 60 s")

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        hard_kill(self.proc)
        self.proc = None
        return rc

    def kill(self) -> None:
        if self.proc is not None:
            hard_kill(self.proc)
            self.proc = None


@pytest.mark.process
def test_server_round_trip_sigterm_and_restart(tmp_path: Path) -> None:
    server = Server(tmp_path, tmp_path / "data")
    payload = bytes(range(256)) * 4096 + b"tail"  # 1 MiB and a bit: two packets
    try:
        info = server.start()
        address = info["client"]
        assert info["first_start"] and info["formatted"] and info["replication"] == 1
        assert f"clients connect to   {address}" in server.banner
        assert f"dashboard            http://{info['http']}/" in server.banner
        with Client(address, deadline=30.0) as fs:
            fs.mkdir("/docs")
            fs.write_bytes("/docs/a.bin", payload)
            st = fs.stat("/docs/a.bin")
            assert st.length == len(payload) and st.replication == 1
            assert not st.under_construction
            assert fs.read_bytes("/docs/a.bin") == payload
        with urllib.request.urlopen(f"http://{info['http']}/health", timeout=5) as resp:
            health = json.loads(resp.read())
        assert health["status"] == "ok"
        assert health["groups"]["config"]["leader"] and health["groups"]["shard-1"]["leader"]
        assert server.terminate() == 0

        info = server.start()  # no bootstrap flags: the data directory has it all
        assert not info["first_start"] and not info["formatted"]
        assert info["client"] == address
        with Client(address, deadline=30.0) as fs:
            assert [e.path for e in fs.ls("/docs")] == ["/docs/a.bin"]
            assert fs.read_bytes("/docs/a.bin") == payload
            fs.write_bytes("/docs/b.bin", b"after restart")
            assert fs.read_bytes("/docs/b.bin") == b"after restart"
        assert server.terminate() == 0
    finally:
        server.kill()


@pytest.mark.process
def test_second_server_on_the_same_data_is_refused(tmp_path: Path) -> None:
    first = Server(tmp_path / "one", tmp_path / "data")
    second = Server(tmp_path / "two", tmp_path / "data")
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    try:
        first.start()
        second.starts += 1
        cmd = [sys.executable, "-m", "keelfs.cli.main", "server", *second.args]
        out = subprocess.run(cmd, capture_output=True, timeout=60)
        assert out.returncode != 0
        assert b"READY" not in out.stdout
        assert b"is in use by another keelfs server" in out.stderr, out.stderr
        assert first.terminate() == 0
    finally:
        first.kill()


def test_every_setting_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    rows = [line for line in doc.splitlines() if line.startswith("| `keelfs ")]
    for settings, command in (
        (SERVER_SETTINGS, "server"),
        (LOCAL_CLUSTER_SETTINGS, "local-cluster"),
        (MASTER_SETTINGS, "master"),
        (CONFIG_SERVER_SETTINGS, "config-server"),
        (CHUNKSERVER_SETTINGS, "chunkserver"),
    ):
        for s in settings:
            prefix = f"| `keelfs {command}` | `{s.flag}`"
            row = next((r for r in rows if r.startswith(prefix)), None)
            assert row is not None, f"{s.flag} of keelfs {command} missing in configuration.md"
            assert f"`{s.name}`" in row and f"`{s.env}`" in row, row


@pytest.mark.process
def test_keelfs_demo_puts_and_gets_a_file_across_a_restart() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "keelfs.cli.main", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "get /demo/hello.txt: 18,000 bytes, identical: True" in out.stdout
    assert "content identical: True" in out.stdout
    assert "exit status 0" in out.stdout


def test_masters_take_a_default_replication_flag(tmp_path: Path) -> None:
    from keelfs.server.roles import config_from_args

    base = ["--id", "1", "--listen", "127.0.0.1:7000", "--data", str(tmp_path)]
    base += ["--shard", "shard-1", "--config-member"]
    assert config_from_args("master", base).default_replication == 3
    assert (
        config_from_args("master", [*base, "--default-replication", "2"]).default_replication == 2
    )
    with pytest.raises(SystemExit):
        config_from_args("master", [*base, "--default-replication", "0"])
