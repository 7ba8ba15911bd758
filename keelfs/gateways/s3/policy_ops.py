"""Bucket policies, public access blocks and ownership controls: their operations, and the
gate every request to a bucket passes (``docs/s3.md``, "Bucket policies").

The gate takes the bucket's settings (``bucket_config``, kept a second by the gateway:
``settings_cache``; read afresh for what changes them and before acting for the owner)
and, with a policy:

- a statement that **denies** the request ends it (``AccessDenied``), the owner's too, but for
  the owner's own policy operations (so an owner cannot lock itself out);
- one that **allows** a caller other than the owner lets the gateway **act for the bucket's
  owner** for this one request (its client, the owner's keelfs rights): the policy grants at
  most what the owner has, and the cluster still checks every path. Never for what changes
  who may do what (ACLs, the policy, the access block, ownership, deleting the bucket), nor
  for a copy whose source the policy does not also let the caller read in this bucket;
- otherwise keelfs's own permissions (the ACLs) decide, as without a policy; with
  ``IgnorePublicAcls`` or ``BucketOwnerEnforced`` only the owner and the policy do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from keelfs.client.aio import AsyncClient
from keelfs.errors import KeelError, PermissionDenied
from keelfs.gateways.s3 import acl as acls
from keelfs.gateways.s3 import acl_ops, buckets, cors, multipart, objects, store, versions
from keelfs.gateways.s3 import bucket_config as config
from keelfs.gateways.s3.context import Ctx, xml_response
from keelfs.gateways.s3.errors import S3Error
from keelfs.gateways.s3.policy import ALLOW, DENY, parse_policy
from keelfs.gateways.s3.policy_eval import arn, decide
from keelfs.gateways.s3.xmlio import child_text, children, document, parse, sub, tag

__all__ = [
    "authorize",
    "delete_bucket_ownership",
    "delete_bucket_policy",
    "delete_public_access_block",
    "get_bucket_ownership",
    "get_bucket_policy",
    "get_bucket_policy_status",
    "get_public_access_block",
    "may_list",
    "put_bucket_ownership",
    "put_bucket_policy",
    "put_public_access_block",
    "SETTINGS_WRITERS",
]

Handler = Callable[[Ctx], Any]


def _denied(why: str = "") -> S3Error:
    return S3Error("AccessDenied", "Access Denied" + (f": {why}" if why else ""))


def _require_owner(ctx: Ctx) -> config.BucketConfig:
    """A bucket's settings are its owner's to read and change."""
    assert ctx.config is not None
    if ctx.anonymous or ctx.user != ctx.config.owner:
        raise _denied("only the bucket's owner reads or changes its settings")
    return ctx.config


# -- the policy -----------------------------------------------------------------------------
async def get_bucket_policy(ctx: Ctx) -> web.Response:
    cfg = _require_owner(ctx)
    if cfg.policy_text is None:
        raise S3Error(
            "NoSuchBucketPolicy", "The bucket policy does not exist", BucketName=ctx.bucket
        )
    return web.Response(text=cfg.policy_text, content_type="application/json")


async def put_bucket_policy(ctx: Ctx) -> web.Response:
    """Checked (``MalformedPolicy``), refused if public under ``BlockPublicPolicy``, then
    stored with the bucket."""
    cfg = _require_owner(ctx)
    body = await ctx.request.read()
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise S3Error("MalformedPolicy", "the policy is not UTF-8 text") from None
    policy = parse_policy(text, ctx.bucket)
    if policy.public and cfg.block.block_public_policy:
        raise _denied("the bucket's public access block forbids a public policy")
    await config.write_setting(ctx.fs, ctx.bucket, config.POLICY, text)
    return web.Response(status=204)


async def delete_bucket_policy(ctx: Ctx) -> web.Response:
    _require_owner(ctx)
    await config.delete_setting(ctx.fs, ctx.bucket, config.POLICY)
    return web.Response(status=204)


async def get_bucket_policy_status(ctx: Ctx) -> web.Response:
    """Public when the ACL grants anything to everyone, signed or not (S3 counts both groups
    as public), or the policy allows everyone without a condition that names callers."""
    cfg = _require_owner(ctx)
    info, anonymous = await acls.read_bucket_acl(ctx.fs, ctx.bucket)
    public = bool(anonymous or acls.others_of(info)) and not cfg.ignores_public_acls
    policy = cfg.policy
    public = public or (policy is not None and policy.public)
    root = document("PolicyStatus")
    sub(root, "IsPublic", "true" if public else "false")
    return xml_response(root)


# -- the public access block ----------------------------------------------------------------
async def get_public_access_block(ctx: Ctx) -> web.Response:
    block = _require_owner(ctx).public_access_block
    if block is None:
        raise S3Error(
            "NoSuchPublicAccessBlockConfiguration",
            "The public access block configuration was not found",
            BucketName=ctx.bucket,
        )
    root = document("PublicAccessBlockConfiguration")
    for name, value in block.to_json().items():
        sub(root, name, "true" if value else "false")
    return xml_response(root)


async def put_public_access_block(ctx: Ctx) -> web.Response:
    _require_owner(ctx)
    root = parse(await ctx.request.read())
    if tag(root) != "PublicAccessBlockConfiguration":
        raise S3Error("MalformedXML", "expected a PublicAccessBlockConfiguration")
    values: dict[str, bool] = {}
    for name, _ in config.PublicAccessBlock.FIELDS:
        text = (child_text(root, name) or "false").lower()
        if text not in ("true", "false"):
            raise S3Error("MalformedXML", f"{name} is true or false")
        values[name] = text == "true"
    await config.write_setting(ctx.fs, ctx.bucket, config.PUBLIC_ACCESS_BLOCK, values)
    return web.Response()


async def delete_public_access_block(ctx: Ctx) -> web.Response:
    _require_owner(ctx)
    await config.delete_setting(ctx.fs, ctx.bucket, config.PUBLIC_ACCESS_BLOCK)
    return web.Response(status=204)


# -- ownership controls -----------------------------------------------------------------------
async def get_bucket_ownership(ctx: Ctx) -> web.Response:
    ownership = _require_owner(ctx).ownership
    if ownership is None:
        raise S3Error(
            "OwnershipControlsNotFoundError",
            "The bucket ownership controls were not found",
            BucketName=ctx.bucket,
        )
    root = document("OwnershipControls")
    sub(sub(root, "Rule"), "ObjectOwnership", ownership)
    return xml_response(root)


def parse_ownership(body: bytes) -> str:
    root = parse(body)
    rules = children(root, "Rule")
    if tag(root) != "OwnershipControls" or len(rules) != 1:
        raise S3Error("MalformedXML", "expected OwnershipControls with one Rule")
    return check_ownership(child_text(rules[0], "ObjectOwnership") or "")


def check_ownership(value: str) -> str:
    if value not in config.OWNERSHIP_KINDS:
        raise S3Error("InvalidArgument", f"unknown ObjectOwnership {value!r}")
    return value


async def put_bucket_ownership(ctx: Ctx) -> web.Response:
    """``BucketOwnerEnforced`` turns ACLs off: refused while the bucket's ACL grants
    anything to everyone (S3's ``InvalidBucketAclWithObjectOwnership``)."""
    _require_owner(ctx)
    ownership = parse_ownership(await ctx.request.read())
    if ownership == config.ENFORCED:
        info, anonymous = await acls.read_bucket_acl(ctx.fs, ctx.bucket)
        if anonymous or acls.others_of(info):
            raise S3Error(
                "InvalidBucketAclWithObjectOwnership",
                "Bucket cannot have ACLs set with ObjectOwnership's BucketOwnerEnforced setting",
            )
    await config.write_setting(ctx.fs, ctx.bucket, config.OWNERSHIP, ownership)
    return web.Response()


async def delete_bucket_ownership(ctx: Ctx) -> web.Response:
    _require_owner(ctx)
    await config.delete_setting(ctx.fs, ctx.bucket, config.OWNERSHIP)
    return web.Response(status=204)


# -- the gate -------------------------------------------------------------------------------
_POLICY_ACTIONS = frozenset({"s3:GetBucketPolicy", "s3:PutBucketPolicy", "s3:DeleteBucketPolicy"})
"""What a Deny never takes from the bucket's owner (S3: the account's root)."""

_BUCKET_ACTIONS: dict[Handler, str] = {
    buckets.list_objects: "s3:ListBucket",
    buckets.head_bucket: "s3:ListBucket",
    buckets.get_bucket_location: "s3:GetBucketLocation",
    buckets.get_bucket_versioning: "s3:GetBucketVersioning",
    buckets.put_bucket_versioning: "s3:PutBucketVersioning",
    cors.get_bucket_cors: "s3:GetBucketCORS",
    cors.put_bucket_cors: "s3:PutBucketCORS",
    cors.delete_bucket_cors: "s3:PutBucketCORS",
    buckets.delete_bucket: "s3:DeleteBucket",
    versions.list_object_versions: "s3:ListBucketVersions",
    multipart.list_uploads: "s3:ListBucketMultipartUploads",
    acl_ops.get_bucket_acl: "s3:GetBucketAcl",
    acl_ops.put_bucket_acl: "s3:PutBucketAcl",
    get_bucket_policy: "s3:GetBucketPolicy",
    put_bucket_policy: "s3:PutBucketPolicy",
    delete_bucket_policy: "s3:DeleteBucketPolicy",
    get_bucket_policy_status: "s3:GetBucketPolicyStatus",
    get_public_access_block: "s3:GetBucketPublicAccessBlock",
    put_public_access_block: "s3:PutBucketPublicAccessBlock",
    delete_public_access_block: "s3:PutBucketPublicAccessBlock",
    get_bucket_ownership: "s3:GetBucketOwnershipControls",
    put_bucket_ownership: "s3:PutBucketOwnershipControls",
    delete_bucket_ownership: "s3:PutBucketOwnershipControls",
}
_OBJECT_ACTIONS: dict[Handler, str] = {
    objects.get_object: "s3:GetObject",
    objects.head_object: "s3:GetObject",
    objects.get_object_attributes: "s3:GetObjectAttributes",
    objects.put_object: "s3:PutObject",
    objects.delete_object: "s3:DeleteObject",
    multipart.create_upload: "s3:PutObject",
    multipart.upload_part: "s3:PutObject",
    multipart.complete_upload: "s3:PutObject",
    multipart.list_parts: "s3:ListMultipartUploadParts",
    multipart.abort_upload: "s3:AbortMultipartUpload",
    acl_ops.get_object_acl: "s3:GetObjectAcl",
    acl_ops.put_object_acl: "s3:PutObjectAcl",
}
_NEVER_FOR_OTHERS: frozenset[Handler] = frozenset(
    {
        buckets.delete_bucket, objects.delete_objects, acl_ops.put_bucket_acl,
        acl_ops.put_object_acl, put_bucket_policy, delete_bucket_policy, get_bucket_policy,
        get_bucket_policy_status, get_public_access_block, put_public_access_block,
        delete_public_access_block, get_bucket_ownership, put_bucket_ownership,
        delete_bucket_ownership, buckets.put_bucket_versioning, cors.put_bucket_cors,
        cors.delete_bucket_cors,
    }
)  # fmt: skip
"""What a policy never lets the gateway do as the owner for someone else: what changes who
may do what, and DeleteObjects (its keys are many resources: each caller deletes as itself,
and a policy's Deny is checked per key, ``policy_eval.refuse_denied_key``)."""
OWNER_ONLY: frozenset[Handler] = frozenset(
    {
        put_bucket_policy, delete_bucket_policy, get_bucket_policy, get_bucket_policy_status,
        get_public_access_block, put_public_access_block, delete_public_access_block,
        get_bucket_ownership, put_bucket_ownership, delete_bucket_ownership,
    }
)  # fmt: skip
"""The operations of this module: the owner's alone."""
SETTINGS_WRITERS: frozenset[Handler] = frozenset(
    {
        buckets.create_bucket, buckets.delete_bucket, buckets.put_bucket_versioning,
        cors.put_bucket_cors, cors.delete_bucket_cors, acl_ops.put_bucket_acl,
        put_bucket_policy, delete_bucket_policy, put_public_access_block,
        delete_public_access_block, put_bucket_ownership, delete_bucket_ownership,
    }
)  # fmt: skip
"""What changes a bucket's settings (``bucket_config``), or makes or ends the bucket: the
gate decides on settings read afresh, and the gateway forgets the bucket's kept settings
once the request ends (``settings_cache``), so that its next request sees the change."""


def _request(ctx: Ctx, handler: Handler) -> tuple[str, str] | None:
    """The S3 action a request is and the resource it acts on (None: a request no policy
    speaks of)."""
    if handler in _OBJECT_ACTIONS:
        return _OBJECT_ACTIONS[handler], arn(ctx.bucket, ctx.key)
    if handler in _BUCKET_ACTIONS:
        return _BUCKET_ACTIONS[handler], arn(ctx.bucket)
    return None


async def authorize(
    ctx: Ctx, handler: Handler, owner_client: Callable[[str], AsyncClient | None]
) -> None:
    """The gate (module doc). ``owner_client(user)``: a client acting as ``user``, None if
    the gateway cannot act for them (with TLS, no certificate of theirs).

    It decides on the bucket's settings as the gateway keeps them (``settings_cache``: up to
    a second old where another gateway changed them), but for what changes them, and before
    it acts for the bucket's owner: that is decided again on settings read now, so an Allow
    the bucket's policy no longer gives (or a deleted bucket's, under a new bucket of the same
    name) never lets the gateway act as the owner."""
    if not ctx.bucket or handler is buckets.create_bucket:
        if ctx.anonymous:
            await acl_ops.admit_anonymous(ctx, handler)
        return
    await _gate(ctx, handler, owner_client, fresh=handler in SETTINGS_WRITERS)


async def _gate(
    ctx: Ctx, handler: Handler, owner_client: Callable[[str], AsyncClient | None], *, fresh: bool
) -> None:
    try:
        cfg = await ctx.settings(fresh=fresh)
    except S3Error as err:
        if err.code != "NoSuchBucket":
            raise
        if ctx.anonymous:
            await acl_ops.admit_anonymous(ctx, handler)
        return  # the operation answers NoSuchBucket
    ctx.config = cfg
    if cfg.acls_disabled and handler in (acl_ops.put_bucket_acl, acl_ops.put_object_acl):
        raise S3Error("AccessControlListNotSupported", "The bucket does not allow ACLs")
    is_owner = not ctx.anonymous and ctx.user == cfg.owner
    request = _request(ctx, handler)
    decision = decide(ctx, cfg, *request) if request is not None else None
    if decision == DENY and not (is_owner and request and request[0] in _POLICY_ACTIONS):
        raise _denied("denied by the bucket policy")
    await _check_copy_source(ctx, cfg)
    if is_owner:
        return
    if handler in OWNER_ONLY:
        raise _denied("only the bucket's owner reads or changes its settings")
    if decision == ALLOW and _may_act_for_owner(ctx, handler, cfg):
        if not fresh:
            return await _gate(ctx, handler, owner_client, fresh=True)
        client = owner_client(cfg.owner)
        if client is not None:
            ctx.act_as(cfg.owner, client)
            return
    if cfg.ignores_public_acls:
        raise _denied("the bucket ignores public ACLs: only its owner and its policy grant access")
    if ctx.anonymous:
        await acl_ops.admit_anonymous(ctx, handler)


def _may_act_for_owner(ctx: Ctx, handler: Handler, cfg: config.BucketConfig) -> bool:
    policy = cfg.policy
    assert policy is not None
    if handler in _NEVER_FOR_OTHERS:
        return False
    if cfg.block.restrict_public_buckets and policy.public:
        return False  # RestrictPublicBuckets: a public policy grants no one but the owner
    source = ctx.header("x-amz-copy-source")
    if source is None:
        return True
    src_bucket, src_key, _ = objects.parse_copy_source(source)
    if src_bucket != ctx.bucket:
        return False  # the owner's other buckets are not this policy's to open
    return decide(ctx, cfg, "s3:GetObject", arn(src_bucket, src_key)) == ALLOW


async def _check_copy_source(ctx: Ctx, cfg: config.BucketConfig) -> None:
    """A copy reads its source: the source bucket's policy must not deny that
    (``s3:GetObject``), and where that bucket ignores public ACLs, a caller other than its
    owner reads it only by that policy (the copy is made with the caller's own rights
    unless the gate acts for this bucket's owner)."""
    source = ctx.header("x-amz-copy-source")
    if source is None:
        return
    src_bucket, src_key, _ = objects.parse_copy_source(source)
    try:
        src_cfg = cfg if src_bucket == ctx.bucket else await ctx.settings(src_bucket)
    except S3Error as err:
        if err.code == "NoSuchBucket":
            return  # the copy answers it
        raise
    decision = decide(ctx, src_cfg, "s3:GetObject", arn(src_bucket, src_key))
    if decision == DENY:
        raise _denied("the copy's source is denied by its bucket's policy")
    is_src_owner = not ctx.anonymous and ctx.signed.key.user == src_cfg.owner
    if not is_src_owner and decision != ALLOW and src_cfg.ignores_public_acls:
        raise _denied("the copy's source bucket ignores public ACLs")


async def may_list(ctx: Ctx) -> bool:
    """Whether the caller may list the bucket where the requested key would be: a missing
    key is ``NoSuchKey`` to them, ``AccessDenied`` to others (S3), so that no one learns
    which keys exist in a bucket they may not list."""
    cfg = ctx.config
    if cfg is None or (not ctx.anonymous and ctx.signed.key.user == cfg.owner):
        return True
    decision = decide(ctx, cfg, "s3:ListBucket", arn(ctx.bucket), **{"s3:prefix": ctx.key})
    if decision is not None:
        return decision == ALLOW
    if cfg.ignores_public_acls:
        return False
    try:
        async for _ in ctx.own_fs.ls(store.bucket_path(ctx.bucket)):
            break
    except PermissionDenied:
        return False
    except KeelError:
        return True
    return True
