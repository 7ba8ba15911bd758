"""Property test: the shard state machine against a plain in-memory model of the namespace.

Random sequences of mkdir / create / complete / delete / rename / set-replication (over 15
paths, so operations collide and nest a lot) are applied to both; after every step the reply
codes must agree and the whole tree seen through ``list_dir``/``stat`` must equal the
model's. The model is written from the HDFS semantics, independently of the implementation.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from meta_helpers import Driver, formatted

from keelfs.meta import paths
from keelfs.meta.commands import (
    Command,
    CompleteFile,
    Create,
    Delete,
    Mkdir,
    Rename,
    SetReplication,
)
from keelfs.meta.namespace import ShardStateMachine


@dataclass
class Node:
    kind: str  # "d" or "f"
    holder: int = 0
    replication: int = 0


class Fail(Exception):
    def __init__(self, code: str) -> None:
        self.code = code


class Model:
    def __init__(self) -> None:
        self.tree: dict[str, Node] = {"/": Node("d")}

    # -- the rules --------------------------------------------------------------------------
    def missing(self, path: str) -> Fail:
        for a in paths.ancestors(path)[1:]:
            node = self.tree.get(a)
            if node is None:
                break
            if node.kind == "f":
                return Fail("NOT_A_DIRECTORY")
        return Fail("NOT_FOUND")

    def require_dir(self, d: str) -> None:
        node = self.tree.get(d)
        if node is None:
            raise self.missing(d)
        if node.kind != "d":
            raise Fail("NOT_A_DIRECTORY")

    def children(self, d: str) -> list[str]:
        return [p for p in self.tree if p != "/" and paths.parent(p) == d]

    def subtree(self, d: str) -> list[str]:
        return [p for p in self.tree if paths.is_ancestor(d, p)]

    def mkdir(self, path: str, parents: bool) -> None:
        if path == "/":
            if parents:
                return
            raise Fail("ALREADY_EXISTS")
        if not parents:
            self.require_dir(paths.parent(path))
            if path in self.tree:
                raise Fail("ALREADY_EXISTS")
            self.tree[path] = Node("d")
            return
        for p in [*paths.ancestors(path)[1:], path]:
            node = self.tree.get(p)
            if node is None:
                self.tree[p] = Node("d")
            elif node.kind == "f":
                raise Fail("ALREADY_EXISTS" if p == path else "NOT_A_DIRECTORY")

    def create(self, path: str, overwrite: bool, session: int) -> None:
        if path == "/":
            raise Fail("INVALID_ARGUMENT")
        self.require_dir(paths.parent(path))
        node = self.tree.get(path)
        if node is not None:
            if node.kind == "d":
                raise Fail("IS_A_DIRECTORY" if overwrite else "ALREADY_EXISTS")
            if node.holder and node.holder != session:
                raise Fail("LEASE_CONFLICT")
            if not overwrite:
                raise Fail("ALREADY_EXISTS")
        self.tree[path] = Node("f", session, 3)

    def complete(self, path: str, session: int) -> None:
        node = self.tree.get(path)
        if node is None:
            raise self.missing(path)
        if node.kind == "d":
            raise Fail("IS_A_DIRECTORY")
        if node.holder != session:
            raise Fail("LEASE_CONFLICT")
        node.holder = 0

    def delete(self, path: str, recursive: bool) -> None:
        if path == "/":
            raise Fail("INVALID_ARGUMENT")
        node = self.tree.get(path)
        if node is None:
            raise self.missing(path)
        if node.kind == "d" and self.children(path) and not recursive:
            raise Fail("DIRECTORY_NOT_EMPTY")
        for p in [*self.subtree(path), path]:
            del self.tree[p]

    def rename(self, src: str, dst: str, overwrite: bool) -> None:
        if src == "/":
            raise Fail("INVALID_ARGUMENT")
        node = self.tree.get(src)
        if node is None:
            raise self.missing(src)
        if node.kind == "d" and paths.is_ancestor(src, dst):
            raise Fail("INVALID_ARGUMENT")
        if src == dst or dst == "/":
            raise Fail("ALREADY_EXISTS")
        self.require_dir(paths.parent(dst))
        target = self.tree.get(dst)
        if target is not None:
            if not overwrite:
                raise Fail("ALREADY_EXISTS")
            if node.kind == "d" and target.kind == "f":
                raise Fail("NOT_A_DIRECTORY")
            if node.kind == "f" and target.kind == "d":
                raise Fail("IS_A_DIRECTORY")
            if target.kind == "d" and self.children(dst):
                raise Fail("DIRECTORY_NOT_EMPTY")
        moved = {p: self.tree.pop(p) for p in self.subtree(src)}
        self.tree[dst] = self.tree.pop(src)
        for p, n in moved.items():
            self.tree[dst + p[len(src) :]] = n

    def set_replication(self, path: str, replication: int) -> None:
        node = self.tree.get(path)
        if node is None:
            raise self.missing(path)
        if node.kind == "d":
            raise Fail("IS_A_DIRECTORY")
        node.replication = replication

    def apply(self, op: tuple[Any, ...], sessions: list[int]) -> str | None:
        saved = {p: Node(n.kind, n.holder, n.replication) for p, n in self.tree.items()}
        name, *args = op
        try:
            if name == "create":
                self.create(args[0], args[1], sessions[args[2]])
            elif name == "complete":
                self.complete(args[0], sessions[args[1]])
            else:
                getattr(self, name)(*args)
        except Fail as f:
            self.tree = saved  # all or nothing
            return f.code
        return None


def command(op: tuple[Any, ...], sessions: list[int]) -> tuple[Command, int]:
    name, *args = op
    if name == "mkdir":
        return Mkdir(args[0], parents=args[1]), 0
    if name == "create":
        return Create(args[0], overwrite=args[1]), sessions[args[2]]
    if name == "complete":
        return CompleteFile(args[0]), sessions[args[1]]
    if name == "delete":
        return Delete(args[0], recursive=args[1]), 0
    if name == "rename":
        return Rename(args[0], args[1], overwrite=args[2]), 0
    return SetReplication(args[0], args[1]), 0


def observed(sm: ShardStateMachine) -> dict[str, tuple[str, int, int]]:
    out: dict[str, tuple[str, int, int]] = {"/": ("d", 0, 0)}
    todo = ["/"]
    while todo:
        d = todo.pop()
        cursor = None
        while True:
            page = sm.list_dir(d, start_after=cursor, limit=2)
            for e in page.entries:
                assert sm.stat(e.path) == e
                out[e.path] = ("d" if e.is_dir else "f", e.lease_holder, e.replication)
                if e.is_dir:
                    todo.append(e.path)
            if page.cursor is None:
                break
            cursor = page.cursor
    return out


def expected(model: Model, sessions: list[int]) -> dict[str, tuple[str, int, int]]:
    return {p: (n.kind, n.holder, n.replication) for p, n in model.tree.items()}


_PATHS = ["/"] + [
    "/" + "/".join(c)
    for c in [(x,) for x in "ab"]
    + [(x, y) for x in "ab" for y in "ab"]
    + [(x, y, z) for x in "ab" for y in "ab" for z in "ab"]
]
_path = st.sampled_from(_PATHS)  # 15 paths: operations collide and nest a lot
_op = st.one_of(
    st.tuples(st.just("mkdir"), _path, st.booleans()),
    st.tuples(st.just("mkdir"), _path, st.just(True)),
    st.tuples(st.just("create"), _path, st.booleans(), st.integers(0, 1)),
    st.tuples(st.just("create"), _path, st.booleans(), st.integers(0, 1)),
    st.tuples(st.just("complete"), _path, st.integers(0, 1)),
    st.tuples(st.just("delete"), _path, st.booleans()),
    st.tuples(st.just("rename"), _path, _path, st.booleans()),
    st.tuples(st.just("set_replication"), _path, st.integers(1, 3)),
)


PRELUDE: list[tuple[Any, ...]] = [
    # a populated tree to start from, so that random operations mostly meet something
    ("mkdir", "/a/a/a", True),
    ("mkdir", "/b/b", True),
    ("create", "/a/b", False, 0),
    ("complete", "/a/b", 0),
    ("create", "/b/a", False, 1),
    ("create", "/a/a/b", False, 0),
]


def run(sm: ShardStateMachine, ops: list[tuple[Any, ...]]) -> None:
    d: Driver = formatted(sm)
    sessions = [d.session(), d.session()]
    model = Model()
    for op in PRELUDE + ops:
        cmd, session = command(op, sessions)
        got = d.apply(cmd, session).code
        want = model.apply(op, sessions)
        assert got == want, (op, got, want)
        assert observed(sm) == expected(model, sessions), op
    # the final state survives a snapshot round trip
    other = ShardStateMachine(None)
    other.restore(sm.snapshot(), sm.applied_index())
    assert observed(other) == expected(model, sessions)


@settings(max_examples=150, deadline=None)
@given(st.lists(_op, min_size=5, max_size=40))
def test_matches_the_model_in_memory(ops: list[tuple[Any, ...]]) -> None:
    run(ShardStateMachine(None), ops)


@settings(max_examples=40, deadline=None)
@given(st.lists(_op, min_size=5, max_size=40))
def test_matches_the_model_on_rocksdb(ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sm = ShardStateMachine(tmp)
        try:
            run(sm, ops)
        finally:
            sm.close()
