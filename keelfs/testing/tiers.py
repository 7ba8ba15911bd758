"""The test suite's two tiers: in-process tests, and tests that start real processes.

``scripts/check --fast`` runs lint, types and the in-process tier for the edit loop, less the
few in-process tests marked ``slow`` (long sweeps): ``-m "not process and not slow"``;
``scripts/check`` (what CI runs) runs everything. A test is in the process tier when

- a fixture it uses, directly or through other fixtures, is decorated with
  :func:`starts_processes` (the clusters of ``tests/*/conftest.py``): the fixture marks every
  test that uses it, so a new test on an old fixture needs no marker; or
- it, its class or its module is marked ``pytest.mark.process`` (tests that run a command or a
  server themselves).

Nothing else may start a Python process (a keelfs server, the CLI, a benchmark): while a test
outside the tier runs (its fixtures included), ``subprocess.Popen`` of this interpreter or of a
script beside it fails the test at once with a message naming the marker
(:func:`guard_processes`), so a process test cannot slip into the fast tier unnoticed. A system
tool a library runs for itself (``ctypes`` asking ``ldconfig``) is not the guard's business.
``tests/conftest.py`` wires these into pytest's hooks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest

__all__ = ["PROCESS", "guard_processes", "mark_process_tests", "running", "starts_processes"]

PROCESS = "process"
"""The marker of the process tier."""

F = TypeVar("F", bound=Callable[..., Any])

_ATTRIBUTE = "keelfs_starts_processes"
_current: pytest.Item | None = None


def starts_processes(fixture_function: F) -> F:
    """Declare that a fixture starts processes: every test that uses it is in the process
    tier. Put it under ``@pytest.fixture``."""
    setattr(fixture_function, _ATTRIBUTE, True)
    return fixture_function


def _uses_process_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(
        getattr(definition.func, _ATTRIBUTE, False)
        for definitions in info.name2fixturedefs.values()
        for definition in definitions
    )


def mark_process_tests(items: list[pytest.Item]) -> None:
    """Mark ``process`` every collected test that uses a :func:`starts_processes` fixture."""
    for item in items:
        if item.get_closest_marker(PROCESS) is None and _uses_process_fixture(item):
            item.add_marker(PROCESS)


@contextmanager
def running(item: pytest.Item) -> Iterator[None]:
    """While ``item`` runs (setup, call, teardown): the test :func:`guard_processes` checks."""
    global _current
    previous, _current = _current, item
    try:
        yield
    finally:
        _current = previous  # a test that runs pytest inside (pytester) gets its own back


def _program(command: Any) -> str:
    if isinstance(command, str | bytes | os.PathLike):
        first = os.fsdecode(command).split(maxsplit=1)
        return first[0] if first else ""
    parts = list(command) if command is not None else []
    return os.fsdecode(parts[0]) if parts else ""


def _is_python(program: str) -> bool:
    """Whether ``program`` is a Python process: this interpreter, another ``python*``, or a
    script installed beside this interpreter (``keelfs``)."""
    if os.sep not in program:
        program = shutil.which(program) or program
    return (
        os.path.basename(program).startswith("python")
        or program == sys.executable
        or os.path.dirname(os.path.abspath(program)) == os.path.dirname(sys.executable)
    )


def guard_processes() -> Callable[[], None]:
    """Make ``subprocess.Popen`` of a Python process fail a running test outside the process
    tier; returns the function that lifts the guard."""
    original = subprocess.Popen.__init__

    def guarded(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
        item = _current
        command = args[0] if args else kwargs.get("args")
        if (
            item is not None
            and item.get_closest_marker(PROCESS) is None
            and _is_python(_program(command))
        ):
            pytest.fail(
                f"{item.nodeid} starts a process ({command!r}) but is not in the process tier: "
                "decorate the fixture that starts it with keelfs.testing.tiers.starts_processes, "
                "or mark the test pytest.mark.process (scripts/check --fast leaves those out)",
                pytrace=False,
            )
        original(self, *args, **kwargs)

    subprocess.Popen.__init__ = guarded  # type: ignore[method-assign]

    def lift() -> None:
        subprocess.Popen.__init__ = original  # type: ignore[method-assign]

    return lift
