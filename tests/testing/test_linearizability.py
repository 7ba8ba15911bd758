"""Tests for keelfs.testing.linearizability (the WGL linearizability checker)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keelfs.testing.linearizability import (
    UNKNOWN,
    CheckResult,
    DeterministicModel,
    FileNamespaceModel,
    HistoryRecorder,
    KVModel,
    Model,
    Operation,
    check,
)

Op = Operation
HYPOTHESIS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def op(
    client: Hashable, call: float, ret: float | None, inp: tuple[Any, ...], out: Any = None
) -> Operation:
    return Operation(client, call, ret, inp, out if ret is not None else UNKNOWN)


def assert_ok(result: CheckResult) -> None:
    assert result.ok, result.explanation
    assert not result.timed_out


def assert_violation(result: CheckResult, *mentions: str) -> None:
    assert not result.ok
    assert not result.timed_out
    assert result.explanation.startswith("history is not linearizable")
    for text in mentions:
        assert text in result.explanation, result.explanation
    assert result.unlinearizable


# --------------------------------------------------------------------------------------------
# Reference: brute-force linearizability straight from the definition (tiny histories only)


def brute_force_linearizable(model: Model[Any], ops: Sequence[Operation]) -> bool:
    memo: dict[tuple[frozenset[int], Any], bool] = {}

    def search(remaining: frozenset[int], state: Any) -> bool:
        if not any(ops[i].outcome_known for i in remaining):
            return True  # unknown-outcome operations may never take effect
        key = (remaining, state)
        if key in memo:
            return memo[key]
        result = False
        for i in remaining:
            # i may go next iff no other remaining operation returned strictly before i's call
            if any(ops[j].ret_or_inf < ops[i].call for j in remaining if j != i):
                continue
            output = ops[i].output if ops[i].outcome_known else UNKNOWN
            ok, new_state = model.step(state, ops[i].input, output)
            if ok and search(remaining - {i}, new_state):
                result = True
                break
        memo[key] = result
        return result

    return search(frozenset(range(len(ops))), model.init())


# --------------------------------------------------------------------------------------------
# Generator: histories from a real sequential execution, with random overlapping intervals


def generate_history(
    model: DeterministicModel[Any],
    gen_input: Callable[[random.Random], tuple[Any, ...]],
    rng: random.Random,
    n_ops: int,
    n_clients: int,
    p_unknown: float = 0.0,
    n_phantoms: int = 0,
) -> list[Operation]:
    """A linearizable history: op i takes effect at t=i, each client's ops are sequential.

    A fraction ``p_unknown`` of operations (which did take effect) are recorded with unknown
    outcome, and ``n_phantoms`` unknown-outcome operations that never took effect are added.
    """
    state = model.init()
    effects: list[tuple[int, tuple[Any, ...], Any]] = []  # (client, input, output)
    for _ in range(n_ops):
        inp = gen_input(rng)
        out, state = model.apply(state, inp)
        effects.append((rng.randrange(n_clients), inp, out))
    by_client: dict[int, list[int]] = {}
    for t, (client, _, _) in enumerate(effects):
        by_client.setdefault(client, []).append(t)
    calls: dict[int, float] = {}
    rets: dict[int, float] = {}
    spread = 2.0 * n_clients
    for ts in by_client.values():
        calls[ts[0]] = ts[0] - rng.uniform(0, spread)
        rets[ts[-1]] = ts[-1] + rng.uniform(0, spread)
        for a, b in itertools.pairwise(ts):
            mid = rng.uniform(a, b)
            rets[a] = rng.uniform(a, mid)
            calls[b] = rng.uniform(mid, b)
    history = []
    for t, (client, inp, out) in enumerate(effects):
        if rng.random() < p_unknown:
            history.append(Operation(client, calls[t], None, inp, UNKNOWN))
        else:
            history.append(Operation(client, calls[t], rets[t], inp, out))
    for k in range(n_phantoms):
        history.append(
            Operation(f"phantom{k}", rng.uniform(0, n_ops), None, gen_input(rng), UNKNOWN)
        )
    rng.shuffle(history)  # the checker must not depend on the order ops are listed in
    return history


def kv_input(keys: Sequence[str], values: int = 5) -> Callable[[random.Random], tuple[Any, ...]]:
    def gen(rng: random.Random) -> tuple[Any, ...]:
        key = rng.choice(keys)
        r = rng.random()
        if r < 0.4:
            return ("get", key)
        if r < 0.75:
            return ("put", key, rng.randrange(values))
        if r < 0.95:
            return ("cas", key, rng.choice([None, *range(values)]), rng.randrange(values))
        return ("delete", key)

    return gen


def fs_input(names: Sequence[str]) -> Callable[[random.Random], tuple[Any, ...]]:
    def gen(rng: random.Random) -> tuple[Any, ...]:
        kind = rng.choice(["create", "create", "delete", "rename", "rename", "stat", "list"])
        if kind == "list":
            return ("list",)
        if kind == "rename":
            src, dst = rng.sample(list(names), 2)
            return ("rename", src, dst)
        return (kind, rng.choice(names))

    return gen


# --------------------------------------------------------------------------------------------
# Operation and HistoryRecorder


def test_operation_is_frozen_and_slotted() -> None:
    o = Operation(1, 0.0, 1.0, ("get", "k"), None)
    assert not hasattr(o, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.ret = 2.0  # type: ignore[misc]
    assert o.outcome_known
    assert not Operation(1, 0.0, None, ("get", "k"), None).outcome_known
    assert not Operation(1, 0.0, float("inf"), ("get", "k"), None).outcome_known


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_recorder_with_injected_clock() -> None:
    rec = HistoryRecorder(clock=FakeClock())
    a = rec.invoke("a", ("put", "k", 1))  # t=1
    b = rec.invoke("b", ("get", "k"))  # t=2
    c = rec.invoke("c", ("put", "k", 2))  # t=3
    d = rec.invoke("d", ("put", "k", 3))  # t=4
    e = rec.invoke("e", ("get", "k"))  # t=5, never completed
    rec.complete(b, 1)  # t=6
    rec.fail_unknown(c)
    rec.complete(a, None)  # t=7
    rec.fail_definite(d)
    assert len(rec) == 4
    history = rec.history()
    assert history == [
        Operation("a", 1.0, 7.0, ("put", "k", 1), None),
        Operation("b", 2.0, 6.0, ("get", "k"), 1),
        Operation("c", 3.0, None, ("put", "k", 2), UNKNOWN),
        Operation("e", 5.0, None, ("get", "k"), UNKNOWN),
    ]
    for handle in (a, c, d):
        with pytest.raises(ValueError):
            rec.complete(handle, None)
    with pytest.raises(ValueError):
        rec.fail_definite(d)
    rec.fail_unknown(e)  # a pending op can still be resolved later
    assert rec.history()[-1] == Operation("e", 5.0, None, ("get", "k"), UNKNOWN)
    assert_ok(check(KVModel(), history))


class LockedStore:
    """A trivially linearizable KV store (one lock), optionally with a stale-read bug."""

    def __init__(self, stale_reads: bool = False) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, int] = {}
        self.previous: dict[str, int] = {}
        self.stale_reads = stale_reads

    def execute(self, inp: tuple[Any, ...]) -> Any:
        with self.lock:
            kind, key = inp[0], inp[1]
            if kind == "get":
                return (self.previous if self.stale_reads else self.data).get(key)
            if key in self.data:
                self.previous[key] = self.data[key]
            if kind == "put":
                self.data[key] = inp[2]
                return None
            if kind == "cas":
                if self.data.get(key) == inp[2]:
                    self.data[key] = inp[3]
                    return True
                return False
            raise AssertionError(kind)


def run_threaded_clients(store: LockedStore, n_clients: int, n_ops: int) -> list[Operation]:
    rec = HistoryRecorder()
    barrier = threading.Barrier(n_clients)

    def client(cid: int) -> None:
        rng = random.Random(cid)
        barrier.wait()
        for _ in range(n_ops):
            key = rng.choice("ab")
            r = rng.random()
            if r < 0.5:
                inp: tuple[Any, ...] = ("get", key)
            elif r < 0.8:
                inp = ("put", key, rng.randrange(1000))
            else:
                inp = ("cas", key, rng.randrange(3), rng.randrange(1000))
            h = rec.invoke(cid, inp)
            if rng.random() < 0.05:
                store.execute(inp)
                rec.fail_unknown(h)  # pretend the answer was lost
            else:
                rec.complete(h, store.execute(inp))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return rec.history()


def test_recorder_threaded_clients_on_linearizable_store() -> None:
    history = run_threaded_clients(LockedStore(), n_clients=6, n_ops=60)
    assert len(history) == 360
    assert_ok(check(KVModel(), history, timeout_s=120))


def test_recorder_threaded_clients_catch_stale_reads() -> None:
    # Every read returns the value before the latest write: sequential clients see it.
    store = LockedStore(stale_reads=True)
    rec = HistoryRecorder()
    for i in range(3):
        h = rec.invoke(0, ("put", "k", i))
        rec.complete(h, store.execute(("put", "k", i)))
    h = rec.invoke(1, ("get", "k"))
    rec.complete(h, store.execute(("get", "k")))
    assert_violation(check(KVModel(), rec.history()), "get('k') -> 1", "client 1")


def test_recorder_asyncio_clients() -> None:
    async def main() -> list[Operation]:
        rec = HistoryRecorder()
        data: dict[str, int] = {}

        async def client(cid: int) -> None:
            for i in range(20):
                h = rec.invoke(cid, ("put", "k", cid * 100 + i))
                await asyncio.sleep(0)
                data["k"] = cid * 100 + i
                await asyncio.sleep(0)
                rec.complete(h, None)
                h = rec.invoke(cid, ("get", "k"))
                await asyncio.sleep(0)
                value = data.get("k")
                await asyncio.sleep(0)
                rec.complete(h, value)

        await asyncio.gather(*(client(c) for c in range(4)))
        return rec.history()

    history = asyncio.run(main())
    assert len(history) == 160
    assert_ok(check(KVModel(), history))


# --------------------------------------------------------------------------------------------
# KVModel


def test_kv_model_semantics() -> None:
    m = KVModel()
    s = m.init()
    assert m.apply(s, ("get", "k")) == (None, s)
    out, s = m.apply(s, ("put", "k", 1))
    assert out is None and dict(s) == {"k": 1}
    assert m.apply(s, ("cas", "k", 2, 3)) == (False, s)
    out, s = m.apply(s, ("cas", "k", 1, 3))
    assert out is True and dict(s) == {"k": 3}
    out, s = m.apply(s, ("delete", "k"))
    assert dict(s) == {}
    out, s = m.apply(s, ("cas", "k", None, 5))  # cas on an absent key compares with None
    assert out is True and dict(s) == {"k": 5}
    assert m.step(s, ("get", "k"), 4) == (False, s)
    assert m.step(s, ("get", "k"), UNKNOWN) == (True, s)
    assert m.step(s, ("put", "k", 7), "ack")[0]  # put/delete outputs are ignored
    assert m.describe_operation(("cas", "k", 1, 2), True) == "cas('k', 1, 2) -> True"
    assert m.describe_operation(("put", "k", 1), UNKNOWN) == "put('k', 1) -> ?"
    assert dict(KVModel({"a": 1}).init()) == {"a": 1}
    with pytest.raises(ValueError):
        m.apply(s, ("incr", "k"))


def test_empty_history() -> None:
    assert_ok(check(KVModel(), []))
    assert_ok(check(FileNamespaceModel(), []))


def test_sequential_history_is_linearizable() -> None:
    h = [
        op(0, 0, 1, ("put", "x", 1)),
        op(0, 2, 3, ("get", "x"), 1),
        op(1, 4, 5, ("cas", "x", 1, 2), True),
        op(0, 6, 7, ("cas", "x", 1, 3), False),
        op(1, 8, 9, ("get", "x"), 2),
        op(1, 10, 11, ("delete", "x")),
        op(0, 12, 13, ("get", "x"), None),
    ]
    assert_ok(check(KVModel(), h))


def test_concurrent_read_may_see_old_or_new_value() -> None:
    for seen in (0, 1):
        h = [
            op(0, 0, 1, ("put", "x", 0)),
            op(0, 2, 10, ("put", "x", 1)),
            op(1, 3, 4, ("get", "x"), seen),
        ]
        assert_ok(check(KVModel(), h))


def test_order_of_operations_in_list_does_not_matter() -> None:
    h = [
        op(1, 3, 4, ("get", "x"), 1),
        op(0, 2, 10, ("put", "x", 1)),
        op(0, 0, 1, ("put", "x", 0)),
    ]
    assert_ok(check(KVModel(), h))


def test_stale_read_after_completed_write_fails() -> None:
    h = [
        op(0, 0, 1, ("put", "x", 0)),
        op(0, 2, 3, ("put", "x", 1)),
        op(1, 4, 5, ("get", "x"), 0),
    ]
    result = check(KVModel(), h)
    assert_violation(
        result, "get('x') -> 0", "client 1", "[call 4, ret 5]", "model expects 1", "'x': 1"
    )
    assert [o.input for o in result.prefix] == [("put", "x", 0), ("put", "x", 1)]
    assert result.unlinearizable == (h[2],)
    assert dict(result.state) == {"x": 1}


def test_touching_intervals_count_as_concurrent() -> None:
    # The write returns at t=3 and the read is called at t=3: either order is allowed.
    h = [
        op(0, 0, 1, ("put", "x", 0)),
        op(0, 2, 3, ("put", "x", 1)),
        op(1, 3, 5, ("get", "x"), 0),
    ]
    assert_ok(check(KVModel(), h))


def test_read_then_older_read_fails() -> None:
    # A long write; one read sees the new value, a strictly later read sees the old one.
    h = [
        op(0, 0, 1, ("put", "x", 0)),
        op(0, 2, 20, ("put", "x", 1)),
        op(1, 3, 4, ("get", "x"), 1),
        op(2, 5, 6, ("get", "x"), 0),
    ]
    assert_violation(check(KVModel(), h), "get('x') -> 0", "client 2")
    # If the reads overlap, there is an order in which they are fine.
    h[3] = op(2, 3.5, 6, ("get", "x"), 0)
    assert_ok(check(KVModel(), h))


def test_two_successful_cas_from_same_value_fails() -> None:
    h = [
        op(0, 0, 1, ("put", "x", 0)),
        op(1, 2, 5, ("cas", "x", 0, 1), True),
        op(2, 2, 5, ("cas", "x", 0, 2), True),
    ]
    assert_violation(check(KVModel(), h), "cas('x', 0, ", "-> True", "model expects False")
    h[2] = op(2, 2, 5, ("cas", "x", 0, 2), False)
    assert_ok(check(KVModel(), h))


def test_read_of_value_never_written_fails() -> None:
    h = [op(0, 0, 1, ("put", "x", 1)), op(1, 0, 1, ("get", "x"), 42)]
    result = check(KVModel(), h)
    assert_violation(result, "get('x') -> 42")
    # Both orders were tried: the longest prefix is just the put.
    assert len(result.prefix) == 1


# --------------------------------------------------------------------------------------------
# Unknown outcomes


def test_unknown_write_may_take_effect_late() -> None:
    h = [
        op(0, 0, 1, ("put", "x", 0)),
        op(0, 2, None, ("put", "x", 1)),
        op(1, 100, 101, ("get", "x"), 0),
        op(1, 200, 201, ("get", "x"), 1),
    ]
    assert_ok(check(KVModel(), h))


def test_unknown_write_may_never_take_effect() -> None:
    h = [
        op(0, 0, 1, ("put", "x", 0)),
        op(0, 2, None, ("put", "x", 1)),
        op(1, 100, 101, ("get", "x"), 0),
        op(1, 200, 201, ("get", "x"), 0),
    ]
    assert_ok(check(KVModel(), h))
    # Unknown ops whose effect would be rejected anyway (e.g. an unmatched cas) are fine too.
    h.append(op(2, 3, None, ("cas", "x", 99, 5)))
    assert_ok(check(KVModel(), h))


def test_unknown_write_seen_then_unseen_fails() -> None:
    h = [
        op(0, 0, 1, ("put", "x", 0)),
        op(0, 2, None, ("put", "x", 1)),
        op(1, 100, 101, ("get", "x"), 1),
        op(1, 200, 201, ("get", "x"), 0),
    ]
    result = check(KVModel(), h)
    assert_violation(result, "get('x') -> 0", "[call 200, ret 201]")
    assert "put('x', 1) -> ?" in result.explanation
    assert "(outcome unknown)" in result.explanation
    assert "[call 2, ret ?]" in result.explanation


def test_unknown_write_cannot_take_effect_before_its_call() -> None:
    h = [
        op(0, 0, 1, ("put", "x", 0)),
        op(1, 2, 3, ("get", "x"), 1),
        op(0, 4, None, ("put", "x", 1)),
    ]
    assert_violation(check(KVModel(), h), "get('x') -> 1", "model expects 0")


def test_infinite_return_time_means_unknown() -> None:
    h = [
        Operation(0, 0, 1, ("put", "x", 0), None),
        Operation(0, 2, float("inf"), ("put", "x", 1), "ignored"),
        Operation(1, 3, 4, ("get", "x"), 1),
        Operation(1, 5, 6, ("get", "x"), 1),
    ]
    assert_ok(check(KVModel(), h))


def test_recorded_output_of_unknown_operation_is_ignored() -> None:
    h = [
        Operation(0, 0, 1, ("put", "x", 0), None),
        Operation(1, 2, None, ("get", "x"), 42),
        Operation(2, 2, float("inf"), ("cas", "x", 0, 1), "garbage"),
        Operation(3, 5, 6, ("get", "x"), 1),
    ]
    assert_ok(check(KVModel(), h))


class Account:
    """A protocol model whose step rejects some inputs whatever the output: a withdrawal
    needs funds. ("deposit",) -> None, ("withdraw",) -> None, ("balance",) -> int."""

    def init(self) -> int:
        return 0

    def step(self, state: int, input: Any, output: Any) -> tuple[bool, int]:
        if input[0] == "deposit":
            return True, state + 1
        if input[0] == "withdraw":
            return state > 0, state - 1
        return output is UNKNOWN or output == state, state

    def describe_operation(self, input: Any, output: Any) -> str:
        return f"{input[0]}() -> {output!r}"


def test_unknown_operation_that_can_never_take_effect() -> None:
    # The withdrawal can never be applied (no funds at any point), and its outcome is
    # unknown, so it simply never happened.
    h = [
        op(0, 0, None, ("withdraw",)),
        op(1, 1, 2, ("balance",), 0),
        op(1, 3, 4, ("deposit",)),
        op(1, 5, 6, ("withdraw",)),
        op(1, 7, 8, ("balance",), 0),
    ]
    assert_ok(check(Account(), h))
    assert brute_force_linearizable(Account(), h)
    # A completed withdrawal without funds is a violation, though.
    h[0] = op(0, 0, 0.5, ("withdraw",))
    assert_violation(check(Account(), h), "withdraw() -> None", "model state after it: 0")


def test_only_unknown_operations() -> None:
    h = [op(i, i, None, ("put", "x", i)) for i in range(5)]
    assert_ok(check(KVModel(), h))


def test_unknown_exclusive_create_that_never_happened() -> None:
    h = [
        op("a", 0, None, ("create", "f")),
        op("b", 1, 2, ("create", "f"), "ok"),
        op("c", 3, 4, ("list",), ("f",)),
    ]
    assert_ok(check(FileNamespaceModel(), h))


# --------------------------------------------------------------------------------------------
# Partitioning


def test_kv_partition_per_key() -> None:
    h = [
        op(0, 0, 1, ("put", "a", 1)),
        op(1, 0, 1, ("put", "b", 1)),
        op(0, 2, 3, ("get", "b"), 1),
        op(1, 2, 3, ("get", "a"), 1),
        op(2, 0, 9, ("delete", "c")),
    ]
    parts = KVModel().partition(h)
    assert sorted(len(p) for p in parts) == [1, 2, 2]
    for part in parts:
        assert len({o.input[1] for o in part}) == 1
    assert sorted(map(id, h)) == sorted(id(o) for p in parts for o in p)
    assert_ok(check(KVModel(), h))


def test_violation_reported_in_its_partition_with_original_indexes() -> None:
    h = []
    t = 0
    for key in "abcde":
        for v in range(3):
            h.append(op(0, t, t + 1, ("put", key, v)))
            h.append(op(1, t + 2, t + 3, ("get", key), v))
            t += 4
    h[23] = dataclasses.replace(h[23], output=0)  # a stale read of key 'd'
    result = check(KVModel(), h)
    assert_violation(result, "partition 4 of 5", "#23 client 1", "get('d') -> 0")
    assert result.partition_index == 3
    assert all(o.input[1] == "d" for o in result.prefix)


class UnpartitionedKV(DeterministicModel[Any]):
    """KVModel without the partition hook (and a plain-repr state description)."""

    def __init__(self) -> None:
        self.kv = KVModel()

    def init(self) -> Any:
        return self.kv.init()

    def apply(self, state: Any, input: Any) -> tuple[Any, Any]:
        return self.kv.apply(state, input)

    def output_matches(self, input: Any, expected: Any, output: Any) -> bool:
        return self.kv.output_matches(input, expected, output)


def test_partitioning_does_not_change_verdicts() -> None:
    rng = random.Random(7)
    for trial in range(40):
        h = generate_history(
            KVModel(), kv_input(["a", "b", "c"], values=3), rng, 14, 4, p_unknown=0.1
        )
        if trial % 2:
            gets = [i for i, o in enumerate(h) if o.input[0] == "get" and o.outcome_known]
            if gets:
                i = rng.choice(gets)
                h[i] = dataclasses.replace(h[i], output=rng.choice([None, 0, 1, 2]))
        assert check(KVModel(), h).ok == check(UnpartitionedKV(), h).ok


# --------------------------------------------------------------------------------------------
# Custom models through the bare protocol


class Counter:
    """A Model written against the protocol only: ("incr",) -> None, ("read",) -> int."""

    def init(self) -> int:
        return 0

    def step(self, state: int, input: Any, output: Any) -> tuple[bool, int]:
        if input[0] == "incr":
            return True, state + 1
        return output is UNKNOWN or output == state, state

    def describe_operation(self, input: Any, output: Any) -> str:
        return f"{input[0]}() -> {output!r}"


def test_custom_protocol_model() -> None:
    model: Model[int] = Counter()
    h = [
        op(0, 0, 5, ("incr",)),
        op(1, 0, 5, ("incr",)),
        op(2, 1, 2, ("read",), 1),
        op(2, 6, 7, ("read",), 2),
    ]
    assert_ok(check(model, h))
    h[3] = op(2, 6, 7, ("read",), 1)
    result = check(model, h)
    assert_violation(result, "read() -> 1", "model state after it: 2")
    assert "model expects" not in result.explanation


# --------------------------------------------------------------------------------------------
# FileNamespaceModel


def test_fs_model_semantics() -> None:
    m = FileNamespaceModel(initial=["a"])
    s = m.init()
    assert m.apply(s, ("create", "a")) == ("exists", s)
    out, s = m.apply(s, ("create", "b"))
    assert out == "ok" and s == {"a", "b"}
    assert m.apply(s, ("rename", "a", "b")) == ("exists", s)
    assert m.apply(s, ("rename", "a", "a")) == ("exists", s)
    assert m.apply(s, ("rename", "c", "d")) == ("not_found", s)
    assert m.apply(s, ("rename", "c", "a")) == ("not_found", s)
    out, s = m.apply(s, ("rename", "a", "c"))
    assert out == "ok" and s == {"b", "c"}
    assert m.apply(s, ("stat", "a")) == (False, s)
    assert m.apply(s, ("stat", "c")) == (True, s)
    assert m.apply(s, ("list",)) == (("b", "c"), s)
    assert m.step(s, ("list",), ["b", "c"])[0]
    assert not m.step(s, ("list",), ["c", "b"])[0]
    assert m.apply(s, ("delete", "a")) == ("not_found", s)
    out, s = m.apply(s, ("delete", "b"))
    assert out == "ok" and s == {"c"}
    assert m.describe_operation(("rename", "a", "b"), "ok") == "rename('a', 'b') -> 'ok'"
    assert m.describe_state(frozenset({"b", "a"})) == "{'a', 'b'}"
    with pytest.raises(ValueError):
        m.apply(s, ("chmod", "a"))


def test_double_exclusive_create_fails() -> None:
    h = [
        op("alice", 0, 2, ("create", "f"), "ok"),
        op("bob", 1, 3, ("create", "f"), "ok"),
    ]
    result = check(FileNamespaceModel(), h)
    assert_violation(result, "create('f') -> 'ok'", "model expects 'exists'")
    assert "client alice" in result.explanation and "client bob" in result.explanation
    h[1] = op("bob", 1, 3, ("create", "f"), "exists")
    assert_ok(check(FileNamespaceModel(), h))


def test_rename_is_atomic() -> None:
    base = [
        op(0, 0, 1, ("create", "a"), "ok"),
        op(0, 2, 10, ("rename", "a", "b"), "ok"),
    ]
    # Observers during the rename may see either name, but not both absent, nor both present.
    for observed in [("a",), ("b",)]:
        assert_ok(check(FileNamespaceModel(), [*base, op(1, 3, 4, ("list",), observed)]))
    for bad in [(), ("a", "b")]:
        result = check(FileNamespaceModel(), [*base, op(1, 3, 4, ("list",), bad)])
        assert_violation(result, f"list() -> {bad!r}")
    # A stat sees 'a' gone, then a later stat sees 'b' not yet there.
    h = [
        *base,
        op(1, 3, 4, ("stat", "a"), False),
        op(2, 5, 6, ("stat", "b"), False),
    ]
    assert_violation(check(FileNamespaceModel(), h), "stat('b') -> False", "client 2")
    # ... whereas if the stats overlap they can be ordered around the rename.
    h[3] = op(2, 3.5, 6, ("stat", "b"), False)
    assert_ok(check(FileNamespaceModel(), h))


def test_rename_refuses_to_overwrite() -> None:
    h = [
        op(0, 0, 1, ("create", "a"), "ok"),
        op(0, 2, 3, ("create", "b"), "ok"),
        op(1, 4, 5, ("rename", "a", "b"), "ok"),
    ]
    assert_violation(check(FileNamespaceModel(), h), "rename('a', 'b') -> 'ok'")
    h[2] = op(1, 4, 5, ("rename", "a", "b"), "exists")
    assert_ok(check(FileNamespaceModel(), h))


# --------------------------------------------------------------------------------------------
# Timeout


def test_timeout_reports_unknown() -> None:
    rng = random.Random(1)
    h = generate_history(KVModel(), kv_input(["k"]), rng, 200, 8)
    ticking = FakeClock()  # every reading advances one second
    result = check(KVModel(), h, timeout_s=0.5, clock=ticking)
    assert result.timed_out and not result.ok
    assert "timed out" in result.explanation and "unknown" in result.explanation
    assert_ok(check(KVModel(), h, timeout_s=60))


# --------------------------------------------------------------------------------------------
# Randomized: differential against brute force, and generated histories


kv_values = st.sampled_from([None, 0, 1, 2])


@st.composite
def kv_ops(draw: st.DrawFn) -> tuple[tuple[Any, ...], Any]:
    key = draw(st.sampled_from(["x", "y"]))
    kind = draw(st.sampled_from(["get", "get", "put", "put", "cas", "delete"]))
    if kind == "get":
        return ("get", key), draw(kv_values)
    if kind == "put":
        return ("put", key, draw(st.integers(0, 2))), None
    if kind == "cas":
        inp = ("cas", key, draw(kv_values), draw(st.integers(0, 2)))
        return inp, draw(st.booleans())
    return ("delete", key), None


fs_names = st.sampled_from(["a", "b"])


@st.composite
def fs_ops(draw: st.DrawFn) -> tuple[tuple[Any, ...], Any]:
    kind = draw(st.sampled_from(["create", "delete", "rename", "stat", "list"]))
    if kind == "list":
        return ("list",), draw(st.sampled_from([(), ("a",), ("b",), ("a", "b")]))
    if kind == "stat":
        return ("stat", draw(fs_names)), draw(st.booleans())
    if kind == "rename":
        inp: tuple[Any, ...] = ("rename", draw(fs_names), draw(fs_names))
        return inp, draw(st.sampled_from(["ok", "not_found", "exists"]))
    return (kind, draw(fs_names)), draw(st.sampled_from(["ok", "exists", "not_found"]))


def histories(
    ops: st.SearchStrategy[tuple[tuple[Any, ...], Any]],
) -> st.SearchStrategy[list[Operation]]:
    @st.composite
    def build(draw: st.DrawFn) -> list[Operation]:
        n = draw(st.integers(0, 7))
        history = []
        for i in range(n):
            inp, out = draw(ops)
            call = draw(st.integers(0, 12))
            duration = draw(st.one_of(st.integers(0, 6), st.none()))
            if duration is None:
                history.append(Operation(i, call, None, inp, UNKNOWN))
            else:
                history.append(Operation(i, call, call + duration, inp, out))
        return history

    return build()


@HYPOTHESIS
@given(histories(kv_ops()))
def test_kv_agrees_with_brute_force(history: list[Operation]) -> None:
    expected = brute_force_linearizable(UnpartitionedKV(), history)
    assert check(KVModel(), history).ok == expected
    assert check(UnpartitionedKV(), history).ok == expected


@HYPOTHESIS
@given(histories(fs_ops()))
def test_fs_agrees_with_brute_force(history: list[Operation]) -> None:
    result = check(FileNamespaceModel(), history)
    assert result.ok == brute_force_linearizable(FileNamespaceModel(), history)
    if not result.ok:
        # The reported prefix is itself linearizable and every reported candidate is rejected.
        assert brute_force_linearizable(FileNamespaceModel(), list(result.prefix))
        assert result.unlinearizable
        for o in result.unlinearizable:
            out = o.output if o.outcome_known else UNKNOWN
            assert not FileNamespaceModel().step(result.state, o.input, out)[0]


@HYPOTHESIS
@given(st.integers(0, 2**32 - 1))
def test_generated_kv_histories_are_linearizable(seed: int) -> None:
    rng = random.Random(seed)
    h = generate_history(
        KVModel(), kv_input(["x", "y"], values=3), rng, 30, 5, p_unknown=0.1, n_phantoms=2
    )
    assert_ok(check(KVModel(), h))


@pytest.mark.parametrize("seed", range(25))
def test_generated_kv_history_with_impossible_read_fails(seed: int) -> None:
    rng = random.Random(seed)
    h = generate_history(
        KVModel(), kv_input(["x", "y", "z"]), rng, 120, 6, p_unknown=0.05, n_phantoms=3
    )
    assert_ok(check(KVModel(), h))
    gets = [i for i, o in enumerate(h) if o.input[0] == "get" and o.outcome_known]
    i = rng.choice(gets)
    h[i] = dataclasses.replace(h[i], output="never-written")
    result = check(KVModel(), h)
    assert_violation(result, f"#{i} ", f"get({h[i].input[1]!r}) -> 'never-written'")
    assert h[i] in result.unlinearizable


@pytest.mark.parametrize("seed", range(25))
def test_generated_fs_histories(seed: int) -> None:
    rng = random.Random(1000 + seed)
    names = ["a", "b", "c"]
    h = generate_history(
        FileNamespaceModel(), fs_input(names), rng, 60, 4, p_unknown=0.05, n_phantoms=2
    )
    assert_ok(check(FileNamespaceModel(), h))
    # A listing that includes a name nobody ever creates cannot be linearized.
    lists = [i for i, o in enumerate(h) if o.input[0] == "list" and o.outcome_known]
    if lists:
        i = rng.choice(lists)
        h[i] = dataclasses.replace(h[i], output=tuple(sorted({*h[i].output, "zz"})))
        assert_violation(check(FileNamespaceModel(), h), f"#{i} ", "'zz'")


# --------------------------------------------------------------------------------------------
# Performance sanity


def test_thousand_operation_kv_history_checks() -> None:
    rng = random.Random(2024)
    keys = [f"k{i}" for i in range(10)]
    h = generate_history(KVModel(), kv_input(keys), rng, 1000, 8, p_unknown=0.02)
    assert len(h) == 1000
    assert_ok(check(KVModel(), h, timeout_s=250))
    gets = [i for i, o in enumerate(h) if o.input[0] == "get" and o.outcome_known]
    i = gets[len(gets) // 2]
    h[i] = dataclasses.replace(h[i], output="never-written")
    assert_violation(check(KVModel(), h, timeout_s=250), f"#{i} ")


def test_large_unpartitioned_sequentialish_history() -> None:
    rng = random.Random(5)
    h = generate_history(FileNamespaceModel(), fs_input(["a", "b", "c", "d"]), rng, 400, 3)
    assert_ok(check(FileNamespaceModel(), h, timeout_s=250))
