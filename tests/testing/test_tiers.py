"""The test tiers (``keelfs.testing.tiers``): a fixture that starts processes puts every test
using it in the process tier, which ``-m "not process"`` (``scripts/check --fast``) leaves out;
a test outside the tier that starts a process fails, naming the marker."""

from __future__ import annotations

import pytest

CONFTEST = """
from collections.abc import Generator
from typing import Any

import pytest

from keelfs.testing.tiers import guard_processes, mark_process_tests, running, starts_processes

lift = None


def pytest_configure(config):
    global lift
    lift = guard_processes()


def pytest_unconfigure(config):
    lift()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    mark_process_tests(items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    with running(item):
        return (yield)


@pytest.fixture
@starts_processes
def server():
    return "a server"


@pytest.fixture
def client(server):
    return "a client of " + server
"""

TESTS = """
import subprocess
import sys

import pytest


def test_pure():
    assert 1 + 1 == 2


def test_through_another_fixture(client):
    assert client.endswith("a server")


@pytest.mark.process
def test_marked_runs_a_command():
    subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_unmarked_runs_a_command():
    subprocess.run([sys.executable, "-c", "pass"], check=True)
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\nmarkers =\n    process: starts processes\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_suite=TESTS)
    return pytester


def test_fast_tier_leaves_out_what_a_process_fixture_uses(suite: pytest.Pytester) -> None:
    result = suite.runpytest_inprocess("-m", "not process", "-q")
    result.assert_outcomes(passed=1, failed=1, deselected=2)  # pure, and the unmarked command
    result.stdout.fnmatch_lines(["*test_unmarked_runs_a_command starts a process*process tier*"])


def test_process_tier_is_the_fixtures_users_and_the_marked(suite: pytest.Pytester) -> None:
    result = suite.runpytest_inprocess("-m", "process", "-q")
    result.assert_outcomes(passed=2, deselected=2)
