"""What ``keelfs chaos`` expects of the namespace, from acknowledged outcomes only, and the
check of the cluster against it.

A name's expected state is a *set* of possibilities, each :data:`ABSENT`, the MD5 of a
payload, or :data:`ANY` (an interrupted write may have left any prefix of its data, or
nothing). An acknowledged operation collapses the set; an operation whose outcome is unknown
(a timeout, ``OutcomeUnknown``, a broken pipeline) widens it to both outcomes; a refused one
(``AlreadyExists``, ``NotFound``, ...) leaves it as it was. A name whose set holds :data:`ANY`
is *uncertain* and not checked; any other name must be in one of its states when the run
ends, and a refusal that no possible state explains (``NotFound`` for a file that must exist)
is a violation at once.

:class:`Expected` tracks names that one worker alone touches, in its order (exact).
:class:`ContendedLog` keeps the timed history of names several workers race on; the final
state of such a name must be the effect of an operation that is not *followed* (finished
before it started) by an acknowledged operation that sets the name
(:func:`ContendedLog.allowed`): real-time order is all a concurrent history promises.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "ABSENT",
    "ANY",
    "OK",
    "FAILED",
    "UNKNOWN",
    "ContendedLog",
    "ContendedOp",
    "Expected",
    "Outcome",
    "Violation",
    "md5",
    "verify",
]

ABSENT = "absent"
"""The name has no entry."""
ANY = "any"
"""Anything may be there (or nothing): the name is not checked."""

Outcome = Literal["ok", "failed", "unknown"]
OK: Outcome = "ok"
FAILED: Outcome = "failed"
UNKNOWN: Outcome = "unknown"

States = frozenset[str]


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@dataclass
class Violation:
    kind: str
    """``content`` (wrong bytes), ``missing`` (an acknowledged file is gone), ``present`` (a
    deleted name exists), ``unreadable``, ``unexpected`` (a name nobody wrote), ``duplicate``
    (one payload under two names), ``impossible`` (an answer no possible state explains:
    ``NotFound`` for a file that must exist, ``AlreadyExists`` for a name that must not)."""
    path: str
    detail: str
    expected: list[str] = field(default_factory=list)
    found: str = ""
    history: list[str] = field(default_factory=list)
    """The operations on the name, oldest first: seconds into the run, what, how it ended."""

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "detail": self.detail,
            "expected": self.expected,
            "found": self.found,
            "history": self.history,
        }


class Expected:
    """The possible states of names that one worker alone touches, updated in its order.
    (The lock lets the end of the run copy a worker's model while it finishes an operation.)"""

    def __init__(self, epoch: float | None = None) -> None:
        self.states: dict[str, States] = {}
        self.violations: list[Violation] = []
        self.history: dict[str, list[str]] = {}
        self.lock = threading.Lock()
        self.epoch = time.monotonic() if epoch is None else epoch

    def _note(self, path: str, what: str, outcome: Outcome, error: str) -> None:
        t = time.monotonic() - self.epoch
        self.history.setdefault(path, []).append(
            f"{t:.1f}s {what}: {outcome}{f' ({error})' if error else ''}"
        )

    def get(self, path: str) -> States:
        return self.states.get(path, frozenset({ABSENT}))

    def certain(self, path: str) -> str | None:
        """The one state ``path`` must be in, or None."""
        s = self.get(path)
        return next(iter(s)) if len(s) == 1 and ANY not in s else None

    def present(self) -> list[str]:
        """Names that must hold an acknowledged file."""
        return sorted(p for p, s in self.states.items() if ABSENT not in s and ANY not in s)

    def _refused(self, path: str, error: str, impossible_if: Callable[[States], bool]) -> None:
        s = self.get(path)
        if ANY not in s and impossible_if(s):
            self.violations.append(
                Violation("impossible", path, f"refused with {error}", sorted(s), error)
            )

    def write(self, path: str, digest: str, outcome: Outcome, error: str = "") -> None:
        """A create (``overwrite`` or not) of ``path`` holding the payload ``digest``."""
        with self.lock:
            self._note(path, f"write {digest[:8]}", outcome, error)
            self._write(path, digest, outcome, error)

    def _write(self, path: str, digest: str, outcome: Outcome, error: str) -> None:
        if outcome == OK:
            self.states[path] = frozenset({digest})
        elif outcome == UNKNOWN:
            self.states[path] = self.get(path) | {ANY}
        elif error == "AlreadyExists":
            self._refused(path, error, lambda s: s == {ABSENT})

    def append(self, path: str, digest: str, outcome: Outcome, error: str = "") -> None:
        """An append to ``path`` after which, acknowledged, it holds the payload ``digest``
        (its old content and the appended bytes). An interrupted one may have left any
        prefix of the appended bytes (or the file under construction): anything."""
        with self.lock:
            self._note(path, f"append -> {digest[:8]}", outcome, error)
            if outcome == OK:
                self.states[path] = frozenset({digest})
            elif outcome == UNKNOWN:
                self.states[path] = self.get(path) | {ANY}
            elif error == "NotFound":
                self._refused(path, error, lambda s: ABSENT not in s)

    def truncate(self, path: str, digest: str, outcome: Outcome, error: str = "") -> None:
        """A truncate of ``path`` after which, acknowledged, it holds ``digest``. It is all
        or nothing (a cut inside a block is rolled back when its client dies), so an
        interrupted one leaves the old content or the new, never anything else."""
        with self.lock:
            self._note(path, f"truncate -> {digest[:8]}", outcome, error)
            if outcome == OK:
                self.states[path] = frozenset({digest})
            elif outcome == UNKNOWN:
                self.states[path] = self.get(path) | {digest}
            elif error == "NotFound":
                self._refused(path, error, lambda s: ABSENT not in s)

    def delete(self, path: str, outcome: Outcome, error: str = "") -> None:
        with self.lock:
            self._note(path, "delete", outcome, error)
            self._delete(path, outcome, error)

    def _delete(self, path: str, outcome: Outcome, error: str) -> None:
        if outcome == OK:
            self.states[path] = frozenset({ABSENT})
        elif outcome == UNKNOWN:
            self.states[path] = self.get(path) | {ABSENT}
        elif error == "NotFound":
            self._refused(path, error, lambda s: ABSENT not in s)

    def rename(self, src: str, dst: str, outcome: Outcome, error: str = "") -> None:
        """``rename(src, dst, overwrite=True)`` of a file."""
        with self.lock:
            self._note(src, f"rename to {dst}", outcome, error)
            self._note(dst, f"rename from {src}", outcome, error)
            self._rename(src, dst, outcome, error)

    def _rename(self, src: str, dst: str, outcome: Outcome, error: str) -> None:
        before_src, before_dst = self.get(src), self.get(dst)
        if outcome == OK:
            self.states[dst] = before_src - {ABSENT}
            self.states[src] = frozenset({ABSENT})
            if not self.states[dst]:
                self.violations.append(
                    Violation("impossible", src, f"rename to {dst} succeeded", [ABSENT], "renamed")
                )
                self.states[dst] = frozenset({ANY})
        elif outcome == UNKNOWN:
            self.states[dst] = before_dst | (before_src - {ABSENT})
            self.states[src] = before_src | {ABSENT}
        elif error == "NotFound":
            self._refused(src, error, lambda s: ABSENT not in s)

    def merge(self, other: Expected) -> None:
        with other.lock:
            self.states.update(other.states)
            self.violations.extend(other.violations)
            for path, notes in other.history.items():
                self.history.setdefault(path, []).extend(notes)


@dataclass
class ContendedOp:
    kind: Literal["write", "delete", "rename"]
    path: str
    """The name written or deleted; a rename's source."""
    start: float
    end: float
    outcome: Outcome
    digest: str = ""
    """A write's payload."""
    dst: str = ""
    """A rename's target."""


class ContendedLog:
    """The timed history of operations on names that several workers race on."""

    def __init__(self) -> None:
        self.ops: list[ContendedOp] = []
        self._lock = threading.Lock()

    def add(self, op: ContendedOp) -> None:
        with self._lock:
            self.ops.append(op)

    def names(self) -> set[str]:
        return {op.path for op in self.ops} | {op.dst for op in self.ops if op.dst}

    def history(self, name: str, epoch: float) -> list[str]:
        with self._lock:
            ops = [op for op in self.ops if name in (op.path, op.dst)]
        out = []
        for op in sorted(ops, key=lambda o: o.start):
            what = f"{op.kind} {op.digest[:8]}" if op.kind == "write" else op.kind
            if op.kind == "rename":
                what += f" to {op.dst}" if op.path == name else f" from {op.path}"
            out.append(f"{op.start - epoch:.1f}-{op.end - epoch:.1f}s {what}: {op.outcome}")
        return out

    def payloads(self) -> set[str]:
        """Every payload that may have been written (refused writes excluded)."""
        return {op.digest for op in self.ops if op.kind == "write" and op.outcome != FAILED}

    def _effects(self, name: str) -> list[tuple[ContendedOp, States]]:
        """Each operation that may have set ``name``, with the states it may have left."""
        out: list[tuple[ContendedOp, States]] = []
        # a rename moves whatever its source held: any payload, or what an interrupted
        # write left there
        interrupted = any(op.kind == "write" and op.outcome == UNKNOWN for op in self.ops)
        anything = frozenset(self.payloads() | ({ANY} if interrupted else set()))
        for op in self.ops:
            if op.outcome == FAILED:
                continue
            if op.kind == "write" and op.path == name:
                out.append((op, frozenset({op.digest if op.outcome == OK else ANY})))
            elif op.kind in ("delete", "rename") and op.path == name:
                out.append((op, frozenset({ABSENT})))
            elif op.kind == "rename" and op.dst == name:
                out.append((op, anything))
        return out

    def allowed(self, name: str) -> States:
        """The states ``name`` may end in: the effect of any operation on it that no
        acknowledged operation setting it started after; the initial absence while no
        operation on it is acknowledged."""
        effects = self._effects(name)
        acked = [op for op, _ in effects if op.outcome == OK]
        states: set[str] = set()
        if not acked:
            states.add(ABSENT)
        for op, effect in effects:
            if not any(later.start > op.end for later in acked):
                states |= effect
        return frozenset(states)


def _check(path: str, allowed: States, found: str, label: str) -> Violation | None:
    if ANY in allowed or found in allowed:
        return None
    if found == ABSENT:
        return Violation("missing", path, f"{label} file is gone", sorted(allowed), found)
    if ABSENT in allowed and len(allowed) == 1:
        return Violation("present", path, f"{label} deleted name exists", sorted(allowed), found)
    return Violation("content", path, f"{label} file has other content", sorted(allowed), found)


@dataclass
class Checked:
    files: int = 0
    """Names that must hold an acknowledged file (their MD5 compared)."""
    absent: int = 0
    """Names that must not exist (deleted, renamed away)."""
    uncertain: int = 0
    """Names left by an operation whose outcome is unknown: not checked."""
    contended: int = 0
    """Names several workers raced on, checked against every order their history allows."""
    bytes: int = 0

    def as_json(self) -> dict[str, int]:
        return dict(self.__dict__)


def verify(
    expected: Expected,
    contended: ContendedLog,
    observe: Callable[[str], tuple[str, int]],
    listed: Iterable[str] = (),
    uncertain: Iterable[str] = (),
) -> tuple[Checked, list[Violation]]:
    """Compare the cluster with what was acknowledged. ``observe(path)`` returns the name's
    state as found (:data:`ABSENT` or the MD5 of its content) and its size; it raises when the
    name cannot be read (a violation: the cluster has settled). ``listed``: every name found
    under the run's directories (a name no operation touched is a violation). ``uncertain``:
    names an operation still under way may change (not checked)."""
    checked = Checked()
    skip = set(uncertain)
    violations = list(expected.violations)
    seen: dict[str, str] = {}
    for path, allowed in sorted(expected.states.items()):
        if ANY in allowed or path in skip:
            checked.uncertain += 1
            continue
        found, size = _observe(observe, path, violations, sorted(allowed))
        if found is None:
            continue
        if ABSENT in allowed and len(allowed) == 1:
            checked.absent += 1
        else:
            checked.files += 1
            checked.bytes += size
        v = _check(path, allowed, found, "an acknowledged" if ABSENT not in allowed else "a")
        if v is not None:
            violations.append(v)
    for name in sorted(contended.names()):
        allowed = contended.allowed(name)
        if ANY in allowed or name in skip:
            checked.uncertain += 1
            continue
        checked.contended += 1
        found, size = _observe(observe, name, violations, sorted(allowed))
        if found is None:
            continue
        v = _check(name, allowed, found, "a contended")
        if v is not None:
            violations.append(v)
        elif found != ABSENT:
            other = seen.get(found)
            if other is not None:
                detail = f"the payload written once is also at {other}"
                violations.append(Violation("duplicate", name, detail, [other], found))
            seen[found] = name
    known = set(expected.states) | contended.names()
    for path in sorted(set(listed) - known):
        violations.append(Violation("unexpected", path, "a name no operation created", [], "?"))
    names = contended.names()
    for v in violations:
        if v.path in names:
            v.history = contended.history(v.path, expected.epoch)[-12:]
        elif not v.history:
            v.history = expected.history.get(v.path, [])[-12:]
    return checked, violations


def _observe(
    observe: Callable[[str], tuple[str, int]],
    path: str,
    violations: list[Violation],
    allowed: list[str],
) -> tuple[str | None, int]:
    try:
        return observe(path)
    except Exception as exc:
        violations.append(
            Violation("unreadable", path, f"{type(exc).__name__}: {exc}", allowed, "error")
        )
        return None, 0
