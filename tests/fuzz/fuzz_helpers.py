"""Fixtures of the fuzzing suite (issue [9]): hostile bytes and random-but-valid messages.

``fuzz_settings(n)``: hypothesis settings with ``n`` examples, or ``KEELFS_FUZZ_EXAMPLES`` when
set (a longer hunt than the CI-sized default), no deadline (the machines these tests share are
slow at times) and no example database (the runs stay independent of earlier ones).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings


def fuzz_settings(examples: int) -> settings:
    override = os.environ.get("KEELFS_FUZZ_EXAMPLES")
    return settings(
        max_examples=int(override) if override else examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
