"""Operating chunk servers with real processes (``keelfs admin decommission|recommission|
maintenance|servers|balance``): 3 co-hosted masters serving the config group and two shards,
and chunk servers declared dead after 2 s. Every file written is checked by MD5 after each
step; a step never leaves a block with fewer replicas than it wants."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from keelfs.cli.main import cli
from keelfs.client.sync import Client
from keelfs.server.chunkservers import LocalChunkServers
from keelfs.server.layout import ADMIN_USER
from keelfs.server.metacluster import MetaCluster
from keelfs.testing.tiers import starts_processes

pytestmark = [pytest.mark.timeout(600)]

KiB = 1024
BLOCK = 64 * KiB


@pytest.fixture(scope="module")
@starts_processes
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MetaCluster, Any]]:
    c = MetaCluster(tmp_path_factory.mktemp("fleet"), node_args=("--chunk-dead-after", "2"))
    try:
        c.start()
        servers = c.start_chunk_servers(4, "--no-fsync-on-close")
        yield c, servers
    except BaseException:
        for node_id in sorted(c.nodes):
            print(f"----- node {node_id} log (tail) -----\n{c.log_tail(node_id, 40)}")
        raise
    finally:
        c.stop_all()


def admin(c: MetaCluster, *args: str) -> Result:
    return CliRunner().invoke(cli, ["admin", *args, "--address", c.nodes[1].client_address])


def admin_json(c: MetaCluster, *args: str) -> dict[str, Any]:
    r = admin(c, *args, "--json")
    assert r.exit_code == 0, r.output
    out: dict[str, Any] = json.loads(r.output.strip().splitlines()[-1])
    return out


def servers_state(c: MetaCluster) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = admin_json(c, "servers")["servers"]
    return out


def server_id(servers: LocalChunkServers, i: int) -> str:
    return str(servers.ready[i]["server_id"])


class Files:
    """The files written so far and their MD5."""

    def __init__(self) -> None:
        self.md5: dict[str, str] = {}
        self.lock = threading.Lock()

    def write(self, fs: Client, path: str, size: int) -> None:
        data = os.urandom(size)
        fs.write_bytes(path, data, block_size=BLOCK, overwrite=True)
        with self.lock:
            self.md5[path] = hashlib.md5(data).hexdigest()

    def check(self, fs: Client) -> None:
        with self.lock:
            files = dict(self.md5)
        for path, digest in sorted(files.items()):
            assert hashlib.md5(fs.read_bytes(path)).hexdigest() == digest, path


@pytest.fixture(scope="module")
def files(fleet: tuple[MetaCluster, Any]) -> Files:
    c, _ = fleet
    fs = c.admin()
    out = Files()
    for d in ("/a", "/b", "/c", "/d"):  # spread over both shards
        fs.mkdir(d, parents=True)
        for i in range(4):
            out.write(fs, f"{d}/f{i}", 3 * BLOCK + 1000 * i)
    return out


class Writer(threading.Thread):
    """A steady write load: a file every few tens of milliseconds until stopped."""

    def __init__(self, fs: Client, files: Files, prefix: str) -> None:
        super().__init__(daemon=True)
        self.fs, self.files, self.prefix = fs, files, prefix
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.count = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.files.write(self.fs, f"{self.prefix}/w{self.count}", 2 * BLOCK + 7)
                self.count += 1
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                self.errors.append(exc)
                return


def block_holders(c: MetaCluster, fs: Client, paths: list[str]) -> dict[tuple[str, int], set[str]]:
    """(path, block index) -> the chunk servers holding a good finalized replica of it at its
    stamp, as the servers themselves list them (``ListBlocks``): the truth on disk, not a
    master's soft state (a master just restarted may not have every report yet)."""
    from keelfs.datapath.client import ChunkClient
    from keelfs.datapath.replica import ReplicaState

    on_disk: dict[tuple[int, int], set[str]] = {}
    with ChunkClient(tls=c.client_tls) as chunks:
        for group in c._chunk_servers:
            for i, ready in enumerate(group.ready):
                if i not in group._procs:
                    continue  # stopped
                for r in chunks.list_blocks(ready["address"]):
                    if r.state is ReplicaState.FINALIZED and not r.corrupt:
                        on_disk.setdefault((r.block_id, r.gen), set()).add(ready["server_id"])
    out: dict[tuple[str, int], set[str]] = {}
    for path in paths:
        for i, b in enumerate(fs.stat(path).blocks):
            out[(path, i)] = on_disk.get((b.block_id, b.gen_stamp), set())
    return out


def replication_counters(c: MetaCluster) -> int:
    """Re-replications queued so far by every master (each node's count only grows, whoever
    leads: summing the current leaders' would change with a leadership change)."""
    return sum(c.status(n).replication["replications"] for n in c.running())


# -- decommission -----------------------------------------------------------------------------
def test_decommission_under_writes_and_a_leader_kill_then_stop_and_recommission(
    fleet: tuple[MetaCluster, Any], files: Files
) -> None:
    c, servers = fleet
    fs = c.admin()
    leaving = server_id(servers, 0)
    fs.mkdir("/load", parents=True)
    writer = Writer(c.client(deadline=30.0), files, "/load")
    writer.start()
    try:
        c.wait_for(lambda: writer.count >= 3 or None, 60, "the writer did not start")
        began = time.monotonic()
        r = admin(c, "decommission", leaving)
        assert r.exit_code == 0, r.output
        assert servers_state(c)[leaving]["state"] in ("decommissioning", "decommissioned")
        # a shard leader dies in the middle; its successor learns the state from the config
        # group and takes the drain over
        victim = c.leader("shard-1")
        c.kill9(victim)
        c.leader("shard-1", exclude=(victim,))
        c.restart(victim)
        c.wait_for(lambda: writer.count >= 10 or None, 60, "the writer stalled")
    finally:
        writer.stop.set()
        writer.join(60)
    assert not writer.errors, writer.errors
    c.wait_for(
        lambda: servers_state(c)[leaving]["state"] == "decommissioned" or None,
        180,
        f"{leaving} never decommissioned: {servers_state(c).get(leaving)}",
    )
    print(f"decommissioned {leaving} ({len(files.md5)} files) {time.monotonic() - began:.1f} s")
    paths = sorted(files.md5)
    for (path, i), holders in block_holders(c, fs, paths).items():
        assert len(holders - {leaving}) >= 3, f"{path} block {i}: only {holders}"
    servers.kill9(0)  # no moment of reduced redundancy: every block has 3 copies elsewhere
    files.check(fs)
    servers.restart(0)
    assert admin(c, "recommission", leaving).exit_code == 0
    assert servers_state(c)[leaving]["state"] == "in_service"
    c.wait_for(lambda: c.chunk_servers_reported({leaving}) or None, 30, "not reported")
    files.write(fs, "/a/everywhere", 2 * BLOCK)
    fs.set_replication("/a/everywhere", 4)
    c.wait_for(
        lambda: all(leaving in h for h in block_holders(c, fs, ["/a/everywhere"]).values()) or None,
        60,
        "a recommissioned server took no replica",
    )
    files.check(fs)


# -- maintenance ------------------------------------------------------------------------------
def test_a_maintenance_restart_copies_nothing_but_a_death_after_the_deadline_does(
    fleet: tuple[MetaCluster, Any], files: Files
) -> None:
    c, servers = fleet
    fs = c.admin()
    resting = server_id(servers, 1)
    assert admin(c, "maintenance", resting, "--for", "10m").exit_code == 0
    assert servers_state(c)[resting]["state"] == "maintenance"
    before = replication_counters(c)
    servers.kill9(1)
    shard_leaders = [c.leader(s) for s in c.shard_ids]
    c.wait_for(
        lambda: all(not c.status(n).chunk_servers[resting].live for n in shard_leaders) or None,
        30,
        "the masters never noticed the server down",
    )
    # down for several walks (one a second with a 2 s dead-after time): nothing is copied.
    # A negative can only be shown by waiting; the walks' pace bounds how long is enough.
    time.sleep(4.0)
    assert replication_counters(c) == before
    files.check(fs)
    servers.restart(1)
    c.wait_for(lambda: c.chunk_servers_reported({resting}) or None, 30, "not reported back")
    assert replication_counters(c) == before
    # now a maintenance that ends while the server is down: a real death
    assert admin(c, "maintenance", resting, "--for", "3s").exit_code == 0
    servers.kill9(1)
    c.wait_for(
        lambda: replication_counters(c) > before or None,
        60,
        "a server down past its maintenance was never re-replicated",
    )
    paths = sorted(files.md5)

    def repaired() -> bool | None:
        holders = block_holders(c, fs, paths)
        return all(len(h - {resting}) >= 3 for h in holders.values()) or None

    c.wait_for(repaired, 120, "blocks not repaired after the maintenance ended")
    files.check(fs)
    servers.restart(1)
    assert admin(c, "recommission", resting).exit_code == 0


# -- the balancer -----------------------------------------------------------------------------
def test_balance_under_writes_and_a_leader_kill_fills_an_empty_server_and_every_file_reads(
    fleet: tuple[MetaCluster, Any], files: Files
) -> None:
    """The balancer runs while a writer writes and the shards' leader is killed once moves
    are in flight: the new leader trims the copies it did not plan as any excess. Once the
    writes stop the balancer converges; every block has exactly its replication, the new
    server holds some, every file reads."""
    c, servers = fleet
    fs = c.admin()
    [new] = [r["server_id"] for r in c.start_chunk_servers(1, "--no-fsync-on-close").ready]
    assert servers_state(c)[new]["used"] == 0
    fs.mkdir("/load2", parents=True)
    writer = Writer(c.client(deadline=30.0), files, "/load2")
    killed: list[int] = []

    def kill_a_leader_mid_move() -> None:
        victim = c.leader("shard-1")
        c.wait_for(lambda: c.status(victim).replication["moves"] > 0 or None, 120, "no move began")
        c.kill9(victim)
        killed.append(victim)
        c.leader("shard-1", exclude=(victim,))
        c.restart(victim)
        writer.stop.set()  # then the balancer can converge (new writes keep unbalancing)

    killer = threading.Thread(target=kill_a_leader_mid_move, daemon=True)
    writer.start()
    killer.start()
    began = time.monotonic()
    try:
        out = admin_json(
            c, "balance", "--threshold", "0", "--rate", "50", "--timeout", "240",
            "--min-block-size", str(BLOCK),
        )  # fmt: skip
    finally:
        writer.stop.set()
        writer.join(60)
        killer.join(120)
    print(f"balance: {len(out['moves'])} moves, {out['bytes']} bytes, "
          f"{time.monotonic() - began:.1f} s: {out['result']}")  # fmt: skip
    assert killed and not writer.errors, (killed, writer.errors)
    assert out["result"].startswith(("done", "balanced")), out["result"]
    assert new in {m["to"] for m in out["moves"]}, out
    paths = sorted(files.md5)
    want = {p: 4 if p == "/a/everywhere" else 3 for p in paths}

    def settled() -> bool | None:
        holders = block_holders(c, fs, paths)
        on_new = sum(1 for h in holders.values() if new in h)
        exact = all(len(h) == want[p] for (p, _), h in holders.items())
        return (on_new > 0 and exact) or None

    c.wait_for(settled, 180, "the moves' sources were not trimmed back to 3 replicas")
    files.check(fs)


# -- bad input --------------------------------------------------------------------------------
def test_bad_input_is_refused_and_changes_nothing(fleet: tuple[MetaCluster, Any]) -> None:
    c, servers = fleet
    before = servers_state(c)
    version = c.admin().shard_map().version
    for args, words in [
        (("decommission", "no-such-server"), ("unknown chunk server", "no-such-server")),
        (("maintenance", "no-such-server", "--for", "1h"), ("unknown chunk server",)),
        (("maintenance", server_id(servers, 2)), ("exactly one of --for and --until",)),
        (("maintenance", server_id(servers, 2), "--for", "soon"), ("not a duration",)),
        (("maintenance", server_id(servers, 2), "--until", "2001-01-01T00:00"), ("over",)),
        (("balance", "--rate", "0"), ("--rate",)),
    ]:
        r = admin(c, *args)
        assert r.exit_code == 2, (args, r.output)
        line = r.output.strip().splitlines()[-1]
        assert line.startswith("keelfs admin: ") and all(w in line for w in words), line
    after = servers_state(c)
    assert {s: v["state"] for s, v in after.items()} == {s: v["state"] for s, v in before.items()}
    assert c.admin().shard_map().version == version


# -- who may: a TLS cluster --------------------------------------------------------------------
@pytest.fixture(scope="module")
@starts_processes
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MetaCluster, str]]:
    c = MetaCluster(tmp_path_factory.mktemp("fleet-tls"), shards=("shard-1",), tls=True)
    with c:
        servers = c.start_chunk_servers(1, "--no-fsync-on-close")
        yield c, server_id(servers, 0)


def test_a_user_who_is_not_an_admin_is_refused_and_nothing_changes(
    tls_cluster: tuple[MetaCluster, str],
) -> None:
    from keelfs.tls.certs import issue_client

    c, cs = tls_cluster
    assert c.tls_dir is not None
    issue_client(c.tls_dir, "alice")
    as_alice = ["--tls-dir", str(c.tls_dir), "--user", "alice"]
    for args in (("decommission", cs), ("maintenance", cs, "--for", "1h"), ("balance",)):
        r = admin(c, *args, *as_alice)
        assert r.exit_code == 1, (args, r.output)
        assert "admin method" in r.output or "PERMISSION_DENIED" in r.output, r.output
    version = c.admin().shard_map().version
    as_root = ["--tls-dir", str(c.tls_dir), "--user", ADMIN_USER]
    r = admin(c, "servers", "--json", *as_root)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["servers"][cs]["state"] == "in_service"
    assert c.admin().shard_map().version == version
    # an admin may
    assert admin(c, "decommission", cs, *as_root).exit_code == 0
    assert admin(c, "recommission", cs, *as_root).exit_code == 0
    assert c.admin().shard_map().version == version + 2
