"""ListObjectVersions: every version and delete marker of a bucket's keys (``versioning``).

Keys come in S3's order from two places merged: the keys with a file (``listing.walk``, as
ListObjects) and the keys with an archive (``versioning.archived_keys``); each key's versions
follow newest first, the first of them ``IsLatest``. A page holds at most ``max-keys``
versions, delete markers and common prefixes together, and goes on after
(``key-marker``, ``version-id-marker``): the versions of ``key-marker`` after that VersionId,
then the keys after it. In a bucket that never had versioning every object is its only
version, ``null``. The walk of the archives reads one name per archived key a page, whatever
its prefix: a cost that grows with the keys that have older versions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from urllib.parse import quote
from xml.etree.ElementTree import Element

from aiohttp import web

from keelfs.errors import KeelError
from keelfs.gateways.s3 import listing, store, versioning
from keelfs.gateways.s3.buckets import list_max_keys, owner
from keelfs.gateways.s3.context import Ctx, xml_response
from keelfs.gateways.s3.errors import S3Error, from_keel
from keelfs.gateways.s3.versioning import NULL_VERSION, Version
from keelfs.gateways.s3.xmlio import document, iso_time, sub
from keelfs.meta.records import FileInfo

__all__ = ["NULL_VERSION", "list_object_versions"]

BATCH = 32


@dataclass
class _Item:
    """A key of the listing (with its file as the walk saw it, None if it has none, and
    whether it has an archive) or a common prefix."""

    key: str
    is_prefix: bool
    info: FileInfo | None = None
    archived: bool = False


async def _merged(ctx: Ctx, prefix: str, delimiter: str, after: str) -> AsyncIterator[_Item]:
    """The keys and common prefixes after ``after``, in order, each once."""
    names = await versioning.archived_keys(ctx.fs, ctx.bucket)
    archived: list[_Item] = []
    for key in names:
        if not key.startswith(prefix):
            continue
        common = listing._common_prefix(key, prefix, delimiter)
        item = _Item(common, True) if common is not None else _Item(key, False, None, True)
        folded = item.is_prefix and after.startswith(item.key) and item.key != after
        if (item.key > after or folded) and (not archived or archived[-1].key != item.key):
            archived.append(item)  # as listing._visit places a position within a prefix
    pending = iter(archived)
    waiting = next(pending, None)
    last = ""
    async for entry in listing.walk(ctx.fs, ctx.bucket, prefix, delimiter, after):
        while waiting is not None and waiting.key.encode() < entry.key.encode():
            if waiting.key != last:
                yield waiting
                last = waiting.key
            waiting = next(pending, None)
        if entry.key == last:
            continue
        current = _Item(entry.key, entry.info is None, entry.info)
        if waiting is not None and waiting.key == entry.key:
            current.archived = waiting.archived
            waiting = next(pending, None)
        yield current
        last = entry.key
    while waiting is not None:
        if waiting.key != last:
            yield waiting
            last = waiting.key
        waiting = next(pending, None)


async def _key_versions(ctx: Ctx, item: _Item) -> list[Version]:
    if item.info is not None and item.info.is_dir:  # a directory marker: one null version
        obj = await store.head_object(ctx.fs, ctx.bucket, item.key)
        return [Version(item.key, NULL_VERSION, obj.info, False, True, obj.stored)]
    if item.info is None and not item.archived:
        return await versioning.versions_of(ctx.fs, ctx.bucket, item.key)
    return await versioning.versions_of(
        ctx.fs, ctx.bucket, item.key, info=item.info, archive=item.archived
    )


async def list_object_versions(ctx: Ctx) -> web.Response:
    encoding = ctx.query.get("encoding-type")
    if encoding is not None and encoding != "url":
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request")
    prefix = ctx.query.get("prefix", "")
    delimiter = ctx.query.get("delimiter", "")
    key_marker = ctx.query.get("key-marker", "")
    vid_marker = ctx.query.get("version-id-marker", "")
    if vid_marker and not key_marker:
        raise S3Error(
            "InvalidArgument", "A version-id marker cannot be specified without a key marker."
        )
    max_keys = list_max_keys(ctx)
    await store.require_bucket(ctx.fs, ctx.bucket)
    items: list[Version | str] = []
    truncated = False
    try:
        items_in = _page_items(ctx, prefix, delimiter, key_marker, vid_marker, max_keys)
        async for version_or_prefix in items_in:
            if len(items) >= max_keys:
                truncated = max_keys > 0
                break
            items.append(version_or_prefix)
    except KeelError as exc:
        raise from_keel(exc, missing="NoSuchBucket", BucketName=ctx.bucket) from None

    def enc(text: str) -> str:
        return quote(text, safe="/") if encoding == "url" else text

    root = document("ListVersionsResult")
    sub(root, "Name", ctx.bucket)
    sub(root, "Prefix", enc(prefix))
    sub(root, "KeyMarker", enc(key_marker))
    sub(root, "VersionIdMarker", vid_marker)
    sub(root, "MaxKeys", max_keys)
    if delimiter:
        sub(root, "Delimiter", enc(delimiter))
    if encoding:
        sub(root, "EncodingType", encoding)
    sub(root, "IsTruncated", "true" if truncated else "false")
    if truncated:
        last = items[-1]
        sub(root, "NextKeyMarker", enc(last if isinstance(last, str) else last.key))
        if not isinstance(last, str):
            sub(root, "NextVersionIdMarker", last.vid)
    for item in items:
        if isinstance(item, str):
            continue
        _version_element(ctx, root, item, enc)
    for item in items:
        if isinstance(item, str):
            sub(sub(root, "CommonPrefixes"), "Prefix", enc(item))
    return xml_response(root)


async def _page_items(
    ctx: Ctx, prefix: str, delimiter: str, key_marker: str, vid_marker: str, wanted: int
) -> AsyncIterator[Version | str]:
    """The listing's versions and common prefixes in order, from the markers on; the
    versions of up to ``BATCH`` keys looked up at once, and no more keys than ``wanted``
    items need."""
    if vid_marker and key_marker.startswith(prefix):
        versions = await versioning.versions_of(ctx.fs, ctx.bucket, key_marker)
        ids = [v.vid for v in versions]
        if vid_marker in ids:
            for version in versions[ids.index(vid_marker) + 1 :]:
                yield _latest_marked(version, False)
    batch: list[_Item] = []

    async def flush() -> list[Version | str]:
        looked_up = await asyncio.gather(*(_key_versions(ctx, i) for i in batch if not i.is_prefix))
        found = iter(looked_up)
        out: list[Version | str] = []
        for item in batch:
            if item.is_prefix:
                out.append(item.key)
                continue
            out.extend(_latest_marked(v, n == 0) for n, v in enumerate(next(found)))
        batch.clear()
        return out

    async for item in _merged(ctx, prefix, delimiter, key_marker):
        batch.append(item)
        if len(batch) >= min(BATCH, wanted + 1):
            for out in await flush():
                yield out
    for out in await flush():
        yield out


def _latest_marked(version: Version, latest: bool) -> Version:
    version.current = latest  # from here on: "IsLatest"
    return version


def _version_element(ctx: Ctx, root: Element, version: Version, enc: Callable[[str], str]) -> None:
    item = sub(root, "DeleteMarker" if version.marker else "Version")
    sub(item, "Key", enc(version.key))
    sub(item, "VersionId", version.vid)
    sub(item, "IsLatest", "true" if version.current else "false")
    sub(item, "LastModified", iso_time(version.info.mtime))
    if not version.marker:
        assert version.stored is not None
        sub(item, "ETag", version.stored.etag)
        sub(item, "Size", 0 if version.info.is_dir else version.info.length)
        sub(item, "StorageClass", "STANDARD")
    owner(item, version.info.owner, ctx.names)
