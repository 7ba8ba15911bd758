"""Listen vs advertised addresses (``keelfs.rpc.addresses``) and the settings that carry them:
a wildcard is listened on, never advertised; ``--advertise HOST`` keeps the bound port,
``HOST:PORT`` replaces it; a role listening on a wildcard without ``--advertise`` does not
start (status 2, the reason named)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from keelfs.cli.main import cli
from keelfs.rpc.addresses import advertised_address, is_wildcard, split_advertise
from keelfs.server.chunk_process import chunk_config
from keelfs.server.master_process import node_config
from keelfs.server.roles import chunkserver, master, resolve_args


@pytest.mark.parametrize(
    ("address", "wildcard"),
    [("0.0.0.0:7001", True), ("[::]:7001", True), (":7001", True), ("10.0.0.1:7001", False),
     ("master-11:7001", False), ("127.0.0.1:0", False), ("[fd00::1]:7001", False)],
)  # fmt: skip
def test_a_wildcard_is_told_apart(address: str, wildcard: bool) -> None:
    assert is_wildcard(address) is wildcard


@pytest.mark.parametrize(
    ("advertise", "bound", "told"),
    [
        ("", "10.0.0.1:7001", "10.0.0.1:7001"),
        ("master-11", "0.0.0.0:7001", "master-11:7001"),
        ("203.0.113.9:17001", "0.0.0.0:7001", "203.0.113.9:17001"),
        ("[fd00::11]", "[::]:7001", "[fd00::11]:7001"),
        ("[fd00::11]:9", "[::]:7001", "[fd00::11]:9"),
    ],
)
def test_the_advertised_address(advertise: str, bound: str, told: str) -> None:
    assert advertised_address(advertise, bound) == told


@pytest.mark.parametrize(
    ("advertise", "why"),
    [("0.0.0.0", "not an address others can dial"), ("[::]:7001", "not an address"),
     (":7001", "not an address"), ("h:0", "bad port"), ("h:x", "bad port"),
     ("h:70000", "bad port"), ("fd00::1", "in brackets"), ("[fd00::1]x", "expected HOST")],
)  # fmt: skip
def test_unusable_advertised_addresses_are_refused(advertise: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        split_advertise(advertise)


def test_a_master_on_a_wildcard_advertises_what_it_is_told(tmp_path: Path) -> None:
    base = ["--id", "11", "--data", str(tmp_path), "--shard", "s", "--config-member"]
    base += ["--listen", "0.0.0.0:7001", "--insecure"]
    config, _ = node_config("master", resolve_args(master, [*base, "--advertise", "m11"], {}))
    assert config.client_listen == "0.0.0.0:7001" and config.listen == "0.0.0.0:7000"
    assert config.advertise == "m11" and config.raft_advertise == ""
    config, _ = node_config(
        "master",
        resolve_args(master, [*base, "--advertise", "m11", "--raft-advertise", "r:1"], {}),
    )
    assert config.raft_advertise == "r:1"
    env = {"KEELFS_ADVERTISE": "10.1.2.3:17001"}  # every source, as every setting
    config, _ = node_config("master", resolve_args(master, base, env))
    assert config.advertise == "10.1.2.3:17001"


def test_a_chunk_server_on_a_wildcard_advertises_what_it_is_told(tmp_path: Path) -> None:
    argv = ["--data", str(tmp_path), "--listen", "0.0.0.0:7001", "--insecure"]
    config, _, _ = chunk_config(resolve_args(chunkserver, [*argv, "--advertise", "cs-1"], {}))
    assert config.listen == "0.0.0.0:7001" and config.advertise == "cs-1"


@pytest.mark.parametrize(
    "args",
    [
        ["master", "--id", "1", "--shard", "s1", "--config-member", "--listen", "0.0.0.0:7001"],
        ["config-server", "--id", "1", "--listen", "0.0.0.0:7001"],
        ["config-server", "--id", "1", "--listen", "h:7001", "--raft-listen", "0.0.0.0:7000"],
        ["config-server", "--id", "1", "--listen", "0.0.0.0:7001", "--advertise", "0.0.0.0"],
        ["chunkserver", "--listen", "0.0.0.0:7001"],
        ["chunkserver", "--listen", "[::]:7001", "--advertise", "h:nope"],
    ],
)
def test_a_wildcard_without_an_address_to_advertise_does_not_start(
    tmp_path: Path, args: list[str]
) -> None:
    data = tmp_path / "d"
    r = CliRunner().invoke(
        cli, [*args, "--insecure", "--data", str(data)], env={"KEELFS_CONFIG": ""}
    )
    assert r.exit_code == 2, r.output
    assert "advertise" in r.output
    assert not data.exists()
