"""The whole-cluster simulator (``keelfs.testing.clustersim``): a short sweep is clean, a seed
replays exactly, and a planted bug is caught."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from keelfs.testing.clustersim.world import Params, run_seed

ROOT = Path(__file__).resolve().parents[2]
SWEEP_SEEDS = range(12)
SECONDS = 2.0


@pytest.mark.parametrize("seed", SWEEP_SEEDS)
def test_seed_is_clean(seed: int) -> None:
    r = run_seed(seed, Params(seconds=SECONDS))
    assert r.error is None, (
        f"seed {seed}: {r.error}\nreplay: python -m keelfs.testing.clustersim "
        f"--seed {seed} --seconds {SECONDS} --trace"
    )
    assert r.ops > 20


def _digest(seed: int) -> str:
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(ROOT)}
    command = ["-m", "keelfs.testing.clustersim", "--seed", str(seed), "--seconds", "1.5"]
    out = subprocess.run(
        [sys.executable, *command],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    ).stdout
    m = re.search(r"digest ([0-9a-f]+)", out)
    assert m is not None, out
    return m.group(1)


def test_a_seed_replays_exactly() -> None:
    first, second = _digest(7), _digest(7)
    assert first == second
    assert _digest(8) != first
