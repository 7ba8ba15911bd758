"""``AdminClient``: a running cluster as an administrator's tool sees it (``keelfs admin``).

Given the client address of ANY metadata node, it learns the config servers and the node
registry from that node's ``Node.Registry``; the ShardMap through the ordinary ``Client``;
what each group looks like from every node's ``Node.Status`` (``keelfs.client.cluster_view``).
Leadership and membership RPCs (``Node.TransferLeader``, ``AddMember``, ``RemoveMember``) go
to the group's leader through the client's own routing and retry plan
(``keelfs.client._core``: ``NOT_LEADER`` hints followed, elections waited out).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc

from keelfs.client import _ops as ops
from keelfs.client._core import CONFIG_ROUTE, Op, Route
from keelfs.client.cluster_view import ClusterView, GroupView, gather
from keelfs.client.connect import resolve_seeds
from keelfs.client.sync import Client
from keelfs.errors import KeelError
from keelfs.meta.shardmap import ShardMap
from keelfs.rpc import grpc_errors
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.rpc.wire import CONFIG_GROUP
from keelfs.tls.credentials import TlsSettings

__all__ = ["AdminClient", "AdminClientError", "UnknownGroup", "Unreachable", "open_cluster"]

STATUS_TIMEOUT_S = 2.0


class AdminClientError(Exception):
    """An administrative operation failed; the message says why, in one line."""


class UnknownGroup(AdminClientError):
    """No node hosts a group of that name."""


class Unreachable(Exception):
    """No address answered; the message says which were tried and where they came from."""


class AdminClient:
    """The cluster as seen from ``address``: its registry, the ShardMap, every node's status.

    ``load()`` fetches them; ``view``, ``shard_map`` and ``registry`` hold what it fetched."""

    def __init__(
        self, address: str, *, deadline: float = 15.0, tls: TlsSettings | None = None
    ) -> None:
        self.address = address
        self.deadline = deadline
        bootstrap = Client([address], deadline=deadline, attempt_timeout=2.0, tls=tls)
        try:
            reg = self._node_call(bootstrap, address, "Registry", pb.RegistryRequest(), 3.0)
        finally:
            bootstrap.close()
        self.registry: dict[int, str] = {int(k): v for k, v in reg.nodes.items()}
        seeds = list(reg.config_servers) or [address]
        self.client = Client(seeds, deadline=deadline, attempt_timeout=2.0, tls=tls)
        self._shard_map: ShardMap | None = None
        self.view = ClusterView({}, {}, {})

    def close(self) -> None:
        self.client.close()

    # -- one node -----------------------------------------------------------------------------
    @staticmethod
    def _node_call(client: Client, address: str, method: str, request: Any, timeout: float) -> Any:
        """One ``Node`` RPC; refusals raise their ``KeelError``, transport failures
        ``AdminClientError`` naming the address."""
        try:
            return getattr(client._stub(address, "Node"), method)(request, timeout=timeout)
        except grpc.RpcError as err:
            keel = grpc_errors.error_from_rpc(err)
            if keel is not None:
                raise keel from None
            failure = grpc_errors.transport_failure(err, address, method)
            if failure.error is not None:
                raise failure.error from None
            raise AdminClientError(
                f"metadata node at {address} did not answer {method}: {failure.message}"
            ) from None

    def status(self, address: str, *, timeout: float = STATUS_TIMEOUT_S) -> pb.StatusReply:
        """``Node.Status`` of one node (one attempt; raises ``grpc.RpcError``)."""
        return self.client.status(address, timeout=timeout)

    # -- the whole cluster --------------------------------------------------------------------
    def load(self) -> AdminClient:
        """Fetch the ShardMap, the registry and every registered node's status."""
        fetched = self.client.fetch_shard_map()
        assert fetched is not None
        self._shard_map, nodes = fetched
        self.registry.update(nodes)
        self.view = gather(self.client, self.registry, timeout=STATUS_TIMEOUT_S)
        return self

    @property
    def shard_map(self) -> ShardMap:
        """The ShardMap as of the last ``load()``."""
        if self._shard_map is None:
            raise RuntimeError("AdminClient.load() first")
        return self._shard_map

    @property
    def groups(self) -> dict[str, GroupView]:
        """Every group as of the last ``load()``: config first, then the shards."""
        return self.view.groups

    def group(self, name: str) -> GroupView:
        """Group ``name`` as of the last ``load()`` (``UnknownGroup`` if nobody hosts it)."""
        groups = self.view.groups
        if name not in groups:
            known = ", ".join(groups) or "none"
            raise UnknownGroup(f"unknown group {name!r} (groups: {known})")
        return groups[name]

    def wait_leader(
        self, name: str, timeout: float, accept: Callable[[int], bool] = bool
    ) -> GroupView:
        """Reload until ``name`` has a leader that ``accept``s and every answering voter
        agrees on."""
        deadline = time.monotonic() + timeout
        while True:
            g = self.load().group(name)
            agreed = g.leader and all(
                not m.up or m.leader == g.leader for i, m in g.members.items() if i in g.voters
            )
            if agreed and accept(g.leader):
                return g
            if time.monotonic() >= deadline:
                raise AdminClientError(
                    f"{name} has no agreed leader after {timeout:g} s (last seen: {g.leader})"
                )
            time.sleep(0.1)

    def call_leader(self, name: str, method: str, request: Any, timeout: float) -> Any:
        """A ``Node`` RPC on the leader of group ``name``, routed and retried by the client's
        plan (``NOT_LEADER`` hints, elections) until ``timeout``; one attempt may take all of
        it, as a new member catching up does."""
        route = CONFIG_ROUTE if name == CONFIG_GROUP else Route("shard", name)
        op = Op("Node", method, route, lambda _: request, write=True, attempt_timeout=timeout)
        return self.client._run(op, timeout)

    def set_shard_members(self, shard: str, voters: list[int]) -> int:
        """Record ``shard``'s voters in the ShardMap (after a membership change); returns the
        new map version."""

        def build(h: pb.RequestHeader) -> pb.SetShardMembersRequest:
            return pb.SetShardMembersRequest(header=h, shard_id=shard, members=voters)

        op = Op("Config", "SetShardMembers", CONFIG_ROUTE, build, True, True)
        return int(self.client._run(op, None).map_version)

    def file_info_with_locations(self, path: str) -> pb.FileInfo:
        """``path``'s record as its shard's leader has it, each block with the chunk servers
        holding a replica (what ``fsck`` counts)."""
        info: pb.FileInfo = self.client._run(ops.stat(path, False), None).info
        return info

    def config_leader_status(self) -> pb.StatusReply | None:
        """The status of a node that says it leads the config group (None if none answers)."""
        for address in self.registry.values():
            try:
                st = self.status(address, timeout=1.0)
            except grpc.RpcError:
                continue
            config = st.groups.get(CONFIG_GROUP)
            if config is not None and config.state == "leader":
                return st
        return None


def open_cluster(address: str | None, tls: TlsSettings | None = None) -> AdminClient:
    """The cluster through the first of the addresses ``--address`` resolves to that answers
    (``keelfs.client.connect.resolve_seeds``: the flag, ``$KEELFS_ADDRESS``, the running local
    cluster, the default). The file commands and ``keelfs admin`` both connect here."""
    try:
        seeds = resolve_seeds(address, tls)
    except ValueError as exc:
        raise Unreachable(str(exc)) from None
    why = ""
    for seed in seeds.addresses:
        try:
            return AdminClient(
                seed, tls=seeds.tls
            )  # resolves the config servers from any metadata node
        except AdminClientError as exc:
            why = str(exc)
        except KeelError as exc:
            why = f"metadata node at {seed}: {exc}"
    raise Unreachable(
        f"cannot reach keelfs at {seeds} ({seeds.origin}): {why} (is it running? --address or "
        "KEELFS_ADDRESS names any config server or master)"
    )
