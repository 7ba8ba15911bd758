"""A bucket's S3 settings beside its ACL: its policy, its public access block and its
ownership controls (``docs/s3.md``, "Bucket policies").

Each is a small JSON file in the bucket's hidden directory (``.s3/policy``,
``.s3/public-access-block``, ``.s3/ownership``), written inline (one Raft command) with mode
``0644``, so the gateway reads it as whoever calls, at every request to the bucket, with no
state of its own. Like the ACL's anonymous mark, a file counts only when the bucket's owner
owns it, no one else may write it, and it names its bucket and its kind: another user who
may write in a public bucket's hidden directory cannot plant one, nor move one of the
owner's objects there in its place.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from dataclasses import dataclass
from typing import Any

from keelfs.client import _ops as ops
from keelfs.client.aio import AsyncClient
from keelfs.client.files import write_inline
from keelfs.errors import IsADirectory, KeelError, NotADirectory, NotFound, PermissionDenied
from keelfs.gateways.s3 import store
from keelfs.gateways.s3.errors import S3Error, from_keel
from keelfs.gateways.s3.policy import Policy, parse_policy
from keelfs.meta.records import FileInfo
from keelfs.rpc.wire import file_info_from_pb

__all__ = [
    "OWNERSHIP_KINDS",
    "BucketConfig",
    "PublicAccessBlock",
    "delete_setting",
    "read_config",
    "read_setting",
    "write_setting",
]

POLICY, PUBLIC_ACCESS_BLOCK, OWNERSHIP = "policy", "public-access-block", "ownership"
LOCATION = "location"
"""The LocationConstraint a bucket was created with (read by GetBucketLocation alone)."""
OWNERSHIP_KINDS = ("BucketOwnerEnforced", "BucketOwnerPreferred", "ObjectWriter")
ENFORCED = "BucketOwnerEnforced"


@dataclass(frozen=True)
class PublicAccessBlock:
    block_public_acls: bool = False
    ignore_public_acls: bool = False
    block_public_policy: bool = False
    restrict_public_buckets: bool = False

    FIELDS = (
        ("BlockPublicAcls", "block_public_acls"),
        ("IgnorePublicAcls", "ignore_public_acls"),
        ("BlockPublicPolicy", "block_public_policy"),
        ("RestrictPublicBuckets", "restrict_public_buckets"),
    )

    def to_json(self) -> dict[str, bool]:
        return {name: getattr(self, attr) for name, attr in self.FIELDS}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> PublicAccessBlock:
        return cls(**{attr: body.get(name) is True for name, attr in cls.FIELDS})


@dataclass(frozen=True)
class BucketConfig:
    """What a bucket's settings say, read for one request."""

    bucket: str
    owner: str
    """The bucket's owner (its directory's)."""
    policy_text: str | None = None
    public_access_block: PublicAccessBlock | None = None
    ownership: str | None = None

    @functools.cached_property
    def policy(self) -> Policy | None:
        """The policy (checked when it was put; one that no longer parses denies)."""
        if self.policy_text is None:
            return None
        try:
            return parse_policy(self.policy_text, self.bucket)
        except S3Error:
            raise S3Error("AccessDenied", "Access Denied: the bucket policy is invalid") from None

    @property
    def block(self) -> PublicAccessBlock:
        return self.public_access_block or PublicAccessBlock()

    @property
    def acls_disabled(self) -> bool:
        """``BucketOwnerEnforced``: ACLs are off; only the owner and the policy decide."""
        return self.ownership == ENFORCED

    @property
    def ignores_public_acls(self) -> bool:
        """Whether grants to everyone (the ACL's groups) count for callers other than the
        owner: not with ``IgnorePublicAcls`` nor with ACLs off."""
        return self.block.ignore_public_acls or self.acls_disabled


def _path(bucket: str, kind: str) -> str:
    return store.hidden(bucket, kind)


async def _read_one(fs: AsyncClient, bucket: str, kind: str, owner: str) -> Any:
    """The value of setting ``kind``, None if there is none (or one that does not count:
    module doc); ``AccessDenied`` if it cannot be read (a policy unread could deny)."""
    try:
        reply = await fs._run(ops.stat(_path(bucket, kind), False, read=True), None)
    except (NotFound, NotADirectory, IsADirectory):
        return None
    except PermissionDenied:
        raise S3Error("AccessDenied", f"Access Denied: the bucket's {kind} is unreadable") from None
    except KeelError as exc:
        raise from_keel(exc, missing="NoSuchBucket", BucketName=bucket) from None
    info = file_info_from_pb(reply.info)
    if not _counts(info, owner) or info.data is None:
        return None
    try:
        body = json.loads(info.data)
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("bucket") != bucket or body.get("kind") != kind:
        return None
    return body.get("value")


def _counts(info: FileInfo, owner: str) -> bool:
    return not info.is_dir and info.owner == owner and info.mode & 0o022 == 0


async def read_setting(fs: AsyncClient, bucket: str, kind: str) -> Any:
    """One setting of the bucket (None: none), for an operation that needs only it."""
    info = await store.require_bucket(fs, bucket)
    return await _read_one(fs, bucket, kind, info.owner)


async def read_config(fs: AsyncClient, bucket: str) -> BucketConfig:
    """The bucket's owner and settings (``NoSuchBucket`` if there is no such bucket)."""
    info = await store.require_bucket(fs, bucket)
    policy, block, ownership = await asyncio.gather(
        _read_one(fs, bucket, POLICY, info.owner),
        _read_one(fs, bucket, PUBLIC_ACCESS_BLOCK, info.owner),
        _read_one(fs, bucket, OWNERSHIP, info.owner),
    )
    return BucketConfig(
        bucket,
        info.owner,
        policy if isinstance(policy, str) else None,
        PublicAccessBlock.from_json(block) if isinstance(block, dict) else None,
        ownership if ownership in OWNERSHIP_KINDS else None,
    )


async def write_setting(fs: AsyncClient, bucket: str, kind: str, value: Any) -> None:
    """Setting ``kind`` of ``bucket`` (the owner's client): one inline write, replacing a
    file someone else left there (the owner may delete in the sticky hidden directory)."""
    data = json.dumps({"bucket": bucket, "kind": kind, "value": value}).encode()
    path = _path(bucket, kind)
    try:
        try:
            await write_inline(fs, path, data, overwrite=True, mode=0o644)
        except NotFound:
            await store.make_hidden_dir(fs, bucket, store.hidden(bucket))
            await write_inline(fs, path, data, overwrite=True, mode=0o644)
        except PermissionDenied:
            await fs.delete(path)
            await write_inline(fs, path, data, overwrite=False, mode=0o644)
    except KeelError as exc:
        raise from_keel(exc, missing="NoSuchBucket", BucketName=bucket) from None


async def delete_setting(fs: AsyncClient, bucket: str, kind: str) -> None:
    try:
        with contextlib.suppress(NotFound, NotADirectory):
            await fs.delete(_path(bucket, kind))
    except KeelError as exc:
        raise from_keel(exc, missing="NoSuchBucket", BucketName=bucket) from None
