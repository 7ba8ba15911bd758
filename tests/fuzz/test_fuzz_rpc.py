"""Every RPC method of the metadata and chunk services (walked from the proto descriptors, so
a new one is fuzzed the day it is added) fed random requests against a whole server in this
process: random field values with the boundary integers (0, 2^63-1, 2^64-1, the negative
ends), empty, long and NUL-bearing strings, nested messages and repeated fields. Each answer
is OK or a status a keelfs error maps to (``grpc_errors.STATUS_OF_CODE``), never ``UNKNOWN`` or
``INTERNAL`` from an unhandled exception, and after each method the server is whole (its Raft
host did not stop) and still answers a normal request.

Methods that change who serves (membership, failpoints, shard members, the master registry)
get their own server (:data:`RECONFIGURING`): what they do when a random value happens to be
valid is the caller's right, and must not hide the other methods' outcome."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from fuzz_helpers import fuzz_settings
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from hypothesis import given
from hypothesis import strategies as st
from server_thread import ServerThread
from test_fuzz_replicas import PART, PATHS, b64, records, shard_commands

from keelfs import failpoints
from keelfs.meta.commands import MoveIngest
from keelfs.rpc import grpc_errors
from keelfs.rpc.pb import chunk_pb2, meta_pb2, meta_pb2_grpc

FD = FieldDescriptor
ALLOWED = {grpc.StatusCode.OK, *grpc_errors.STATUS_OF_CODE.values()} - {grpc.StatusCode.INTERNAL}
"""Every status a keelfs refusal maps to, less ``INTERNAL`` (a bug)."""
ALLOWED_TRANSPORT = {grpc.StatusCode.DEADLINE_EXCEEDED}
"""A call may also run out of its deadline (a write waiting for a lease, a stream kept open)."""
UNSERVED = set() if failpoints.ENABLED else {"/keelfs.meta.v1.Node/SetFailpoint"}
"""Methods this process does not serve (``UNIMPLEMENTED``, as gRPC answers any unknown method):
failpoints exist only in a process started with ``KEELFS_FAILPOINTS``."""
CALL_TIMEOUT_S = 3.0
EXAMPLES_PER_METHOD = 12
RECONFIGURING = {
    "/keelfs.meta.v1.Node/AddMember",
    "/keelfs.meta.v1.Node/RemoveMember",
    "/keelfs.meta.v1.Node/TransferLeader",
    "/keelfs.meta.v1.Node/SetFailpoint",
    "/keelfs.meta.v1.Config/SetShardMembers",
    "/keelfs.meta.v1.Config/RemoveShard",
    "/keelfs.meta.v1.Config/RegisterMaster",
    "/keelfs.meta.v1.Namespace/Format",
    "/keelfs.meta.v1.Namespace/Move",
}

SMALL = st.integers(0, 3)
"""Small numbers: a session, a sequence number, a transaction id that may exist."""
SIGNED = st.one_of(SMALL, st.sampled_from([-1, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63)]))
UNSIGNED = st.one_of(SMALL, st.sampled_from([2**31, 2**32 - 1, 2**63 - 1, 2**63, 2**64 - 1]))
TEXT = st.one_of(
    st.sampled_from(["/", "/fz", "/fz/a", "shard-1", "keelfs", "{}", "[]"]),
    st.sampled_from(["", "a", "/a\x00b", "\x00", "..", "/" + "x" * 300]),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=20),  # protobuf: UTF-8 only
    st.just("y" * 100_000),
)
BYTES = st.one_of(st.binary(max_size=64), st.just(b"\x00" * 70_000))
SCALAR: dict[int, st.SearchStrategy[Any]] = {
    FD.TYPE_INT64: SIGNED,
    FD.TYPE_SINT64: SIGNED,
    FD.TYPE_SFIXED64: SIGNED,
    FD.TYPE_INT32: SIGNED.filter(lambda v: -(2**31) <= v < 2**31),
    FD.TYPE_SINT32: SIGNED.filter(lambda v: -(2**31) <= v < 2**31),
    FD.TYPE_SFIXED32: SIGNED.filter(lambda v: -(2**31) <= v < 2**31),
    FD.TYPE_UINT64: UNSIGNED,
    FD.TYPE_FIXED64: UNSIGNED,
    FD.TYPE_UINT32: UNSIGNED.filter(lambda v: v < 2**32),
    FD.TYPE_FIXED32: UNSIGNED.filter(lambda v: v < 2**32),
    FD.TYPE_BOOL: st.booleans(),
    FD.TYPE_STRING: TEXT,
    FD.TYPE_BYTES: BYTES,
    FD.TYPE_DOUBLE: st.floats(allow_nan=True),
    FD.TYPE_FLOAT: st.floats(allow_nan=True, width=32),
}


def move_commands() -> st.SearchStrategy[dict[str, Any]]:
    """A move command's op and arguments; half of them copy records in over the whole ring
    (every key is in range) with values that are no inode records."""
    others = shard_commands().filter(lambda cmd: cmd.op.startswith("move_"))
    bad_value = st.one_of(
        st.binary(max_size=8), st.sampled_from([b"[]", b'[1,"d",-1,"o","g",0,0,0,0,[],0,0]'])
    )
    bad_ingest = st.builds(
        lambda txn_id, keys, values: MoveIngest(
            txn_id,
            ("0:" + str(2**64 - 1),),
            "shard-2",
            tuple(keys),
            tuple(b64(v) for v in values[: len(keys)]),
        ),
        st.integers(1, 3),
        st.lists(records().map(lambda kv: kv[0]), min_size=1, max_size=3),
        st.lists(bad_value, min_size=3, max_size=3),
    )
    return st.one_of(bad_ingest, others).map(
        lambda cmd: {"op": cmd.op, "args": json.dumps(cmd.args())}
    )


def hostile_parts() -> st.SearchStrategy[str]:
    """A part that writes a record that is no inode at all (every later read of it fails)."""
    record = st.sampled_from(["garbage", "[]", "{}", '[1,"d"]'])
    step = st.tuples(st.sampled_from(["put_entry", "put_self"]), st.sampled_from(PATHS[1:]), record)
    return st.lists(step.map(list), min_size=1, max_size=2).map(json.dumps)


NAMED: dict[str, st.SearchStrategy[Any]] = {
    "group": st.sampled_from(["shard-1", "config", "shard-2"]),
    "coordinator": st.sampled_from(["shard-1", "shard-2"]),
    "part": st.one_of(PART, hostile_parts()),
    "op": st.sampled_from(["move_freeze", "move_ingest", "move_settle", "move_drop"]),
    "path": st.sampled_from(PATHS),
    "src": st.sampled_from(PATHS),
    "dst": st.sampled_from(PATHS),
}
"""Field names whose value is worth making valid half of the time (then a request passes
the first checks and reaches deeper): shard ids, paths, a transaction part, a move command."""


def field_value(field: FD, depth: int) -> st.SearchStrategy[Any]:
    named = NAMED.get(field.name)
    if named is not None and field.type == FD.TYPE_STRING:
        return st.one_of(named, SCALAR[field.type])
    if field.type == FD.TYPE_MESSAGE:
        return message_dicts(field.message_type, depth + 1)
    if field.type == FD.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values] + [99])
    return SCALAR[field.type]


@st.composite
def message_dicts(draw: st.DrawFn, descriptor: Descriptor, depth: int = 0) -> dict[str, Any]:
    """Values for a random subset of ``descriptor``'s fields (nesting stops at depth 3)."""
    out: dict[str, Any] = {}
    well_formed = WELL_FORMED.get(descriptor.name)
    if well_formed is not None and draw(st.booleans()):
        return draw(well_formed())
    for field in descriptor.fields:
        if depth > 3 and field.type == FD.TYPE_MESSAGE:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            continue
        if draw(st.integers(0, 3)) == 0:
            continue
        value = field_value(field, depth)
        if field.is_repeated:
            out[field.name] = draw(st.lists(value, max_size=3))
        else:
            out[field.name] = draw(value)
    return out


TXN_IDS = st.integers(1, 3)


def txn_prepares() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "group": st.just("shard-1"),
            "txn_id": TXN_IDS,
            "coordinator": st.just("shard-2"),
            "part": st.one_of(PART, hostile_parts()),
        }  # fmt: skip
    )


def txn_finishes() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"group": st.just("shard-1"), "txn_id": TXN_IDS, "commit": st.just(True)}
    )


def moves() -> st.SearchStrategy[dict[str, Any]]:
    return move_commands().map(lambda op_args: {"group": "shard-1", **op_args})


WELL_FORMED: dict[str, Callable[[], st.SearchStrategy[dict[str, Any]]]] = {
    "TxnPrepareRequest": txn_prepares,
    "TxnFinishRequest": txn_finishes,
    "MoveRequest": moves,
    "BatchItem": lambda: batch_items(),
}
"""Requests (by message name) that are well-formed half of the time: addressed to this
server's shard with no header, their payload valid or hostile, so that they pass the first
checks and reach the state machine. The methods run in the proto's order, so a transaction
prepared by one method's examples is finished by the next one's."""


def batch_items() -> st.SearchStrategy[dict[str, Any]]:
    """A batch item naming a Namespace method, with a random request of that method."""
    service = meta_pb2.DESCRIPTOR.services_by_name["Namespace"]

    def item(method: MethodDescriptor) -> st.SearchStrategy[dict[str, Any]]:
        cls = _class_of(method.input_type)
        return message_dicts(method.input_type, 2).map(
            lambda values: {
                "method": method.name,
                "request": build(cls, values).SerializeToString(),
            }
        )

    return st.sampled_from(list(service.methods)).flatmap(item)


def build(cls: Any, values: dict[str, Any]) -> Any:
    message = cls()
    for name, value in values.items():
        field = cls.DESCRIPTOR.fields_by_name[name]
        if field.type == FD.TYPE_MESSAGE:
            sub = _class_of(field.message_type)
            if field.is_repeated:
                for item in value:
                    getattr(message, name).add().CopyFrom(build(sub, item))
            else:
                getattr(message, name).CopyFrom(build(sub, value))
        elif field.is_repeated:
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)
    return message


def methods() -> list[MethodDescriptor]:
    found = []
    for file in (meta_pb2.DESCRIPTOR, chunk_pb2.DESCRIPTOR):
        for service in file.services_by_name.values():
            found.extend(service.methods)
    return found


def full_name(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def call(channel: grpc.Channel, method: MethodDescriptor, requests: list[Any]) -> grpc.StatusCode:
    """Send ``requests`` (one unless the method streams them) and read the whole answer."""
    name = full_name(method)
    reply = _class_of(method.output_type)
    args = {"request_serializer": lambda m: m.SerializeToString(),
            "response_deserializer": reply.FromString}  # fmt: skip
    try:
        if method.client_streaming and method.server_streaming:
            list(channel.stream_stream(name, **args)(iter(requests), timeout=CALL_TIMEOUT_S))
        elif method.client_streaming:
            channel.stream_unary(name, **args)(iter(requests), timeout=CALL_TIMEOUT_S)
        elif method.server_streaming:
            list(channel.unary_stream(name, **args)(requests[0], timeout=CALL_TIMEOUT_S))
        else:
            reply_message = channel.unary_unary(name, **args)(requests[0], timeout=CALL_TIMEOUT_S)
            if isinstance(reply_message, meta_pb2.BatchReply):
                check_batch(reply_message)
    except grpc.RpcError as e:
        unserved = {grpc.StatusCode.UNIMPLEMENTED} if name in UNSERVED else set()
        allowed = ALLOWED | ALLOWED_TRANSPORT | unserved
        assert e.code() in allowed, f"{name}: {e.code()} {e.details()}"
        return e.code()
    return grpc.StatusCode.OK


def check_batch(reply: meta_pb2.BatchReply) -> None:
    """A batch answers each item with the status the item alone would have got."""
    allowed = {code.value[0] for code in ALLOWED}
    for item in reply.items:
        assert item.status in allowed, f"Batch item: {item.status} {item.message} {item.error}"


def _class_of(descriptor: Descriptor) -> Any:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)


def requests_for(method: MethodDescriptor) -> st.SearchStrategy[list[Any]]:
    cls = _class_of(method.input_type)
    size = (1, 3) if method.client_streaming else (1, 1)
    one = message_dicts(method.input_type).map(lambda values: build(cls, values))
    return st.lists(one, min_size=size[0], max_size=size[1])


_probes = iter(range(1_000_000))


def still_serves(server: ServerThread, method: MethodDescriptor) -> None:
    """The server is whole and answers: it reads the root and the records of every path the
    requests may have touched and applies a new directory, or, where the method may have
    changed who serves the namespace (:data:`RECONFIGURING`), answers the node's status."""
    failure = server.failure()
    assert failure is None, failure
    with grpc.insecure_channel(server.client_address) as channel:
        if full_name(method) in RECONFIGURING:
            status = meta_pb2_grpc.NodeStub(channel).Status(meta_pb2.StatusRequest(), timeout=10)
            assert status.id and status.groups
            return
        stub = meta_pb2_grpc.NamespaceStub(channel)
        for path in PATHS:
            try:
                stub.GetFileInfo(meta_pb2.GetFileInfoRequest(path=path), timeout=10)
                stub.ListDir(meta_pb2.ListDirRequest(path=path), timeout=10)
            except grpc.RpcError as e:
                assert e.code() in ALLOWED, f"reading {path}: {e.code()} {e.details()}"
        probe = f"/alive{next(_probes)}"
        stub.Mkdir(meta_pb2.MkdirRequest(path=probe), timeout=10)
        info = stub.GetFileInfo(meta_pb2.GetFileInfoRequest(path=probe), timeout=10).info
        assert info.kind == meta_pb2.DIRECTORY
    failure = server.failure()
    assert failure is None, failure


def fuzz_method(server: ServerThread, method: MethodDescriptor) -> None:
    address = (
        server.chunk_address
        if method.containing_service.name == "ChunkServer"
        else (server.client_address)
    )
    with grpc.insecure_channel(address) as channel:

        @fuzz_settings(EXAMPLES_PER_METHOD)
        @given(requests_for(method))
        def fuzz(requests: list[Any]) -> None:
            call(channel, method, requests)

        fuzz()
    still_serves(server, method)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    s = ServerThread(tmp_path_factory.mktemp("fuzz-server") / "data").start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ServerThread]:
    s = ServerThread(tmp_path / "data").start()
    try:
        yield s
    finally:
        s.stop()


ORDINARY = [m for m in methods() if full_name(m) not in RECONFIGURING]


@pytest.mark.parametrize("method", ORDINARY, ids=full_name)
def test_random_requests_get_a_keelfs_status(
    server: ServerThread, method: MethodDescriptor
) -> None:
    fuzz_method(server, method)


@pytest.mark.parametrize("name", sorted(RECONFIGURING))
def test_random_reconfiguring_requests_get_a_keelfs_status(
    own_server: ServerThread, name: str
) -> None:
    (method,) = [m for m in methods() if full_name(m) == name]
    fuzz_method(own_server, method)


def test_every_method_is_fuzzed() -> None:
    assert {full_name(m) for m in ORDINARY} | RECONFIGURING == {full_name(m) for m in methods()}


# -- hostile sequences found by the fuzzing, kept as plain scenarios ------------------------------
@contextlib.contextmanager
def namespace(server: ServerThread) -> Iterator[Any]:
    with grpc.insecure_channel(server.client_address) as channel:
        yield meta_pb2_grpc.NamespaceStub(channel)


def test_a_transaction_part_that_writes_no_inode_is_refused(own_server: ServerThread) -> None:
    """Prepared and committed, it wrote "garbage" as /a's entry: every read of the root then
    failed with INTERNAL and the next command that read /a stopped the node."""
    part = json.dumps([["put_entry", "/a", "garbage"]])
    prepare = meta_pb2.TxnPrepareRequest(
        group="shard-1", txn_id=1, coordinator="shard-2", part=part
    )
    with namespace(own_server) as stub:
        with pytest.raises(grpc.RpcError) as refused:
            stub.TxnPrepare(prepare, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with contextlib.suppress(grpc.RpcError):
            stub.TxnFinish(meta_pb2.TxnFinishRequest(group="shard-1", txn_id=1, commit=True))
        stub.Mkdir(meta_pb2.MkdirRequest(path="/a/b", parents=True), timeout=10)
    still_serves(own_server, methods()[0])


def test_a_move_that_copies_in_no_inode_is_refused(own_server: ServerThread) -> None:
    """One ``Move`` RPC taking in "garbage" as a record stopped the node in apply."""
    ingest = MoveIngest(1, ("0:" + str(2**64 - 1),), "shard-2", (b64(b"D/x"),), (b64(b"garbage"),))
    request = meta_pb2.MoveRequest(group="shard-1", op=ingest.op, args=json.dumps(ingest.args()))
    with namespace(own_server) as stub, pytest.raises(grpc.RpcError) as refused:
        stub.Move(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert own_server.failure() is None
