"""ListObjectVersions for buckets that never keep versions (keelfs keeps one of each object).

Every object is its only version: ``VersionId`` ``null`` (what S3 names the version of an
object written while versioning was never enabled), ``IsLatest`` true, and no delete markers.
Tools that empty a bucket before deleting it (the AWS CLI's ``rb --force`` with versions,
s3-tests' cleanup, rclone's ``purge``) ask for this listing, then delete each
``(Key, VersionId)``: ``objects.delete_objects`` accepts the ``null`` version.
"""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from keelfs.gateways.s3 import listing
from keelfs.gateways.s3.buckets import list_max_keys, owner
from keelfs.gateways.s3.context import Ctx, xml_response
from keelfs.gateways.s3.errors import S3Error
from keelfs.gateways.s3.xmlio import document, iso_time, sub

__all__ = ["NULL_VERSION", "list_object_versions"]

NULL_VERSION = "null"


async def list_object_versions(ctx: Ctx) -> web.Response:
    encoding = ctx.query.get("encoding-type")
    if encoding is not None and encoding != "url":
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request")
    prefix = ctx.query.get("prefix", "")
    delimiter = ctx.query.get("delimiter", "")
    key_marker = ctx.query.get("key-marker", "")
    max_keys = list_max_keys(ctx)
    page = await listing.list_page(
        ctx.fs, ctx.bucket, prefix=prefix, delimiter=delimiter, after=key_marker,
        max_keys=max_keys,
    )  # fmt: skip

    def enc(text: str) -> str:
        return quote(text, safe="/") if encoding == "url" else text

    root = document("ListVersionsResult")
    sub(root, "Name", ctx.bucket)
    sub(root, "Prefix", enc(prefix))
    sub(root, "KeyMarker", enc(key_marker))
    sub(root, "VersionIdMarker", ctx.query.get("version-id-marker", ""))
    sub(root, "MaxKeys", max_keys)
    if delimiter:
        sub(root, "Delimiter", enc(delimiter))
    if encoding:
        sub(root, "EncodingType", encoding)
    sub(root, "IsTruncated", "true" if page.truncated else "false")
    if page.truncated:
        sub(root, "NextKeyMarker", enc(page.last))
        sub(root, "NextVersionIdMarker", NULL_VERSION)
    for entry in page.contents:
        assert entry.info is not None and entry.stored is not None
        item = sub(root, "Version")
        sub(item, "Key", enc(entry.key))
        sub(item, "VersionId", NULL_VERSION)
        sub(item, "IsLatest", "true")
        sub(item, "LastModified", iso_time(entry.info.mtime))
        sub(item, "ETag", entry.stored.etag)
        sub(item, "Size", 0 if entry.info.is_dir else entry.info.length)
        owner(item, entry.info.owner)
        sub(item, "StorageClass", "STANDARD")
    for common in page.prefixes:
        sub(sub(root, "CommonPrefixes"), "Prefix", enc(common))
    return xml_response(root)
