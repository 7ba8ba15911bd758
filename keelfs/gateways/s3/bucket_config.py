"""A bucket's S3 settings beside its ACL: its policy, its public access block, its
ownership controls (``docs/s3.md``, "Bucket policies"), its versioning state (``versioning``)
and its CORS rules (``cors``).

Each is a small file in the bucket's hidden directory (``.s3/policy``,
``.s3/public-access-block``, ``.s3/ownership`` in JSON; ``.s3/versioning``, ``.s3/cors``),
written inline (one Raft command) with mode ``0644``. ``read_config`` reads them all at once
(one stat of the bucket and one of each file, sent together: the client batches them), as
whoever calls; the gateway keeps what it read for a second (``settings_cache``). Like the
ACL's anonymous mark, a file counts only when the bucket's owner owns it, no one else may
write it, and (the JSON ones) it names its bucket and its kind: another user who may write
in a public bucket's hidden directory cannot plant one, nor move one of the owner's objects
there in its place.
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
VERSIONING, CORS = "versioning", "cors"
"""Plain files (the state's name; the rules' JSON, ``cors.encode``) counted when the bucket's
owner owns them."""
VERSIONING_STATES = ("Enabled", "Suspended")
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
    versioning: str = ""
    """``Enabled``, ``Suspended`` or "" (never set)."""
    cors_data: bytes | None = None
    """The CORS rules as stored (``cors.rules_of`` reads them), None: none."""

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


async def _stat_setting(fs: AsyncClient, bucket: str, kind: str) -> FileInfo | None:
    """Setting file ``kind`` with its inline data (None: there is none); ``AccessDenied``
    if it cannot be read (a policy unread could deny)."""
    try:
        reply = await fs._run(ops.stat(_path(bucket, kind), False, read=True), None)
    except (NotFound, NotADirectory, IsADirectory):
        return None
    except PermissionDenied:
        raise S3Error("AccessDenied", f"Access Denied: the bucket's {kind} is unreadable") from None
    except KeelError as exc:
        raise from_keel(exc, missing="NoSuchBucket", BucketName=bucket) from None
    return file_info_from_pb(reply.info)


def _json_value(info: FileInfo | None, bucket: str, kind: str, owner: str) -> Any:
    """The value a JSON setting holds, None where it does not count (module doc)."""
    if info is None or not _counts(info, owner) or info.data is None:
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


async def _owned_data(fs: AsyncClient, info: FileInfo | None, owner: str) -> bytes | None:
    """A plain setting's bytes where the bucket's owner owns its file (None otherwise); one
    not inline (not written by the gateway) is read."""
    if info is None or info.is_dir or info.owner != owner:
        return None
    if info.data is not None:
        return info.data
    try:
        return await fs.read_bytes(info.path)
    except (NotFound, NotADirectory, IsADirectory):
        return None


async def read_setting(fs: AsyncClient, bucket: str, kind: str) -> Any:
    """One setting of the bucket (None: none), for an operation that needs only it."""
    info = await store.require_bucket(fs, bucket)
    return _json_value(await _stat_setting(fs, bucket, kind), bucket, kind, info.owner)


_READ_AT_ONCE = (POLICY, PUBLIC_ACCESS_BLOCK, OWNERSHIP, VERSIONING, CORS)


async def read_config(fs: AsyncClient, bucket: str) -> BucketConfig:
    """The bucket's owner and settings, read at once (``NoSuchBucket`` if there is no such
    bucket, before any other error)."""
    found = await asyncio.gather(
        store.require_bucket(fs, bucket),
        *(_stat_setting(fs, bucket, kind) for kind in _READ_AT_ONCE),
        return_exceptions=True,
    )
    for outcome in found:  # the bucket's own first: a missing bucket is NoSuchBucket
        if isinstance(outcome, BaseException):
            raise outcome
    info, *stats = found
    assert isinstance(info, FileInfo)
    files = {k: f for k, f in zip(_READ_AT_ONCE, stats, strict=True) if isinstance(f, FileInfo)}
    owner = info.owner
    policy = _json_value(files.get(POLICY), bucket, POLICY, owner)
    block = _json_value(files.get(PUBLIC_ACCESS_BLOCK), bucket, PUBLIC_ACCESS_BLOCK, owner)
    ownership = _json_value(files.get(OWNERSHIP), bucket, OWNERSHIP, owner)
    state = await _owned_data(fs, files.get(VERSIONING), owner)
    versioning = state.decode(errors="replace") if state is not None else ""
    return BucketConfig(
        bucket,
        owner,
        policy if isinstance(policy, str) else None,
        PublicAccessBlock.from_json(block) if isinstance(block, dict) else None,
        ownership if ownership in OWNERSHIP_KINDS else None,
        versioning if versioning in VERSIONING_STATES else "",
        await _owned_data(fs, files.get(CORS), owner),
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
