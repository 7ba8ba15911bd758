"""A linearizability checker for recorded client histories (WGL, in the style of Porcupine).

A *history* is what concurrent clients saw: a list of :class:`Operation` records, each with
the time the client invoked it (``call``), the time the answer came back (``ret``), its
``input`` and the ``output`` it observed. The history is *linearizable* with respect to a
sequential :class:`Model` if every operation can be given a single instant between its call
and its return such that executing the operations one by one, in the order of those instants,
through the model produces exactly the observed outputs.

Operations whose outcome is unknown (the client timed out, the connection dropped) have
``ret=None`` (``math.inf`` is accepted too). Such an operation may have taken effect at any
instant after its call, or never. The checker gives it a return event at infinity, so it
never forces anything to happen before it, and steps the model with the output
:data:`UNKNOWN`, which a model must accept (apply the input, whatever it would have
answered). The search succeeds as soon as every operation with a known outcome is placed, so
unknown operations that were never placed are treated as never having taken effect.

Algorithm
---------
This is the Wing & Gong search with Lowe's memoization, as implemented by Porcupine
(anishathalye/porcupine). The call and return events of all operations are sorted by time
(at equal timestamps calls sort before returns, so touching intervals count as concurrent)
and threaded into a doubly linked list. The search walks the list from its head: every call
event met before the first return event belongs to an operation that could take effect next.
Trying one steps the model; if the model accepts, the operation is *lifted* (its call and
return events are unlinked, Knuth's dancing-links style), pushed on a stack with the previous
state, and the walk restarts from the head. Meeting a return event means the operation it
belongs to can no longer be postponed, so the last choice is undone (*unlifted*) and the next
candidate after it is tried. Every (set of linearized operations, model state) configuration
reached is cached (the set is an ``int`` bitmask, hence model states must be hashable); a
configuration seen before is never explored twice, which keeps the search polynomial for
most real histories. The search is still exponential in the worst case: keep histories
partitioned (see :meth:`Model.partition <SupportsPartition.partition>`) or small.

When a history is not linearizable, :func:`check` reports the longest linearizable prefix the
search reached, the model state after it, and the operations that could have come next there,
all of which the model rejects in that state (that is what makes the prefix a dead end).

Usage
-----
::

    rec = HistoryRecorder()                  # thread-safe; use from threads or asyncio tasks
    h = rec.invoke(client_id, ("put", "k", 1))
    try:
        client.put("k", 1)
    except TimeoutError:
        rec.fail_unknown(h)                  # may or may not have happened
    else:
        rec.complete(h, None)
    ...
    result = check(KVModel(), rec.history(), timeout_s=60)
    assert result.ok, result.explanation

Built-in models: :class:`KVModel` (a map of registers with put/get/cas/delete, partitioned per
key) and :class:`FileNamespaceModel` (exclusive create, delete, no-overwrite rename, stat and
list over a few names; not partitioned, so keep those histories to a few hundred operations
with modest concurrency) and :class:`FileSizeModel` (files and their sizes under create,
append, truncate, concat, trash move and restore; not partitioned either). New
deterministic models are easiest to write by subclassing :class:`DeterministicModel` and
implementing ``init`` and ``apply``.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, Protocol, TypeVar, final, runtime_checkable

__all__ = [
    "UNKNOWN",
    "CheckResult",
    "BUSY",
    "DeterministicModel",
    "FileNamespaceModel",
    "FileSizeModel",
    "TRASHED_ELSEWHERE",
    "HistoryRecorder",
    "KVModel",
    "Model",
    "OpHandle",
    "Operation",
    "SupportsDescribeState",
    "SupportsPartition",
    "check",
]

S = TypeVar("S", bound=Hashable)

_INF: Final = float("inf")


@final
class _Unknown:
    """Type of :data:`UNKNOWN`, the output of an operation whose outcome is unknown."""

    __slots__ = ()
    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "?"

    def __reduce__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = _Unknown()
"""The output passed to :meth:`Model.step` for an operation whose outcome is unknown.

A model must accept it: return ``(True, state after applying the input)``, or ``(False, ...)``
if the input can never take effect in that state (then the operation is simply not placed
there; it may still be placed elsewhere, or never)."""


# --------------------------------------------------------------------------------------------
# Histories


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation as observed from outside the system.

    ``ret`` is ``None`` (or ``math.inf``) when the outcome is unknown; ``output`` is then
    ignored. Times are any totally ordered numbers on one clock (e.g. ``time.monotonic()``);
    ``call <= ret`` is required.
    """

    client_id: Hashable
    call: float
    ret: float | None
    input: Any
    output: Any

    @property
    def outcome_known(self) -> bool:
        return self.ret is not None and self.ret != _INF

    @property
    def ret_or_inf(self) -> float:
        """``ret``, or infinity when the outcome is unknown."""
        return _INF if self.ret is None else self.ret


@dataclass(frozen=True, slots=True)
class OpHandle:
    """An invoked, not yet completed operation, as returned by :meth:`HistoryRecorder.invoke`."""

    index: int
    client_id: Hashable
    call: float
    input: Any


class HistoryRecorder:
    """Records a history from concurrent clients (threads or asyncio tasks).

    Call :meth:`invoke` just *before* sending a request and :meth:`complete` just *after*
    its answer arrived, so that each recorded interval contains the real one. When the outcome
    is unknown (timeout, lost connection, crash) call :meth:`fail_unknown`; when the
    operation definitely did not take effect (e.g. rejected before being proposed) it may be
    dropped with :meth:`fail_definite`. Operations never completed are reported by
    :meth:`history` as unknown-outcome operations.

    ``clock`` must be monotonic (non-decreasing) and shared by all clients; it defaults to
    :func:`time.monotonic`.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._next_index = 0
        self._pending: dict[int, OpHandle] = {}
        self._done: dict[int, Operation] = {}

    def invoke(self, client_id: Hashable, input: Any) -> OpHandle:
        with self._lock:
            handle = OpHandle(self._next_index, client_id, self._clock(), input)
            self._next_index += 1
            self._pending[handle.index] = handle
        return handle

    def complete(self, handle: OpHandle, output: Any) -> Operation:
        """Record that ``handle`` returned ``output`` now."""
        return self._finish(handle, output, known=True)

    def fail_unknown(self, handle: OpHandle) -> Operation:
        """Record that the outcome of ``handle`` is unknown: it may or may not take effect."""
        return self._finish(handle, UNKNOWN, known=False)

    def fail_definite(self, handle: OpHandle) -> None:
        """Drop ``handle``: it certainly did not and will not take effect."""
        with self._lock:
            self._take(handle)

    def _finish(self, handle: OpHandle, output: Any, *, known: bool) -> Operation:
        with self._lock:
            self._take(handle)
            ret = self._clock() if known else None
            op = Operation(handle.client_id, handle.call, ret, handle.input, output)
            self._done[handle.index] = op
        return op

    def _take(self, handle: OpHandle) -> None:
        if self._pending.pop(handle.index, None) is None:
            raise ValueError(f"operation {handle.index} was already completed or dropped")

    def history(self) -> list[Operation]:
        """Every operation recorded so far, in invocation order; pending ones as unknown."""
        with self._lock:
            ops = dict(self._done)
            for index, h in self._pending.items():
                ops[index] = Operation(h.client_id, h.call, None, h.input, UNKNOWN)
        return [ops[i] for i in sorted(ops)]

    def __len__(self) -> int:
        with self._lock:
            return len(self._done) + len(self._pending)


# --------------------------------------------------------------------------------------------
# Models


class Model(Protocol[S]):
    """A sequential specification, Porcupine style.

    ``step`` returns whether ``output`` is a valid answer to ``input`` in ``state``, and the
    state after it. It must not mutate ``state``; states must be hashable (and compare by
    value) because the checker memoizes on them. When ``output`` is :data:`UNKNOWN` the
    operation's outcome is unknown and any answer is acceptable.

    Optional hooks, used when present: ``partition(history) -> list[list[Operation]]``
    (:class:`SupportsPartition`) to split a history into independent sub-histories that are
    checked separately (e.g. per key), and ``describe_state(state) -> str``
    (:class:`SupportsDescribeState`) for explanations.
    """

    def init(self) -> S: ...

    def step(self, state: S, input: Any, output: Any) -> tuple[bool, S]: ...

    def describe_operation(self, input: Any, output: Any) -> str: ...


@runtime_checkable
class SupportsPartition(Protocol):
    def partition(self, history: Sequence[Operation]) -> list[list[Operation]]:
        """Split ``history`` into sub-histories whose linearizability implies the whole's.

        Each operation must appear in exactly one part.
        """
        ...


@runtime_checkable
class SupportsDescribeState(Protocol):
    def describe_state(self, state: Any) -> str: ...


class DeterministicModel(ABC, Generic[S]):
    """Base for models where the output is a function of the state and the input.

    Implement :meth:`init` and :meth:`apply`; :meth:`step` compares the recorded output with
    the one :meth:`apply` computes (via :meth:`output_matches`) and accepts anything for
    operations of unknown outcome. Explanations also show the expected output.
    """

    @abstractmethod
    def init(self) -> S: ...

    @abstractmethod
    def apply(self, state: S, input: Any) -> tuple[Any, S]:
        """Return ``(output, new_state)`` for executing ``input`` in ``state``."""

    def output_matches(self, input: Any, expected: Any, output: Any) -> bool:
        return bool(expected == output)

    def step(self, state: S, input: Any, output: Any) -> tuple[bool, S]:
        expected, new_state = self.apply(state, input)
        if output is UNKNOWN or self.output_matches(input, expected, output):
            return True, new_state
        return False, state

    def describe_operation(self, input: Any, output: Any) -> str:
        return f"{input!r} -> {output!r}"

    def describe_state(self, state: S) -> str:
        return repr(state)


KVState = frozenset[tuple[Any, Any]]


class KVModel(DeterministicModel[KVState]):
    """A map of independent registers; absent keys read as ``None``.

    Inputs and outputs:

    - ``("put", key, value)``: output ignored (conventionally ``None``);
    - ``("get", key)``: output is the value, or ``None`` when absent;
    - ``("cas", key, expected, new)``: sets ``new`` iff the current value (``None`` when
      absent) equals ``expected``; output is whether it did;
    - ``("delete", key)``: output ignored; deleting an absent key is a no-op.

    Keys and values must be hashable. Histories are partitioned per key.
    """

    def __init__(self, initial: dict[Any, Any] | None = None) -> None:
        self._initial: KVState = frozenset((initial or {}).items())

    def init(self) -> KVState:
        return self._initial

    def apply(self, state: KVState, input: Any) -> tuple[Any, KVState]:
        kind = input[0]
        key = input[1]
        current = None
        for k, v in state:
            if k == key:
                current = v
                break
        if kind == "get":
            return current, state
        if kind == "put":
            return None, _kv_set(state, key, input[2])
        if kind == "cas":
            if current == input[2]:
                return True, _kv_set(state, key, input[3])
            return False, state
        if kind == "delete":
            return None, _kv_set(state, key, None)
        raise ValueError(f"unknown KV operation {input!r}")

    def output_matches(self, input: Any, expected: Any, output: Any) -> bool:
        if input[0] in ("put", "delete"):
            return True
        return bool(expected == output)

    def partition(self, history: Sequence[Operation]) -> list[list[Operation]]:
        parts: dict[Any, list[Operation]] = {}
        for op in history:
            parts.setdefault(op.input[1], []).append(op)
        return list(parts.values())

    def describe_operation(self, input: Any, output: Any) -> str:
        kind = input[0]
        args = ", ".join(repr(a) for a in input[1:])
        if kind in ("put", "delete"):
            return f"{kind}({args})" + (" -> ?" if output is UNKNOWN else "")
        return f"{kind}({args}) -> {output!r}"

    def describe_state(self, state: KVState) -> str:
        items = sorted(state, key=repr)
        return "{" + ", ".join(f"{k!r}: {v!r}" for k, v in items) + "}"


def _kv_set(state: KVState, key: Any, value: Any) -> KVState:
    items = {k: v for k, v in state if k != key}
    if value is not None:
        items[key] = value
    return frozenset(items.items())


NamespaceState = frozenset[str]


class FileNamespaceModel(DeterministicModel[NamespaceState]):
    """A flat file-system namespace: which of a few names exist.

    Inputs and outputs:

    - ``("create", path)``: exclusive create; ``"ok"``, or ``"exists"``;
    - ``("delete", path)``: ``"ok"``, or ``"not_found"``;
    - ``("rename", src, dst)``: never overwrites; ``"not_found"`` if ``src`` is absent
      (checked first), else ``"exists"`` if ``dst`` exists (including ``src == dst``), else
      ``"ok"``;
    - ``("stat", path)``: ``True`` iff it exists;
    - ``("list",)``: the sorted tuple of existing names (a list is accepted too).

    Renames couple names, so histories are not partitioned: the search is over the whole
    history, and its cost grows exponentially with the number of concurrent operations. Keep
    these histories small (a few hundred operations, a handful of clients).
    """

    def __init__(self, initial: Iterable[str] = ()) -> None:
        self._initial: NamespaceState = frozenset(initial)

    def init(self) -> NamespaceState:
        return self._initial

    def apply(self, state: NamespaceState, input: Any) -> tuple[Any, NamespaceState]:
        kind = input[0]
        if kind == "create":
            if input[1] in state:
                return "exists", state
            return "ok", state | {input[1]}
        if kind == "delete":
            if input[1] not in state:
                return "not_found", state
            return "ok", state - {input[1]}
        if kind == "rename":
            src, dst = input[1], input[2]
            if src not in state:
                return "not_found", state
            if dst in state:
                return "exists", state
            return "ok", (state - {src}) | {dst}
        if kind == "stat":
            return input[1] in state, state
        if kind == "list":
            return tuple(sorted(state)), state
        raise ValueError(f"unknown namespace operation {input!r}")

    def output_matches(self, input: Any, expected: Any, output: Any) -> bool:
        if input[0] == "list" and isinstance(output, list):
            output = tuple(output)
        return bool(expected == output)

    def describe_operation(self, input: Any, output: Any) -> str:
        args = ", ".join(repr(a) for a in input[1:])
        return f"{input[0]}({args}) -> {output!r}"

    def describe_state(self, state: NamespaceState) -> str:
        return "{" + ", ".join(repr(n) for n in sorted(state)) + "}"


FileSizeState = frozenset[tuple[str, str, int]]
"""``("live", name, size)`` and ``("trash", name, size)`` items."""

BUSY: Final = "busy"
"""The output of an operation refused because a file it needs is being written
(``LEASE_CONFLICT``): it changed nothing, and such a file exists."""
TRASHED_ELSEWHERE: Final = "ok_suffixed"
"""The output of a trash move that found the trash's name for the file taken and used another
(the name with the time appended)."""


class FileSizeModel(DeterministicModel[FileSizeState]):
    """A few files and their sizes, with the file operations of HDFS, and a trash holding one
    copy of each name.

    Inputs and outputs (sizes in bytes; ``n``, ``t`` names):

    - ``("create", n, size)``: exclusive; ``"ok"`` or ``"exists"``;
    - ``("append", n, k)``: ``"ok"`` (``k`` bytes more) or ``"not_found"``;
    - ``("truncate", n, length)``: ``"ok"``, ``"not_found"``, or ``"too_long"`` when
      ``length`` is beyond the end;
    - ``("concat", t, (n, ...))``: ``"ok"`` (the sources' bytes after ``t``'s, the sources
      gone) or ``"not_found"`` when ``t`` or a source is missing;
    - ``("trash", n)``: the file moves to the trash: ``"ok"`` (its trash name was free: it is
      there now), :data:`TRASHED_ELSEWHERE` (another trash name, not followed further), or
      ``"not_found"``;
    - ``("restore", n)``: the trash's copy back to ``n``, never overwriting: ``"ok"``,
      ``"not_found"`` (no copy in the trash) or ``"exists"``;
    - ``("stat", n)`` / ``("stat_trash", n)``: the size, or ``None``.

    :data:`BUSY` is accepted for ``append``, ``truncate`` and ``trash`` when ``n`` exists,
    for ``concat`` when any of its files does, and changes nothing. Not partitioned: concat
    and the trash couple names.
    """

    def __init__(self, initial: Iterable[tuple[str, int]] = ()) -> None:
        self._initial: FileSizeState = frozenset(("live", n, size) for n, size in initial)

    def init(self) -> FileSizeState:
        return self._initial

    @staticmethod
    def _size(state: FileSizeState, where: str, name: str) -> int | None:
        for w, n, size in state:
            if w == where and n == name:
                return size
        return None

    @staticmethod
    def _set(state: FileSizeState, where: str, name: str, size: int | None) -> FileSizeState:
        kept = frozenset(item for item in state if item[:2] != (where, name))
        return kept if size is None else kept | {(where, name, size)}

    def apply(self, state: FileSizeState, input: Any) -> tuple[Any, FileSizeState]:
        kind, name = input[0], input[1]
        size = self._size(state, "live", name)
        if kind in ("stat", "stat_trash"):
            return self._size(state, "live" if kind == "stat" else "trash", name), state
        if kind == "create":
            if size is not None:
                return "exists", state
            return "ok", self._set(state, "live", name, input[2])
        if kind == "restore":
            kept = self._size(state, "trash", name)
            if kept is None:
                return "not_found", state
            if size is not None:
                return "exists", state
            return "ok", self._set(self._set(state, "trash", name, None), "live", name, kept)
        if kind == "concat":
            sizes = [self._size(state, "live", n) for n in input[2]]
            if size is None or None in sizes:
                return "not_found", state
            for n in input[2]:
                state = self._set(state, "live", n, None)
            total = size + sum(s for s in sizes if s is not None)
            return "ok", self._set(state, "live", name, total)
        if size is None:
            if kind in ("append", "truncate", "trash"):
                return "not_found", state
            raise ValueError(f"unknown file operation {input!r}")
        if kind == "append":
            return "ok", self._set(state, "live", name, size + input[2])
        if kind == "truncate":
            if input[2] > size:
                return "too_long", state
            return "ok", self._set(state, "live", name, input[2])
        if kind == "trash":
            if self._size(state, "trash", name) is not None:
                return TRASHED_ELSEWHERE, self._set(state, "live", name, None)
            return "ok", self._set(self._set(state, "live", name, None), "trash", name, size)
        raise ValueError(f"unknown file operation {input!r}")

    def step(self, state: FileSizeState, input: Any, output: Any) -> tuple[bool, FileSizeState]:
        kind = input[0]
        if output == BUSY:
            names = [input[1], *(input[2] if kind == "concat" else ())]
            exists = any(self._size(state, "live", n) is not None for n in names)
            return exists, state
        if kind == "trash" and output == TRASHED_ELSEWHERE:
            size = self._size(state, "live", input[1])
            if size is None:
                return False, state
            return True, self._set(state, "live", input[1], None)
        return super().step(state, input, output)

    def describe_state(self, state: FileSizeState) -> str:
        return "{" + ", ".join(f"{w}:{n}={size}" for w, n, size in sorted(state)) + "}"


# --------------------------------------------------------------------------------------------
# Checking


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict of :func:`check`.

    ``ok`` is True iff the history is linearizable. ``timed_out`` means the search gave up:
    ``ok`` is then False but the answer is unknown. When the history is not linearizable,
    ``explanation`` describes why, and ``prefix`` (the longest linearizable prefix found, in
    linearization order, of the failing partition), ``state`` (the model state after it) and
    ``unlinearizable`` (the operations that could have come next, all rejected by the model in
    that state) give the same in data form.
    """

    ok: bool
    timed_out: bool = False
    explanation: str = ""
    prefix: tuple[Operation, ...] = ()
    state: Any = None
    unlinearizable: tuple[Operation, ...] = ()
    partition_index: int | None = None


class _Node:
    """A call or return event in the WGL entry list."""

    __slots__ = ("op", "match", "prev", "next")

    def __init__(self, op: int) -> None:
        self.op = op
        self.match: _Node | None = None  # call event -> its return event; None for returns
        self.prev: _Node | None = None
        self.next: _Node | None = None


class _TimedOut(Exception):
    pass


@dataclass(slots=True)
class _Failure(Generic[S]):
    prefix: list[int]
    state: S


def _lift(entry: _Node) -> None:
    # A call event always has a predecessor (at least the head) and a successor (at least
    # its own return); its return may be the last node.
    assert entry.prev is not None and entry.next is not None and entry.match is not None
    entry.prev.next = entry.next
    entry.next.prev = entry.prev
    match = entry.match
    assert match.prev is not None
    match.prev.next = match.next
    if match.next is not None:
        match.next.prev = match.prev


def _unlift(entry: _Node) -> None:
    assert entry.prev is not None and entry.next is not None and entry.match is not None
    match = entry.match
    assert match.prev is not None
    match.prev.next = match
    if match.next is not None:
        match.next.prev = match
    entry.prev.next = entry
    entry.next.prev = entry


class _Deadline:
    __slots__ = ("clock", "at")

    def __init__(self, clock: Callable[[], float], timeout_s: float | None) -> None:
        self.clock = clock
        self.at = None if timeout_s is None else clock() + timeout_s

    def passed(self) -> bool:
        return self.at is not None and self.clock() > self.at


def _check_single(
    model: Model[S], ops: Sequence[Operation], deadline: _Deadline
) -> _Failure[S] | None:
    """WGL over one (sub-)history. Returns None if linearizable, else the longest prefix."""
    n = len(ops)
    outputs = [op.output if op.outcome_known else UNKNOWN for op in ops]
    inputs = [op.input for op in ops]
    known = [op.outcome_known for op in ops]

    events: list[tuple[float, int, int]] = []
    for i, op in enumerate(ops):
        events.append((op.call, 0, i))
        events.append((op.ret_or_inf, 1, i))
    events.sort()

    head = _Node(-1)
    calls_by_op: list[_Node | None] = [None] * n
    prev = head
    for _, kind, i in events:
        node = _Node(i)
        if kind == 0:
            calls_by_op[i] = node
        else:
            call_node = calls_by_op[i]
            assert call_node is not None
            call_node.match = node
        node.prev = prev
        prev.next = node
        prev = node

    step = model.step
    state = model.init()
    linearized = 0
    remaining_known = sum(known)
    cache: set[tuple[int, S]] = set()
    stack: list[tuple[_Node, S]] = []
    best = _Failure[S]([], state)
    iterations = 0
    entry = head.next

    while remaining_known:
        if iterations & 1023 == 0 and deadline.passed():
            raise _TimedOut
        iterations += 1
        assert entry is not None
        if entry.match is not None:  # a call event: try to linearize it here
            i = entry.op
            ok, new_state = step(state, inputs[i], outputs[i])
            if ok:
                new_linearized = linearized | (1 << i)
                key = (new_linearized, new_state)
                if key not in cache:
                    cache.add(key)
                    stack.append((entry, state))
                    state = new_state
                    linearized = new_linearized
                    if known[i]:
                        remaining_known -= 1
                    _lift(entry)
                    if len(stack) > len(best.prefix):
                        best = _Failure([e.op for e, _ in stack], state)
                    entry = head.next
                    continue
            entry = entry.next
        else:  # a return event: its operation cannot be postponed further; backtrack
            if not stack:
                return best
            entry, state = stack.pop()
            i = entry.op
            linearized &= ~(1 << i)
            if known[i]:
                remaining_known += 1
            _unlift(entry)
            entry = entry.next
    return None


def _validate(history: Sequence[Operation]) -> None:
    for op in history:
        if op.call is None:
            raise ValueError(f"operation has no call time: {op!r}")
        if op.ret_or_inf < op.call:
            raise ValueError(f"operation returns before it is called: {op!r}")


def _fmt_time(t: float | None) -> str:
    if t is None or t == _INF:
        return "?"
    if isinstance(t, int):
        return str(t)
    if float(t).is_integer():
        return str(int(t))
    return f"{t:.6f}".rstrip("0").rstrip(".")


def _describe_op(model: Model[Any], op: Operation, index_of: dict[int, int], width: int = 0) -> str:
    index = index_of.get(id(op))
    label = f"#{index}" if index is not None else "#?"
    output = op.output if op.outcome_known else UNKNOWN
    timing = f"[call {_fmt_time(op.call)}, ret {_fmt_time(op.ret)}]"
    text = (
        f"{label:>{width}} client {op.client_id!s}  {timing}  "
        f"{model.describe_operation(op.input, output)}"
    )
    if not op.outcome_known:
        text += "  (outcome unknown)"
    return text


def _describe_state(model: Model[Any], state: Any) -> str:
    if isinstance(model, SupportsDescribeState):
        return model.describe_state(state)
    return repr(state)


def _explain(
    model: Model[S],
    ops: Sequence[Operation],
    failure: _Failure[S],
    part_index: int,
    n_parts: int,
    index_of: dict[int, int],
    max_prefix_ops: int,
) -> tuple[str, tuple[Operation, ...]]:
    in_prefix = set(failure.prefix)
    rest = [i for i in range(len(ops)) if i not in in_prefix]
    deadline_t = min(ops[i].ret_or_inf for i in rest)  # finite: the search failed
    candidates = [i for i in rest if ops[i].call <= deadline_t]
    candidates.sort(key=lambda i: (ops[i].call, i))
    width = len(f"#{len(index_of)}") if index_of else 2

    lines = ["history is not linearizable"]
    if n_parts > 1:
        lines[0] += f" (in partition {part_index + 1} of {n_parts}, {len(ops)} operations)"
    shown = failure.prefix[-max_prefix_ops:] if max_prefix_ops > 0 else []
    lines.append(
        f"longest linearizable prefix found: {len(failure.prefix)} of {len(ops)} operations"
        + (f", last {len(shown)} shown" if len(shown) < len(failure.prefix) else "")
        + (", in linearization order:" if shown else "")
    )
    lines.extend("  " + _describe_op(model, ops[i], index_of, width) for i in shown)
    lines.append(f"model state after it: {_describe_state(model, failure.state)}")
    lines.append(
        "no operation can be linearized next: the candidates (every remaining operation"
        f" called by t={_fmt_time(deadline_t)}, the earliest remaining return) are each"
        " rejected by the model in that state:"
    )
    for i in candidates:
        op = ops[i]
        text = "  " + _describe_op(model, op, index_of, width)
        output = op.output if op.outcome_known else UNKNOWN
        ok, _ = model.step(failure.state, op.input, output)
        if ok:  # cannot happen for the deepest prefix; kept so the text never lies
            text += "  [accepted here, but no continuation is linearizable]"
        elif isinstance(model, DeterministicModel):
            expected, _ = model.apply(failure.state, op.input)
            text += f"  [model expects {expected!r}]"
        lines.append(text)
    return "\n".join(lines), tuple(ops[i] for i in candidates)


def check(
    model: Model[S],
    history: Sequence[Operation],
    timeout_s: float | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    max_prefix_ops: int = 20,
) -> CheckResult:
    """Check whether ``history`` is linearizable with respect to ``model``.

    The history is first split with ``model.partition`` when the model has one; parts are
    checked in turn and the first non-linearizable one is reported. ``timeout_s`` bounds the
    whole check (measured with ``clock``); on expiry the result has ``timed_out=True`` unless
    a violation was already found. ``max_prefix_ops`` bounds how many operations of the
    longest linearizable prefix the explanation lists (the last ones).
    """
    _validate(history)
    deadline = _Deadline(clock, timeout_s)
    if isinstance(model, SupportsPartition):
        parts = [p for p in model.partition(history) if p]
    else:
        parts = [list(history)] if history else []
    index_of = {id(op): i for i, op in enumerate(history)}
    for part_index, ops in enumerate(parts):
        try:
            failure = _check_single(model, ops, deadline)
        except _TimedOut:
            return CheckResult(
                ok=False,
                timed_out=True,
                explanation=(
                    f"timed out after {timeout_s} s while checking partition"
                    f" {part_index + 1} of {len(parts)} ({len(ops)} operations);"
                    " linearizability unknown"
                ),
                partition_index=part_index,
            )
        if failure is not None:
            explanation, unlinearizable = _explain(
                model, ops, failure, part_index, len(parts), index_of, max_prefix_ops
            )
            return CheckResult(
                ok=False,
                explanation=explanation,
                prefix=tuple(ops[i] for i in failure.prefix),
                state=failure.state,
                unlinearizable=unlinearizable,
                partition_index=part_index,
            )
    return CheckResult(ok=True)
