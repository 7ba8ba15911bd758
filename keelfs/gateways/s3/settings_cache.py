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
- at most ``capacity`` buckets are kept (the one read longest ago dropped first).
"""

from __future__ import annotations

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

    async def get(self, fs: AsyncClient, bucket: str, *, fresh: bool = False) -> BucketConfig:
        """The bucket's settings: kept ones younger than ``ttl``, else read (as ``fs``'s
        user) and kept; ``fresh``: read now whatever is kept (what a request that changes
        them decides on)."""
        if not fresh:
            entry = self._entries.get(bucket)
            if entry is not None and self._clock() - entry.read_at < self.ttl:
                return entry.config
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
        if bucket in self._reading:
            self._generation[bucket] = self._generation.get(bucket, 0) + 1

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
