"""Child process of the crash test: writes to a RocksEngine flat out until it is ``kill -9``-ed.

Run as ``python _crash_writer.py DIR SEED CYCLE [STEPS]``. It opens (and so recovers) the
engine in DIR, prints ``READY``, then loops over random operations on a few groups, mostly
group-commit batches (entries + hard state for 1-3 groups in ONE synced write), sometimes a
conflicting-suffix overwrite, a snapshot followed by a compaction, or an InstallSnapshot.

Protocol on stdout, one flushed line each:

    W <json op>    printed *before* the operation starts touching the disk (its intent)
    A              printed after the operation returned, i.e. once it is durable (the ack)

So after a kill, the disk must hold every acknowledged operation, plus possibly the one whose
``W`` has no ``A`` (it may or may not have reached the disk, but atomically). Every entry's
payload and every snapshot image are a pure function of (group, index, term), so the checker
can verify content without being told it.

With STEPS, the writer stops after that many operations and closes the engine cleanly.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from typing import Any

from keelfs.raft.messages import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    SnapshotMeta,
)
from keelfs.storage.rocks import RocksEngine, RocksLogStorage

GROUPS = ("meta-0", "meta-1", "chunks")
CONF = ConfState(frozenset({1, 2, 3}))
INSTALL_CONF = ConfState(frozenset({1, 2, 3}), frozenset({4}))


def _stream(seed: str, n: int) -> bytes:
    out = bytearray()
    block = hashlib.sha256(seed.encode()).digest()
    while len(out) < n:
        out += block
        block = hashlib.sha256(block).digest()
    return bytes(out[:n])


def gen_entry(group: str, index: int, term: int) -> Entry:
    """The one entry the writer ever writes at (group, index, term)."""
    h = hashlib.sha256(f"{group}/{index}/{term}".encode()).digest()
    payload = _stream(f"{group}/{index}/{term}/data", h[0] % 160)
    if h[1] % 16 == 0:
        cc = ConfChange(ConfChangeType.ADD_LEARNER, 100 + index % 7, payload)
        return Entry(term, index, cc.encode(), EntryType.CONF_CHANGE)
    return Entry(term, index, payload)


def gen_snapshot(group: str, index: int, term: int) -> bytes:
    """The state-machine image of ``group`` at (index, term)."""
    return _stream(f"{group}/{index}/{term}/snapshot", (index * 7919 + term) % 20_000)


def apply_op(
    stores: dict[str, Any],
    members: dict[str, dict[int, str]],
    op: dict[str, Any],
    chunk_sizes: random.Random | None = None,
) -> None:
    """Apply ``op`` to stores with the MemoryStorage write API (durable ones or the model)."""
    kind = op["op"]
    if kind == "batch":
        for g, change in op["groups"].items():
            s = stores[g]
            if change.get("append"):
                lo, n, term = change["append"]
                s.append([gen_entry(g, i, term) for i in range(lo, lo + n)])
            if change.get("hs"):
                s.set_hard_state(HardState(*change["hs"]))
            if change.get("members"):
                members[g] = {int(k): v for k, v in change["members"].items()}
    elif kind == "snap":
        s = stores[op["g"]]
        index = op["index"]
        s.create_snapshot(index, CONF, gen_snapshot(op["g"], index, s.term(index)))
    elif kind == "compact":
        stores[op["g"]].compact(op["index"])
    elif kind == "install":
        s = stores[op["g"]]
        meta = SnapshotMeta(op["index"], op["term"], INSTALL_CONF)
        data = gen_snapshot(op["g"], meta.index, meta.term)
        offset = 0
        while True:
            step = chunk_sizes.randint(1, 8192) if chunk_sizes else len(data) or 1
            s.write_snapshot_chunk(meta, offset, data[offset : offset + step])
            offset += step
            if offset >= len(data):
                break
        s.install_snapshot(meta)
    else:
        raise ValueError(f"unknown op {kind!r}")


def _batch_durably(engine: RocksEngine, op: dict[str, Any]) -> None:
    """The same batch as ``apply_op`` would do, but through ONE group-commit write."""
    with engine.write_batch() as b:
        for g, change in op["groups"].items():
            if change.get("append"):
                lo, n, term = change["append"]
                b.append(g, [gen_entry(g, i, term) for i in range(lo, lo + n)])
            if change.get("hs"):
                b.set_hard_state(g, HardState(*change["hs"]))
            if change.get("members"):
                b.set_membership(g, {int(k): v for k, v in change["members"].items()})


def _choose(rng: random.Random, stores: dict[str, RocksLogStorage]) -> dict[str, Any]:
    """A random valid operation given the groups' current state."""
    g = rng.choice(GROUPS)
    s = stores[g]
    hs, snap, last = s.hard_state, s.snapshot_meta(), s.last_index()
    term = max(hs.term, s.term(last))
    r = rng.random()
    if r < 0.05 and hs.commit > snap.index and (last - snap.index > 40 or rng.random() < 0.3):
        return {"op": "snap", "g": g, "index": rng.randint(snap.index + 1, hs.commit)}
    if r < 0.10 and snap.index >= s.first_index():
        return {"op": "compact", "g": g, "index": rng.randint(s.first_index(), snap.index)}
    if r < 0.13:
        index = rng.randint(max(hs.commit, s.first_index() - 1) + 1, last + 5)
        if index <= last and rng.random() < 0.5:
            return {"op": "install", "g": g, "index": index, "term": s.term(index)}
        return {"op": "install", "g": g, "index": index, "term": term + 1}
    groups: dict[str, dict[str, Any]] = {}
    for g in rng.sample(GROUPS, rng.randint(1, len(GROUPS))):
        s = stores[g]
        hs, last = s.hard_state, s.last_index()
        term = max(hs.term, s.term(last))
        change: dict[str, Any] = {}
        floor = max(hs.commit, s.first_index() - 1)
        if last > floor and rng.random() < 0.1:
            # a new leader overwrites the uncommitted suffix from ``lo`` on
            lo = rng.randint(floor + 1, last)
            term += 1
            change["append"] = [lo, rng.randint(1, 8), term]
            change["overwrite"] = True  # informational: lets the test see it was exercised
        else:
            n = rng.randint(0, 12)
            change["append"] = [last + 1, n, term] if n else None
        new_last = change["append"][0] + change["append"][1] - 1 if change["append"] else last
        low = max(hs.commit, s.snapshot_meta().index)  # as after an InstallSnapshot
        commit = rng.randint(low, max(low, new_last))
        change["hs"] = [term, rng.randint(0, 3), commit]
        if rng.random() < 0.05:
            change["members"] = {
                str(i): f"10.0.0.{i}:{rng.randint(7000, 7999)}" for i in range(1, rng.randint(2, 5))
            }
        groups[g] = change
    return {"op": "batch", "groups": groups}


def main(argv: list[str]) -> int:
    path, seed, cycle = argv[1], int(argv[2]), int(argv[3])
    steps = int(argv[4]) if len(argv) > 4 else None
    rng = random.Random(seed * 1_000_003 + cycle)
    out = sys.stdout
    engine = RocksEngine(path)
    stores = {g: engine.group(g, CONF) for g in GROUPS}
    out.write("READY\n")
    out.flush()
    done = 0
    while steps is None or done < steps:
        op = _choose(rng, stores)
        out.write("W " + json.dumps(op) + "\n")
        out.flush()
        if op["op"] == "batch":
            _batch_durably(engine, op)
        else:
            apply_op(dict(stores), {}, op, rng)
        out.write("A\n")
        out.flush()
        done += 1
    engine.close()
    out.write("DONE\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
