"""The object family: PutObject, GetObject (ranges, conditionals), HeadObject, DeleteObject,
DeleteObjects and CopyObject."""

from __future__ import annotations

import base64
import email.utils
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from keelfs.errors import KeelError
from keelfs.gateways.s3 import acl as acls
from keelfs.gateways.s3 import store, versioning
from keelfs.gateways.s3.context import Ctx, http_date, xml_response
from keelfs.gateways.s3.errors import S3Error, from_keel
from keelfs.gateways.s3.policy_eval import refuse_denied_key
from keelfs.gateways.s3.versioning import NULL_VERSION
from keelfs.gateways.s3.xmlio import child_text, children, document, iso_time, parse, sub

__all__ = [
    "copy_object",
    "delete_object",
    "delete_objects",
    "get_object",
    "get_object_attributes",
    "get_object_torrent",
    "head_object",
    "parse_copy_source",
    "put_object",
]

MAX_DELETE_KEYS = 1000
_RESPONSE_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}


def md5_etag(digest: bytes) -> str:
    return f'"{digest.hex()}"'


async def put_object(ctx: Ctx) -> web.Response:
    store.check_key(ctx.key)
    if "x-amz-copy-source" in ctx.request.headers:
        return await copy_object(ctx)
    condition = await write_condition(ctx)
    chosen = await ctx.object_acl_of_request()
    body = ctx.body()
    if ctx.key.endswith("/"):
        data = b"".join([piece async for piece in body])
        if data:
            raise S3Error("InvalidArgument", "a key ending in '/' is a directory: no data")
        obj = await store.make_marker(ctx.fs, ctx.bucket, ctx.key)
        return web.Response(headers={"ETag": obj.etag})
    written = await store.write_temp(ctx.fs, ctx.bucket, body, mode=acls.file_mode(chosen))
    try:
        ctx.check_digests(written)
    except S3Error:
        await store.discard(ctx.fs, written.path)
        raise
    stored = ctx.stored_from_request(md5_etag(written.md5))
    try:
        stored.sha256 = _checked_sha256(ctx, written)
    except S3Error:
        await store.discard(ctx.fs, written.path)
        raise
    obj = await commit(ctx, written.path, stored, condition=condition, acl=chosen)
    headers = written_headers(obj)
    if stored.sha256:
        headers["x-amz-checksum-sha256"] = stored.sha256
    return web.Response(headers=headers)


@dataclass(frozen=True)
class WriteCondition:
    """How a conditional write puts its object in place (``store.commit_object``)."""

    exclusive: bool = False
    """Only where no object is."""
    expect: str = ""
    """Only over the object of this version (the one the conditions were checked against)."""


async def write_condition(ctx: Ctx) -> WriteCondition:
    """A PUT's (or a Complete's) ``If-Match``/``If-None-Match``, checked against the object
    now there before anything is written (``NoSuchKey`` 404 for an ``If-Match`` with no
    object, ``PreconditionFailed`` 412), and made atomic by the rename that puts the new
    object in place: it replaces only the very version checked (or, with none there, only
    where there is still none), so no other write can slip in between."""
    if_match, if_none = ctx.header("If-Match"), ctx.header("If-None-Match")
    if if_match is None and if_none is None:
        return WriteCondition()
    if if_match is None and (if_none or "").strip() == "*":
        return WriteCondition(exclusive=True)
    current = await store.current_object(ctx.fs, ctx.bucket, ctx.key)
    failed = S3Error(
        "PreconditionFailed", "At least one of the pre-conditions you specified did not hold"
    )
    if if_match is not None:
        if current is None:
            raise S3Error("NoSuchKey", "The specified key does not exist.", Key=ctx.key)
        if not _etag_matches(if_match, current.etag):
            raise failed
    if if_none is not None and current is not None and _etag_matches(if_none, current.etag):
        raise failed
    if current is None:
        return WriteCondition(exclusive=True)
    return WriteCondition(expect=current.info.version)


def _checked_sha256(ctx: Ctx, written: store.Written) -> str:
    """``x-amz-checksum-sha256`` of a PUT, checked against the body (``BadDigest``); ""
    when none is given."""
    given = (ctx.header("x-amz-checksum-sha256") or "").strip()
    if not given:
        return ""
    actual = base64.b64encode(bytes.fromhex(written.sha256)).decode()
    if given != actual:
        raise S3Error(
            "BadDigest", "The SHA256 you specified did not match the calculated checksum."
        )
    return actual


async def commit(
    ctx: Ctx,
    temp: str,
    stored: store.Stored,
    *,
    condition: WriteCondition = WriteCondition(),
    acl: acls.Acl = acls.PRIVATE,
) -> store.ObjectInfo:
    """Put complete file ``temp`` in place as the request's key: as a new version where the
    bucket has versioning (``versioning.commit``), else replacing the object, in both cases
    only as ``condition`` allows."""
    state = await ctx.versioning_state()
    if state:
        if condition.expect:
            await store.discard(ctx.fs, temp)
            raise S3Error(
                "NotImplemented",
                "If-Match writes in a bucket with versioning are not supported (docs/s3.md)",
            )
        return await versioning.commit(
            ctx.fs, ctx.bucket, ctx.key, temp, stored, state,
            exclusive=condition.exclusive, acl=acl,
        )  # fmt: skip
    return await store.commit_object(
        ctx.fs, ctx.bucket, ctx.key, temp, stored,
        exclusive=condition.exclusive, expect=condition.expect, acl=acl,
    )  # fmt: skip


def written_headers(obj: store.ObjectInfo) -> dict[str, str]:
    """A write's answer: the ETag, and the VersionId it made in a bucket with versioning."""
    headers = {"ETag": obj.etag}
    if obj.stored.version not in ("", NULL_VERSION):  # S3 names no null version written
        headers["x-amz-version-id"] = obj.stored.version
    return headers


def _etag_matches(header: str, etag: str) -> bool:
    wanted = [t.strip() for t in header.split(",")]
    bare = etag.strip('"')
    return any(t == "*" or t.strip('"') == bare for t in wanted)


def _parse_http_date(text: str) -> float | None:
    try:
        parsed = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return parsed.timestamp()


def check_conditions(ctx: Ctx, obj: store.ObjectInfo, *, prefix: str = "") -> int | None:
    """The status GET/HEAD's conditional headers call for (304/412), None to serve: S3's
    rules (If-Match wins over If-Unmodified-Since, If-None-Match over If-Modified-Since).
    ``prefix``: ``x-amz-copy-source-`` for a copy's source, where both fail with 412."""
    headers = ctx.request.headers
    seconds = obj.mtime // 1000
    if_match = headers.get(prefix + "If-Match")
    if_none = headers.get(prefix + "If-None-Match")
    if_unmodified = headers.get(prefix + "If-Unmodified-Since")
    if_modified = headers.get(prefix + "If-Modified-Since")
    if if_match is not None:
        if not _etag_matches(if_match, obj.etag):
            return 412
    elif if_unmodified is not None:
        when = _parse_http_date(if_unmodified)
        if when is not None and seconds > when:
            return 412
    not_modified = 412 if prefix else 304
    if if_none is not None:
        if _etag_matches(if_none, obj.etag):
            return not_modified
    elif if_modified is not None:
        when = _parse_http_date(if_modified)
        if when is not None and seconds <= when:
            return not_modified
    return None


def parse_range(header: str | None, length: int) -> tuple[int, int] | None:
    """``[start, end)`` of a ``Range: bytes=...`` header; None: the whole object (no header,
    one S3 ignores, or several ranges); ``InvalidRange`` when nothing of it is in the
    object."""
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if not first:
            n = int(last)
            if n <= 0:
                raise _invalid_range(length)
            return max(0, length - n), length
        start = int(first)
        end = int(last) + 1 if last else length
    except ValueError:
        return None
    if start < 0 or end <= start:
        return None if start < length else _raise(_invalid_range(length))
    if start >= length:
        raise _invalid_range(length)
    return start, min(end, length)


def _raise(err: S3Error) -> tuple[int, int]:
    raise err


def _invalid_range(length: int) -> S3Error:
    return S3Error(
        "InvalidRange",
        "The requested range is not satisfiable",
        ActualObjectSize=str(length),
        RangeRequested="",
    )


def object_headers(ctx: Ctx, obj: store.ObjectInfo) -> dict[str, str]:
    headers = {
        "ETag": obj.etag,
        "Last-Modified": http_date(obj.mtime),
        "Content-Type": obj.stored.content_type,
        "Accept-Ranges": "bytes",
    }
    for name, value in obj.stored.headers.items():
        headers[name.title()] = value
    for name, value in obj.stored.meta.items():
        headers["x-amz-meta-" + name] = value
    if obj.stored.parts:
        headers["x-amz-mp-parts-count"] = str(obj.stored.parts)
    if obj.stored.version:
        headers["x-amz-version-id"] = obj.stored.version
    for param, header in _RESPONSE_OVERRIDES.items():
        if param in ctx.query:
            headers[header] = ctx.query[param]
    return headers


def part_range(ctx: Ctx, obj: store.ObjectInfo) -> tuple[int, int] | None:
    """``[start, end)`` of the part a ``partNumber=`` read asks for (None: no such
    parameter): the whole object for part 1 of one not uploaded in parts, ``InvalidPart``
    past the last part."""
    text = ctx.query.get("partNumber")
    if text is None:
        return None
    if not text.isdigit() or not 1 <= int(text) <= 10_000:
        raise S3Error("InvalidArgument", "Part number must be an integer between 1 and 10000")
    if ctx.header("Range") is not None:
        raise S3Error("InvalidRequest", "Cannot specify both Range header and partNumber")
    number = int(text)
    invalid = S3Error("InvalidPart", "The requested partnumber is not satisfiable")
    if not obj.stored.parts:
        if number != 1:
            raise invalid
        return 0, obj.length
    if number > obj.stored.parts:
        raise invalid
    span = obj.stored.part_span(number)
    if span is None:
        raise S3Error(
            "NotImplemented", "this object's part sizes were not recorded when it was completed"
        )
    return span


def _span(ctx: Ctx, obj: store.ObjectInfo) -> tuple[int, int] | None:
    """The bytes a GET/HEAD serves (None: all, with 200): a part, or a ``Range``."""
    part = part_range(ctx, obj)
    if part is not None:
        return part if obj.stored.parts else None
    return parse_range(ctx.header("Range"), obj.length)


async def head_object(ctx: Ctx) -> web.StreamResponse:
    obj = await versioning.version_object(ctx.fs, ctx.bucket, ctx.key, ctx.query.get("versionId"))
    headers = object_headers(ctx, obj)
    status = check_conditions(ctx, obj)
    if status is not None:
        return web.Response(status=status, headers=_condition_headers(headers, status))
    try:
        span = _span(ctx, obj)
    except S3Error as err:
        if err.code != "InvalidRange":
            return web.Response(status=err.status)
        return web.Response(status=416, headers={"Content-Range": f"bytes */{obj.length}"})
    response = web.StreamResponse(status=200 if span is None else 206, headers=headers)
    if span is not None:
        response.headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{obj.length}"
    response.content_length = obj.length if span is None else span[1] - span[0]
    return response


def _condition_headers(headers: dict[str, str], status: int) -> dict[str, str]:
    if status == 304:
        return {k: v for k, v in headers.items() if k in ("ETag", "Last-Modified")}
    return {}


async def get_object(ctx: Ctx) -> web.StreamResponse:
    vid = ctx.query.get("versionId")
    obj, reader = await versioning.open_version(ctx.fs, ctx.bucket, ctx.key, vid)
    try:
        headers = object_headers(ctx, obj)
        status = check_conditions(ctx, obj)
        if status == 412:
            raise S3Error("PreconditionFailed", "At least one of the pre-conditions you "
                          "specified did not hold", Condition="If-Match")  # fmt: skip
        if status == 304:
            return web.Response(status=304, headers=_condition_headers(headers, 304))
        span = _span(ctx, obj)
        start, end = span if span is not None else (0, obj.length)
        response = web.StreamResponse(status=200 if span is None else 206, headers=headers)
        if span is not None:
            response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{obj.length}"
        response.content_length = end - start
        await response.prepare(ctx.request)
        if reader is not None and end > start:
            async for piece in reader.iter_range(start, end):
                await response.write(piece)
        await response.write_eof()
        return response
    finally:
        if reader is not None:
            await reader.close()


_ATTRIBUTES = frozenset({"ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"})


async def get_object_attributes(ctx: Ctx) -> web.Response:
    """GetObjectAttributes: the ETag (unquoted, as S3 answers it), size, storage class and,
    of a multipart object, its parts and their sizes (``max-parts``,
    ``part-number-marker``); ``Checksum``: the SHA-256 a single PUT gave (checked), the
    only checksum keelfs keeps beside the ETag."""
    wanted = {
        a.strip() for a in (ctx.header("x-amz-object-attributes") or "").split(",") if a.strip()
    }
    if not wanted or not wanted <= _ATTRIBUTES:
        raise S3Error("InvalidArgument", "Invalid attribute name specified")
    obj = await store.head_object(ctx.fs, ctx.bucket, ctx.key)
    root = document("GetObjectAttributesResponse")
    if "ETag" in wanted:
        sub(root, "ETag", obj.etag.strip('"'))
    if "Checksum" in wanted and obj.stored.sha256:
        sub(sub(root, "Checksum"), "ChecksumSHA256", obj.stored.sha256)
    if "ObjectParts" in wanted and obj.stored.parts:
        _object_parts(ctx, sub(root, "ObjectParts"), obj.stored)
    if "StorageClass" in wanted:
        sub(root, "StorageClass", "STANDARD")
    if "ObjectSize" in wanted:
        sub(root, "ObjectSize", obj.length)
    return xml_response(root, headers={"Last-Modified": http_date(obj.mtime)})


def _object_parts(ctx: Ctx, element: Any, stored: store.Stored) -> None:
    try:
        marker = int(ctx.header("x-amz-part-number-marker") or 0)
        max_parts = min(int(ctx.header("x-amz-max-parts") or 1000), 1000)
    except ValueError:
        raise S3Error("InvalidArgument", "part-number-marker and max-parts are numbers") from None
    numbers = list(range(marker + 1, stored.parts + 1))
    page = numbers[:max_parts]
    sub(element, "PartsCount", stored.parts)  # botocore's TotalPartsCount
    sub(element, "PartNumberMarker", marker)
    sub(element, "NextPartNumberMarker", page[-1] if page else marker)
    sub(element, "MaxParts", max_parts)
    sub(element, "IsTruncated", "true" if len(numbers) > max_parts else "false")
    for number in page:
        span = stored.part_span(number)
        part = sub(element, "Part")
        sub(part, "PartNumber", number)
        if span is not None:
            sub(part, "Size", span[1] - span[0])


async def get_object_torrent(ctx: Ctx) -> web.Response:
    """GetObjectTorrent: keelfs serves no torrents, so there is none of any object (what
    S3 answers where torrents are not configured)."""
    await store.head_object(ctx.fs, ctx.bucket, ctx.key)
    raise S3Error("NoSuchKey", "keelfs keeps no torrent of objects", Key=ctx.key)


async def delete_object(ctx: Ctx) -> web.Response:
    vid = ctx.query.get("versionId")
    done = await _delete(ctx, ctx.key, vid, await ctx.versioning_state())
    headers = {}
    if done.vid is not None:
        headers["x-amz-version-id"] = done.vid
    if done.marker:
        headers["x-amz-delete-marker"] = "true"
    return web.Response(status=204, headers=headers)


async def _delete(ctx: Ctx, key: str, vid: str | None, state: str) -> versioning.Deleted:
    """DeleteObject of ``key`` (version ``vid``): a delete marker where the bucket has
    versioning and no version is named; the object itself in a bucket that never had
    versioning (whose only version is ``null``)."""
    if vid is not None:
        versioning.check_version_id(vid)
    if state or vid not in (None, NULL_VERSION):
        return await versioning.delete(ctx.fs, ctx.bucket, key, vid, state)
    await store.delete_object(ctx.fs, ctx.bucket, key)
    return versioning.Deleted(vid, False)


async def delete_objects(ctx: Ctx) -> web.Response:
    root_in = parse(await ctx.request.read())
    quiet = (child_text(root_in, "Quiet") or "").lower() == "true"
    named = [
        (child_text(o, "Key", strip=False), child_text(o, "VersionId"))
        for o in children(root_in, "Object")
    ]
    if not named or len(named) > MAX_DELETE_KEYS or any(k is None for k, _ in named):
        raise S3Error("MalformedXML", "a Delete names 1 to 1000 objects, each with a Key")
    state = await ctx.versioning_state()
    root = document("DeleteResult")
    for key, version in named:
        assert key is not None
        try:
            if version is not None and not versioning.valid_version_id(version):
                raise S3Error("NoSuchVersion", "The specified version does not exist.")
            refuse_denied_key(ctx, "s3:DeleteObject", ctx.bucket, key)
            done = await _delete(ctx, key, version, state)
        except S3Error as err:
            error = sub(root, "Error")
            sub(error, "Key", key)
            if version is not None:
                sub(error, "VersionId", version)
            sub(error, "Code", err.code)
            sub(error, "Message", err.message)
            continue
        if not quiet:
            deleted = sub(root, "Deleted")
            sub(deleted, "Key", key)
            if version is not None:
                sub(deleted, "VersionId", version)
            if done.marker:
                sub(deleted, "DeleteMarker", "true")
                if done.vid is not None:
                    sub(deleted, "DeleteMarkerVersionId", done.vid)
    return xml_response(root)


def parse_copy_source(header: str) -> tuple[str, str, str | None]:
    """(bucket, key, VersionId or None) of ``x-amz-copy-source`` (``[/]bucket/key``,
    URL-encoded, then ``?versionId=...`` optionally)."""
    source, _, query = header.partition("?")
    vid = None
    if query:
        name, _, value = query.partition("=")
        if name != "versionId" or not value:
            raise S3Error("InvalidArgument", "the copy source's only parameter is versionId")
        vid = unquote(value)
        versioning.check_version_id(vid)
    bucket, _, key = unquote(source).lstrip("/").partition("/")
    if not bucket or not key:
        raise S3Error("InvalidArgument", "Copy Source must mention the source bucket and key")
    return bucket, key, vid


async def _source_chunks(reader: object, start: int, end: int) -> AsyncIterator[bytes]:
    if reader is not None and end > start:
        async for piece in reader.iter_range(start, end):  # type: ignore[attr-defined]
            yield piece


async def copy_object(ctx: Ctx) -> web.Response:
    src_bucket, src_key, src_vid = parse_copy_source(ctx.request.headers["x-amz-copy-source"])
    directive = (ctx.header("x-amz-metadata-directive") or "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", "Unknown metadata directive.")
    same = (src_bucket, src_key) == (ctx.bucket, ctx.key)
    if same and directive == "COPY" and src_vid is None:
        raise S3Error(
            "InvalidRequest",
            "This copy request is illegal because it is trying to copy an object to itself "
            "without changing the object's metadata, storage class, website redirect "
            "location or encryption attributes.",
        )
    chosen = await ctx.object_acl_of_request()
    obj, reader = await versioning.open_version(ctx.fs, src_bucket, src_key, src_vid)
    try:
        if check_conditions(ctx, obj, prefix="x-amz-copy-source-") is not None:
            raise S3Error(
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold",
            )
        source = _source_chunks(reader, 0, obj.length)
        written = await store.write_temp(ctx.fs, ctx.bucket, source, mode=acls.file_mode(chosen))
    finally:
        if reader is not None:
            await reader.close()
    etag = md5_etag(written.md5)
    if directive == "REPLACE":
        stored = ctx.stored_from_request(etag)
    else:
        stored = store.Stored(etag, obj.stored.content_type, obj.stored.meta, obj.stored.headers)
    done = await commit(ctx, written.path, stored, acl=chosen)
    root = document("CopyObjectResult")
    sub(root, "LastModified", iso_time(done.mtime))
    sub(root, "ETag", done.etag)
    response = xml_response(root)
    if done.stored.version not in ("", NULL_VERSION):
        response.headers["x-amz-version-id"] = done.stored.version
    if obj.stored.version:
        response.headers["x-amz-copy-source-version-id"] = obj.stored.version
    return response


def keel_error(exc: KeelError, key: str) -> S3Error:
    return from_keel(exc, Key=key)
