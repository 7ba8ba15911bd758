"""The command decoder fed hostile input: random bytes, random JSON of every shape, and
envelopes whose arguments have the right names but random values. Only ``KeelError``
(``InvalidArgument``/``InvalidPath``) may come out: anything else raised while a replica
applies a committed entry stops that replica, and every replica of the group stops on the same
entry (``keelfs.meta.machine``)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from fuzz_helpers import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from keelfs.errors import KeelError
from keelfs.meta import transactions as tx
from keelfs.meta.commands import (
    CONFIG_COMMANDS,
    ENCODING_VERSION,
    SHARD_COMMANDS,
    Result,
    TxnBegin,
    TxnDecide,
    TxnPrepare,
    decode_command,
    decode_envelope,
)

REGISTRY = SHARD_COMMANDS | CONFIG_COMMANDS
OPS = sorted(REGISTRY)

BOUNDARY_INTS = st.sampled_from([0, 1, -1, 2**31, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63)])
INTS = st.one_of(BOUNDARY_INTS, st.integers(), st.integers(min_value=0, max_value=2**70))
TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "/", "/a", "/a/b", "/a\x00b", "a", "s1", "\ud800", "{}", "[]", "null"]),
)
SCALARS = st.one_of(
    st.none(), st.booleans(), INTS, st.floats(allow_nan=True, allow_infinity=True), TEXT
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)
"""Any JSON-shaped value, NaN and infinities included (``json`` writes and reads them)."""


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


DEEP = st.sampled_from([nested(10), nested(5_000), "[" * 5_000, '{"a":' * 5_000])
"""JSON text nested deeper than the interpreter's recursion limit (and its unclosed form)."""


def only_keel_errors(call: Any, *args: Any) -> None:
    """Run ``call``: a ``KeelError`` is the documented answer to bad input; any other
    exception propagates and fails the test."""
    with contextlib.suppress(KeelError):
        call(*args)


def field_names(op: str) -> list[str]:
    return [name for name in REGISTRY[op].__dataclass_fields__ if name != "op"]


@st.composite
def arguments(draw: st.DrawFn, op: str) -> dict[str, Any]:
    """Each field of ``op`` with a random value (some dropped, some unknown ones added); a
    string field gets JSON text now and then (the parts, participants, results and errors
    of the transaction commands are JSON inside a string)."""
    args: dict[str, Any] = {}
    for name in field_names(op):
        if draw(st.integers(0, 9)) == 0:
            continue
        args[name] = draw(
            st.one_of(JSON, DEEP, JSON.map(lambda v: json.dumps(v)), step_lists().map(json.dumps))
        )
    if draw(st.integers(0, 9)) == 0:
        args[draw(TEXT)] = draw(JSON)
    return args


STEP_KINDS = sorted(tx.CHECKS | tx.CHANGES)


def step_lists() -> st.SearchStrategy[list[list[Any]]]:
    record = st.one_of(TEXT, JSON.map(json.dumps), DEEP)
    step = st.lists(st.one_of(st.sampled_from(STEP_KINDS), TEXT, record), min_size=0, max_size=4)
    return st.lists(step, max_size=3)


@fuzz_settings(150)
@given(st.binary(max_size=200))
def test_random_bytes_decode_to_invalid_argument(data: bytes) -> None:
    only_keel_errors(decode_envelope, data, REGISTRY)


@fuzz_settings(150)
@given(JSON)
def test_random_json_decodes_to_invalid_argument(body: Any) -> None:
    only_keel_errors(decode_envelope, json.dumps(body).encode(), REGISTRY)


@fuzz_settings(300)
@given(st.sampled_from(OPS).flatmap(lambda op: st.tuples(st.just(op), arguments(op))), INTS)
def test_random_arguments_decode_to_invalid_argument(
    op_args: tuple[str, dict[str, Any]], now: int
) -> None:
    op, args = op_args
    body = {"v": ENCODING_VERSION, "op": op, "now": now, "a": args}
    only_keel_errors(decode_envelope, json.dumps(body).encode(), REGISTRY)
    only_keel_errors(decode_command, op, json.dumps(args), REGISTRY)


PART = json.dumps([["absent", "/a", ""]])


@pytest.mark.parametrize("deep", [nested(5_000), "[" * 5_000])
@pytest.mark.parametrize(
    ("op", "args"),
    [
        ("txn_prepare", {"txn_id": 1, "coordinator": "s1", "part": "DEEP"}),
        ("txn_begin", {"txn_id": 1, "part": "DEEP", "participants": json.dumps({"s2": PART})}),
        ("txn_begin", {"txn_id": 1, "part": PART, "participants": "DEEP"}),
        ("txn_begin", {"txn_id": 1, "part": PART, "participants": json.dumps({"s2": "DEEP"})}),
        ("txn_begin", {"txn_id": 1, "part": PART, "participants": "{}", "result": "DEEP"}),
        ("txn_decide", {"txn_id": 1, "commit": False, "error": "DEEP"}),
    ],
)
def test_json_nested_too_deep_inside_a_string_field_is_invalid(
    op: str, args: dict[str, Any], deep: str
) -> None:
    args = {k: (deep if v == "DEEP" else v) for k, v in args.items()}
    with pytest.raises(KeelError):
        decode_command(op, json.dumps(args), REGISTRY)


@pytest.mark.parametrize("error", ["not json", "[1]", '"text"', "17", '{"message": "no code"}'])
def test_a_decision_whose_error_is_not_an_error_object_is_invalid(error: str) -> None:
    with pytest.raises(KeelError):
        TxnDecide(1, False, error).validate()


@pytest.mark.parametrize(
    "record",
    [
        "garbage",
        "[]",
        "[1]",
        '[1,"x",0,"o","g",0,0,0,0,[],0,0]',  # no such kind
        '[1,"f","m","o","g",0,0,3,0,[],0,0]',  # a mode that is no number
        '[1,"f",420,"o","g",0,0,3,65536,[["b",1,2]],0,0]',  # a block id that is no number
        '[1,"f",420,"o","g",0,0,3,65536,[],0,-1]',  # a negative lease holder
        '[1, "f",420,"o","g",0,0,3,65536,[],0,0]',  # not as Inode.encode writes it
    ],
)
@pytest.mark.parametrize("kind", ["put_entry", "put_self", "entry", "self"])
def test_a_step_whose_record_is_not_an_inode_is_invalid(kind: str, record: str) -> None:
    part = json.dumps([[kind, "/a", record]])
    with pytest.raises(KeelError):
        TxnPrepare(1, "s1", part).validate()
    with pytest.raises(KeelError):
        TxnBegin(1, part, json.dumps({"s2": PART})).validate()


@fuzz_settings(150)
@given(JSON)
def test_result_from_json_takes_any_json_or_says_invalid(obj: Any) -> None:
    try:
        result = Result.from_json(obj)
    except KeelError:
        return
    if not result.ok:
        assert isinstance(result.exception(), KeelError)
        assert isinstance(result.code, str)
