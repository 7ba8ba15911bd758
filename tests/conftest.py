"""Fixtures for every test.

The state a user's CLI keeps (``$XDG_STATE_HOME/keelfs``: where the running ``keelfs
local-cluster`` is) lives in a directory of the test session's own, so that no test reads or
overwrites the user's, and ``$KEELFS_ADDRESS`` from the user's shell points no test elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def _own_cli_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("xdg-state")))
        mp.delenv("KEELFS_ADDRESS", raising=False)
        yield
