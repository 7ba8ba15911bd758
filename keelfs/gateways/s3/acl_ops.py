"""The ACL family: Get/PutBucketAcl, Get/PutObjectAcl, and who an unsigned request may be
(``acl``: what keelfs holds of an ACL and how)."""

from __future__ import annotations

import contextlib

from aiohttp import web

from keelfs.client.aio import AsyncClient
from keelfs.errors import KeelError, NotADirectory, NotFound
from keelfs.gateways.s3 import acl as acls
from keelfs.gateways.s3 import buckets, objects, store, versioning
from keelfs.gateways.s3.context import Ctx
from keelfs.gateways.s3.errors import S3Error, from_keel
from keelfs.meta.records import FileInfo

__all__ = [
    "admit_anonymous",
    "get_bucket_acl",
    "get_object_acl",
    "put_bucket_acl",
    "put_object_acl",
]


def _require_owner(ctx: Ctx, info: FileInfo) -> None:
    """Reading or changing an ACL is its owner's (S3's READ_ACP/WRITE_ACP, never granted to
    anyone else here)."""
    if ctx.user != info.owner:
        raise S3Error("AccessDenied", "Access Denied: only the owner reads or changes an ACL")


def _xml(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/xml")


def _no_acl() -> S3Error:
    return S3Error(
        "InvalidRequest", "Give a canned ACL (x-amz-acl), x-amz-grant-* headers or an ACL body"
    )


# -- buckets --------------------------------------------------------------------------------------
async def get_bucket_acl(ctx: Ctx) -> web.Response:
    info, anonymous = await acls.read_bucket_acl(ctx.fs, ctx.bucket)
    _require_owner(ctx, info)
    return _xml(acls.render(info, anonymous, ctx.names))


async def put_bucket_acl(ctx: Ctx) -> web.Response:
    """The bucket's mode, its mark, and the modes of the directories below it (its keys'
    and the gateway's hidden ones), in the order that never grants more than the old or
    the new ACL: a narrower mark before the mode, a wider one after."""
    ctx.refuse_disabled_acl()
    info, current = await acls.read_bucket_acl(ctx.fs, ctx.bucket)
    body = await ctx.request.read()
    chosen = acls.from_request(
        ctx.request.headers, body, owner=info.owner, is_bucket=True, known=ctx.names
    )
    if chosen is None:
        raise _no_acl()
    _require_owner(ctx, info)
    ctx.refuse_public_acl(chosen)
    await set_bucket_acl(ctx.fs, ctx.bucket, info, current, chosen)
    return web.Response()


async def set_bucket_acl(
    fs: AsyncClient, bucket: str, info: FileInfo, current: frozenset[str], chosen: acls.Acl
) -> None:
    narrower = chosen.anonymous <= current
    try:
        if narrower:
            await acls.write_bucket_mark(fs, bucket, chosen.anonymous)
        mode = acls.dir_mode(chosen)
        await set_dir_acl(fs, info, chosen, mode, mode)
        if not narrower:
            await acls.write_bucket_mark(fs, bucket, chosen.anonymous)
        await _reapply_modes(fs, bucket, info.owner, chosen)
    except KeelError as exc:
        raise from_keel(exc, missing="NoSuchBucket", BucketName=bucket) from None


async def set_dir_acl(
    fs: AsyncClient, info: FileInfo, chosen: acls.Acl, mode: int, base: int
) -> None:
    """A directory's mode and named-user entries (``acl.dir_acl_spec`` of ``base``, the
    mode without them); an ACL it had and ``chosen`` has no named users for removed first,
    so the group bits are ``mode``'s again."""
    if info.acl and not chosen.users:
        info = await fs.remove_acl(info.path)
    if info.mode & 0o7777 != mode:
        await fs.chmod(info.path, mode)
    if chosen.users:
        await fs.set_acl(info.path, acls.dir_acl_spec(chosen, base))


async def _reapply_modes(fs: AsyncClient, bucket: str, owner: str, chosen: acls.Acl) -> None:
    """Every directory below the bucket that its owner owns takes the bucket's new mode
    and named users (the gateway's hidden ones ``acl.hidden_mode``); one another user made
    in a bucket they could write stays theirs to change."""
    mode = acls.dir_mode(chosen)
    extended = bool(chosen.users)
    hidden = store.hidden(bucket)
    pending = [store.bucket_path(bucket)]
    while pending:
        directory = pending.pop()
        with contextlib.suppress(NotFound, NotADirectory):
            async for entry in fs.ls(directory):
                if not entry.is_dir or entry.owner != owner:
                    continue
                inside_hidden = entry.path == hidden or entry.path.startswith(hidden + "/")
                if inside_hidden and entry.path.count("/") > hidden.count("/") + 1:
                    continue  # an upload's own directory: its initiator's
                base = acls.hidden_mode(mode) if inside_hidden else mode
                wanted = acls.hidden_mode(mode, extended=extended) if inside_hidden else mode
                await set_dir_acl(fs, entry, chosen, wanted, base)
                pending.append(entry.path)


async def create_bucket_acl(ctx: Ctx) -> acls.Acl:
    """The ACL a CreateBucket asks for (private where none)."""
    chosen = acls.from_request(
        ctx.request.headers, b"", owner=ctx.user, is_bucket=True, known=ctx.names
    )
    return chosen or acls.PRIVATE


# -- objects --------------------------------------------------------------------------------------
async def _object(ctx: Ctx) -> store.ObjectInfo:
    """The object (version ``versionId``, else the latest) whose ACL is asked for or set."""
    vid = ctx.query.get("versionId")
    obj = await versioning.version_object(ctx.fs, ctx.bucket, ctx.key, vid)
    if obj.info.is_dir:
        raise S3Error(
            "NotImplemented", "a key ending in '/' is a directory: its ACL is its bucket's"
        )
    return obj


async def object_mark(fs: AsyncClient, bucket: str, obj: store.ObjectInfo) -> frozenset[str]:
    """What the object's mark grants unsigned requests: its sidecar's, if the sidecar is
    owned by the object's owner (module doc of ``acl``)."""
    if not obj.stored.anonymous:
        return frozenset()
    try:
        sidecar = await fs.stat(store.sidecar_path(bucket, obj.key, obj.info))
    except (NotFound, NotADirectory):
        return frozenset()
    except KeelError as exc:
        raise from_keel(exc, Key=obj.key) from None
    return obj.stored.anonymous if sidecar.owner == obj.info.owner else frozenset()


async def get_object_acl(ctx: Ctx) -> web.Response:
    obj = await _object(ctx)
    _require_owner(ctx, obj.info)
    anonymous = await object_mark(ctx.fs, ctx.bucket, obj)
    return _xml(acls.render(obj.info, anonymous, ctx.names))


async def put_object_acl(ctx: Ctx) -> web.Response:
    ctx.refuse_disabled_acl()
    obj = await _object(ctx)
    body = await ctx.request.read()
    bucket_owner = ""
    if (ctx.header("x-amz-acl") or "").strip().startswith("bucket-owner-"):
        bucket_owner = (await store.require_bucket(ctx.fs, ctx.bucket)).owner
    chosen = acls.from_request(
        ctx.request.headers,
        body,
        owner=obj.info.owner,
        is_bucket=False,
        bucket_owner=bucket_owner,
        known=ctx.names,
    )
    if chosen is None:
        raise _no_acl()
    _require_owner(ctx, obj.info)
    ctx.refuse_public_acl(chosen)
    current = await object_mark(ctx.fs, ctx.bucket, obj)
    mode = acls.file_mode(chosen)
    sidecar = store.sidecar_path(ctx.bucket, ctx.key, obj.info)
    obj.stored.anonymous = chosen.anonymous
    encoded = obj.stored.encode(ctx.key)
    narrower = chosen.anonymous <= current
    try:
        if narrower:
            await store.write_sidecar(ctx.fs, ctx.bucket, sidecar, encoded, mode)
        # the key's file, or an archived version: a full replace
        await store.set_file_acl(ctx.fs, obj.info.path, chosen, mode)
        if not narrower:
            await store.write_sidecar(ctx.fs, ctx.bucket, sidecar, encoded, mode)
        await store.set_file_acl(ctx.fs, sidecar, chosen, mode)
    except KeelError as exc:
        raise from_keel(exc, Key=ctx.key) from None
    return web.Response()


# -- unsigned requests ----------------------------------------------------------------------------
async def admit_anonymous(ctx: Ctx, handler: object) -> None:
    """An unsigned request goes on only where an ACL grants everyone what it does: reading
    an object (its mark), listing a bucket (the bucket's), writing or deleting an object
    (the bucket's ``WRITE``); ``AccessDenied`` otherwise. The cluster then checks the
    anonymous user's rights on the paths as any user's."""
    denied = S3Error("AccessDenied", "Access Denied (anonymous)")
    if handler in (objects.get_object, objects.head_object):
        try:  # the version asked for: its own mark decides
            vid = ctx.query.get("versionId")
            obj = await versioning.version_object(ctx.fs, ctx.bucket, ctx.key, vid)
        except S3Error as err:  # "no such key" only to who may list the bucket
            if err.code == "NoSuchBucket":
                raise  # bucket names are public in S3
            if err.code == "NoSuchKey" and acls.READ in await _bucket_mark(ctx):
                raise
            raise denied from None
        if acls.READ not in await object_mark(ctx.fs, ctx.bucket, obj):
            raise denied
        return
    if handler is buckets.list_objects:
        needed = acls.READ
    elif handler in (objects.put_object, objects.delete_object):
        if "x-amz-copy-source" in ctx.request.headers:
            raise denied  # a copy reads its source as well
        needed = acls.WRITE
    else:
        raise denied
    if needed not in await _bucket_mark(ctx):
        raise denied


async def _bucket_mark(ctx: Ctx) -> frozenset[str]:
    _, anonymous = await acls.read_bucket_acl(ctx.fs, ctx.bucket)
    return anonymous
