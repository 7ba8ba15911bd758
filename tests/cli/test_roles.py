"""The role commands ``keelfs master``, ``keelfs config-server``, ``keelfs chunkserver``: built
from their settings tables (flag over TOML over ``KEELFS_*`` over the default, every setting in
``--help`` with its variable and default), and one lifecycle for every process that serves
(``READY`` line, SIGTERM exits 0, a failure exits 1 with a one-line reason as stderr's last
line)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from keelfs.chunk.node import ChunkNodeConfig
from keelfs.cli.main import cli
from keelfs.client import Client
from keelfs.master.node import NodeConfig
from keelfs.runtime.processes import free_ports, hard_kill, read_ready_line, spawn_tracked
from keelfs.server.chunk_process import chunk_config
from keelfs.server.master_process import node_config
from keelfs.server.roles import ROLE_COMMANDS, chunkserver, config_server, master, resolve_args
from keelfs.server.settings import (
    CHUNKSERVER_SETTINGS,
    CONFIG_SERVER_SETTINGS,
    MASTER_SETTINGS,
    ConfigError,
    Setting,
)

pytestmark = [pytest.mark.timeout(180)]

TABLES: dict[str, tuple[Setting, ...]] = {
    "master": MASTER_SETTINGS,
    "config-server": CONFIG_SERVER_SETTINGS,
    "chunkserver": CHUNKSERVER_SETTINGS,
}


# -- settings, without processes ----------------------------------------------------------------


@pytest.mark.parametrize("command", ROLE_COMMANDS, ids=lambda c: c.name)
def test_help_lists_every_setting_with_its_variable_and_default(command: click.Command) -> None:
    r = CliRunner().invoke(cli, [command.name or "", "--help"], terminal_width=400)
    assert r.exit_code == 0, r.output
    options = re.split(r"\n(?=  -)", r.output)  # one entry per option, its help joined
    for s in TABLES[command.name or ""]:
        entry = next((o for o in options if o.strip().startswith(s.flag + " ")), None)
        assert entry is not None, f"{s.flag} missing from keelfs {command.name} --help"
        line = " ".join(entry.split())
        assert f"[env {s.env}]" in line, line
        if s.required:
            assert "[required]" in line, line
        elif s.default_text():
            assert f"[default: {s.default_text()}]" in line, line


def test_flag_beats_toml_beats_env_beats_default(tmp_path: Path) -> None:
    toml = tmp_path / "keelfs.toml"
    toml.write_text(
        "[master]\nid = 11\nvnodes = 128\nshard = ['shard-toml']\nlisten = '127.0.0.1:9201'\n"
        "[chunkserver]\nrack = '/toml'\n"
    )
    env = {
        "KEELFS_ID": "99",  # loses to the file
        "KEELFS_VNODES": "256",  # loses to the file
        "KEELFS_LEASE_TTL_MS": "5000",  # nothing else gives it
        "KEELFS_DATA": str(tmp_path / "from-env"),
        "KEELFS_CONFIG_MEMBER": "yes",
        "KEELFS_RACK": "/env",
        "KEELFS_LISTEN": "127.0.0.1:9301",
    }
    argv = ["--config", str(toml), "--listen", "127.0.0.1:9101", "--tick-ms", "10"]
    values = resolve_args(master, argv, env)
    assert values["listen"] == "127.0.0.1:9101"  # flag over file and env
    assert values["tick_ms"] == 10.0  # flag
    assert values["id"] == 11 and values["vnodes"] == 128  # file over env
    assert values["shard"] == ("shard-toml",)
    assert values["lease_ttl_ms"] == 5000 and values["config_member"] is True  # env
    assert values["min_replicas"] == 1 and values["election_tick"] == 10  # defaults
    config, http = node_config("master", values)
    assert config.node_id == 11 and config.data_dir == tmp_path / "from-env"
    # addresses are named as in `keelfs server`: the Raft port is the client port - 1
    assert (config.client_address(), config.listen) == ("127.0.0.1:9101", "127.0.0.1:9100")
    assert http.listen == "" and http.tls is None

    chunk = resolve_args(chunkserver, ["--config", str(toml)], env)
    assert chunk["rack"] == "/toml" and chunk["listen"] == "127.0.0.1:9301"  # file, env
    shards = resolve_args(master, ["--shard", "a", "--shard", "b"], {**env, "KEELFS_SHARD": "x"})
    assert shards["shard"] == ("a", "b")
    assert resolve_args(master, [], {**env, "KEELFS_SHARD": "x, y"})["shard"] == ("x", "y")


@pytest.mark.parametrize(
    ("command", "argv", "env", "words"),
    [
        (master, [], {}, ["id is required", "--id", "KEELFS_ID"]),
        (master, ["--id", "1", "--data", "d"], {}, ["shard is required"]),
        (config_server, ["--id", "x"], {}, ["--id", "not a valid integer"]),
        (chunkserver, ["--data", "d"], {"KEELFS_LISTEN": "h:1", "KEELFS_FSYNC_ON_CLOSE": "?"},
         ["KEELFS_FSYNC_ON_CLOSE"]),
    ],
)  # fmt: skip
def test_unusable_settings_name_what_is_wrong(
    command: click.Command, argv: list[str], env: dict[str, str], words: list[str]
) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_args(command, argv, env)
    for w in words:
        assert w in str(err.value)


@pytest.mark.parametrize(
    "args",
    [
        ["master", "--id", "0", "--shard", "s1", "--config-member", "--listen", "h:1"],
        ["master", "--id", "1", "--shard", "s1", "--listen", "h:1"],  # no config servers
        ["master", "--id", "1", "--shard", "config", "--config-member", "--listen", "h:1"],
        ["master", "--id", "1", "--shard", "s1", "--config-member"],  # no address
        ["config-server", "--id", "1", "--listen", "h:1", "--http-listen", "10.0.0.1:80"],
        ["config-server", "--id", "1", "--listen", "h:1", "--log-level", "loud"],
        ["config-server", "--id", "1", "--listen", "h:1", "--peers", "2=h:2"],
        ["chunkserver", "--listen", "nowhere"],
        ["master", "--id", "1", "--shard", "s1", "--config-member", "--listen", "h:1",
         "--max-open-txns", "0"],
        ["config-server", "--id", "1", "--listen", "h:1", "--max-concurrent-rpcs", "0"],
        ["chunkserver", "--listen", "h:1", "--reserved-bytes", "-1"],
        ["chunkserver", "--listen", "h:1", "--max-concurrent-rpcs", "0"],
    ],
)  # fmt: skip
def test_bad_settings_stop_a_role_before_anything_starts(tmp_path: Path, args: list[str]) -> None:
    data = tmp_path / "d"
    r = CliRunner().invoke(cli, [*args, "--data", str(data)], env={"KEELFS_CONFIG": ""})
    assert r.exit_code == 2, r.output
    assert not data.exists()


def test_the_tables_defaults_are_the_code_defaults(tmp_path: Path) -> None:
    """The tables write the defaults out (the `keelfs` command starts without importing the
    servers); they must be the configs' own."""
    base = ["--id", "1", "--data", str(tmp_path), "--listen", "127.0.0.1:7001"]
    values = resolve_args(master, [*base, "--shard", "s", "--config-member"], {})
    config, _ = node_config("master", values)
    assert config == NodeConfig(
        node_id=1,
        listen="127.0.0.1:7000",
        data_dir=tmp_path,
        client_listen="127.0.0.1:7001",
        config_member=True,
        shards=("s",),
    )  # every other field at the config's default, HostConfig's included
    chunk, reporting, _ = chunk_config(
        resolve_args(chunkserver, ["--data", str(tmp_path), "--listen", "localhost:1"], {})
    )
    assert chunk == ChunkNodeConfig(data_dir=tmp_path, listen="localhost:1")
    assert reporting.interval_s == 1.0 and reporting.config_servers == ()


def test_the_limits_reach_the_configs(tmp_path: Path) -> None:
    """The limits of the masters (calls at once, and the shards' replicated per-principal
    limits) and of the chunk servers (calls at once, the disk reservation) are settings."""
    base = ["--id", "1", "--data", str(tmp_path), "--listen", "127.0.0.1:7001"]
    toml = tmp_path / "k.toml"
    toml.write_text("[master]\nmax_sessions_per_user = 3\nmax_leases_per_session = 4\n")
    argv = [*base, "--shard", "s", "--config-member", "--config", str(toml)]
    argv += ["--max-concurrent-rpcs", "16"]
    values = resolve_args(master, argv, {"KEELFS_MAX_OPEN_TXNS": "5"})
    config, _ = node_config("master", values)
    assert (config.max_concurrent_rpcs, config.max_sessions_per_user) == (16, 3)
    assert (config.max_leases_per_session, config.max_open_txns) == (4, 5)
    argv = ["--data", str(tmp_path), "--listen", "localhost:1", "--reserved-bytes", "1000"]
    chunk, _, _ = chunk_config(resolve_args(chunkserver, argv, {"KEELFS_MAX_CONCURRENT_RPCS": "8"}))
    assert (chunk.reserved_bytes, chunk.max_concurrent_rpcs) == (1000, 8)


# -- real processes ------------------------------------------------------------------------------


def _keelfs(*args: str) -> list[str]:
    return [sys.executable, "-m", "keelfs.cli.main", *args]


class Process:
    """One process of a test, its stdout and stderr in ``root/<name>.out|.err``."""

    def __init__(self, root: Path, name: str, cmd: list[str], env: dict[str, str] | None = None):
        self.stdout, self.stderr = root / f"{name}.out", root / f"{name}.err"
        saved = dict(os.environ)
        os.environ.update(env or {})
        try:
            self.proc = spawn_tracked(cmd, self.stdout, self.stderr, name)
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def ready(self, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = read_ready_line(self.stdout)
            if ready is not None:
                return ready
            assert self.proc.poll() is None, self.stderr.read_text()
            time.sleep(0.05)
        raise AssertionError(f"not READY in {timeout} s:\n{self.stderr.read_text()}")

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        hard_kill(self.proc)
        return rc

    def kill(self) -> None:
        hard_kill(self.proc)


@pytest.mark.process
def test_keelfs_config_server_and_master_serve_with_settings_from_every_source(
    tmp_path: Path,
) -> None:
    c_raft, c_client, m_raft, m_client, wrong = free_ports(5)
    config = Process(
        tmp_path,
        "config",
        _keelfs("config-server", "--id", "1", "--data", str(tmp_path / "c1"))
        + ["--listen", f"127.0.0.1:{c_client}", "--raft-listen", f"127.0.0.1:{c_raft}"]
        + ["--peers", f"1=127.0.0.1:{c_raft}"],
    )
    toml = tmp_path / "keelfs.toml"
    toml.write_text(
        f"[master]\nid = 11\nshard = ['shard-1']\nlisten = '127.0.0.1:{wrong}'\n"
        f"config_servers = '127.0.0.1:{c_client}'\n"
    )
    env = {"KEELFS_ID": "99", "KEELFS_DATA": str(tmp_path / "m11"), "KEELFS_LOG_LEVEL": "DEBUG"}
    master_cmd = _keelfs("master", "--config", str(toml), "--listen", f"127.0.0.1:{m_client}")
    master_cmd += ["--raft-listen", f"127.0.0.1:{m_raft}", "--peers", f"11=127.0.0.1:{m_raft}"]
    node = Process(tmp_path, "master", master_cmd, env)
    try:
        info = config.ready()
        assert info["id"] == 1 and info["config_member"] and info["shards"] == []
        info = node.ready()
        assert info["id"] == 11  # the file's, over the environment's 99
        assert info["client"] == f"127.0.0.1:{m_client}"  # the flag's, over the file's
        assert info["data"] == str(tmp_path / "m11")  # the environment's
        assert info["shards"] == ["shard-1"] and not info["config_member"]
        assert " DEBUG " in node.stderr.read_text()  # KEELFS_LOG_LEVEL
        with Client(f"127.0.0.1:{c_client}", deadline=30.0) as fs:
            deadline = time.monotonic() + 30
            while True:  # the master registers itself with the config group after READY
                try:
                    fs.add_shard("shard-1", [11])
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            fs.format()
            fs.mkdir("/served")
            assert [e.path for e in fs.ls("/")] == ["/served"]
        assert node.terminate() == 0
        assert config.terminate() == 0
    finally:
        node.kill()
        config.kill()


def _standalone(role: str, tmp_path: Path) -> list[str]:
    """A role that serves alone, on fresh ports, data in ``tmp_path/data``."""
    raft, client = (f"127.0.0.1:{p}" for p in free_ports(2))
    data = str(tmp_path / "data")
    meta = ["--id", "1", "--listen", client, "--raft-listen", raft, "--peers", f"1={raft}"]
    return {
        "server": _keelfs("server", "--data", data, "--listen", client, "--raft-listen", raft)
        + ["--chunk-listen", f"127.0.0.1:{free_ports(1)[0]}", "--http-listen", "off"],
        "config-server": _keelfs("config-server", "--data", data, *meta),
        "master": _keelfs("master", "--data", data, *meta, "--shard", "s1", "--config-member"),
        "chunkserver": _keelfs("chunkserver", "--data", data, "--listen", client),
        "kv-server": [sys.executable, "-m", "keelfs.runtime.server", "--data", data]
        + ["--id", "1", "--listen", raft, "--client-listen", client, "--peers", f"1={raft}"],
    }[role]


ROLES = ["server", "config-server", "master", "chunkserver", "kv-server"]


@pytest.mark.process
@pytest.mark.parametrize("role", ROLES)
def test_every_role_prints_ready_and_stops_on_sigterm(role: str, tmp_path: Path) -> None:
    p = Process(tmp_path, role, _standalone(role, tmp_path))
    try:
        assert p.ready()["pid"] == p.proc.pid
        assert p.terminate() == 0
    finally:
        p.kill()


@pytest.mark.process
@pytest.mark.parametrize("role", ROLES)
def test_every_role_fails_with_status_1_and_a_one_line_reason(role: str, tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file where the data directory should be")
    out = subprocess.run(_standalone(role, tmp_path), capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    assert "READY" not in out.stdout
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"keelfs {role}: failed: "), out.stderr
    assert str(tmp_path / "data") in last, last


@pytest.mark.process
@pytest.mark.parametrize("role", ROLES)
def test_every_role_refuses_bad_settings_with_status_2(role: str, tmp_path: Path) -> None:
    bad = {"server": ["--replication", "0"], "chunkserver": ["--listen", "nowhere"]}
    cmd = [*_standalone(role, tmp_path), *bad.get(role, ["--id", "0"])]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "READY" not in out.stdout and not (tmp_path / "data").exists()
