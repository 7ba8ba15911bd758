"""What a bucket policy says of one request or one key of it (``policy_ops`` has the gate):
the request's principal, resource ARNs and condition keys."""

from __future__ import annotations

from keelfs.gateways.s3.bucket_config import BucketConfig
from keelfs.gateways.s3.context import Ctx
from keelfs.gateways.s3.errors import S3Error
from keelfs.gateways.s3.policy import DENY, Request

__all__ = ["arn", "condition_keys", "decide", "principal", "refuse_denied_key"]


def arn(bucket: str, key: str = "") -> str:
    return f"arn:aws:s3:::{bucket}/{key}" if key else f"arn:aws:s3:::{bucket}"


def principal(ctx: Ctx) -> str:
    """The signer's keelfs user; "" for an unsigned caller."""
    return "" if ctx.anonymous else ctx.signed.key.user


def condition_keys(ctx: Ctx) -> dict[str, str]:
    """The condition keys of a request."""
    found = {
        "aws:sourceip": ctx.request.remote or "",
        "aws:securetransport": "true" if ctx.request.secure else "false",
    }
    who = principal(ctx)
    if who:
        found["aws:username"] = found["aws:userid"] = who
    for name in ("prefix", "delimiter", "max-keys"):
        if name in ctx.query:
            found["s3:" + name] = ctx.query[name]
    for header in ("x-amz-acl", "x-amz-copy-source", "x-amz-metadata-directive"):
        value = ctx.header(header)
        if value is not None:
            found["s3:" + header] = value
    for header, key in (("Referer", "aws:referer"), ("User-Agent", "aws:useragent")):
        value = ctx.header(header)
        if value is not None:
            found[key] = value
    return found


def decide(ctx: Ctx, cfg: BucketConfig, action: str, resource: str, **extra: str) -> str | None:
    """The policy's word (``ALLOW``/``DENY``/None) on ``action`` over ``resource`` for this
    request's caller (``extra``: more condition keys)."""
    policy = cfg.policy
    if policy is None:
        return None
    keys = {**condition_keys(ctx), **extra}
    return policy.evaluate(Request(principal(ctx), action, resource, keys))


def refuse_denied_key(ctx: Ctx, action: str, bucket: str, key: str) -> None:
    """``AccessDenied`` if the bucket's policy denies ``action`` on ``key`` (one key of a
    request that names many, as DeleteObjects)."""
    cfg = ctx.config
    if cfg is not None and decide(ctx, cfg, action, arn(bucket, key)) == DENY:
        raise S3Error("AccessDenied", "Access Denied: denied by the bucket policy", Key=key)
