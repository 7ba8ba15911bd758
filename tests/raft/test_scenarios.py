"""Golden-output Raft scenarios: every ``testdata/*.txt`` is a script for
``keelfs.testing.scenario`` (see its docstring for the commands and the file format).

A mismatch fails with a unified diff of the whole file. After an intended change, rewrite the
files with ``pytest tests/raft --rewrite`` (or ``KEELFS_REWRITE=1``) and read the diff: the
golden output is the assertion, so check that it still shows correct Raft behaviour.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from keelfs.testing.scenario import check_file

TESTDATA = Path(__file__).resolve().parent / "testdata"
SCRIPTS = sorted(TESTDATA.glob("*.txt"))


def _rewrite(config: pytest.Config) -> bool:
    try:
        flag = bool(config.getoption("--rewrite"))
    except ValueError:  # option not registered: conftest not loaded as an initial conftest
        flag = False
    return flag or os.environ.get("KEELFS_REWRITE", "") not in ("", "0")


def test_scripts_exist() -> None:
    assert SCRIPTS, f"no scenario scripts in {TESTDATA}"


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_scenario(path: Path, pytestconfig: pytest.Config) -> None:
    diff = check_file(path, rewrite=_rewrite(pytestconfig))
    if diff:
        pytest.fail(
            "scenario output differs (rerun with --rewrite to accept):\n" + diff,
            pytrace=False,
        )
