"""Running the ``keelfs`` command as a user would, from tests, and cleaning up after it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from keelfs.server.local_cluster import load_state

__all__ = ["keelfs_command", "kill_recorded"]


def keelfs_command(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``keelfs ARGS...`` in a child process (this interpreter), its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "keelfs.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def kill_recorded(directory: Path) -> None:
    """SIGKILL every process a local cluster's state file in ``directory`` names that is still
    that process (a test's last resort when ``keelfs local-cluster down`` could not run)."""
    try:
        state = load_state(directory)
    except Exception:  # noqa: BLE001  # an unreadable state file names nothing to kill
        return
    for p in state.alive() if state is not None else []:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGKILL)
