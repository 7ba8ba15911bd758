"""Shared setup for ``tests/raft``.

- ``--rewrite``: ``pytest tests/raft --rewrite`` rewrites the scenario golden files
  (``tests/raft/testdata/*.txt``) with the actual output. The option is known only when pytest
  is pointed at this directory or a file in it; from elsewhere set ``KEELFS_REWRITE=1``.
- The project root and this directory go on ``sys.path``, so helper modules kept here import
  however pytest is launched (as in ``tests/transport/conftest.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
for _p in (str(_HERE.parents[1]), str(_HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--rewrite",
        action="store_true",
        default=False,
        help="rewrite the Raft scenario golden files (tests/raft/testdata) with actual output",
    )
