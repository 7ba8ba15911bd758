"""The bucket family: ListBuckets, CreateBucket, DeleteBucket, HeadBucket, GetBucketLocation
and the two ListObjects (V1 and V2)."""

from __future__ import annotations

import base64
import binascii
import contextlib
from urllib.parse import quote

from aiohttp import web

from keelfs.errors import AlreadyExists, DirectoryNotEmpty, KeelError, NotFound
from keelfs.gateways.s3 import acl as acls
from keelfs.gateways.s3 import bucket_config, listing, store, versioning
from keelfs.gateways.s3.context import Ctx, xml_response
from keelfs.gateways.s3.errors import S3Error, from_keel
from keelfs.gateways.s3.xmlio import child_text, document, iso_time, parse, sub

__all__ = [
    "create_bucket",
    "delete_bucket",
    "get_bucket_location",
    "get_bucket_versioning",
    "head_bucket",
    "list_buckets",
    "list_max_keys",
    "list_objects",
    "owner",
    "put_bucket_versioning",
]

MAX_KEYS = 1000


def owner(parent: object, user: str, names: dict[str, str] | None = None) -> None:
    element = sub(parent, "Owner")  # type: ignore[arg-type]
    sub(element, "ID", user)
    sub(element, "DisplayName", (names or {}).get(user, user))


async def list_buckets(ctx: Ctx) -> web.Response:
    """The caller's buckets (S3's: those it owns), not every top-level directory; pages of
    ``max-buckets`` after ``continuation-token``, those starting with ``prefix``."""
    prefix = ctx.query.get("prefix", "")
    token = ctx.query.get("continuation-token")
    after = _token(token) if token else ""
    limit = _max_buckets(ctx.query.get("max-buckets"))
    try:
        entries = [e async for e in ctx.fs.ls("/")]
    except KeelError as exc:
        raise from_keel(exc) from None
    mine = [
        e
        for e in sorted(entries, key=lambda e: e.name)
        if e.is_dir and e.owner == ctx.user and _valid_bucket(e.name)
        and e.name.startswith(prefix) and e.name > after
    ]  # fmt: skip
    page = mine[:limit]
    root = document("ListAllMyBucketsResult")
    owner(root, ctx.user, ctx.names)
    buckets = sub(root, "Buckets")
    for entry in page:
        bucket = sub(buckets, "Bucket")
        sub(bucket, "Name", entry.name)
        sub(bucket, "CreationDate", iso_time(entry.mtime))
        sub(bucket, "BucketRegion", "us-east-1")
    if len(mine) > limit:
        sub(root, "ContinuationToken", _make_token(page[-1].name))
    if "prefix" in ctx.query:
        sub(root, "Prefix", prefix)
    return xml_response(root)


def _max_buckets(text: str | None) -> int:
    if text is None:
        return 10_000
    if not text.isdigit() or not 1 <= int(text) <= 10_000:
        raise S3Error("InvalidArgument", "max-buckets must be a number from 1 to 10000")
    return int(text)


def _valid_bucket(name: str) -> bool:
    try:
        store.check_bucket_name(name)
    except S3Error:
        return False
    return True


async def create_bucket(ctx: Ctx) -> web.Response:
    """The bucket's directory with the mode its ACL gives (private: ``0711``), then the
    ACL's anonymous mark if it grants unsigned requests anything (``acl``)."""
    store.check_bucket_name(ctx.bucket)
    body = await ctx.request.read()
    location = _location_of(body)
    acl_given = acls.from_request(
        ctx.request.headers, b"", owner=ctx.user, is_bucket=True, known=ctx.names
    )
    chosen = acl_given or acls.PRIVATE
    ownership = _ownership_of_request(ctx, chosen)
    try:
        path = store.bucket_path(ctx.bucket)
        await ctx.fs.mkdir(path, mode=acls.dir_mode(chosen))
        if chosen.users:  # before the hidden directories: they inherit its default entries
            await ctx.fs.set_acl(path, acls.dir_acl_spec(chosen, acls.dir_mode(chosen)))
    except AlreadyExists:
        info = await ctx.fs.stat(store.bucket_path(ctx.bucket))
        if info.is_dir and info.owner == ctx.user:
            return await _recreate(ctx, acl_given)
        raise S3Error(
            "BucketAlreadyExists",
            "The requested bucket name is not available.",
            BucketName=ctx.bucket,
        ) from None
    except KeelError as exc:
        raise from_keel(exc, BucketName=ctx.bucket) from None
    try:
        for hidden in ("tmp", "meta", "uploads"):  # the owner's: see store.make_hidden_dir
            await store.make_hidden_dir(ctx.fs, ctx.bucket, store.hidden(ctx.bucket, hidden))
        if chosen.anonymous:
            await acls.write_bucket_mark(ctx.fs, ctx.bucket, chosen.anonymous)
        if ownership is not None:
            await bucket_config.write_setting(
                ctx.fs, ctx.bucket, bucket_config.OWNERSHIP, ownership
            )
        if location:
            await bucket_config.write_setting(ctx.fs, ctx.bucket, bucket_config.LOCATION, location)
    except KeelError as exc:
        raise from_keel(exc, BucketName=ctx.bucket) from None
    return web.Response(headers={"Location": "/" + ctx.bucket})


def _location_of(body: bytes) -> str:
    """The ``LocationConstraint`` of a CreateBucketConfiguration ("" for none): keelfs has
    no regions, so it is only kept and answered back by GetBucketLocation (as RGW answers
    its zone group's name)."""
    if not body.strip():
        return ""
    location = child_text(parse(body), "LocationConstraint") or ""
    if len(location) > 64 or not all(c.isalnum() or c in "-_" for c in location):
        raise S3Error("InvalidLocationConstraint", "The specified location-constraint is not valid")
    return "" if location == "us-east-1" else location


def _ownership_of_request(ctx: Ctx, chosen: acls.Acl) -> str | None:
    """``x-amz-object-ownership`` of a CreateBucket (None: none given); ``BucketOwnerEnforced``
    turns ACLs off, so it cannot come with a public one."""
    given = ctx.header("x-amz-object-ownership")
    if given is None:
        return None
    if given not in bucket_config.OWNERSHIP_KINDS:
        raise S3Error("InvalidArgument", f"unknown ObjectOwnership {given!r}")
    if given == bucket_config.ENFORCED and (chosen.others or chosen.anonymous):
        raise S3Error(
            "InvalidBucketAclWithObjectOwnership",
            "Bucket cannot have ACLs set with ObjectOwnership's BucketOwnerEnforced setting",
        )
    return given


async def _recreate(ctx: Ctx, acl_given: acls.Acl | None) -> web.Response:
    """CreateBucket of a bucket the caller owns: as S3 in us-east-1 (and moto), an
    idempotent success that keeps what the bucket holds, applying the ACL if one is given."""
    if acl_given is not None:
        from keelfs.gateways.s3.acl_ops import set_bucket_acl

        ctx.config = await ctx.settings(fresh=True)
        ctx.refuse_disabled_acl()
        ctx.refuse_public_acl(acl_given)
        info, current = await acls.read_bucket_acl(ctx.fs, ctx.bucket)
        await set_bucket_acl(ctx.fs, ctx.bucket, info, current, acl_given)
    return web.Response(headers={"Location": "/" + ctx.bucket})


async def delete_bucket(ctx: Ctx) -> web.Response:
    """Refused while any object is there (``BucketNotEmpty``); the gateway's hidden directory
    (unfinished uploads, leftovers) goes with the bucket."""
    await store.require_bucket(ctx.fs, ctx.bucket)
    path = store.bucket_path(ctx.bucket)
    not_empty = S3Error(
        "BucketNotEmpty", "The bucket you tried to delete is not empty", BucketName=ctx.bucket
    )
    try:
        async for entry in ctx.fs.ls(path):
            if entry.name != store.HIDDEN:
                raise not_empty
        if await versioning.has_versions(ctx.fs, ctx.bucket):
            raise not_empty  # older versions and delete markers are objects too
        with contextlib.suppress(NotFound):
            await ctx.fs.delete(store.hidden(ctx.bucket), recursive=True)
        await ctx.fs.delete(path)
    except DirectoryNotEmpty:
        raise not_empty from None
    except NotFound:
        raise S3Error("NoSuchBucket", "The specified bucket does not exist") from None
    except KeelError as exc:
        raise from_keel(exc, missing="NoSuchBucket", BucketName=ctx.bucket) from None
    return web.Response(status=204)


async def head_bucket(ctx: Ctx) -> web.Response:
    await store.require_bucket(ctx.fs, ctx.bucket)
    return web.Response(headers={"x-amz-bucket-region": "us-east-1"})


async def get_bucket_location(ctx: Ctx) -> web.Response:
    """The LocationConstraint the bucket was created with (none: ``us-east-1``'s empty
    answer)."""
    location = await bucket_config.read_setting(ctx.fs, ctx.bucket, bucket_config.LOCATION)
    root = document("LocationConstraint")
    if isinstance(location, str) and location:
        root.text = location
    return xml_response(root)


async def get_bucket_versioning(ctx: Ctx) -> web.Response:
    """The bucket's versioning state (no ``Status``: never set)."""
    root = document("VersioningConfiguration")
    state = await ctx.versioning_state()
    if state:
        sub(root, "Status", state)
    return xml_response(root)


async def put_bucket_versioning(ctx: Ctx) -> web.Response:
    """``Enabled`` or ``Suspended``, by the bucket's owner only (as S3: not even a grant of
    WRITE lets another user set it). MFA delete is not supported."""
    root = parse(await ctx.request.read())
    status = child_text(root, "Status")
    if status not in (versioning.ENABLED, versioning.SUSPENDED):
        raise S3Error(
            "MalformedXML", "The XML you provided was not well-formed or did not validate"
        )
    if (child_text(root, "MfaDelete") or "Disabled") != "Disabled":
        raise S3Error("NotImplemented", "MFA delete is not supported by keelfs")
    info = await store.require_bucket(ctx.fs, ctx.bucket)
    if info.owner != ctx.user:
        raise S3Error("AccessDenied", "Access Denied: only the bucket's owner sets versioning")
    try:
        await versioning.write_state(ctx.fs, ctx.bucket, status)
    except KeelError as exc:
        raise from_keel(exc, missing="NoSuchBucket", BucketName=ctx.bucket) from None
    return web.Response()


def list_max_keys(ctx: Ctx) -> int:
    """A listing's ``max-keys`` (at most 1000)."""
    text = ctx.query.get("max-keys", str(MAX_KEYS))
    try:
        value = int(text)
    except ValueError:
        raise S3Error("InvalidArgument", "max-keys must be an integer") from None
    if value < 0:
        raise S3Error("InvalidArgument", "max-keys must not be negative")
    return min(value, MAX_KEYS)


def _token(text: str) -> str:
    try:
        return base64.urlsafe_b64decode(text.encode() + b"==").decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise S3Error("InvalidArgument", "The continuation token provided is incorrect") from None


def _make_token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


async def list_objects(ctx: Ctx) -> web.Response:
    """ListObjectsV2 (``list-type=2``) or V1."""
    v2 = ctx.query.get("list-type") == "2"
    encoding = ctx.query.get("encoding-type")
    if encoding is not None and encoding != "url":
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request")
    prefix = ctx.query.get("prefix", "")
    delimiter = ctx.query.get("delimiter", "")
    max_keys = list_max_keys(ctx)
    if v2:
        token = ctx.query.get("continuation-token")
        start_after = ctx.query.get("start-after", "")
        after = _token(token) if token is not None else start_after
    else:
        after = ctx.query.get("marker", "")
    page = await listing.list_page(
        ctx.fs, ctx.bucket, prefix=prefix, delimiter=delimiter, after=after, max_keys=max_keys
    )

    def enc(text: str) -> str:
        return quote(text, safe="/") if encoding == "url" else text

    root = document("ListBucketResult")
    sub(root, "Name", ctx.bucket)
    sub(root, "Prefix", enc(prefix) if v2 else prefix)  # V1's is not encoded (RGW, botocore)
    if v2:
        if "continuation-token" in ctx.query:
            sub(root, "ContinuationToken", ctx.query["continuation-token"])
        if "start-after" in ctx.query:
            sub(root, "StartAfter", enc(ctx.query["start-after"]))
        sub(root, "KeyCount", len(page.contents) + len(page.prefixes))
    else:
        sub(root, "Marker", enc(after))
    sub(root, "MaxKeys", max_keys)
    if delimiter:
        sub(root, "Delimiter", enc(delimiter))
    if encoding:
        sub(root, "EncodingType", encoding)
    sub(root, "IsTruncated", "true" if page.truncated else "false")
    if page.truncated:
        if v2:
            sub(root, "NextContinuationToken", _make_token(page.last))
        elif delimiter:
            sub(root, "NextMarker", enc(page.last))
    for entry in page.contents:
        assert entry.info is not None and entry.stored is not None
        item = sub(root, "Contents")
        sub(item, "Key", enc(entry.key))
        sub(item, "LastModified", iso_time(entry.info.mtime))
        sub(item, "ETag", entry.stored.etag)
        sub(item, "Size", 0 if entry.info.is_dir else entry.info.length)
        if not v2 or ctx.query.get("fetch-owner") == "true":
            owner(item, entry.info.owner, ctx.names)
        sub(item, "StorageClass", "STANDARD")
    for common in page.prefixes:
        sub(sub(root, "CommonPrefixes"), "Prefix", enc(common))
    return xml_response(root)
