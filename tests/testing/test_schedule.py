"""The order files are handed to xdist's workers in (``keelfs.testing.schedule``): the files
with a slow test first, then those with a process test, then the others; each file whole and
in its order."""

from __future__ import annotations

import pytest

from keelfs.testing.schedule import long_tests_first


def test_files_with_long_tests_come_first_each_whole_and_in_order(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini("[pytest]\nmarkers =\n    process: starts processes\n    slow: long\n")
    pytester.makepyfile(
        test_a="def test_a1():\n    pass\n\ndef test_a2():\n    pass\n",
        test_b="import pytest\n\ndef test_b1():\n    pass\n\n"
        "@pytest.mark.process\ndef test_b2():\n    pass\n",
        test_c="import pytest\n\n@pytest.mark.slow\ndef test_c1():\n    pass\n\n"
        "def test_c2():\n    pass\n",
        test_d="def test_d1():\n    pass\n",
    )
    items, _ = pytester.inline_genitems()
    long_tests_first(items)
    assert [item.name for item in items] == [
        "test_c1", "test_c2",  # a slow test: the whole file first, in its order
        "test_b1", "test_b2",  # a process test
        "test_a1", "test_a2", "test_d1",  # the others, in collection order
    ]  # fmt: skip
