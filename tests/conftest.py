"""Fixtures and hooks for every test.

Tiers (``keelfs.testing.tiers``): a test that uses a fixture decorated with
``starts_processes``, or is marked ``pytest.mark.process``, is in the process tier, which
``scripts/check --fast`` leaves out; any other test that starts a process fails, naming the
marker.

The state a user's CLI keeps (``$XDG_STATE_HOME/keelfs``: where the running ``keelfs
local-cluster`` is) lives in a directory of the test session's own, so that no test reads or
overwrites the user's, and ``$KEELFS_ADDRESS`` from the user's shell points no test elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

from keelfs.testing.tiers import guard_processes, mark_process_tests, running

pytest_plugins = ["pytester"]  # tests/testing/test_tiers.py runs pytest on small suites
_lift_guard: Callable[[], None] | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _lift_guard
    _lift_guard = guard_processes()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _lift_guard is not None:
        _lift_guard()


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mark_process_tests(items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[Any]:
    with running(item):
        return (yield)


@pytest.fixture(scope="session", autouse=True)
def _own_cli_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("xdg-state")))
        mp.delenv("KEELFS_ADDRESS", raising=False)
        yield
