"""ListObjects' walk: a bucket's keys in S3's order, from a directory tree.

S3 lists keys in the byte order of their UTF-8 text; a tree walked name by name would put
``a/b`` after ``a-c`` wrongly (``-`` sorts before ``/``), so each directory's entries are
ordered by what their keys begin with (a directory's name followed by ``/``). The walk starts
in the deepest directory the prefix names, skips subtrees wholly at or before the position to
go on from (``start-after``, the marker, the continuation token), and with a delimiter stops
at the first common prefix of each subtree instead of descending into it. An empty directory
is a zero-byte key ``dir/`` (what a directory marker object makes: ``docs/s3.md``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from keelfs.client.aio import AsyncClient
from keelfs.errors import KeelError, NotADirectory, NotFound
from keelfs.gateways.s3 import store
from keelfs.gateways.s3.errors import from_keel
from keelfs.meta.records import FileInfo

__all__ = ["Entry", "Page", "list_page"]


@dataclass
class Entry:
    """A key (with its file, and its metadata once fetched) or, ``info`` None, a common
    prefix."""

    key: str
    info: FileInfo | None
    stored: store.Stored | None = None


@dataclass
class Page:
    contents: list[Entry]
    prefixes: list[str]
    truncated: bool
    last: str
    """The last key or common prefix of the page (where the next page goes on)."""


async def _entries(fs: AsyncClient, path: str, top: bool) -> list[tuple[str, FileInfo]]:
    """A directory's entries with what their keys begin with, in key order."""
    try:
        found = [e async for e in fs.ls(path)]
    except (NotFound, NotADirectory):
        return []
    named = [
        (e.name + "/" if e.is_dir else e.name, e)
        for e in found
        if e.path != path and not (top and e.name == store.HIDDEN)  # ls of a file: itself
    ]
    named.sort(key=lambda pair: pair[0].encode())
    return named


async def walk(
    fs: AsyncClient, bucket: str, prefix: str, delimiter: str, after: str
) -> AsyncIterator[Entry]:
    """The bucket's keys and common prefixes after ``after``, in order (module doc)."""
    directory, _, name_start = prefix.rpartition("/")
    if directory and "" in directory.split("/"):
        return  # "a//": no key has an empty path component
    start_key = directory + "/" if directory else ""
    last_prefix = ""
    async for entry in _visit(fs, bucket, start_key, name_start, prefix, delimiter, after):
        if not entry.key.startswith(prefix):  # a prefix no walk can name exactly ("/", "a//")
            continue
        if entry.info is None:
            if entry.key == last_prefix:
                continue
            last_prefix = entry.key
        yield entry


def _common_prefix(key: str, prefix: str, delimiter: str) -> str | None:
    if not delimiter:
        return None
    at = key.find(delimiter, len(prefix))
    return None if at < 0 else key[: at + len(delimiter)]


def _after(key: str, after: str) -> bool:
    """Whether ``key`` comes after position ``after`` (keys under a common prefix given as the
    position fold into that same prefix, which is then skipped as not after it)."""
    return key > after


async def _visit(
    fs: AsyncClient,
    bucket: str,
    dir_key: str,
    name_start: str,
    prefix: str,
    delimiter: str,
    after: str,
) -> AsyncIterator[Entry]:
    path = store.bucket_path(bucket) + ("/" + dir_key.rstrip("/") if dir_key else "")
    entries = await _entries(fs, path, top=not dir_key)
    if not entries and dir_key and dir_key.startswith(prefix) and _after(dir_key, after):
        info = await _stat_dir(fs, path)
        if info is not None:  # an empty directory: a marker
            common = _common_prefix(dir_key, prefix, delimiter)
            yield Entry(common, None) if common and common != dir_key else Entry(dir_key, info)
        return
    for name, info in entries:
        if not name.startswith(name_start):
            continue
        key = dir_key + name
        common = _common_prefix(key, prefix, delimiter)
        if common is not None and (not info.is_dir or len(common) <= len(key)):
            if _after(common, after) or (after.startswith(common) and common != after):
                yield Entry(common, None)
            continue
        if info.is_dir:
            if after >= key and not after.startswith(key):
                continue
            async for found in _visit(fs, bucket, key, "", prefix, delimiter, after):
                yield found
        elif _after(key, after):
            yield Entry(key, info)


async def _stat_dir(fs: AsyncClient, path: str) -> FileInfo | None:
    try:
        info = await fs.stat(path)
    except KeelError:
        return None
    return info if info.is_dir else None


async def list_page(
    fs: AsyncClient,
    bucket: str,
    *,
    prefix: str = "",
    delimiter: str = "",
    after: str = "",
    max_keys: int = 1000,
) -> Page:
    """One page of ListObjects: at most ``max_keys`` keys and common prefixes together."""
    await store.require_bucket(fs, bucket)
    contents: list[Entry] = []
    prefixes: list[str] = []
    truncated = False
    last = ""
    try:
        async for entry in walk(fs, bucket, prefix, delimiter, after):
            if len(contents) + len(prefixes) >= max_keys:
                truncated = max_keys > 0  # S3 says a page of max-keys 0 is never truncated
                break
            if entry.info is None:
                prefixes.append(entry.key)
            else:
                contents.append(entry)
            last = entry.key
    except KeelError as exc:
        raise from_keel(exc, missing="NoSuchBucket", BucketName=bucket) from None
    await _fill_metadata(fs, bucket, contents)
    return Page(contents, prefixes, truncated, last)


async def _fill_metadata(fs: AsyncClient, bucket: str, contents: list[Entry]) -> None:
    """Each key's sidecar (its ETag), 32 reads at a time."""
    limit = asyncio.Semaphore(32)

    async def fill(entry: Entry) -> None:
        assert entry.info is not None
        if entry.info.is_dir:
            entry.stored = store.Stored(store.EMPTY_ETAG)
            return
        async with limit:
            entry.stored = await store.read_sidecar(fs, bucket, entry.key, entry.info)

    await asyncio.gather(*(fill(e) for e in contents))
