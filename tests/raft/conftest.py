"""Options for the Raft scenario tests.

``pytest tests/raft --rewrite`` rewrites ``tests/raft/testdata/*.txt`` with the actual output
(this option is known only when pytest is pointed at this directory or a file in it; from
elsewhere set ``KEELFS_REWRITE=1`` instead).
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--rewrite",
        action="store_true",
        default=False,
        help="rewrite the Raft scenario golden files (tests/raft/testdata) with actual output",
    )
