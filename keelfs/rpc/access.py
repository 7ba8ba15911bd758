"""Who may call what: every RPC method of keelfs in one of four access classes, and the server
interceptor that enforces them on a TLS port.

========== =================================================================================
class      who may call
========== =================================================================================
client     any authenticated caller: users, and nodes (masters call their peers' namespace)
admin      an admin user (``keelfs certs issue ... user/NAME --admin``) or a metadata node
peer       internal: any node of the cluster (chunk servers' heartbeats and registration)
metadata   internal: metadata nodes only (masters, config servers): Raft, transactions,
           moves, block queries between shards, the node registry, fenced chunk commands
========== =================================================================================

:data:`ACCESS` names every method of the services in ``proto/`` (``tests/rpc/test_access.py``
walks the descriptors, so a new RPC fails the tests until it is classed here); the
interceptor refuses a method it does not know. Identities come from the TLS handshake
(``keelfs.tls.credentials.Authenticator``), so without TLS there is nobody to check:
:func:`server_interceptors` gives none and the servers behave as before.

Refusals: ``UNAUTHENTICATED`` for a call without a verified certificate, ``PERMISSION_DENIED``
for one whose identity the method's class does not admit.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import grpc.aio
from google.protobuf.descriptor import FileDescriptor

from keelfs.rpc.handlers import Behavior, WrappingInterceptor, rewrapped
from keelfs.rpc.observe import ObservingInterceptor
from keelfs.tls.credentials import Authenticator, TlsSettings
from keelfs.tls.identity import Anonymous, Client, Identity, Peer

__all__ = [
    "ACCESS",
    "Access",
    "AccessInterceptor",
    "proto_files",
    "rpc_methods",
    "server_interceptors",
]


class Access(enum.Enum):
    CLIENT = "client"
    ADMIN = "admin"
    PEER = "peer"
    METADATA = "metadata"

    def admits(self, who: Identity) -> bool:
        if isinstance(who, Peer):
            if self is Access.CLIENT or self is Access.PEER:
                return True
            return who.raft_node is not None  # admin and metadata: metadata nodes only
        if isinstance(who, Client):
            return self is Access.CLIENT or (self is Access.ADMIN and who.admin)
        return False

    def describe(self) -> str:
        return {
            Access.CLIENT: "needs an authenticated caller",
            Access.ADMIN: "is an admin method (an admin user or a metadata node)",
            Access.PEER: "is internal (cluster nodes only)",
            Access.METADATA: "is internal (metadata nodes only)",
        }[self]


C, A, P, M = Access.CLIENT, Access.ADMIN, Access.PEER, Access.METADATA

_BY_SERVICE: dict[str, dict[str, Access]] = {
    "keelfs.meta.v1.Config": {
        "FetchShardMap": C,
        "RegisterSession": C,
        "KeepAlive": C,
        "ListChunkServers": C,
        "AddShard": A,
        "RemoveShard": A,
        "SetShardMembers": A,  # keelfs admin add-member|remove-member
        "RegisterMaster": M,  # where clients are sent: a forged one reroutes them
        "IssueTxnIds": M,
        "SealRing": M,  # the master serving Format seals the ring first
        "FetchBlockKeys": M,  # block-token keys (chunk servers get theirs in heartbeat replies)
        "RegisterChunkServer": P,
        "SetServerAdminState": A,  # keelfs admin decommission|recommission|maintenance
    },
    "keelfs.meta.v1.Namespace": {
        "RegisterSession": C,
        "KeepAlive": C,
        "Mkdir": C,
        "Create": C,
        "CreateInline": C,
        "Complete": C,
        "RenewLease": C,
        "Delete": C,
        "Rename": C,
        "SetReplication": C,
        "SetTimes": C,
        "SetPermission": C,
        "SetOwner": C,
        "GetFileInfo": C,
        "ListDir": C,
        "ContentSummary": C,
        "Batch": C,  # its items are client methods (the master checks each)
        "AllocateBlock": C,
        "RecoverPipeline": C,
        "ReportBadReplica": C,
        "Append": C,
        "Truncate": C,
        "Concat": C,
        "Format": A,  # keelfs admin format-namespace, and the launchers
        "TxnPrepare": M,
        "TxnFinish": M,
        "TxnStatus": M,
        "BlocksKnown": M,
        "Move": M,
        "MoveRead": M,
        "GetServerDefaults": C,  # the trash interval a client's `rm` follows
        "SetQuota": C,  # the master checks the caller is a superuser
        "GetQuota": C,
        "Snapshot": C,  # the master checks the owner / superuser per action
        "SetAcl": C,  # ACL changes: the state machine checks the owner / superuser
        "ModifyAclEntries": C,
        "RemoveAclEntries": C,
        "RemoveDefaultAcl": C,
        "RemoveAcl": C,
        "ChunkHeartbeat": P,  # chunk servers
    },
    "keelfs.meta.v1.Node": {
        "Registry": C,  # how a client given any node's address finds the config group
        "Status": A,
        "SetFailpoint": A,
        "TransferLeader": A,
        "AddMember": A,
        "RemoveMember": A,
        "Backup": A,  # the whole state, block-token keys included
        "BalanceStep": A,  # keelfs admin balance
    },
    "keelfs.chunk.v1.ChunkServer": {
        "WriteBlock": C,  # clients, and chunk servers forwarding down a pipeline
        "ReadBlock": C,
        "BlockChecksum": C,  # a block's part of a file checksum, with a READ token
        "BlockInfo": A,
        "ListBlocks": A,
        "ServerInfo": A,
        "DeleteBlocks": M,  # fenced commands, from a shard's leader
        "ReplicateBlock": M,
    },
    "keelfs.raft.v1.RaftTransport": {
        "Stream": M,
    },
    "keelfs.kv.v1.KV": {
        "Put": C,
        "Get": C,
        "Cas": C,
        "Status": C,
        "TransferLeader": A,
        "AddMember": A,
        "RemoveMember": A,
        "LoadTest": A,
    },
}

ACCESS: dict[str, Access] = {
    f"/{service}/{method}": access
    for service, methods in _BY_SERVICE.items()
    for method, access in methods.items()
}
"""Full method name (``/keelfs.meta.v1.Namespace/Create``, as gRPC names it) -> class."""


def proto_files() -> list[FileDescriptor]:
    """The descriptors of every proto file with services: meta, chunk, raft, kv."""
    from keelfs.rpc.pb import chunk_pb2, meta_pb2
    from keelfs.runtime.pb import kv_pb2
    from keelfs.transport.pb import raft_pb2

    return [meta_pb2.DESCRIPTOR, chunk_pb2.DESCRIPTOR, raft_pb2.DESCRIPTOR, kv_pb2.DESCRIPTOR]


def rpc_methods() -> Iterator[str]:
    """The full name of every RPC method in keelfs's proto files."""
    for file in proto_files():
        for service in file.services_by_name.values():
            for method in service.methods:
                yield f"/{service.full_name}/{method.name}"


# -- the interceptor ----------------------------------------------------------------------------


class AccessInterceptor(WrappingInterceptor):
    """Refuses a call whose caller's identity the method's class does not admit, before the
    servicer sees it. gRPC gives an interceptor no peer, so the check runs as the first step
    of the method's handler: the handler is wrapped (once per method, then reused). For
    asyncio servicers: a plain function (gRPC's generated "unimplemented" defaults) runs on
    the event loop, not in a thread."""

    def __init__(self, authenticator: Authenticator) -> None:
        super().__init__()
        self._authenticator = authenticator

    def _refusal(self, method: str, context: Any) -> tuple[grpc.StatusCode, str] | None:
        who = self._authenticator.identity_of(context)
        access = ACCESS.get(method)
        if isinstance(who, Anonymous):
            return grpc.StatusCode.UNAUTHENTICATED, f"{method}: no verified certificate"
        if access is None:
            return grpc.StatusCode.PERMISSION_DENIED, f"{method} has no access class"
        if not access.admits(who):
            return grpc.StatusCode.PERMISSION_DENIED, f"{method} {access.describe()}: not {who}"
        return None

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        refusal = self._refusal

        def guard_unary(behavior: Behavior) -> Behavior:
            async def guarded(request: Any, context: Any) -> Any:
                refused = refusal(method, context)
                if refused is not None:
                    await context.abort(*refused)
                reply = behavior(request, context)
                return (await reply) if inspect.isawaitable(reply) else reply

            return guarded

        def guard_stream(behavior: Behavior) -> Behavior:
            if inspect.iscoroutinefunction(behavior):
                return guard_unary(behavior)  # writes through context.write

            async def guarded(request: Any, context: Any) -> AsyncIterator[Any]:
                refused = refusal(method, context)
                if refused is not None:
                    await context.abort(*refused)
                replies = behavior(request, context)
                if inspect.isasyncgen(replies):
                    async for reply in replies:
                        yield reply
                else:
                    for reply in replies:
                        yield reply

            return guarded

        return rewrapped(handler, guard_unary, guard_stream)


def server_interceptors(
    tls: TlsSettings | None, node: str | None = None
) -> list[grpc.aio.ServerInterceptor]:
    """What to pass as ``grpc.aio.server(interceptors=...)``: with ``node`` (the server's
    label in metrics) first the observing interceptor (``keelfs.rpc.observe``: latency by
    method and code, request ids), then the access check with TLS (none without: insecure
    mode has no identities)."""
    out: list[grpc.aio.ServerInterceptor] = [] if node is None else [ObservingInterceptor(node)]
    if tls is not None:
        out.append(AccessInterceptor(Authenticator(tls)))
    return out
