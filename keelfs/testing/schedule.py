"""The order the suite's files are handed to pytest-xdist's workers in (``scripts/check``:
``pytest -n 2 --dist loadfile --no-loadscope-reorder``).

**One file, one worker.** Many modules start one cluster for all their tests (a
``scope="module"`` fixture: a MetaCluster and its chunk servers, a gateway, ...). xdist's
default ``--dist load`` hands out runs of consecutive tests, smaller and smaller towards the
end: where a run ends inside such a module, the rest of it goes to the other worker, which
starts the cluster again (and a worker given the module's tests in two runs, another module's
between them, tears it down and starts it anew). ``--dist loadfile`` gives each file to one
worker, whole: each module's cluster starts once. (``--dist loadgroup`` with an
``xdist_group`` per module would group only those modules, but pytest-xdist 3.8 marks the
group in ``Item._nodeid``, which pytest 9 no longer reads: the groups are silently ignored.)

**Long files first.** Given a file per unit, xdist starts the files with the most tests first
(``--loadscope-reorder``): a file of a few long tests (a rolling restart, a chaos run, the
local cluster's up/stop/restart) then starts last and runs alone while the other worker has
nothing left. With ``--no-loadscope-reorder`` the files go in collection order, which
:func:`long_tests_first` makes: the files with a test marked ``slow``, then those of the
process tier (``keelfs.testing.tiers``: tests starting processes, seconds each), then the
in-process files (mostly milliseconds a test), which fill both workers up to the end.
"""

from __future__ import annotations

import pytest

from keelfs.testing.tiers import PROCESS

__all__ = ["long_tests_first"]

_SLOW = "slow"


def _file_of(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


def long_tests_first(items: list[pytest.Item]) -> None:
    """Reorder ``items`` in place, file by file: the files with a test marked ``slow``, then
    those with a ``process`` test, then the others (module doc). A stable sort that moves
    whole files, so a file's tests stay together and in their order (a module's fixture is
    set up once in a run without xdist too). Call it once the process tier is marked
    (``keelfs.testing.tiers.mark_process_tests``)."""

    def kind(item: pytest.Item) -> int:
        if item.get_closest_marker(_SLOW) is not None:
            return 0
        return 1 if item.get_closest_marker(PROCESS) is not None else 2

    file_rank: dict[str, int] = {}
    for item in items:
        path = _file_of(item)
        file_rank[path] = min(file_rank.get(path, 2), kind(item))
    items.sort(key=lambda item: file_rank[_file_of(item)])
