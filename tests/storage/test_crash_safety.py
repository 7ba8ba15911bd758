"""Crash safety with real processes: ``kill -9`` a writer at random moments, many times.

The child (``_crash_writer.py``) announces each operation (``W``) before it touches the disk and
acknowledges it (``A``) once it returned. The parent replays the acknowledged operations on a
model made of ``MemoryStorage``s; after each kill it opens the database itself and requires
that every group, and all groups together, are exactly the model, or exactly the model plus the
one announced-but-unacknowledged operation (a group-commit batch is atomic across groups, so
it is all there or not at all). That covers "no acknowledged entry is lost" precisely, including
the legitimate exception: an acknowledged but uncommitted suffix that a later (possibly
unacknowledged) write overwrote. On top of the model comparison it checks the invariants
directly: entries contiguous, terms non-decreasing, commit <= last index, every entry and
snapshot image equal to what the writer deterministically generates for its index and term.
"""

from __future__ import annotations

import copy
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from keelfs.raft.storage import MemoryStorage
from keelfs.storage.rocks import RocksEngine

from ._crash_writer import CONF, GROUPS, apply_op, gen_entry, gen_snapshot

WRITER = Path(__file__).with_name("_crash_writer.py")
REPO = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("KEELFS_CRASH_SEED", "1337"))
CYCLES = int(os.environ.get("KEELFS_CRASH_CYCLES", "50"))


class Model:
    """What the disk must hold: the acknowledged operations applied to in-memory stores."""

    def __init__(self) -> None:
        self.stores: dict[str, Any] = {g: MemoryStorage(CONF) for g in GROUPS}
        self.members: dict[str, dict[int, str]] = {g: {} for g in GROUPS}

    def apply(self, op: dict[str, Any]) -> None:
        apply_op(self.stores, self.members, op)

    def applied(self, op: dict[str, Any]) -> Model:
        other = copy.deepcopy(self)
        other.apply(op)
        return other

    def observe(self) -> dict[str, tuple[object, ...]]:
        return {g: _observe(s, self.members[g]) for g, s in self.stores.items()}


def _observe(s: Any, members: dict[int, str]) -> tuple[object, ...]:
    first, last = s.first_index(), s.last_index()
    log = s.entries(first, last + 1, 1 << 40) if last >= first else []
    meta = s.snapshot_meta()
    return (
        first,
        last,
        s.term(first - 1),
        log,
        s.initial_state(),
        meta,
        s.snapshot_data(),
        members,
    )


def _check_invariants(g: str, state: tuple[Any, ...]) -> None:
    first, last, dummy_term, log, (hs, _conf), meta, image, _ = state
    assert [e.index for e in log] == list(range(first, last + 1)), f"{g}: log not contiguous"
    terms = [dummy_term] + [e.term for e in log]
    assert terms == sorted(terms), f"{g}: terms decrease"
    assert hs.commit <= last, f"{g}: commit {hs.commit} beyond last index {last}"
    for e in log:
        assert e == gen_entry(g, e.index, e.term), f"{g}: entry {e.index} has wrong content"
    assert image == (gen_snapshot(g, meta.index, meta.term) if meta.index > 1 else b"")
    assert meta.index >= first - 1


def _read_disk(path: Path) -> dict[str, tuple[object, ...]]:
    with RocksEngine(path) as engine:
        return {g: _observe(engine.group(g, CONF), engine.group(g).membership()) for g in GROUPS}


class Child:
    """The writer process, its stdout read line by line on a thread."""

    def __init__(self, path: Path, cycle: int, steps: int | None, stderr: Path) -> None:
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
        )
        args = [sys.executable, str(WRITER), str(path), str(SEED), str(cycle)]
        self._stderr = open(stderr, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args + ([str(steps)] if steps else []),
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            if not raw.endswith(b"\n"):
                break  # torn by the kill: never completely written, so never acted upon
            line = raw.decode().rstrip("\n")
            self.lines.append(line)
            if line == "READY":
                self.ready.set()

    def stop(self, kill: bool) -> int:
        """SIGKILL the child (if asked and still running); reap it; collect all its output."""
        try:
            if kill and self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGKILL)
            rc = self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:  # never leave a writer behind
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self._reader.join(timeout=10)
            self._stderr.close()
        return rc


def _replay(model: Model, lines: list[str]) -> tuple[Model, dict[str, Any] | None, int]:
    """Apply acknowledged ops; return the model, the unacknowledged op if any, and #acks."""
    pending: dict[str, Any] | None = None
    acks = 0
    for line in lines:
        if line.startswith("W "):
            assert pending is None, "two operations in flight"
            pending = json.loads(line[2:])
        elif line == "A":
            assert pending is not None, "ack without an operation"
            model.apply(pending)
            pending = None
            acks += 1
    return model, pending, acks


@pytest.mark.slow
@pytest.mark.process
def test_kill9_never_loses_acknowledged_writes(tmp_path: Path) -> None:
    path = tmp_path / "node"
    rng = random.Random(SEED)
    model = Model()
    acks = kills = in_flight_landed = early_kills = 0
    ops_seen: set[str] = set()
    started = time.monotonic()
    for cycle in range(CYCLES + 1):
        final = cycle == CYCLES  # the last run is not killed: it stops and closes cleanly
        child = Child(path, cycle, 40 if final else None, tmp_path / f"stderr-{cycle}")
        try:
            if final:
                assert child.proc.wait(timeout=60) == 0
            elif rng.random() < 0.15:
                time.sleep(rng.uniform(0.0, 0.3))  # maybe while it is still recovering
                early_kills += 1
            else:
                assert child.ready.wait(timeout=30), "writer did not start"
                time.sleep(rng.uniform(0.0, 0.25))
        finally:
            rc = child.stop(kill=not final)
        if not final:
            assert rc == -signal.SIGKILL, (
                f"writer died on its own (rc={rc}):\n" + (tmp_path / f"stderr-{cycle}").read_text()
            )
            kills += 1
        model, pending, n = _replay(model, child.lines)
        acks += n
        if final:
            assert child.lines[-1] == "DONE" and pending is None
        disk = _read_disk(path)
        for g, state in disk.items():
            _check_invariants(g, state)
        candidates = [model] if pending is None else [model, model.applied(pending)]
        matches = [m for m in candidates if m.observe() == disk]
        assert matches, (
            f"cycle {cycle}: disk matches neither the acknowledged state nor it plus the "
            f"in-flight op {pending}"
        )
        if len(matches) == 1 and matches[0] is not model:
            in_flight_landed += 1
        model = matches[-1]
        for line in child.lines:
            if line.startswith("W "):
                op = json.loads(line[2:])
                ops_seen.add(op["op"])
                if op["op"] == "batch" and len(op["groups"]) > 1:
                    ops_seen.add("multi-group")
                if op["op"] == "batch" and any(c.get("overwrite") for c in op["groups"].values()):
                    ops_seen.add("overwrite")
    elapsed = time.monotonic() - started
    print(
        f"\n{kills} kills ({early_kills} early), {acks} acknowledged ops, "
        f"{in_flight_landed} unacknowledged ops found durable, {elapsed:.1f}s"
    )
    assert kills >= 50
    assert acks > 10 * CYCLES
    assert ops_seen >= {"batch", "multi-group", "overwrite", "snap", "compact", "install"}
    assert all(s.last_index() > 100 for s in model.stores.values())  # the logs did grow
