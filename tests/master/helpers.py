"""Helpers for the metadata service tests: raw stubs, placement-aware names, tree snapshots."""

from __future__ import annotations

import getpass
from typing import Any

import grpc

from keelfs.client import Client
from keelfs.errors import KeelError
from keelfs.meta import paths
from keelfs.meta.shardmap import ShardMap
from keelfs.rpc import grpc_errors
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.rpc.pb import meta_pb2_grpc as _pb_grpc
from keelfs.rpc.wire import session_id_to_pb
from keelfs.server.layout import ADMIN_USER
from keelfs.server.metacluster import MetaCluster
from keelfs.tls.credentials import open_channel

pb_grpc: Any = _pb_grpc

__all__ = ["RawError", "call_raw", "caller", "child", "stub", "tree"]


def caller(cluster: MetaCluster) -> str:
    """Who ``cluster.client()`` is to the servers: with TLS its certificate's user (the
    admin's), else the local user it names (simple mode)."""
    return ADMIN_USER if cluster.tls_dir is not None else getpass.getuser()


def stub(
    cluster: MetaCluster, node_id: int, service: str = "Namespace", *, as_master: int | None = None
) -> Any:
    """A raw stub of ``service`` on ``node_id`` (its channel lives as long as the stub); with
    TLS it presents the admin's certificate, or master ``as_master``'s (masters-only calls)."""
    tls = cluster.client_tls if as_master is None else cluster.master_tls(as_master)
    channel = open_channel(cluster.nodes[node_id].client_address, tls)
    return getattr(pb_grpc, f"{service}Stub")(channel)


class RawError(Exception):
    def __init__(self, rpc: grpc.RpcError) -> None:
        self.rpc = rpc
        self.status = rpc.code()
        self.keel: KeelError | None = grpc_errors.error_from_rpc(rpc)
        super().__init__(f"{self.status}: {self.keel!r}")


def call_raw(method: Any, request: Any, timeout: float = 10.0) -> Any:
    """Call a raw stub method; a refusal becomes ``RawError`` (status + rebuilt KeelError)."""
    try:
        return method(request, timeout=timeout)
    except grpc.RpcError as rpc:
        raise RawError(rpc) from None


def child(m: ShardMap, parent: str, prefix: str, *, same_shard: bool) -> str:
    """A path ``parent/<prefix><n>`` whose own shard is (``same_shard``) or is not the shard of
    its parent directory, i.e. whose children do or do not live with its entry."""
    for i in range(10_000):
        p = paths.join(parent, f"{prefix}{i}")
        if (m.shard_for_directory(p) == m.shard_for_directory(parent)) == same_shard:
            return p
    raise AssertionError("no such name")


_fresh = iter(range(1_000_000))


def dirs_on_two_shards(fs: Client, prefix: str = "/t") -> tuple[str, str, str, str]:
    """Two fresh directories whose children live on different shards, and those shards."""
    m = fs.shard_map()
    base = f"{prefix}{next(_fresh)}"
    fs.mkdir(base)
    a = child(m, base, "a", same_shard=True)
    b = child(m, base, "b", same_shard=False)
    fs.mkdir(a)
    fs.mkdir(b)
    sa, sb = m.shard_for_directory(a), m.shard_for_directory(b)
    assert sa != sb
    return a, b, sa, sb


def tree(fs: Client, top: str = "/") -> list[tuple[Any, ...]]:
    """Every entry under ``top`` with its attributes (times included), depth first."""
    out: list[tuple[Any, ...]] = []
    stack = [top]
    while stack:
        d = stack.pop()
        for e in fs.ls(d):
            out.append(
                (e.path, e.kind, e.mode, e.owner, e.group, e.mtime, e.replication,
                 e.under_construction, e.lease_holder)
            )  # fmt: skip
            if e.is_dir:
                stack.append(e.path)
    return sorted(out)


def header(session_id: int | bytes = 0, seq: int = 0, map_version: int = 0) -> pb.RequestHeader:
    """A request header; ``session_id`` as a number or as the wire's bytes."""
    sid = session_id_to_pb(session_id) if isinstance(session_id, int) else session_id
    return pb.RequestHeader(session_id=sid, seq=seq, map_version=map_version)
