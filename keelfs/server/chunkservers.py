"""Chunk server processes on 127.0.0.1, for tests and benchmarks.

::

    with LocalChunkServers(tmp_path, n=3, server_args=("--no-fsync-on-close",)) as cs:
        cs.addresses                 # ["127.0.0.1:PORT", ...], fixed across restarts
        cs.kill9(1)                  # SIGKILL server 1 (0-based)
        cs.restart(1)                # same id, port and data directory

Each server ``i`` is ``cs<i>`` of a ``keelfs.server.layout.Layout`` (its own, or that of the
metadata cluster it reports to: :meth:`LocalChunkServers.in_layout`), living in
``root/cs<i>/`` (``data/``, ``stdout.log`` with the READY line, ``stderr.log``) and started by
the layout's command (``keelfs chunkserver``). Processes are started with
``keelfs.runtime.processes.spawn_tracked`` and killed by pid in ``stop_all()`` (called by
``__exit__``, also when the block raised).
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from keelfs.runtime.processes import (
    ClusterError,
    Launcher,
    hard_kill,
    read_ready_line,
    spawn_tracked,
)
from keelfs.server.layout import Layout, LoopbackAddresses, ProcessSpec

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
        layout: Layout | None = None,
    ) -> None:
        """``n`` servers of ``layout`` (default: a layout of their own in ``root`` on
        127.0.0.1, reporting to no master); ``server_args`` are added to every command."""
        self.layout = layout or Layout(Path(root), LoopbackAddresses())
        self.root = self.layout.root
        self.start_timeout_s = start_timeout_s
        self.specs: list[ProcessSpec] = self.layout.add_chunk_servers(n, server_args)
        self.addresses = [spec.client_address for spec in self.specs]
        self.ready: list[dict[str, Any]] = [{} for _ in range(n)]
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    @classmethod
    def in_layout(
        cls, layout: Layout, n: int = 3, *, server_args: tuple[str, ...] = ()
    ) -> LocalChunkServers:
        """``n`` more chunk servers of ``layout`` (they report to its config servers)."""
        return cls(layout.root, n, server_args=server_args, layout=layout)

    def directory(self, i: int) -> Path:
        return self.specs[i].directory

    def data_dir(self, i: int) -> Path:
        return self.specs[i].data_dir

    def start(self, extra_args: dict[int, tuple[str, ...]] | None = None) -> LocalChunkServers:
        extra_args = extra_args or {}
        for i in range(len(self.specs)):
            self._spawn(i, extra_args.get(i, ()))
        for i in range(len(self.specs)):
            self._await_ready(i)
        return self

    def _spawn(self, i: int, extra: tuple[str, ...] = ()) -> None:
        spec = self.specs[i]
        spec.directory.mkdir(parents=True, exist_ok=True)
        cmd = self.layout.command(spec, extra)
        self._procs[i] = spawn_tracked(cmd, spec.stdout_path, spec.log_path, " ".join(cmd[3:]))

    def _await_ready(self, i: int) -> dict[str, Any]:
        proc = self._procs[i]
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            ready = read_ready_line(self.specs[i].stdout_path)
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

    def pids(self) -> list[int]:
        """The pids of the chunk servers running now."""
        return [p.pid for p in self._procs.values() if p.poll() is None]

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
        path = self.specs[i].log_path
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
