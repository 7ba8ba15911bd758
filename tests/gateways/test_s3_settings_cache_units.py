"""The S3 gateway's cache of buckets' settings (``keelfs.gateways.s3.settings_cache``), in
process with a counting reader and a hand-moved clock: how long an entry is used, what
forgets it, and that a read overtaken by a change or a failed read is never kept."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keelfs.gateways.s3 import acl_ops, buckets, cors, objects, policy_ops
from keelfs.gateways.s3.app import _BUCKET_SETTINGS
from keelfs.gateways.s3.bucket_config import BucketConfig
from keelfs.gateways.s3.errors import S3Error
from keelfs.gateways.s3.settings_cache import SettingsCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Reader:
    """What the bucket's files say now (``policy``), and how many reads asked."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.policy: str | None = "first"
        self.reads = 0
        self.took = 0.0
        """Seconds of ``clock`` a read takes (it reads what was there when it began)."""
        self.gate: asyncio.Event | None = None
        """Set: a read waits for it (after reading) before it answers."""
        self.missing = False
        self.refuse: set[Any] = set()
        """Callers (``fs``) whose reads fail (settings they may not read)."""

    async def __call__(self, fs: Any, bucket: str) -> BucketConfig:
        self.reads += 1
        if self.missing:
            raise S3Error("NoSuchBucket", "The specified bucket does not exist")
        config = BucketConfig(bucket, "ann", self.policy)
        self.clock.now += self.took
        if self.gate is not None:
            await self.gate.wait()
        if fs in self.refuse:
            raise S3Error("AccessDenied", "Access Denied: the bucket's policy is unreadable")
        return config


def _cache(ttl: float = 1.0, **kw: Any) -> tuple[SettingsCache, Reader, Clock]:
    clock = Clock()
    reader = Reader(clock)
    return SettingsCache(ttl, read=reader, clock=clock, **kw), reader, clock


def _get(cache: SettingsCache, bucket: str = "b", **kw: Any) -> BucketConfig:
    return asyncio.run(cache.get(None, bucket, **kw))  # type: ignore[arg-type]


def test_kept_for_ttl_then_read_again() -> None:
    cache, reader, clock = _cache()
    assert _get(cache).policy_text == "first"
    reader.policy = "second"  # changed elsewhere: not seen while the entry is young
    clock.now += 0.99
    assert _get(cache).policy_text == "first" and reader.reads == 1
    clock.now += 0.01
    assert _get(cache).policy_text == "second" and reader.reads == 2


def test_age_counts_from_when_the_read_began() -> None:
    cache, reader, clock = _cache()
    reader.took = 0.6  # a slow read: what it says may be 0.6 s old when it answers
    _get(cache)
    reader.took = 0.0
    reader.policy = "second"
    clock.now += 0.4  # 1.0 s after the first read began
    assert _get(cache).policy_text == "second"


def test_invalidate_and_fresh_read_now() -> None:
    cache, reader, _ = _cache()
    _get(cache)
    reader.policy = "second"
    cache.invalidate("b")
    assert _get(cache).policy_text == "second" and reader.reads == 2
    reader.policy = "third"
    assert _get(cache, fresh=True).policy_text == "third"
    assert _get(cache).policy_text == "third" and reader.reads == 3  # the fresh read is kept


def test_other_buckets_are_kept_apart() -> None:
    cache, reader, _ = _cache()
    assert _get(cache, "a").bucket == "a" and _get(cache, "b").bucket == "b"
    cache.invalidate("a")
    _get(cache, "b")
    assert reader.reads == 2
    _get(cache, "a")
    assert reader.reads == 3


def test_a_read_overtaken_by_a_change_is_not_kept() -> None:
    """A read that began before this gateway changed the settings answers its own request
    but is not kept: the request after the change sees the change."""
    cache, reader, _ = _cache()

    async def scenario() -> tuple[str | None, str | None]:
        reader.gate = asyncio.Event()
        slow = asyncio.create_task(cache.get(None, "b"))  # type: ignore[arg-type]
        while reader.reads == 0:
            await asyncio.sleep(0)
        reader.policy = "second"  # the change is written, then the gateway forgets
        cache.invalidate("b")
        reader.gate.set()
        old = (await slow).policy_text
        reader.gate = None
        return old, (await cache.get(None, "b")).policy_text  # type: ignore[arg-type]

    assert asyncio.run(scenario()) == ("first", "second")
    assert reader.reads == 2
    assert not cache._generation and not cache._reading  # nothing left behind


async def _started(reader: Reader, reads: int) -> None:
    while reader.reads < reads:
        await asyncio.sleep(0)


def test_requests_finding_no_entry_share_the_read_under_way() -> None:
    cache, reader, _ = _cache()

    async def scenario() -> list[str | None]:
        reader.gate = asyncio.Event()
        waiting = [asyncio.create_task(cache.get(f"fs{i}", "b")) for i in range(8)]  # type: ignore[arg-type]
        await _started(reader, 1)
        for _ in range(3):
            await asyncio.sleep(0)
        reader.gate.set()
        return [(await task).policy_text for task in waiting]

    assert asyncio.run(scenario()) == ["first"] * 8
    assert reader.reads == 1


def test_no_request_after_a_change_joins_a_read_begun_before_it() -> None:
    cache, reader, _ = _cache()

    async def scenario() -> tuple[str | None, str | None]:
        reader.gate = asyncio.Event()
        before = asyncio.create_task(cache.get(None, "b"))  # type: ignore[arg-type]
        await _started(reader, 1)
        reader.policy = "second"
        cache.invalidate("b")
        after = asyncio.create_task(cache.get(None, "b"))  # type: ignore[arg-type]
        await _started(reader, 2)  # its own read, not the one under way
        reader.gate.set()
        return (await before).policy_text, (await after).policy_text

    assert asyncio.run(scenario()) == ("first", "second")


def test_no_request_joins_a_read_begun_ttl_or_more_ago() -> None:
    """A slow read (an election under it, say) says what was true when it began: a request
    arriving ``ttl`` after that reads for itself, as it would not use an entry that old."""
    cache, reader, clock = _cache()

    async def scenario() -> tuple[str | None, str | None]:
        reader.gate = asyncio.Event()
        slow = asyncio.create_task(cache.get(None, "b"))  # type: ignore[arg-type]
        await _started(reader, 1)
        reader.policy = "second"  # changed elsewhere meanwhile
        clock.now += 1.5
        later = asyncio.create_task(cache.get(None, "b"))  # type: ignore[arg-type]
        await _started(reader, 2)  # its own read, not the slow one
        reader.gate.set()
        return (await slow).policy_text, (await later).policy_text

    assert asyncio.run(scenario()) == ("first", "second")


def test_a_shared_read_that_fails_is_its_readers_failure_alone() -> None:
    """The first caller may not read the settings (``AccessDenied``): a caller waiting for
    its read reads for itself, and gets what the settings say."""
    cache, reader, _ = _cache()
    reader.refuse = {"mallory"}

    async def scenario() -> tuple[str, str | None]:
        reader.gate = asyncio.Event()
        first = asyncio.create_task(cache.get("mallory", "b"))  # type: ignore[arg-type]
        await _started(reader, 1)
        second = asyncio.create_task(cache.get("ann", "b"))  # type: ignore[arg-type]
        for _ in range(3):
            await asyncio.sleep(0)
        reader.gate.set()
        with pytest.raises(S3Error) as refused:
            await first
        return refused.value.code, (await second).policy_text

    assert asyncio.run(scenario()) == ("AccessDenied", "first")
    assert reader.reads == 2


def test_a_cancelled_request_does_not_cancel_the_read_others_wait_for() -> None:
    cache, reader, _ = _cache()

    async def scenario() -> str | None:
        reader.gate = asyncio.Event()
        first = asyncio.create_task(cache.get(None, "b"))  # type: ignore[arg-type]
        await _started(reader, 1)
        second = asyncio.create_task(cache.get(None, "b"))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        first.cancel()
        reader.gate.set()
        return (await second).policy_text

    assert asyncio.run(scenario()) == "first"
    assert reader.reads == 1


def test_failed_reads_are_not_kept() -> None:
    cache, reader, _ = _cache()
    reader.missing = True
    for _ in range(2):
        with pytest.raises(S3Error):
            _get(cache)
    reader.missing = False
    assert _get(cache).owner == "ann" and reader.reads == 3


def test_ttl_zero_keeps_nothing_and_capacity_bounds_what_is_kept() -> None:
    cache, reader, _ = _cache(ttl=0)
    _get(cache)
    _get(cache)
    assert reader.reads == 2
    cache, reader, _ = _cache(capacity=2)
    for bucket in ("a", "b", "c"):
        _get(cache, bucket)
    assert list(cache._entries) == ["b", "c"]
    _get(cache, "a")
    assert reader.reads == 4


def test_every_setting_writer_makes_the_gateway_forget() -> None:
    """Each operation that changes a bucket's settings is one the gateway forgets them
    after (its next request sees the change); reads are not."""
    for (verb, _), handler in _BUCKET_SETTINGS.items():
        assert (handler in policy_ops.SETTINGS_WRITERS) == (verb != "GET"), handler
    routed_elsewhere = {
        buckets.create_bucket, buckets.delete_bucket, buckets.put_bucket_versioning,
        cors.put_bucket_cors, cors.delete_bucket_cors, acl_ops.put_bucket_acl,
    }  # fmt: skip
    assert routed_elsewhere <= policy_ops.SETTINGS_WRITERS
    reads = {buckets.get_bucket_versioning, cors.get_bucket_cors, objects.put_object}
    assert not reads & policy_ops.SETTINGS_WRITERS
