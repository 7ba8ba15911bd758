"""TLS wired into every process (real processes): ``keelfs local-cluster up --tls`` serves the
CLI with no extra flag; a caller without a certificate fails the handshake; a user's
certificate is refused internal methods of a master and of a chunk server; a chunk server's
certificate cannot heartbeat in another server's name; ``keelfs server`` refuses a
non-loopback address without TLS unless ``--insecure``."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from keelfs.rpc.pb import chunk_pb2, chunk_pb2_grpc, meta_pb2, meta_pb2_grpc
from keelfs.runtime.processes import free_ports, read_ready_line, wait_until
from keelfs.server.layout import ADMIN_USER
from keelfs.server.local_cluster import State, load_state
from keelfs.testing.commands import keelfs_command as keelfs
from keelfs.testing.commands import kill_recorded
from keelfs.tls.certs import issue_client
from keelfs.tls.credentials import TlsSettings, open_channel

pytestmark = [pytest.mark.process, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[State]:
    directory = (tmp_path_factory.mktemp("tls") / "cluster").resolve()
    try:
        out = keelfs(
            "local-cluster", "up", "--tls", "--dir", str(directory), "--chunk-servers", "2",
            "--http-port", "-1", timeout=240,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        state = load_state(directory)
        assert state is not None and state.tls_dir
        yield state
    finally:
        keelfs("local-cluster", "down", "--dir", str(directory))
        kill_recorded(directory)


def _master(state: State) -> str:
    return next(p.address for p in state.processes if p.role == "master")


def _chunk(state: State) -> tuple[str, str]:
    p = next(p for p in state.processes if p.role == "chunk")
    return p.name, p.address


def test_cli_works_right_after_up(cluster: State, tmp_path: Path) -> None:
    assert "KEELFS_ADDRESS" not in os.environ
    local = tmp_path / "in.bin"
    local.write_bytes(b"tls" * 100_000)
    out = keelfs("put", str(local), "/f")
    assert out.returncode == 0, out.stdout + out.stderr
    out = keelfs("get", "/f", str(tmp_path / "out.bin"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "out.bin").read_bytes() == local.read_bytes()
    out = keelfs("ls", "/")
    assert out.returncode == 0 and "f" in out.stdout.split(), out.stdout + out.stderr
    out = keelfs("admin", "status")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "shard-1" in out.stdout


def test_no_certificate_fails_the_handshake(cluster: State) -> None:
    with grpc.insecure_channel(_master(cluster)) as channel:
        stub = meta_pb2_grpc.NodeStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Registry(meta_pb2.RegistryRequest(), timeout=3)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def _user(state: State, name: str) -> TlsSettings:
    directory = Path(state.tls_dir)
    issue_client(directory, name, overwrite=True)
    return TlsSettings.for_user(directory, name)


def test_user_certificate_refused_internal_methods(cluster: State) -> None:
    alice = _user(cluster, "alice")
    with open_channel(_master(cluster), alice) as channel:
        ns = meta_pb2_grpc.NamespaceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            ns.TxnPrepare(meta_pb2.TxnPrepareRequest(group="shard-1", txn_id=1), timeout=5)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as err:
            ns.ChunkHeartbeat(
                meta_pb2.ChunkHeartbeatRequest(server_id="cs9", address="1.2.3.4:5"), timeout=5
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # the stored records of a listing (inline files' data, writers' sessions: read past
        # the permission checks) are the masters' part of a client method
        with pytest.raises(grpc.RpcError) as err:
            ns.ListDir(meta_pb2.ListDirRequest(path="/", records=True), timeout=5)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "metadata nodes only" in (err.value.details() or "")
        with pytest.raises(grpc.RpcError) as err:  # likewise a file's stored record (concat)
            ns.GetFileInfo(meta_pb2.GetFileInfoRequest(path="/", record=True), timeout=5)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        batch = meta_pb2.BatchRequest(
            items=[
                meta_pb2.BatchItem(
                    method="ListDir",
                    request=meta_pb2.ListDirRequest(path="/", records=True).SerializeToString(),
                )
            ]
        )
        (item,) = ns.Batch(batch, timeout=5).items
        assert item.status == grpc.StatusCode.PERMISSION_DENIED.value[0]
        # a client method is served to the same certificate
        node = meta_pb2_grpc.NodeStub(channel)
        assert node.Registry(meta_pb2.RegistryRequest(), timeout=5).config_servers
    with open_channel(_chunk(cluster)[1], alice) as channel:
        cs = chunk_pb2_grpc.ChunkServerStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            cs.DeleteBlocks(chunk_pb2.DeleteBlocksRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_chunk_certificate_cannot_heartbeat_for_another(cluster: State) -> None:
    name, _ = _chunk(cluster)
    as_chunk = TlsSettings.for_node(Path(cluster.tls_dir), "chunkserver", name)
    forged = meta_pb2.ChunkHeartbeatRequest(
        server_id="cs-forged", address="127.0.0.1:1", capacity=1 << 60, full_report=True
    )
    with open_channel(_master(cluster), as_chunk) as channel:
        ns = meta_pb2_grpc.NamespaceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            ns.ChunkHeartbeat(forged, timeout=5)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    for p in cluster.meta:
        if p.role != "config":
            continue
        with open_channel(p.address, as_chunk) as channel:
            config = meta_pb2_grpc.ConfigStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                config.RegisterChunkServer(
                    meta_pb2.RegisterChunkServerRequest(server_id="cs-forged", address="1.2.3.4:5"),
                    timeout=5,
                )
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    admin = TlsSettings.for_user(Path(cluster.tls_dir), ADMIN_USER)
    for p in cluster.meta:
        with open_channel(p.address, admin) as channel:
            status = meta_pb2_grpc.NodeStub(channel).Status(meta_pb2.StatusRequest(), timeout=5)
        assert "cs-forged" not in status.chunk_servers
        if p.role == "master":
            assert name in status.chunk_servers  # the real one heartbeats under its own name


def _server(tmp_path: Path, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "keelfs.cli.main", "server", "--data", str(tmp_path / "d"),
         "--http-listen", "off", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_server_refuses_a_public_address_without_tls(tmp_path: Path) -> None:
    port = free_ports(1)[0]
    out = keelfs("server", "--data", str(tmp_path / "d"), "--listen", f"0.0.0.0:{port}")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "without TLS" in out.stderr and "--insecure" in out.stderr
    assert not (tmp_path / "d").exists()


def test_server_starts_on_a_public_address_with_insecure(tmp_path: Path) -> None:
    raft, client, chunk = free_ports(3)
    log = tmp_path / "out.log"
    with log.open("w") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-m", "keelfs.cli.main", "server", "--data", str(tmp_path / "d"),
             "--http-listen", "off", "--listen", f"0.0.0.0:{client}",
             "--raft-listen", f"127.0.0.1:{raft}", "--chunk-listen", f"127.0.0.1:{chunk}",
             "--advertise", "127.0.0.1", "--insecure", "--no-fsync-on-close"],
            stdout=stdout, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        ready = wait_until(
            lambda: read_ready_line(log) or (proc.poll() is not None and {"exited": 1}) or None,
            120,
            "keelfs server --insecure READY",
        )
        assert "exited" not in ready, proc.stderr.read() if proc.stderr else ""
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert "WARNING: --insecure" in err


def test_server_with_tls_dir_serves_the_cli_given_a_user_certificate(tmp_path: Path) -> None:
    """``keelfs server --tls-dir``: the CLI reaches it with ``--tls-dir DIR --user NAME``
    and not without."""
    certs = tmp_path / "certs"
    for args in (
        ("init", str(certs)),
        ("issue", str(certs), "master/1", "--host", "127.0.0.1"),
        ("issue", str(certs), "chunkserver/cs-1", "--host", "127.0.0.1"),
        ("issue", str(certs), "user/bob"),
        ("issue", str(certs), "user/ops", "--admin"),
    ):
        out = keelfs("certs", *args)
        assert out.returncode == 0, out.stdout + out.stderr
    raft, client, chunk = free_ports(3)
    log = tmp_path / "out.log"
    with log.open("w") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-m", "keelfs.cli.main", "server", "--data", str(tmp_path / "d"),
             "--http-listen", "off", "--listen", f"127.0.0.1:{client}",
             "--raft-listen", f"127.0.0.1:{raft}", "--chunk-listen", f"127.0.0.1:{chunk}",
             "--tls-dir", str(certs), "--no-fsync-on-close"],
            stdout=stdout, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        ready = wait_until(
            lambda: read_ready_line(log) or (proc.poll() is not None and {"exited": 1}) or None,
            120,
            "keelfs server --tls-dir READY",
        )
        assert "exited" not in ready
        address = ["--address", f"127.0.0.1:{client}"]
        local = tmp_path / "in.bin"
        local.write_bytes(b"b" * 70_000)
        tls = ["--tls-dir", str(certs), "--user", "bob"]
        # "/" is the superuser's: bob may not write there, an admin makes him a directory
        out = keelfs("put", str(local), "/bob.bin", *address, *tls)
        assert out.returncode == 1 and "permission denied" in out.stderr, out.stderr
        ops = ["--tls-dir", str(certs), "--user", "ops"]
        for command in (("mkdir", "/bob"), ("chown", "bob", "/bob")):
            out = keelfs(*command, *address, *ops)
            assert out.returncode == 0, out.stdout + out.stderr
        out = keelfs("put", str(local), "/bob/bob.bin", *address, *tls)
        assert out.returncode == 0, out.stdout + out.stderr
        out = keelfs("ls", "-l", "/bob", *address, *tls)
        assert out.returncode == 0 and "bob.bin" in out.stdout, out.stdout + out.stderr
        assert "bob" in out.stdout.split("bob.bin")[0]  # the certificate's user owns it
        out = keelfs("ls", "/", *address, timeout=60)
        assert out.returncode != 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert "WARNING: --insecure" not in err
