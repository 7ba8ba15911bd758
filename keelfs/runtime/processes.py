"""Processes a keelfs command starts and must end: spawned in their own session, tracked
by pid, killed (with their process group) by whoever started them or, failing that, when this
process exits; and the ``READY {json}`` line by which a server says it is serving.

Used by every launcher of real processes: ``keelfs local-cluster``, the benchmarks and the
test fixtures.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

__all__ = [
    "ClusterError",
    "Launcher",
    "free_ports",
    "hard_kill",
    "read_ready_line",
    "spawn",
    "spawn_tracked",
    "wait_until",
]

T = TypeVar("T")

_LIVE: dict[int, subprocess.Popen[bytes]] = {}
_LIVE_LOCK = threading.Lock()


def _kill_leftovers() -> None:
    with _LIVE_LOCK:
        procs = list(_LIVE.values())
        _LIVE.clear()
    for p in procs:
        _hard_kill(p)


atexit.register(_kill_leftovers)


def _hard_kill(p: subprocess.Popen[bytes]) -> None:
    """SIGKILL one process we started (and its process group: it leads its own session)."""
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            p.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(timeout=10)


def spawn(
    cmd: list[str], stdout_path: Path, stderr_path: Path, banner: str = ""
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session, with no terminal and this checkout on
    ``PYTHONPATH``: stdout replaces ``stdout_path``, stderr is appended to ``stderr_path``
    after ``banner``. Nobody ends it but its caller (``keelfs local-cluster`` starts daemons
    this way); :func:`spawn_tracked` for a process this one must not outlive."""
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    with stdout_path.open("wb") as fout, stderr_path.open("ab") as ferr:
        ferr.write(f"\n=== {banner} at {time.time():.3f}\n".encode())
        ferr.flush()
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=fout,
            stderr=ferr,
            env=env,
            start_new_session=True,
        )


def spawn_tracked(
    cmd: list[str], stdout_path: Path, stderr_path: Path, banner: str = ""
) -> subprocess.Popen[bytes]:
    """:func:`spawn`, tracked: the ``atexit`` hook kills it if nobody did (use
    :func:`hard_kill`)."""
    proc = spawn(cmd, stdout_path, stderr_path, banner)
    with _LIVE_LOCK:
        _LIVE[proc.pid] = proc
    return proc


def hard_kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process started by :func:`spawn_tracked` (and its group), and forget it."""
    _hard_kill(proc)
    with _LIVE_LOCK:
        _LIVE.pop(proc.pid, None)


def read_ready_line(stdout_path: Path) -> dict[str, Any] | None:
    """The JSON of the ``READY {json}`` line a server printed, if it has."""
    for line in stdout_path.read_text(errors="replace").splitlines():
        if line.startswith("READY "):
            ready: dict[str, Any] = json.loads(line[len("READY ") :])
            return ready
    return None


class ClusterError(RuntimeError):
    """A node did not start, or the cluster did not reach the awaited state in time."""


_PORT_FLOOR = 10_000  # below: ports that well-known services tend to claim


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range of ports for outgoing connections (Linux; a common default elsewhere)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _worker_slice(floor: int, low: int) -> tuple[int, int]:
    """``[floor, low)``, or this test worker's share of it when pytest-xdist runs several
    (``PYTEST_XDIST_WORKER`` ``gwN`` of ``PYTEST_XDIST_WORKER_COUNT``). Why: a port checked
    free here may be taken before the server binds it by another worker's process — most
    often a node that worker killed and restarts on its old port, which was free meanwhile —
    and the start fails ("address already in use"); workers drawing from disjoint ranges
    never collide so."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    try:
        index, count = int(worker.removeprefix("gw")), int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    except (KeyError, ValueError):
        return floor, low
    if not 0 <= index < count:
        return floor, low
    width = (low - floor) // count
    return floor + index * width, floor + (index + 1) * width


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports that were free a moment ago, for servers to bind soon after.

    Why not port 0: the kernel hands out a free port from its ephemeral range, and between our
    releasing it and the server binding it any outgoing connection of this machine (a client of
    another test) may take it as its local port — "address already in use" once in a few
    thousand starts. Ports below the ephemeral range are never taken that way, so they are
    drawn at random from there (and checked bindable); port 0 is the fallback where that range
    is too small.
    """
    floor, low = _worker_slice(_PORT_FLOOR, _ephemeral_range()[0])
    socks: list[socket.socket] = []
    rng = random.SystemRandom()
    try:
        tries = 0
        while len(socks) < n:
            tries += 1
            below_ephemeral = low - floor > 1000 and tries < 200
            port = rng.randrange(floor, low) if below_ephemeral else 0
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((host, port))
            except OSError:
                s.close()
                continue
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


class Launcher(ABC):
    """Something that starts real processes: used as a context manager it starts them and
    ends every one it started when the block ends, also when starting failed half-way."""

    @abstractmethod
    def start(self) -> Self: ...

    @abstractmethod
    def stop_all(self) -> None: ...

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop_all()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


def wait_until(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    context: Callable[[], str] = lambda: "",
) -> T:
    """Poll ``probe`` until it returns something other than None or False, and return that.

    An exception from the probe counts as "not yet" (a node still starting), except a failed
    ``assert``: that is the probe's verdict, raised at once rather than swallowed by the wait.
    After ``timeout`` seconds: ``ClusterError(what)``, with the probe's last error and
    ``context()`` (e.g. every node's state) appended."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        try:
            result = probe()
        except AssertionError:
            raise
        except Exception as exc:  # noqa: BLE001  # not yet: see the docstring
            result, last_error = None, f"; last error: {type(exc).__name__}: {exc}"
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            raise ClusterError(f"{what}{last_error}{context()}")
        time.sleep(0.05)
