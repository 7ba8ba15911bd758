"""A test that cannot run skips on a developer's machine and fails under CI=true."""

from __future__ import annotations

import pytest

from keelfs.testing.environment import cannot_run


def test_cannot_run_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs root"):
        cannot_run("needs root")


@pytest.mark.parametrize("value", ["true", "1", "TRUE"])
def test_cannot_run_fails_under_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="must run under CI.*needs root"):
        cannot_run("needs root")
