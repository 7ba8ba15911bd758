"""One cluster layout (``keelfs.server.layout``): ``keelfs local-cluster`` and the test
fixtures (``MetaCluster``, ``LocalChunkServers``) give every process the same name, role, ids
and groups, and start it with its ``keelfs`` role command, whose settings say what the layout
meant. Without processes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from keelfs.server.chunkservers import LocalChunkServers
from keelfs.server.layout import COMMANDS, Layout, LoopbackAddresses, metadata_layout
from keelfs.server.local_cluster import SHARDS, ProcessRecord, State, _layout, _peers, load_state
from keelfs.server.master_process import node_config
from keelfs.server.metacluster import MetaCluster
from keelfs.server.roles import (
    chunkserver,
    config_server,
    legacy_argv,
    master,
    resolve_args,
)

_BY_NAME = {"master": master, "config-server": config_server, "chunkserver": chunkserver}


def _settings(cmd: list[str]) -> dict[str, object]:
    assert cmd[:3] == [sys.executable, "-m", "keelfs.cli.main"], cmd
    return resolve_args(_BY_NAME[cmd[3]], cmd[4:], environ={})


def _shape(p: ProcessRecord) -> tuple[str, str, int, tuple[str, ...]]:
    return p.name, p.role, p.node_id, tuple(p.groups)


def test_local_cluster_and_metacluster_lay_out_the_same_processes(tmp_path: Path) -> None:
    state = _layout(tmp_path / "lc", chunk_servers=3, http_port=0)
    cluster = MetaCluster(tmp_path / "mc", layout="separate", shards=SHARDS)
    chunks = LocalChunkServers.in_layout(cluster.layout, 3)
    fixture = [(s.name, s.role, s.node_id, s.groups) for s in cluster.layout.processes.values()]
    assert [_shape(p) for p in state.processes] == fixture
    assert [s.name for s in chunks.specs] == ["cs0", "cs1", "cs2"]
    names = ["n1", "n2", "n3", "n11", "n12", "n13", "n21", "n22", "n23", "cs0", "cs1", "cs2"]
    assert [p.name for p in state.processes] == names


def test_each_command_says_what_the_layout_meant(tmp_path: Path) -> None:
    state = _layout(tmp_path, chunk_servers=2, http_port=0)
    config = [p.address for p in state.processes if p.role == "config"]
    for p in state.processes:
        assert p.command[3] == COMMANDS[p.role]
        values = _settings(p.command)
        assert values["data"] == Path(p.directory) / "data"
        assert values["listen"] == p.address
        if p.role == "chunk":
            assert values["server_id"] == p.name
            assert values["config_servers"] == ",".join(config)
            continue
        node, http = node_config("config" if p.role == "config" else "master", values)
        assert node.node_id == p.node_id and node.listen == p.raft_address
        assert node.client_address() == p.address
        assert set(node.shards) == set(p.groups) - {"config"}
        others = [a for a in config if a != p.address]
        assert list(node.config_servers) == others
        assert http.listen == (p.http if p.name == "n1" else "")
    assert state.processes[0].http  # the dashboard of n1
    by_name = {p.name: p for p in state.processes}
    assert _peers(state, by_name["n12"]) == ",".join(
        f"{i}={by_name[f'n{i}'].raft_address}" for i in (11, 12, 13)
    )


def test_cohosted_masters_host_the_config_group_and_every_shard(tmp_path: Path) -> None:
    layout = Layout(tmp_path, LoopbackAddresses())
    specs = metadata_layout(layout, ("a", "b"), cohosted=True)
    assert [(s.node_id, s.role, s.groups) for s in specs] == [
        (i, "master", ("config", "a", "b")) for i in (1, 2, 3)
    ]
    node, _ = node_config("master", _settings(layout.command(specs[0])))
    assert node.config_member and node.shards == ("a", "b")
    assert layout.peers(specs[0]) == ",".join(f"{s.node_id}={s.raft_address}" for s in specs)


def test_addresses_are_never_handed_out_twice(tmp_path: Path) -> None:
    layout = Layout(tmp_path, LoopbackAddresses())
    metadata_layout(layout, SHARDS)
    layout.add_chunk_servers(5)
    taken = [p.client_address for p in layout.processes.values()]
    taken += [p.raft_address for p in layout.meta]
    assert len(set(taken)) == len(taken) == 9 * 2 + 5


def test_a_command_recorded_by_an_older_local_cluster_still_runs(tmp_path: Path) -> None:
    """cluster.json keeps each process's command line: one recorded before the role commands
    (``python -m keelfs.server.master``, ``--listen`` = Raft) still means the same node."""
    record = ProcessRecord(
        "n11",
        "master",
        [sys.executable, "-m", "keelfs.server.master", "--id", "11"]
        + ["--listen", "127.0.0.1:7110", "--client-listen", "127.0.0.1:7111"]
        + ["--data", str(tmp_path / "n11" / "data"), "--shard", "shard-1"]
        + ["--config-servers", "127.0.0.1:7101"],
        str(tmp_path / "n11"),
        "127.0.0.1:7111",
        11,
        "127.0.0.1:7110",
        ["shard-1"],
    )
    State(str(tmp_path), [record]).save()
    state = load_state(tmp_path)
    assert state is not None and state.processes == [record]
    node, _ = node_config("master", resolve_args(master, legacy_argv(record.command[3:]), {}))
    assert (node.listen, node.client_address()) == (record.raft_address, record.address)


def test_http_ports_are_never_a_nodes_other_port(tmp_path: Path, monkeypatch: Any) -> None:
    """``MetaCluster.enable_http`` draws from the layout's ports: a port free when drawn but
    already given to a node (its raft or client port, bound only once the node starts) is
    never given again as an HTTP port (a CI run's node failed to start so)."""
    import keelfs.server.layout as layout_module
    import keelfs.server.metacluster as metacluster_module

    cluster = MetaCluster(tmp_path, layout="separate", shards=SHARDS)
    taken = {
        int(a.rsplit(":", 1)[1])
        for p in cluster.layout.meta
        for a in (p.raft_address, p.client_address)
    }
    fresh = iter(range(40_000, 40_100))

    def drawn(n: int, host: str = "127.0.0.1") -> list[int]:  # the taken ones first
        given = sorted(taken)[:n] if taken else []
        taken.difference_update(given)
        return given + [next(fresh) for _ in range(n - len(given))]

    node_ports = set(taken)
    monkeypatch.setattr(layout_module, "free_ports", drawn)
    monkeypatch.setattr(metacluster_module, "free_ports", drawn, raising=False)
    http = {int(a.rsplit(":", 1)[1]) for a in cluster.enable_http().values()}
    assert len(http) == len(cluster.nodes) and not http & node_ports
