"""The benchmarks' CPU meter per group of processes (``keelfs.bench.common.CpuByGroup``)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from keelfs.bench.common import CpuByGroup


@pytest.mark.process
def test_cpu_per_operation_is_told_per_group_and_a_gone_process_is_left_out() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    try:
        meter = CpuByGroup({"busy": [busy.pid], "idle": [idle.pid], "gone": [gone.pid]})
        time.sleep(0.3)  # both children past their start-up
        before = meter.reading()
        time.sleep(0.5)
        after = meter.reading()
    finally:
        for p in (busy, idle):
            p.kill()
            p.wait()
    assert gone.pid not in before
    per_op = meter.per_op_us(before, after, 10)
    assert per_op["gone"] == 0.0
    assert per_op["idle"] < 2_000  # < 20 ms of CPU in 0.5 s, per op of 10
    assert per_op["busy"] > 10_000  # > 0.1 s of CPU in 0.5 s (a second core may be busy)
