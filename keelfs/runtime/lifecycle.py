"""The one lifecycle of every keelfs process that serves (``keelfs server``, ``master``,
``config-server``, ``chunkserver`` and the replicated KV server):

- logs go to stderr (:func:`configure_logging`, one format with the process's tag);
- once it serves, one line ``READY {json}`` on stdout (:func:`announce_ready`): the json holds
  at least its ``pid``; launchers wait for it (``keelfs.runtime.processes.read_ready_line``);
- SIGTERM or SIGINT stop it gracefully (:func:`stop_on_signals`): it stops serving, closes its
  stores and exits with status 0;
- if a task it cannot live without ends (fail-stop: a node whose Raft loop or reporting died
  must not keep answering clients as if all were well), or it cannot start at all, it exits
  with status 1 and the last line on stderr is ``keelfs <role>: failed: <one-line reason>``
  (the traceback is logged above it);
- settings it cannot use stop it before anything starts, with status 2 (the command line's
  usage error);
- a task it can live without (a master's trash emptier, its block maintenance) is restarted
  when it fails (:func:`keep_running`): logged with its traceback, never silently gone.

:func:`run_process` runs a process's ``serve`` coroutine under these rules.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from keelfs.runtime.requests import formatter

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "READY_PREFIX",
    "ProcessFailed",
    "announce_ready",
    "configure_logging",
    "keep_running",
    "one_line_reason",
    "run_process",
    "serve_until_stopped",
    "stop_on_signals",
    "until_stopped",
]

READY_PREFIX = "READY "
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
"""Bad settings, before anything started (click's and argparse's usage-error status)."""

log = logging.getLogger("keelfs.runtime.lifecycle")


class ProcessFailed(Exception):
    """The process cannot go on (a task it needs ended, or it could not start): exit 1."""


def configure_logging(level: str, tag: str, log_format: str = "text") -> None:
    """Logs to stderr, each line ``<time> <tag> <LEVEL> <logger>: <message>`` (``text``, with
    `` [rid=ID]`` under a request id) or one JSON object (``json``); ``keelfs.runtime.requests``
    has both formats."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format, tag))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def announce_ready(info: dict[str, Any]) -> None:
    """Print the ``READY {json}`` line (keys sorted) and flush it."""
    print(READY_PREFIX + json.dumps(info, sort_keys=True), flush=True)


def stop_on_signals() -> asyncio.Event:
    """An event that SIGTERM and SIGINT set: the running loop's request to stop gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def until_stopped(
    stop: asyncio.Event, tasks: Iterable[asyncio.Task[Any]]
) -> tuple[str, BaseException | None] | None:
    """Wait until ``stop`` is set (None) or one of ``tasks`` ends: then its name and the
    exception it ended with (None if it returned or was cancelled)."""
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
    if stopping in done:
        return None
    stopping.cancel()
    failed = next(iter(done))
    return failed.get_name(), None if failed.cancelled() else failed.exception()


async def serve_until_stopped(stop: asyncio.Event, tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Return when ``stop`` is set; :class:`ProcessFailed` (caused by what the task raised)
    if one of ``tasks`` ends first."""
    failed = await until_stopped(stop, tasks)
    if failed is not None:
        name, exc = failed
        raise ProcessFailed(f"{name} stopped: {exc!r}") from exc


RESTART_PAUSE_S = (1.0, 30.0)
"""A failed background loop waits the first figure before it starts again, doubling each
time it fails again soon after, up to the second."""


async def keep_running(
    name: str,
    loop: Callable[[], Awaitable[None]],
    pause_s: tuple[float, float] = RESTART_PAUSE_S,
) -> None:
    """Run ``loop()`` (a coroutine meant to run until cancelled) and start it again whenever
    it fails, after a pause. Why: a background loop of a process that serves on without it
    (a master's trash emptier, its maintenance, its resharding) ended on the first error it
    did not expect, and nothing noticed — the task held its exception unread, the process
    served on, and that work stopped for good (the trash emptier, started a moment before the
    shard map arrived, died on "the map has no shards" and never emptied the trash). Each
    failure is logged at ERROR with its traceback; a loop that returns is done."""
    first, most = pause_s
    pause = first
    while True:
        started = time.monotonic()
        try:
            await loop()
            return
        except Exception:  # noqa: BLE001  # anything but a cancel: the loop must not die unseen
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # cancelled, and the loop turned it into another error: stop anyway
            if time.monotonic() - started > most:
                pause = first  # it ran a while: a new failure, not the same one again
            log.exception("%s failed; starting it again in %.1f s", name, pause)
        await asyncio.sleep(pause)
        pause = min(most, pause * 2)


def one_line_reason(exc: BaseException) -> str:
    """What went wrong, on one line: the message of a :class:`ProcessFailed` or an
    ``OSError`` (an address in use, a data directory held), else the type and message."""
    text = str(exc) if isinstance(exc, ProcessFailed | OSError) else f"{type(exc).__name__}: {exc}"
    return " | ".join(line.strip() for line in text.splitlines() if line.strip()) or repr(exc)


def run_process(role: str, serve: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Run ``serve()`` to its end; the exit status: 0 when it returned (a graceful stop), 1
    when it raised (the traceback logged, then ``keelfs <role>: failed: <reason>`` as the
    last line on stderr)."""
    try:
        asyncio.run(serve())
    except Exception as exc:  # noqa: BLE001  # every failure ends the process the same way
        log.critical("%s stopped on a failure", role, exc_info=exc)
        print(f"keelfs {role}: failed: {one_line_reason(exc)}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    return EXIT_OK
