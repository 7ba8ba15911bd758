"""Fixtures and hooks for every test.

Tiers (``keelfs.testing.tiers``): a test that uses a fixture decorated with
``starts_processes``, or is marked ``pytest.mark.process``, is in the process tier, which
``scripts/check --fast`` leaves out; any other test that starts a process fails, naming the
marker.

The files with long tests are collected first, whole (``keelfs.testing.schedule``):
``scripts/check`` hands files out in that order, each to one worker (its cluster starts once).

The state a user's CLI keeps (``$XDG_STATE_HOME/keelfs``: where the running ``keelfs
local-cluster`` is) lives in a directory of the test session's own, so that no test reads or
overwrites the user's, and ``$KEELFS_ADDRESS`` from the user's shell points no test elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

from keelfs.testing.schedule import long_tests_first
from keelfs.testing.tiers import guard_processes, mark_process_tests, running

pytest_plugins = ["pytester"]  # tests/testing/test_tiers.py runs pytest on small suites
_lift_guard: Callable[[], None] | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _lift_guard
    _lift_guard = guard_processes()
    _keep_grpc_aio_initialised()


def _keep_grpc_aio_initialised() -> None:
    """Keep one grpc-aio object alive for the whole life of this (worker) process.

    grpc-aio counts its objects and, when the last one goes, shuts its process-wide completion
    queue down, waiting until every operation on it has finished. A server left running when
    its test's event loop closed keeps operations on that queue for ever: the shutdown then
    waits for ever, in whichever later test happens to drop the last grpc-aio object (twice
    today: ``test_large_snapshot_chunks_pass`` hung at its start, inside
    ``AioServer.__dealloc__ -> shutdown_grpc_aio -> PollerCompletionQueue.shutdown``). With
    one channel that never goes, the queue is never shut down. The channel lives in a daemon
    thread's frame, blocked on its own event loop: not even the interpreter's exit frees it
    (which would run the same shutdown)."""
    import asyncio
    import threading

    import grpc.aio

    ready = threading.Event()

    def keep() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        channel = grpc.aio.insecure_channel("127.0.0.1:9")  # never used: it only exists
        ready.set()
        loop.run_forever()
        del channel  # (never reached)

    threading.Thread(target=keep, name="grpc-aio-keeper", daemon=True).start()
    ready.wait(30)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _lift_guard is not None:
        _lift_guard()


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mark_process_tests(items)
    long_tests_first(items)


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
