"""Multipart uploads: Create, UploadPart, UploadPartCopy, ListParts, Complete, Abort and
ListMultipartUploads.

An upload is the hidden directory ``/b/.s3/uploads/<id>/``: ``upload.json`` (its key, the
metadata it was created with, who and when) and one file per part, ``p<NNNNN>.<md5>`` (each
part written to a temporary name in that directory first and renamed into place, its MD5
in its name). Complete joins the chosen parts, in order, into one new hidden file with
``concat`` (metadata only; a copy of the bytes only where the cluster refuses the concat:
``_assemble``), then puts it in place as the key exactly as a PUT does (sidecar, rename:
``store``), and deletes the upload: a reader sees the old object or the whole new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web

from keelfs.client.aio import AsyncClient
from keelfs.errors import InvalidArgument, KeelError, NotADirectory, NotFound
from keelfs.gateways.s3 import acl as acls
from keelfs.gateways.s3 import store, versioning
from keelfs.gateways.s3.context import Ctx, xml_response
from keelfs.gateways.s3.errors import S3Error, from_keel
from keelfs.gateways.s3.objects import (
    check_conditions,
    commit,
    parse_copy_source,
    parse_range,
    write_condition,
    written_headers,
)
from keelfs.gateways.s3.xmlio import child_text, children, document, iso_time, parse, sub

__all__ = [
    "abort_upload",
    "complete_upload",
    "create_upload",
    "list_parts",
    "list_uploads",
    "upload_part",
]

MIN_PART_BYTES = 5 * 1024 * 1024
MAX_PART_NUMBER = 10000
_PART_NAME = re.compile(r"^p(\d{5})\.([0-9a-f]{32})$")
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class Part:
    number: int
    md5: str
    size: int
    mtime: int
    path: str

    @property
    def etag(self) -> str:
        return f'"{self.md5}"'


def upload_dir(bucket: str, upload_id: str) -> str:
    return store.hidden(bucket, "uploads", upload_id)


def _no_such_upload(upload_id: str) -> S3Error:
    return S3Error(
        "NoSuchUpload",
        "The specified upload does not exist. The upload ID may be invalid, or the upload "
        "may have been aborted or completed.",
        UploadId=upload_id,
    )


async def _upload(ctx: Ctx, upload_id: str) -> dict[str, object]:
    """The upload's record (``NoSuchUpload`` if there is none for this key)."""
    missing = _no_such_upload(upload_id)
    if not _UPLOAD_ID.match(upload_id):
        raise missing
    try:
        raw = await ctx.fs.read_bytes(upload_dir(ctx.bucket, upload_id) + "/upload.json")
    except (NotFound, NotADirectory):
        await store.require_bucket(ctx.fs, ctx.bucket)
        raise missing from None
    except KeelError as exc:
        raise from_keel(exc, missing="NoSuchUpload") from None
    record: dict[str, object] = json.loads(raw)
    if record.get("key") != ctx.key:
        raise missing
    return record


async def create_upload(ctx: Ctx) -> web.Response:
    store.check_key(ctx.key)
    await store.require_bucket(ctx.fs, ctx.bucket)
    chosen = await ctx.object_acl_of_request()
    upload_id = secrets.token_hex(16)
    stored = ctx.stored_from_request("")
    record = {
        "key": ctx.key,
        "user": ctx.user,
        "initiated": int(time.time() * 1000),
        "type": stored.content_type,
        "meta": stored.meta,
        "headers": stored.headers,
        "acl": {
            "others": sorted(chosen.others),
            "anonymous": sorted(chosen.anonymous),
            "users": [list(grant) for grant in chosen.users],
        },
    }
    directory = upload_dir(ctx.bucket, upload_id)
    try:
        await store.make_hidden_dir(ctx.fs, ctx.bucket, directory)
        await ctx.fs.write_bytes(directory + "/upload.json", json.dumps(record).encode())
    except KeelError as exc:
        raise from_keel(exc, missing="NoSuchBucket") from None
    root = document("InitiateMultipartUploadResult")
    sub(root, "Bucket", ctx.bucket)
    sub(root, "Key", ctx.key)
    sub(root, "UploadId", upload_id)
    return xml_response(root)


def _part_number(ctx: Ctx) -> int:
    text = ctx.query.get("partNumber", "")
    if not text.isdigit() or not 1 <= int(text) <= MAX_PART_NUMBER:
        raise S3Error(
            "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive"
        )
    return int(text)


async def _parts(fs: AsyncClient, directory: str) -> dict[int, list[Part]]:
    found: dict[int, list[Part]] = {}
    async for entry in fs.ls(directory):
        match = _PART_NAME.match(entry.name)
        if match:
            number = int(match.group(1))
            part = Part(number, match.group(2), entry.length, entry.mtime, entry.path)
            found.setdefault(number, []).append(part)
    return found


async def upload_part(ctx: Ctx) -> web.Response:
    upload_id = ctx.query["uploadId"]
    number = _part_number(ctx)
    await _upload(ctx, upload_id)
    directory = upload_dir(ctx.bucket, upload_id)
    temp = f"{directory}/t{secrets.token_hex(16)}"
    copy_source = ctx.header("x-amz-copy-source")
    try:
        if copy_source is not None:
            written = await _copy_part(ctx, copy_source, temp)
        else:
            written = await store.write_temp(ctx.fs, ctx.bucket, ctx.body(), path=temp)
    except NotFound:  # aborted meanwhile
        raise _no_such_upload(upload_id) from None
    if copy_source is None:
        try:
            ctx.check_digests(written)
        except S3Error:
            await store.discard(ctx.fs, temp)
            raise
    md5 = written.md5.hex()
    name = f"{directory}/p{number:05d}.{md5}"
    try:
        await ctx.fs.rename(temp, name, overwrite=True)
    except NotFound:
        await store.discard(ctx.fs, temp)
        raise S3Error("NoSuchUpload", "The specified upload does not exist.") from None
    except KeelError as exc:
        await store.discard(ctx.fs, temp)
        raise from_keel(exc) from None
    with contextlib.suppress(KeelError):  # the same part uploaded before, with other data
        for part in (await _parts(ctx.fs, directory)).get(number, []):
            if part.md5 != md5:
                await ctx.fs.delete(part.path)
    if copy_source is None:
        return web.Response(headers={"ETag": f'"{md5}"'})
    root = document("CopyPartResult")
    sub(root, "LastModified", iso_time(int(time.time() * 1000)))
    sub(root, "ETag", f'"{md5}"')
    return xml_response(root)


async def _copy_part(ctx: Ctx, header: str, temp: str) -> store.Written:
    src_bucket, src_key, src_vid = parse_copy_source(header)
    obj, reader = await versioning.open_version(ctx.fs, src_bucket, src_key, src_vid)
    try:
        if check_conditions(ctx, obj, prefix="x-amz-copy-source-") is not None:
            raise S3Error(
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold",
            )
        span = (0, obj.length)
        wanted = ctx.header("x-amz-copy-source-range")
        if wanted is not None:
            try:
                parsed = parse_range(wanted, obj.length)
            except S3Error:
                parsed = None
            if parsed is None or not wanted.startswith("bytes=") or wanted[6:7] == "-":
                raise S3Error(
                    "InvalidArgument",
                    "The x-amz-copy-source-range value must be of the form bytes=first-last "
                    "where first and last are the zero-based offsets of the first and last "
                    "bytes to copy",
                )
            if _last_byte(wanted) >= obj.length:
                raise S3Error(
                    "InvalidRange",
                    "The x-amz-copy-source-range goes past the end of the source object",
                    ActualObjectSize=str(obj.length),
                )
            span = parsed

        async def chunks() -> AsyncIterator[bytes]:
            if reader is not None and span[1] > span[0]:
                async for piece in reader.iter_range(*span):
                    yield piece

        return await store.write_temp(ctx.fs, ctx.bucket, chunks(), path=temp)
    finally:
        if reader is not None:
            await reader.close()


def _last_byte(wanted: str) -> int:
    """The last offset of a ``bytes=first-last`` copy range (S3 does not clamp it)."""
    last = wanted[6:].partition("-")[2].strip()
    return int(last) if last.isdigit() else -1


async def list_parts(ctx: Ctx) -> web.Response:
    upload_id = ctx.query["uploadId"]
    record = await _upload(ctx, upload_id)
    try:
        marker = int(ctx.query.get("part-number-marker", "0") or 0)
        max_parts = min(int(ctx.query.get("max-parts", "1000")), 1000)
    except ValueError:
        raise S3Error("InvalidArgument", "part-number-marker and max-parts are numbers") from None
    parts = await _parts(ctx.fs, upload_dir(ctx.bucket, upload_id))
    ordered = [max(ps, key=lambda p: p.mtime) for n, ps in sorted(parts.items()) if n > marker]
    page, truncated = ordered[:max_parts], len(ordered) > max_parts
    root = document("ListPartsResult")
    sub(root, "Bucket", ctx.bucket)
    sub(root, "Key", ctx.key)
    sub(root, "UploadId", upload_id)
    for who in ("Initiator", "Owner"):
        element = sub(root, who)
        user = str(record.get("user", ""))
        sub(element, "ID", user)
        sub(element, "DisplayName", ctx.names.get(user, user))
    sub(root, "StorageClass", "STANDARD")
    sub(root, "PartNumberMarker", marker)
    sub(root, "NextPartNumberMarker", page[-1].number if page else marker)
    sub(root, "MaxParts", max_parts)
    sub(root, "IsTruncated", "true" if truncated else "false")
    for part in page:
        element = sub(root, "Part")
        sub(element, "PartNumber", part.number)
        sub(element, "LastModified", iso_time(part.mtime))
        sub(element, "ETag", part.etag)
        sub(element, "Size", part.size)
    return xml_response(root)


def _requested_parts(body: bytes) -> list[tuple[int, str]]:
    root = parse(body)
    wanted: list[tuple[int, str]] = []
    for element in children(root, "Part"):
        number_text = child_text(element, "PartNumber")
        etag = child_text(element, "ETag")
        if number_text is None or etag is None or not number_text.isdigit():
            raise S3Error("MalformedXML", "each Part needs a PartNumber and an ETag")
        wanted.append((int(number_text), etag.strip('"').lower()))
    if not wanted:
        raise S3Error(
            "MalformedXML", "The XML you provided was not well-formed or did not validate"
        )
    return wanted


async def complete_upload(ctx: Ctx) -> web.Response:
    upload_id = ctx.query["uploadId"]
    body = await ctx.request.read()
    try:
        record = await _upload(ctx, upload_id)
    except S3Error as err:
        if err.code != "NoSuchUpload":
            raise
        return await _completed_before(ctx, body, err)
    wanted = _requested_parts(body)
    numbers = [n for n, _ in wanted]
    if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
        raise S3Error(
            "InvalidPartOrder",
            "The list of parts was not in ascending order. The parts list must be specified "
            "in order by part number.",
        )
    directory = upload_dir(ctx.bucket, upload_id)
    have = await _parts(ctx.fs, directory)
    chosen: list[Part] = []
    for number, md5 in wanted:
        match = [p for p in have.get(number, []) if p.md5 == md5]
        if not match:
            raise S3Error(
                "InvalidPart",
                "One or more of the specified parts could not be found. The part may not have "
                "been uploaded, or the specified entity tag may not match the part's entity "
                "tag.",
                PartNumber=str(number),
                ETag=f'"{md5}"',
            )
        chosen.append(match[0])
    for part in chosen[:-1]:
        if part.size < MIN_PART_BYTES:
            raise S3Error(
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed object size.",
                PartNumber=str(part.number),
                MinSizeAllowed=str(MIN_PART_BYTES),
            )

    condition = await write_condition(ctx)  # before the parts are joined
    assembled = await _assemble(ctx.fs, ctx.bucket, directory, chosen)
    digest = hashlib.md5(b"".join(bytes.fromhex(p.md5) for p in chosen)).hexdigest()
    etag = f'"{digest}-{len(chosen)}"'
    stored = store.Stored(
        etag,
        str(record.get("type") or store.DEFAULT_TYPE),
        dict(record.get("meta") or {}),  # type: ignore[call-overload]
        dict(record.get("headers") or {}),  # type: ignore[call-overload]
        parts=len(chosen),
        part_sizes=_run_lengths([p.size for p in chosen]),
    )
    done = await commit(ctx, assembled, stored, condition=condition, acl=_recorded_acl(record))
    with contextlib.suppress(KeelError):
        await ctx.fs.delete(directory, recursive=True)
    response = _completed(ctx, etag)
    response.headers.update(written_headers(done))
    response.headers.popall("ETag", None)
    return response


def _completed(ctx: Ctx, etag: str) -> web.Response:
    root = document("CompleteMultipartUploadResult")
    sub(root, "Location", f"/{ctx.bucket}/{quote(ctx.key)}")
    sub(root, "Bucket", ctx.bucket)
    sub(root, "Key", ctx.key)
    sub(root, "ETag", etag)
    return xml_response(root)


async def _completed_before(ctx: Ctx, body: bytes, missing: S3Error) -> web.Response:
    """A Complete of an upload no longer there: answered again, as S3 does, when the key's
    object is the one these very parts made (its ETag is MD5-of-MD5s-N of the parts the
    request lists: a client retrying a Complete whose answer it lost gets it); else
    ``NoSuchUpload``. Nothing is kept for it: the object itself is the proof."""
    try:
        wanted = _requested_parts(body)
        digest = hashlib.md5(b"".join(bytes.fromhex(md5) for _, md5 in wanted)).hexdigest()
        obj = await store.head_object(ctx.fs, ctx.bucket, ctx.key)
    except (S3Error, ValueError):
        raise missing from None
    etag = f'"{digest}-{len(wanted)}"'
    if obj.stored.parts != len(wanted) or obj.etag != etag:
        raise missing
    return _completed(ctx, etag)


def _run_lengths(sizes: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for size in sizes:
        if runs and runs[-1][0] == size:
            runs[-1] = (size, runs[-1][1] + 1)
        else:
            runs.append((size, 1))
    return runs


def _recorded_acl(record: dict[str, object]) -> acls.Acl:
    """The ACL its create asked for (private for an upload begun before ACLs were kept)."""
    chosen = record.get("acl")
    if not isinstance(chosen, dict):
        return acls.PRIVATE
    users = tuple((str(user), str(perm)) for user, perm in chosen.get("users", ()))
    return acls.Acl(
        frozenset(chosen.get("others", ())), frozenset(chosen.get("anonymous", ())), users
    )


async def _assemble(fs: AsyncClient, bucket: str, directory: str, chosen: list[Part]) -> str:
    """The parts joined, in order, into one new hidden file (its path): by ``concat`` into
    an empty file of the upload's directory (metadata only: the parts' blocks become the
    file's, and the parts are gone), or, where the cluster refuses the concat (the parts'
    block sizes differ, or inline parts that do not fit one inline file), by copying the
    bytes into a new file as before (the parts stay until the upload is deleted)."""
    target = f"{directory}/c{secrets.token_hex(16)}"
    await fs.write_bytes(target, b"")
    try:
        await fs.concat(target, [part.path for part in chosen])
    except InvalidArgument:
        await store.discard(fs, target)
    else:
        return target

    async def copied() -> AsyncIterator[bytes]:
        for part in chosen:
            async with await fs.open(part.path) as reader:
                async for piece in reader.iter_range(0, reader.length):
                    yield piece

    return (await store.write_temp(fs, bucket, copied())).path


async def abort_upload(ctx: Ctx) -> web.Response:
    upload_id = ctx.query["uploadId"]
    await _upload(ctx, upload_id)
    try:
        await ctx.fs.delete(upload_dir(ctx.bucket, upload_id), recursive=True)
    except NotFound:
        raise S3Error("NoSuchUpload", "The specified upload does not exist.") from None
    except KeelError as exc:
        raise from_keel(exc) from None
    return web.Response(status=204)


async def list_uploads(ctx: Ctx) -> web.Response:
    await store.require_bucket(ctx.fs, ctx.bucket)
    prefix = ctx.query.get("prefix", "")
    key_marker = ctx.query.get("key-marker", "")
    id_marker = ctx.query.get("upload-id-marker", "")
    try:
        max_uploads = min(int(ctx.query.get("max-uploads", "1000")), 1000)
    except ValueError:
        raise S3Error("InvalidArgument", "max-uploads must be a number") from None
    uploads: list[tuple[str, int, str, str]] = []
    try:
        entries = [e async for e in ctx.fs.ls(store.hidden(ctx.bucket, "uploads"))]
    except (NotFound, NotADirectory):
        entries = []
    for entry in entries:
        with contextlib.suppress(KeelError, ValueError):
            record = json.loads(await ctx.fs.read_bytes(entry.path + "/upload.json"))
            key = str(record["key"])
            if key.startswith(prefix):
                uploads.append((key, int(record["initiated"]), entry.name, str(record["user"])))
    uploads.sort()
    if key_marker:
        uploads = [
            u for u in uploads if u[0] > key_marker or (u[0] == key_marker and u[2] > id_marker)
        ]
    page, truncated = uploads[:max_uploads], len(uploads) > max_uploads
    root = document("ListMultipartUploadsResult")
    sub(root, "Bucket", ctx.bucket)
    sub(root, "KeyMarker", key_marker)
    sub(root, "UploadIdMarker", id_marker)
    sub(root, "NextKeyMarker", page[-1][0] if page else "")
    sub(root, "NextUploadIdMarker", page[-1][2] if page else "")
    sub(root, "Prefix", prefix)
    sub(root, "MaxUploads", max_uploads)
    sub(root, "IsTruncated", "true" if truncated else "false")
    for key, initiated, upload_id, user in page:
        element = sub(root, "Upload")
        sub(element, "Key", key)
        sub(element, "UploadId", upload_id)
        for who in ("Initiator", "Owner"):
            person = sub(element, who)
            sub(person, "ID", user)
            sub(person, "DisplayName", ctx.names.get(user, user))
        sub(element, "StorageClass", "STANDARD")
        sub(element, "Initiated", iso_time(initiated))
    return xml_response(root)
