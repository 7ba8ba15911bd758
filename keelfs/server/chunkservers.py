"""Chunk server processes on 127.0.0.1, for tests and benchmarks.

::

    with LocalChunkServers(tmp_path, n=3, server_args=("--no-fsync-on-close",)) as cs:
        cs.addresses                 # ["127.0.0.1:PORT", ...], fixed across restarts
        cs.kill9(1)                  # SIGKILL server 1 (0-based)
        cs.restart(1)                # same id, port and data directory

Each server ``i`` lives in ``root/cs<i>/`` (``data/``, ``stdout.log`` with the READY line,
``stderr.log``). Processes are started with ``keelfs.runtime.processes.spawn_tracked`` and
killed by pid in ``stop_all()`` (called by ``__exit__``, also when the block raised).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from keelfs.runtime.processes import (
    ClusterError,
    Launcher,
    free_ports,
    hard_kill,
    read_ready_line,
    spawn_tracked,
)

__all__ = ["LocalChunkServers"]


class LocalChunkServers(Launcher):
    """``n`` chunk server processes (see the module docstring)."""

    def __init__(
        self,
        root: Path,
        n: int = 3,
        *,
        server_args: tuple[str, ...] = (),
        start_timeout_s: float = 30.0,
    ) -> None:
        self.root = Path(root)
        self.server_args = tuple(server_args)
        self.start_timeout_s = start_timeout_s
        self.addresses = [f"127.0.0.1:{p}" for p in free_ports(n)]
        self.ready: list[dict[str, Any]] = [{} for _ in range(n)]
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    def directory(self, i: int) -> Path:
        return self.root / f"cs{i}"

    def data_dir(self, i: int) -> Path:
        return self.directory(i) / "data"

    def start(self, extra_args: dict[int, tuple[str, ...]] | None = None) -> LocalChunkServers:
        extra_args = extra_args or {}
        for i in range(len(self.addresses)):
            self._spawn(i, extra_args.get(i, ()))
        for i in range(len(self.addresses)):
            self._await_ready(i)
        return self

    def _spawn(self, i: int, extra: tuple[str, ...] = ()) -> None:
        directory = self.directory(i)
        directory.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "keelfs.server.chunkserver",
            "--data",
            str(self.data_dir(i)),
            "--listen",
            self.addresses[i],
            "--server-id",
            f"cs{i}",
            *self.server_args,
            *extra,
        ]
        self._procs[i] = spawn_tracked(
            cmd, directory / "stdout.log", directory / "stderr.log", " ".join(cmd[3:])
        )

    def _await_ready(self, i: int) -> dict[str, Any]:
        proc = self._procs[i]
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            ready = read_ready_line(self.directory(i) / "stdout.log")
            if ready is not None:
                self.ready[i] = ready
                return ready
            if proc.poll() is not None:
                raise ClusterError(
                    f"chunk server {i} exited with {proc.returncode}:\n{self.log_tail(i)}"
                )
            time.sleep(0.02)
        raise ClusterError(f"chunk server {i} not READY in {self.start_timeout_s} s")

    def pid(self, i: int) -> int:
        return self._procs[i].pid

    def kill9(self, i: int) -> None:
        proc = self._procs.pop(i, None)
        if proc is not None:
            hard_kill(proc)

    def terminate(self, i: int, timeout_s: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit status (SIGKILL after ``timeout_s``)."""
        proc = self._procs.pop(i)
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            hard_kill(proc)
            return proc.returncode
        finally:
            hard_kill(proc)  # forget it (a no-op on an exited process)

    def restart(self, i: int, extra: tuple[str, ...] = ()) -> dict[str, Any]:
        self.kill9(i)
        self._spawn(i, extra)
        return self._await_ready(i)

    def stop_all(self) -> None:
        for i in list(self._procs):
            self.kill9(i)

    def log_tail(self, i: int, lines: int = 40) -> str:
        path = self.directory(i) / "stderr.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
