"""What a test does when this machine cannot run it.

On a developer's machine a test that needs root, network namespaces or a browser skips
itself with the reason. Under ``CI=true`` the same test FAILS: CI runs as root with every
tool ``.ci/run`` installs, so a test that cannot run there means a broken setup, and a skip
would hide that the failure tests (partitions, the dashboard in a browser) never ran.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = ["in_ci", "cannot_run"]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def cannot_run(why: str) -> NoReturn:
    """Skip the calling test (``why`` says what is missing), or fail it under CI."""
    if in_ci():
        pytest.fail(f"this test must run under CI but cannot: {why}", pytrace=False)
    pytest.skip(why)
