"""A gateway's short memory of its buckets' settings (``docs/s3.md``, "Bucket settings:
how soon a change applies").

Every request to a bucket needs its settings (owner, policy, public access block,
ownership controls, versioning state, CORS rules: ``bucket_config.read_config``); reading
them costs a stat of the bucket and one of each settings file, as much as a small GET
itself. The gateway keeps what it read for ``ttl`` seconds (1 by default), so:

- a change made through **this** gateway applies to its very next request: the gateway
  forgets a bucket's settings once a request that writes them ends (``invalidate``, called
  for ``policy_ops.SETTINGS_WRITERS``), and a read that began before that is not kept
  (a generation count), so an older read finishing late cannot put the old settings back;
- a change made through **another** gateway (or by a keelfs client writing ``.s3/``)
  applies here within ``ttl`` seconds: an entry is used only while younger than ``ttl``,
  counted from when its read **began** (what it says was true at some moment after that);
- what is kept is only what the files say: a read that fails (no such bucket, settings
  unreadable by the caller) is never kept, so a missing bucket made elsewhere is seen at
  once, and a caller's own refusal is never another's answer. What the settings say does
  not depend on who read them (each file counts by its owner and mode, not by the reader);
- requests that find no entry while a read of the same bucket is under way wait for that
  read rather than start their own (under load, when an entry expires, every request in
  flight would otherwise read): one read per bucket at a time, but for requests that must
  read afresh, and for waiters whose shared read failed (a failure is its reader's own: they
  read for themselves). A read under way when the gateway changes the settings is joined
  by no later request, nor is one that began ``ttl`` or more ago (a slow read);
- at most ``capacity`` buckets are kept (the one read longest ago dropped first).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from keelfs.client.aio import AsyncClient
from keelfs.gateways.s3.bucket_config import BucketConfig, read_config

__all__ = ["DEFAULT_TTL", "SettingsCache"]

DEFAULT_TTL = 1.0
"""Seconds a bucket's settings are kept: how long a change made through another gateway may
take to apply here."""
DEFAULT_CAPACITY = 4096

Reader = Callable[[AsyncClient, str], Awaitable[BucketConfig]]


@dataclass(frozen=True)
class _Entry:
    config: BucketConfig
    read_at: float
    """When its read began (``clock``)."""


class SettingsCache:
    """Buckets' settings kept ``ttl`` seconds (module doc); ``ttl`` 0: none kept."""

    def __init__(
        self,
        ttl: float = DEFAULT_TTL,
        *,
        capacity: int = DEFAULT_CAPACITY,
        read: Reader = read_config,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self._read = read
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._generation: dict[str, int] = {}
        """Per bucket: how many times it was invalidated (only while it has an entry or a
        read may be under way; see ``_forget_generation``)."""
        self._reading: dict[str, int] = {}
        """Per bucket: reads under way."""
        self._shared: dict[str, tuple[asyncio.Task[BucketConfig], float]] = {}
        """Per bucket: the read under way that a request finding no entry waits for, and
        when it began (joined only while younger than ``ttl``, as an entry is used)."""

    async def get(self, fs: AsyncClient, bucket: str, *, fresh: bool = False) -> BucketConfig:
        """The bucket's settings: kept ones younger than ``ttl``, else read (as ``fs``'s
        user) and kept; ``fresh``: read now whatever is kept (what a request that changes
        them decides on)."""
        if fresh:
            return await self._read_and_keep(fs, bucket)
        entry = self._entries.get(bucket)
        if entry is not None and self._clock() - entry.read_at < self.ttl:
            return entry.config
        under_way = self._shared.get(bucket)
        if under_way is None or self._clock() - under_way[1] >= self.ttl:
            # none, or one begun too long ago to answer for now (a slow read: what it says
            # was true when it began): a read of this request's own, shared from now
            began = self._clock()
            shared = asyncio.ensure_future(self._read_and_keep(fs, bucket))
            shared.add_done_callback(_retrieve)
            self._shared[bucket] = (shared, began)
            shared.add_done_callback(lambda task: self._unshare(bucket, task))
            return await asyncio.shield(shared)  # its failure is this request's own
        shared = under_way[0]
        try:
            return await asyncio.shield(shared)
        except Exception:  # noqa: BLE001 - another caller's failure: read as this one
            return await self._read_and_keep(fs, bucket)

    async def _read_and_keep(self, fs: AsyncClient, bucket: str) -> BucketConfig:
        generation = self._generation.get(bucket, 0)
        began = self._clock()
        self._reading[bucket] = self._reading.get(bucket, 0) + 1
        try:
            config = await self._read(fs, bucket)
        finally:
            self._reading[bucket] -= 1
            if not self._reading[bucket]:
                del self._reading[bucket]
        if self.ttl > 0 and self._generation.get(bucket, 0) == generation:
            self._keep(bucket, _Entry(config, began))
        self._forget_generation(bucket)
        return config

    def invalidate(self, bucket: str) -> None:
        """Forget ``bucket``'s settings, and any read of them under way (its answer serves
        its own request, but is not kept)."""
        self._entries.pop(bucket, None)
        self._shared.pop(bucket, None)  # no later request joins a read begun before
        if bucket in self._reading:
            self._generation[bucket] = self._generation.get(bucket, 0) + 1

    def _unshare(self, bucket: str, task: asyncio.Task[BucketConfig]) -> None:
        under_way = self._shared.get(bucket)
        if under_way is not None and under_way[0] is task:
            del self._shared[bucket]

    def _keep(self, bucket: str, entry: _Entry) -> None:
        self._entries[bucket] = entry
        self._entries.move_to_end(bucket)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def _forget_generation(self, bucket: str) -> None:
        """A generation matters only to reads under way: dropped once none is, so the count
        stays bounded by the reads in flight."""
        if bucket not in self._reading:
            self._generation.pop(bucket, None)


def _retrieve(task: asyncio.Task[BucketConfig]) -> None:
    """A shared read's failure is retrieved even where every request waiting for it has
    gone (asyncio would log it as never retrieved)."""
    if not task.cancelled():
        task.exception()
