"""Buckets and objects as keelfs paths (``docs/s3.md``: the mapping and its rules).

- Bucket ``b`` is directory ``/b``; key ``k`` of it is file ``/b/k``: the key's ``/``-separated
  parts are directories, made as needed (and pruned when their last object goes).
- ``/b/.s3/`` is the gateway's own, never listed: ``tmp/`` (uploads being written),
  ``meta/`` (sidecars), ``uploads/`` (multipart uploads).
- An object's ETag, Content-Type, user metadata and the few stored headers live in a
  **sidecar** ``/b/.s3/meta/<H>.<I>``: ``H`` a hash of the key, ``I`` the object file's
  identity (its mtime, length and first block id: what a rename keeps and a new write
  changes). The sidecar is written before the object is renamed into place, so the object
  and its metadata appear together; a reader looks up exactly its file's identity, so it
  never pairs a file with another write's metadata. The sidecar of the object a write
  replaces is deleted after the rename (one left behind by a race or a crash is never read).
  A file without a sidecar (written by ``keelfs put``, or whose writer died between the two
  steps) is still an object: its ETag is a hash of its identity, its type
  ``application/octet-stream``.
- Every write goes to ``/b/.s3/tmp/<random>`` first and is renamed over the key (atomic, in
  one Raft command or one cross-shard transaction): a reader sees the old object or the
  whole new one, and a failed upload leaves nothing visible.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import posixpath
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from keelfs.client import _ops as ops
from keelfs.client.aio import AsyncClient
from keelfs.client.files import AsyncFileReader, open_writer, write_inline
from keelfs.errors import (
    AlreadyExists,
    DirectoryNotEmpty,
    IsADirectory,
    KeelError,
    NotADirectory,
    NotFound,
    PermissionDenied,
)
from keelfs.gateways.s3 import acl as acls
from keelfs.gateways.s3.errors import S3Error, from_keel
from keelfs.meta.paths import MAX_NAME_BYTES
from keelfs.meta.records import MAX_INLINE_BYTES, FileInfo
from keelfs.rpc.wire import file_info_from_pb

__all__ = [
    "HIDDEN",
    "ObjectInfo",
    "Stored",
    "bucket_path",
    "check_bucket_name",
    "check_key",
    "commit_object",
    "delete_object",
    "head_object",
    "key_path",
    "make_hidden_dir",
    "open_object",
    "write_temp",
]

HIDDEN = ".s3"
"""The gateway's directory in each bucket (never listed; keys under it are refused)."""
STORED_HEADERS = (
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
)
"""Headers of a PUT kept with the object and sent back with it (beside Content-Type)."""
DEFAULT_TYPE = "application/octet-stream"
EMPTY_ETAG = '"d41d8cd98f00b204e9800998ecf8427e"'
MAX_KEY_BYTES = 1024
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def check_bucket_name(name: str) -> None:
    """S3's bucket naming rules (``InvalidBucketName``)."""
    if (
        not _BUCKET_NAME.match(name)
        or ".." in name
        or re.match(r"^\d+\.\d+\.\d+\.\d+$", name)
        or name == HIDDEN
    ):
        raise S3Error("InvalidBucketName", "The specified bucket is not valid.", BucketName=name)


def check_key(key: str) -> None:
    """A key keelfs can hold as a path (``docs/s3.md``): not empty, at most 1024 bytes, no
    empty, ``.`` or ``..`` part, no NUL, not under ``.s3/``."""
    if not key:
        raise S3Error("InvalidArgument", "the key is empty")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", "Your key is too long")
    parts = key[:-1].split("/") if key.endswith("/") else key.split("/")
    if "\x00" in key or any(p in ("", ".", "..") for p in parts):
        raise S3Error(
            "InvalidArgument",
            "keelfs keys cannot hold an empty, '.' or '..' path part, nor NUL",
            Key=key,
        )
    if any(len(p.encode()) > MAX_NAME_BYTES for p in parts):
        raise S3Error("KeyTooLongError", f"a part of the key is over {MAX_NAME_BYTES} bytes")
    if parts[0] == HIDDEN:
        raise S3Error("InvalidArgument", f"keys under {HIDDEN}/ are the gateway's", Key=key)


def bucket_path(bucket: str) -> str:
    return "/" + bucket


def key_path(bucket: str, key: str) -> str:
    return f"/{bucket}/{key.rstrip('/')}"


def hidden(bucket: str, *parts: str) -> str:
    return posixpath.join(f"/{bucket}/{HIDDEN}", *parts)


@dataclass
class Stored:
    """What a sidecar holds."""

    etag: str
    content_type: str = DEFAULT_TYPE
    meta: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    parts: int = 0
    """Parts of a multipart upload (0: a single PUT)."""
    anonymous: frozenset[str] = frozenset()
    """The object's anonymous mark: what its ACL grants unsigned requests (``acl``)."""
    part_sizes: list[tuple[int, int]] = field(default_factory=list)
    """A multipart object's part sizes, run-length: ``(size, how many in a row)`` (empty:
    not recorded, an object completed before they were)."""
    version: str = ""
    """The object's VersionId in a bucket with versioning (``versioning``): an id, ``null``
    (written while versioning was suspended), or "" (written before it was ever set: the
    ``null`` version, whose GET carries no version header)."""
    sha256: str = ""
    """The base64 SHA-256 a PUT gave in ``x-amz-checksum-sha256`` (checked), if any."""

    def part_span(self, number: int) -> tuple[int, int] | None:
        """``[start, end)`` of part ``number`` (1-based); None past the last part or where
        the sizes are not recorded."""
        start = 0
        remaining = number - 1
        for size, count in self.part_sizes:
            if remaining < count:
                start += remaining * size
                return start, start + size
            start += count * size
            remaining -= count
        return None

    def encode(self, key: str) -> bytes:
        body: dict[str, Any] = {"k": key, "e": self.etag, "t": self.content_type, "m": self.meta}
        if self.headers:
            body["h"] = self.headers
        if self.parts:
            body["p"] = self.parts
        if self.anonymous:
            body["a"] = sorted(self.anonymous)
        if self.part_sizes:
            body["ps"] = self.part_sizes
        if self.version:
            body["v"] = self.version
        if self.sha256:
            body["s256"] = self.sha256
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Stored:
        body = json.loads(raw)
        marks = body.get("a", [])
        anonymous = frozenset(m for m in marks if isinstance(m, str))
        sizes = [(int(size), int(count)) for size, count in body.get("ps", [])]
        return cls(
            body["e"],
            body["t"],
            body.get("m", {}),
            body.get("h", {}),
            body.get("p", 0),
            anonymous,
            sizes,
            str(body.get("v", "")),
            str(body.get("s256", "")),
        )


@dataclass
class ObjectInfo:
    key: str
    info: FileInfo
    stored: Stored

    @property
    def etag(self) -> str:
        return self.stored.etag

    @property
    def length(self) -> int:
        return self.info.length

    @property
    def mtime(self) -> int:
        return self.info.mtime


def identity(info: FileInfo) -> str:
    """What tells one write of a path from another (module doc)."""
    first = info.blocks[0].block_id if info.blocks else 0
    return f"{info.mtime}-{info.length}-{first}"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:40]


def sidecar_path(bucket: str, key: str, info: FileInfo) -> str:
    return hidden(bucket, "meta", f"{key_hash(key)}.{identity(info)}")


def fallback(info: FileInfo) -> Stored:
    """The metadata of a file with no sidecar (module doc)."""
    digest = hashlib.md5(f"{info.path}:{identity(info)}".encode()).hexdigest()
    return Stored(f'"{digest}"')


async def read_sidecar(
    fs: AsyncClient, bucket: str, key: str, info: FileInfo, *, strict: bool = False
) -> Stored:
    """The object's sidecar; ``fallback`` where there is none, or where the caller may not
    read it (it has its object's mode: one who may list a bucket but not read an object
    sees neither its metadata nor its real ETag); ``strict``: ``AccessDenied`` then (a HEAD
    of an object the caller may not read)."""
    try:
        raw = await fs.read_bytes(sidecar_path(bucket, key, info))
        return Stored.decode(raw)
    except PermissionDenied:
        if strict:
            raise S3Error("AccessDenied", "Access Denied", Key=key) from None
        return fallback(info)
    except (NotFound, NotADirectory, IsADirectory, ValueError, KeyError):
        return fallback(info)


async def require_bucket(fs: AsyncClient, bucket: str) -> FileInfo:
    try:
        info = await fs.stat(bucket_path(bucket))
    except (NotFound, NotADirectory):
        raise S3Error(
            "NoSuchBucket", "The specified bucket does not exist", BucketName=bucket
        ) from None
    except KeelError as exc:
        raise from_keel(exc, missing="NoSuchBucket", BucketName=bucket) from None
    if not info.is_dir:
        raise S3Error("NoSuchBucket", "The specified bucket does not exist", BucketName=bucket)
    return info


async def _missing(fs: AsyncClient, bucket: str, key: str) -> S3Error:
    await require_bucket(fs, bucket)
    return S3Error("NoSuchKey", "The specified key does not exist.", Key=key)


def _marker(bucket: str, key: str, info: FileInfo) -> ObjectInfo:
    """A directory asked for as ``key/``: an empty object (``docs/s3.md``)."""
    empty = FileInfo(
        info.path, "file", 0, info.mode, info.owner, info.group, info.mtime, info.atime, 0, 0
    )
    return ObjectInfo(key, empty, Stored(EMPTY_ETAG))


async def head_object(fs: AsyncClient, bucket: str, key: str) -> ObjectInfo:
    check_key(key)
    try:
        info = await fs.stat(key_path(bucket, key))
    except (NotFound, NotADirectory):
        raise await _missing(fs, bucket, key) from None
    except KeelError as exc:
        raise from_keel(exc, Key=key) from None
    if info.is_dir:
        if key.endswith("/"):
            return _marker(bucket, key, info)
        raise S3Error("NoSuchKey", "The specified key does not exist.", Key=key)
    if key.endswith("/"):
        raise S3Error("NoSuchKey", "The specified key does not exist.", Key=key)
    return ObjectInfo(key, info, await read_sidecar(fs, bucket, key, info, strict=True))


async def open_object(
    fs: AsyncClient, bucket: str, key: str
) -> tuple[ObjectInfo, AsyncFileReader | None]:
    """The object and a reader of exactly that file (None: a directory marker)."""
    check_key(key)
    path = key_path(bucket, key)
    try:
        reply = await fs._run(ops.stat(path, False, read=True), None)
    except (NotFound, NotADirectory):
        raise await _missing(fs, bucket, key) from None
    except KeelError as exc:
        raise from_keel(exc, Key=key) from None
    info = file_info_from_pb(reply.info)
    if info.is_dir or key.endswith("/"):
        obj = await head_object(fs, bucket, key)
        return obj, None
    reader = AsyncFileReader(fs, fs._chunk_client(), info.path, reply.info)
    return ObjectInfo(key, info, await read_sidecar(fs, bucket, key, info)), reader


async def current_object(fs: AsyncClient, bucket: str, key: str) -> ObjectInfo | None:
    """The object at ``key`` as a reader sees it (its ``info.version`` exact: an inline
    file's bytes come with it), None if there is none: what a conditional write compares."""
    path = key_path(bucket, key)
    try:
        info = await fs.stat(path, read=True)
    except (NotFound, NotADirectory, IsADirectory):
        await require_bucket(fs, bucket)
        return None
    except PermissionDenied:
        raise S3Error(
            "AccessDenied", "Access Denied: a conditional write reads the object"
        ) from None
    except KeelError as exc:
        raise from_keel(exc, Key=key) from None
    if info.is_dir:
        return None
    return ObjectInfo(key, info, await read_sidecar(fs, bucket, key, info, strict=True))


# -- writing ----------------------------------------------------------------------------------
async def _mkdirs(fs: AsyncClient, path: str, mode: int) -> None:
    with contextlib.suppress(AlreadyExists):
        await fs.mkdir(path, parents=True, mode=mode)


async def make_hidden_dir(fs: AsyncClient, bucket: str, path: str) -> None:
    """Hidden directory ``path`` (and those above it), with the mode the bucket's ACL gives
    them (``acl.hidden_mode``), in a bucket that must exist (``NoSuchBucket``: ``mkdir -p``
    would make the bucket too). CreateBucket makes ``tmp``, ``meta`` and ``uploads`` at once,
    so they are the bucket owner's, who may then clear what others left in them (sticky
    directories let their owner delete any entry)."""
    info = await require_bucket(fs, bucket)
    await _mkdirs(fs, path, acls.hidden_mode(info.mode, extended=bool(info.acl)))


async def _make_hidden_parent(fs: AsyncClient, bucket: str, path: str) -> None:
    await make_hidden_dir(fs, bucket, posixpath.dirname(path))


async def _create_writer(
    fs: AsyncClient, bucket: str, path: str, make_parent: bool, mode: int
) -> Any:
    try:
        return await open_writer(fs, fs._chunk_client(), path, mode=mode)
    except NotFound:
        if not make_parent:
            raise
        await _make_hidden_parent(fs, bucket, path)
        return await open_writer(fs, fs._chunk_client(), path, mode=mode)


def temp_path(bucket: str) -> str:
    return hidden(bucket, "tmp", secrets.token_hex(16))


@dataclass
class Written:
    path: str
    length: int
    md5: bytes
    sha256: str


async def write_temp(
    fs: AsyncClient,
    bucket: str,
    chunks: AsyncIterator[bytes],
    *,
    path: str | None = None,
    mode: int = 0o600,
) -> Written:
    """``chunks`` written to a new hidden file (complete when this returns; deleted if the
    body fails): ``path``, whose directory must exist (``NotFound``), else one in
    ``.s3/tmp/``, made on first use; ``mode``: the file's (the object's, once in place)."""
    make_parent = path is None
    path = path or temp_path(bucket)
    md5, sha = hashlib.md5(), hashlib.sha256()
    head = bytearray()
    it = chunks.__aiter__()
    exhausted = False
    while len(head) <= MAX_INLINE_BYTES:
        try:
            piece = await it.__anext__()
        except StopAsyncIteration:
            exhausted = True
            break
        head += piece
    md5.update(head)
    sha.update(head)
    try:
        if exhausted:
            try:
                await write_inline(fs, path, bytes(head), mode=mode)
            except NotFound:
                if not make_parent:
                    raise
                await _make_hidden_parent(fs, bucket, path)
                await write_inline(fs, path, bytes(head), mode=mode)
            return Written(path, len(head), md5.digest(), sha.hexdigest())
        writer = await _create_writer(fs, bucket, path, make_parent, mode)
        length = len(head)
        try:
            await writer.write(bytes(head))
            async for piece in it:
                md5.update(piece)
                sha.update(piece)
                length += len(piece)
                await writer.write(piece)
        except BaseException:
            await writer.abort()
            raise
        await writer.close()
    except BaseException:
        await discard(fs, path)
        raise
    return Written(path, length, md5.digest(), sha.hexdigest())


async def discard(fs: AsyncClient, path: str) -> None:
    """Delete a temporary file, as best it can (a leftover is hidden, and harmless)."""
    with contextlib.suppress(KeelError):
        await fs.delete(path)


async def commit_object(
    fs: AsyncClient,
    bucket: str,
    key: str,
    temp: str,
    stored: Stored,
    *,
    exclusive: bool = False,
    expect: str = "",
    acl: acls.Acl = acls.PRIVATE,
) -> ObjectInfo:
    """Put complete file ``temp`` in place as ``key`` with its sidecar (module doc);
    ``exclusive``: only if no object is there (``If-None-Match: *``: ``PreconditionFailed``);
    ``expect``: only if the object there is still that version (``FileInfo.version``: the
    rename compares and replaces in one metadata command; ``PreconditionFailed`` if another
    write replaced it meanwhile, ``NoSuchKey`` if it was deleted); ``acl``: the object's
    (its mode and anonymous mark, set before it is in place)."""
    overwrite = not exclusive
    target = key_path(bucket, key)
    mode = acls.file_mode(acl)
    stored.anonymous = acl.anonymous
    try:
        info = await fs.stat(temp)
        inherited = bool(info.acl)  # default entries of the bucket's: files take none
        if info.mode & 0o7777 != mode:
            info = await fs.chmod(temp, mode)
        if inherited or acl.users:
            info = await set_file_acl(fs, temp, acl, mode)
        sidecar = sidecar_path(bucket, key, info)
        await write_sidecar(fs, bucket, sidecar, stored.encode(key), mode)
        if inherited or acl.users:
            await set_file_acl(fs, sidecar, acl, mode)
        replaced = await _file_or_none(fs, target)
        try:
            await fs.rename(temp, target, overwrite=overwrite, expect=expect)
        except NotFound:
            if expect:
                raise S3Error("NoSuchKey", "The specified key does not exist.", Key=key) from None
            await _make_parents(fs, bucket, key)
            await fs.rename(temp, target, overwrite=overwrite)
    except AlreadyExists:
        await discard(fs, temp)
        if not exclusive and not expect:
            raise _conflict(key) from None
        raise S3Error(
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
            Condition="If-Match" if expect else "If-None-Match",
        ) from None
    except S3Error:
        await discard(fs, temp)
        raise
    except (IsADirectory, NotADirectory, DirectoryNotEmpty):
        await discard(fs, temp)
        raise _conflict(key) from None
    except KeelError as exc:
        await discard(fs, temp)
        raise from_keel(exc, missing="NoSuchBucket", Key=key) from None
    if replaced is not None and identity(replaced) != identity(info):
        await discard(fs, sidecar_path(bucket, key, replaced))
    return ObjectInfo(key, info, stored)


async def set_file_acl(fs: AsyncClient, path: str, acl: acls.Acl, mode: int) -> FileInfo:
    """An object's (or sidecar's) ``mode`` and named-user entries: ``acl``'s (a full
    replace), or none (removed before the ``chmod``: removing gives the group bits back
    from ``group::``)."""
    if acl.users:
        return await fs.set_acl(path, acls.file_acl_spec(acl, mode))
    info = await fs.remove_acl(path)
    return info if info.mode & 0o7777 == mode else await fs.chmod(path, mode)


async def _file_or_none(fs: AsyncClient, path: str) -> FileInfo | None:
    try:
        info = await fs.stat(path)
    except (NotFound, NotADirectory):
        return None
    return None if info.is_dir else info


async def write_sidecar(fs: AsyncClient, bucket: str, path: str, data: bytes, mode: int) -> None:
    """A sidecar (inline: one command) with its object's mode, its directory made on first
    use."""
    try:
        await write_inline(fs, path, data, overwrite=True, mode=mode)
    except NotFound:
        await _make_hidden_parent(fs, bucket, path)
        await write_inline(fs, path, data, overwrite=True, mode=mode)


def _conflict(key: str) -> S3Error:
    return S3Error(
        "InvalidRequest",
        "keelfs cannot hold this key beside another: one of them would be both a "
        "file and a directory (docs/s3.md)",
        Key=key,
    )


async def _make_parents(fs: AsyncClient, bucket: str, key: str) -> None:
    parent = posixpath.dirname(key_path(bucket, key))
    if parent != bucket_path(bucket):
        info = await require_bucket(fs, bucket)
        await _mkdirs(fs, parent, info.mode & 0o777)


async def make_marker(fs: AsyncClient, bucket: str, key: str) -> ObjectInfo:
    """A zero-byte ``key/``: its directory (``docs/s3.md``)."""
    info = await require_bucket(fs, bucket)
    try:
        await _mkdirs(fs, key_path(bucket, key), info.mode & 0o777)
    except (NotADirectory, IsADirectory):
        raise S3Error(
            "InvalidRequest", "a file stands where the key's directory would", Key=key
        ) from None
    except KeelError as exc:
        raise from_keel(exc, Key=key) from None
    return await head_object(fs, bucket, key)


async def delete_object(fs: AsyncClient, bucket: str, key: str) -> None:
    """Delete ``key`` (nothing if it is not there, as S3), its sidecars, and the directories
    its deletion left empty."""
    check_key(key)
    path = key_path(bucket, key)
    try:
        info = await fs.stat(path)
    except (NotFound, NotADirectory):
        await require_bucket(fs, bucket)
        return
    except KeelError as exc:
        raise from_keel(exc, Key=key) from None
    try:
        if info.is_dir:
            if not key.endswith("/"):
                return
            with contextlib.suppress(DirectoryNotEmpty):
                await fs.delete(path)
        elif key.endswith("/"):
            return
        else:
            await fs.delete(path)
            await discard(fs, sidecar_path(bucket, key, info))
    except NotFound:
        return
    except KeelError as exc:
        raise from_keel(exc, Key=key) from None
    await prune_parents(fs, bucket, path)


async def prune_parents(fs: AsyncClient, bucket: str, path: str) -> None:
    """Delete the empty directories above ``path`` up to the bucket (one non-recursive delete
    each: a directory that gained an entry meanwhile stays)."""
    top = bucket_path(bucket)
    parent = posixpath.dirname(path)
    while parent != top and parent.startswith(top + "/"):
        try:
            await fs.delete(parent)
        except KeelError:
            return
        parent = posixpath.dirname(parent)


def b64md5(digest: bytes) -> str:
    return base64.b64encode(digest).decode()
