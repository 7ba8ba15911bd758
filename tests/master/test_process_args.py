"""Command lines of ``python -m keelfs.server.config_server`` and ``.master`` (their own
spelling: ``--listen`` is the Raft address, ``--client-listen`` the client address)."""

from __future__ import annotations

from pathlib import Path

import pytest

from keelfs.server.roles import config_from_args

BASE = ["--id", "1", "--listen", "127.0.0.1:7000", "--data", "/tmp/x"]


def test_master_flags() -> None:
    cfg = config_from_args(
        "master",
        [*BASE, "--shard", "shard-1", "--shard", "shard-2", "--shard", "shard-1",
         "--config-servers", "a:1, b:2", "--peers", "1=127.0.0.1:7000,2=h:2",
         "--session-ttl-ms", "5000"],
    )  # fmt: skip
    assert cfg.shards == ("shard-1", "shard-2")
    assert cfg.config_servers == ("a:1", "b:2") and not cfg.config_member
    assert cfg.peers == {1: "127.0.0.1:7000", 2: "h:2"}
    assert cfg.client_address() == "127.0.0.1:7001"
    assert cfg.data_dir == Path("/tmp/x") and cfg.session_ttl_ms == 5000


def test_config_server_flags() -> None:
    cfg = config_from_args("config", [*BASE, "--client-listen", "127.0.0.1:9"])
    assert cfg.config_member and cfg.shards == () and cfg.client_address() == "127.0.0.1:9"
    cohost = config_from_args("master", [*BASE, "--shard", "s1", "--config-member"])
    assert cohost.config_member and cohost.shards == ("s1",)


@pytest.mark.parametrize(
    ("role", "args", "message"),
    [
        ("master", [*BASE, "--shard", "s1"], "config_servers is required"),
        ("master", [*BASE, "--shard", "bad id!", "--config-member"], "shard"),
        ("master", [*BASE, "--shard", "config", "--config-member"], "config group"),
        ("config", [*BASE, "--peers", "2=h:1,3=h:2"], "must include this node"),
        ("config", [*BASE, "--peers", "x"], "peers: bad peer"),
        ("config", ["--id", "0", "--listen", "h:1", "--data", "/tmp/x"], "positive"),
    ],
)
def test_bad_flags_are_refused(role: str, args: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        config_from_args(role, args)


def test_a_master_needs_a_shard() -> None:
    with pytest.raises(SystemExit):
        config_from_args("master", [*BASE, "--config-member"])
