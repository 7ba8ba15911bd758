"""Bucket versioning: the bucket's state, and where the versions of a key live.

- The state (``Enabled``, ``Suspended``, or never set) is the file ``/b/.s3/versioning``,
  written by the bucket's owner (one written by anyone else is not believed), read with the
  bucket's other settings (``bucket_config``, ``Ctx.versioning_state``).
- The **current** version of a key is the file at the key's path, as in a bucket without
  versioning (``store``): ListObjects, GET and every tool reading keelfs see it there. Its
  VersionId is in its sidecar (``Stored.version``; none: the ``null`` version written before
  versioning was ever set).
- The **older** versions and the delete markers of key ``k`` live in the key's archive
  ``/b/.s3/versions/<quote(k)>/`` (``#<hash>`` with the key in a file ``key`` where the quoted
  key is too long for a name): a version is its object file, renamed there unchanged under its
  VersionId (its sidecar, named by the file's identity, stays valid); a delete marker is an
  empty directory named by its VersionId (its owner and mtime: who deleted, and when).
- A VersionId is 16 hex digits of ``2**64 - 1 - time_ns`` then 12 random ones: ids of one key
  sort newest first, and their time orders them beside ``null`` (whose time is its file's
  mtime).
- Overwriting a key moves its current file into the archive with one rename, then renames
  the new file over the key (``commit``). Between the two, or after a crash there, the key
  has no file: the **latest** version of a key is its file, or else the newest entry of its
  archive, so the older object is still what GET answers (and the next write or version
  delete puts it back in place). Nothing is ever lost between two steps: every file is at
  the key or in the archive.
"""

from __future__ import annotations

import contextlib
import email.utils
import re
import secrets
import time
from dataclasses import dataclass
from urllib.parse import quote, unquote

from keelfs.client import _ops as ops
from keelfs.client.aio import AsyncClient
from keelfs.client.files import AsyncFileReader, write_inline
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
from keelfs.gateways.s3 import store
from keelfs.gateways.s3.bucket_config import VERSIONING, VERSIONING_STATES
from keelfs.gateways.s3.errors import S3Error, from_keel
from keelfs.meta.paths import MAX_NAME_BYTES
from keelfs.meta.records import FileInfo
from keelfs.rpc.wire import file_info_from_pb

__all__ = [
    "ENABLED",
    "NULL_VERSION",
    "SUSPENDED",
    "Version",
    "archived_keys",
    "check_version_id",
    "valid_version_id",
    "commit",
    "delete",
    "latest",
    "open_version",
    "version_object",
    "versions_of",
    "write_state",
]

ENABLED, SUSPENDED = VERSIONING_STATES
NULL_VERSION = "null"
STATE_FILE = VERSIONING
"""Read with the bucket's other settings (``bucket_config.read_config``)."""
ARCHIVE = "versions"
KEY_FILE = "key"
"""In a ``#<hash>`` archive: the key it holds the versions of."""
_TOP = (1 << 64) - 1
_VERSION_ID = re.compile(r"^[0-9a-f]{28}$")
_TRIES = 8
"""Attempts of an overwrite racing other writers of the same key before it gives up."""


def new_version_id() -> str:
    return f"{_TOP - time.time_ns():016x}{secrets.token_hex(6)}"


def valid_version_id(vid: str) -> bool:
    """Whether ``vid`` is a VersionId this gateway could have made."""
    return vid == NULL_VERSION or bool(_VERSION_ID.match(vid))


def check_version_id(vid: str) -> None:
    """``InvalidArgument`` (as S3) for a VersionId this gateway could not have made."""
    if not valid_version_id(vid):
        raise S3Error("InvalidArgument", "Invalid version id specified")


# -- the bucket's state ---------------------------------------------------------------------------
def _state_path(bucket: str) -> str:
    return store.hidden(bucket, STATE_FILE)


async def write_state(fs: AsyncClient, bucket: str, state: str) -> None:
    path = _state_path(bucket)
    try:
        await write_inline(fs, path, state.encode(), overwrite=True, mode=0o644)
    except NotFound:
        await store.make_hidden_dir(fs, bucket, store.hidden(bucket))
        await write_inline(fs, path, state.encode(), overwrite=True, mode=0o644)


# -- the archive ---------------------------------------------------------------------------------
def archive_dir(bucket: str, key: str) -> str:
    name = quote(key, safe="")
    if len(name.encode()) > MAX_NAME_BYTES:
        name = "#" + store.key_hash(key)
    return store.hidden(bucket, ARCHIVE, name)


def archive_root(bucket: str) -> str:
    return store.hidden(bucket, ARCHIVE)


@dataclass
class Version:
    """One version of a key: its object file (``marker`` False) or a delete marker."""

    key: str
    vid: str
    info: FileInfo
    marker: bool
    current: bool
    """The file at the key's path (not in the archive)."""
    stored: store.Stored | None = None

    @property
    def time_ns(self) -> int:
        if _VERSION_ID.match(self.vid):
            return _TOP - int(self.vid[:16], 16)
        return self.info.mtime * 1_000_000

    def object(self) -> store.ObjectInfo:
        assert self.stored is not None
        return store.ObjectInfo(self.key, self.info, self.stored)


def _newest_first(versions: list[Version]) -> list[Version]:
    return sorted(versions, key=lambda v: (-v.time_ns, v.vid))


async def _ensure_archive(fs: AsyncClient, bucket: str, key: str) -> str:
    """The key's archive, made if needed (its ``key`` file too, for a hashed name)."""
    path = archive_dir(bucket, key)
    await store.make_hidden_dir(fs, bucket, path)
    if path.rsplit("/", 1)[1].startswith("#"):
        with contextlib.suppress(AlreadyExists):
            await write_inline(fs, f"{path}/{KEY_FILE}", key.encode(), mode=0o644)
    return path


async def _current(fs: AsyncClient, bucket: str, key: str) -> Version | None:
    """The file at the key's path, with its sidecar (None: no file there)."""
    try:
        info = await fs.stat(store.key_path(bucket, key))
    except (NotFound, NotADirectory):
        return None
    if info.is_dir:
        return None
    stored = await store.read_sidecar(fs, bucket, key, info)
    return Version(key, stored.version or NULL_VERSION, info, False, True, stored)


async def _archived(fs: AsyncClient, bucket: str, key: str) -> list[Version]:
    """The key's archive, newest first (data versions without their sidecars yet)."""
    path = archive_dir(bucket, key)
    try:
        entries = [e async for e in fs.ls(path)]
    except (NotFound, NotADirectory):
        return []
    found = [
        Version(key, e.name, e, e.is_dir, False)
        for e in entries
        if e.path != path and e.name != KEY_FILE
    ]
    return _newest_first(found)


async def _fill(fs: AsyncClient, bucket: str, versions: list[Version]) -> None:
    for version in versions:
        if not version.marker and version.stored is None:
            version.stored = await store.read_sidecar(fs, bucket, version.key, version.info)


async def versions_of(
    fs: AsyncClient,
    bucket: str,
    key: str,
    *,
    info: FileInfo | None = None,
    archive: bool = True,
) -> list[Version]:
    """Every version of ``key``, newest first, each data version with its sidecar;
    ``info``: the key's file as a listing just saw it (not looked at again); ``archive``
    False: the key is known to have no archive."""
    if info is None:
        current = await _current(fs, bucket, key)
    else:
        stored = await store.read_sidecar(fs, bucket, key, info)
        current = Version(key, stored.version or NULL_VERSION, info, False, True, stored)
    archived = await _archived(fs, bucket, key) if archive else []
    await _fill(fs, bucket, archived)
    return ([current] if current is not None else []) + archived


async def latest(fs: AsyncClient, bucket: str, key: str) -> Version | None:
    """The latest version of a key with no file at its path: the newest of its archive
    (module doc), None if it has none."""
    try:
        archived = await _archived(fs, bucket, key)
    except PermissionDenied:  # one who may not list the archive sees the key as missing
        return None
    if not archived:
        return None
    await _fill(fs, bucket, archived[:1])
    return archived[0]


async def find(fs: AsyncClient, bucket: str, key: str, vid: str) -> Version | None:
    """Version ``vid`` of ``key`` (None: no such version)."""
    check_version_id(vid)
    current = await _current(fs, bucket, key)
    if current is not None and current.vid == vid:
        return current
    try:
        info = await fs.stat(f"{archive_dir(bucket, key)}/{vid}")
    except (NotFound, NotADirectory):
        return None
    except KeelError as exc:
        raise from_keel(exc, Key=key) from None
    version = Version(key, vid, info, info.is_dir, False)
    await _fill(fs, bucket, [version])
    return version


def _no_such_version(key: str, vid: str) -> S3Error:
    return S3Error(
        "NoSuchVersion",
        "The specified version does not exist.",
        Key=key,
        VersionId=vid,
    )


def marker_error(version: Version, *, asked: bool) -> S3Error:
    """What a GET/HEAD of a delete marker answers: ``NoSuchKey`` for the key (its latest is
    the marker), ``MethodNotAllowed`` for the marker named by its VersionId."""
    if asked:
        err = S3Error(
            "MethodNotAllowed", "The specified method is not allowed against this resource."
        )
        when = version.info.mtime / 1000
        err.headers["Last-Modified"] = email.utils.formatdate(when, usegmt=True)
    else:
        err = S3Error("NoSuchKey", "The specified key does not exist.", Key=version.key)
    err.headers["x-amz-delete-marker"] = "true"
    err.headers["x-amz-version-id"] = version.vid
    return err


async def version_object(
    fs: AsyncClient, bucket: str, key: str, vid: str | None
) -> store.ObjectInfo:
    """HEAD's object: version ``vid``, or (None) the latest, a key without a file falling
    back on its archive; a delete marker answers as S3 (``marker_error``)."""
    if vid is None:
        try:
            return await store.head_object(fs, bucket, key)
        except S3Error as err:
            if err.code != "NoSuchKey" or key.endswith("/"):
                raise
            found = await latest(fs, bucket, key)
            if found is None:
                raise
            if not found.marker:  # an overwrite cut short: put it back where it is listed
                with contextlib.suppress(KeelError, S3Error):
                    await promote(fs, bucket, key)
                    return await store.head_object(fs, bucket, key)
    else:
        store.check_key(key)
        await store.require_bucket(fs, bucket)
        found = await find(fs, bucket, key, vid)
        if found is None:
            raise _no_such_version(key, vid)
    if found.marker:
        raise marker_error(found, asked=vid is not None)
    return found.object()


async def open_version(
    fs: AsyncClient, bucket: str, key: str, vid: str | None
) -> tuple[store.ObjectInfo, AsyncFileReader | None]:
    """GET's object and a reader of exactly its file (``version_object``'s rules)."""
    if vid is None:
        try:
            return await store.open_object(fs, bucket, key)
        except S3Error as err:
            if err.code != "NoSuchKey" or key.endswith("/"):
                raise
    obj = await version_object(fs, bucket, key, vid)
    try:
        reply = await fs._run(ops.stat(obj.info.path, False, read=True), None)
    except (NotFound, NotADirectory):
        raise S3Error("NoSuchKey", "The specified key does not exist.", Key=key) from None
    except KeelError as exc:
        raise from_keel(exc, Key=key) from None
    reader = AsyncFileReader(fs, fs._chunk_client(), obj.info.path, reply.info)
    return store.ObjectInfo(key, file_info_from_pb(reply.info), obj.stored), reader


# -- writing -------------------------------------------------------------------------------------
async def _archive_current(fs: AsyncClient, bucket: str, key: str, state: str) -> None:
    """Move the key's file into its archive under its VersionId, unless it is the ``null``
    version while versioning is suspended (the write replaces it). A file that another
    writer put there between the look and the rename is archived under its own id."""
    for _ in range(_TRIES):
        current = await _current(fs, bucket, key)
        if current is None or (state == SUSPENDED and current.vid == NULL_VERSION):
            return
        folder = await _ensure_archive(fs, bucket, key)
        target = f"{folder}/{current.vid}"
        if current.vid == NULL_VERSION:  # at most one null version: an archived one is stale
            await _remove_entry(fs, target)
        try:
            await fs.rename(current.info.path, target)
        except (NotFound, AlreadyExists):
            continue  # moved meanwhile by another writer (or its successor is moving)
        await _name_by_own_id(fs, bucket, key, target, current)
        return
    raise S3Error("SlowDown", "too many writers of this key at once; try again")


async def _name_by_own_id(
    fs: AsyncClient, bucket: str, key: str, target: str, expected: Version
) -> None:
    """After a rename of the key's path into the archive: if the file moved is not the one
    looked at (another write landed between), rename it to its own VersionId."""
    moved = await fs.stat(target)
    if store.identity(moved) == store.identity(expected.info):
        return
    stored = await store.read_sidecar(fs, bucket, key, moved)
    own = stored.version or NULL_VERSION
    if own != expected.vid:
        with contextlib.suppress(KeelError):
            await fs.rename(target, target.rsplit("/", 1)[0] + "/" + own)


async def _remove_entry(fs: AsyncClient, path: str) -> None:
    """Remove an archive entry (a data version or a marker), with nothing said if gone."""
    with contextlib.suppress(NotFound, NotADirectory, DirectoryNotEmpty):
        await fs.delete(path)


async def _remove_archived_null(fs: AsyncClient, bucket: str, key: str) -> None:
    path = f"{archive_dir(bucket, key)}/{NULL_VERSION}"
    try:
        info = await fs.stat(path)
    except (NotFound, NotADirectory):
        return
    await _remove_entry(fs, path)
    if not info.is_dir:
        await store.discard(fs, store.sidecar_path(bucket, key, info))


async def _write_sidecar_once(
    fs: AsyncClient, bucket: str, key: str, temp: str, stored: store.Stored, mode: int
) -> FileInfo:
    """The new file's sidecar, created (never overwriting): another version of the key with
    the same identity (same length, written in the same millisecond, no blocks) would
    otherwise share it, so the new file's mtime moves on a millisecond until its name is
    free."""
    info = await fs.stat(temp)
    for _ in range(_TRIES):
        sidecar = store.sidecar_path(bucket, key, info)
        try:
            await write_inline(fs, sidecar, stored.encode(key), mode=mode)
            return info
        except NotFound:
            await store.make_hidden_dir(fs, bucket, sidecar.rsplit("/", 1)[0])
            continue
        except AlreadyExists:
            info = await fs.set_times(temp, mtime=info.mtime + 1)
    raise S3Error("SlowDown", "could not name this version's metadata; try again")


async def commit(
    fs: AsyncClient,
    bucket: str,
    key: str,
    temp: str,
    stored: store.Stored,
    state: str,
    *,
    exclusive: bool = False,
    acl: acls.Acl = acls.PRIVATE,
) -> store.ObjectInfo:
    """``store.commit_object`` in a bucket with versioning ``state``: the new file gets a
    VersionId (``null`` while suspended), the key's file goes to its archive first (module
    doc), and the rename into place never overwrites (a file that lands meanwhile is archived
    in turn). If the rename fails, the archived file is put back."""
    mode = acls.file_mode(acl)
    stored.anonymous = acl.anonymous
    stored.version = new_version_id() if state == ENABLED else NULL_VERSION
    target = store.key_path(bucket, key)
    try:
        if exclusive and await _current(fs, bucket, key) is not None:
            raise S3Error(
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold",
                Condition="If-None-Match",
            )
        info = await fs.stat(temp)
        if info.mode & 0o7777 != mode:
            await fs.chmod(temp, mode)
        info = await _write_sidecar_once(fs, bucket, key, temp, stored, mode)
        replaced = await _place(fs, bucket, key, temp, target, state)
    except (IsADirectory, NotADirectory, DirectoryNotEmpty):
        await store.discard(fs, temp)
        raise store._conflict(key) from None
    except KeelError as exc:
        await store.discard(fs, temp)
        await _restore(fs, bucket, key)
        raise from_keel(exc, missing="NoSuchBucket", Key=key) from None
    except BaseException:
        await store.discard(fs, temp)
        raise
    if replaced is not None and store.identity(replaced) != store.identity(info):
        await store.discard(fs, store.sidecar_path(bucket, key, replaced))
    return store.ObjectInfo(key, info, stored)


async def _place(
    fs: AsyncClient, bucket: str, key: str, temp: str, target: str, state: str
) -> FileInfo | None:
    """Rename ``temp`` to the key once its file is archived; the ``null`` file it replaces
    while suspended (None: none)."""
    for _ in range(_TRIES):
        await _archive_current(fs, bucket, key, state)
        replaced = None
        if state == SUSPENDED:
            await _remove_archived_null(fs, bucket, key)
            current = await _current(fs, bucket, key)
            replaced = current.info if current is not None else None
        try:
            await _rename_into_place(fs, bucket, key, temp, target, replaced is not None)
        except AlreadyExists:
            continue  # a write landed meanwhile: archive it too
        return replaced
    raise S3Error("SlowDown", "too many writers of this key at once; try again")


async def _rename_into_place(
    fs: AsyncClient, bucket: str, key: str, source: str, target: str, overwrite: bool
) -> None:
    try:
        await fs.rename(source, target, overwrite=overwrite)
    except NotFound:
        await store._make_parents(fs, bucket, key)
        await fs.rename(source, target, overwrite=overwrite)


async def _restore(fs: AsyncClient, bucket: str, key: str) -> None:
    """After a failed write: the newest archived version back at the key, if it is an
    object and the key has no file (a failure between archive and rename)."""
    with contextlib.suppress(KeelError, S3Error):
        await promote(fs, bucket, key)


async def promote(fs: AsyncClient, bucket: str, key: str) -> None:
    """Where the key has no file and its newest archived version is an object (not a delete
    marker): that object back at the key's path, so ListObjects shows it again."""
    for _ in range(_TRIES):
        if await _current(fs, bucket, key) is not None:
            return
        found = await _archived(fs, bucket, key)
        if not found or found[0].marker:
            return
        try:
            await _rename_into_place(
                fs, bucket, key, found[0].info.path, store.key_path(bucket, key), False
            )
        except AlreadyExists:
            return
        except NotFound:
            continue  # deleted meanwhile: the next newest then
        return


@dataclass
class Deleted:
    """What a DELETE did: the VersionId it removed or made, and whether that is a marker."""

    vid: str | None
    marker: bool


async def delete(fs: AsyncClient, bucket: str, key: str, vid: str | None, state: str) -> Deleted:
    """DeleteObject in a bucket with versioning ``state``: version ``vid`` removed for good
    (nothing said if it is not there), or, without one, a delete marker made the latest."""
    store.check_key(key)
    await store.require_bucket(fs, bucket)
    if key.endswith("/"):
        await store.delete_object(fs, bucket, key)
        return Deleted(None, False)
    try:
        if vid is not None:
            return await _delete_version(fs, bucket, key, vid)
        return await _add_marker(fs, bucket, key, state)
    except KeelError as exc:
        raise from_keel(exc, Key=key) from None


async def _delete_version(fs: AsyncClient, bucket: str, key: str, vid: str) -> Deleted:
    """Remove version ``vid`` wherever it is: a version moved between the look and the
    delete (archived by a write, put back at the key by another delete) is looked for
    again."""
    for _ in range(_TRIES):
        found = await find(fs, bucket, key, vid)
        if found is None:
            return Deleted(vid, False)
        try:
            await fs.delete(found.info.path)
        except (NotFound, NotADirectory):
            continue
        except DirectoryNotEmpty:
            raise S3Error("InternalError", "a delete marker holds entries") from None
        return await _after_delete(fs, bucket, key, found)
    raise S3Error("SlowDown", "this version moved too often while being deleted; try again")


async def _after_delete(fs: AsyncClient, bucket: str, key: str, found: Version) -> Deleted:
    """Its sidecar gone, the newest older version made current, emptied directories pruned."""
    if not found.marker:
        await store.discard(fs, store.sidecar_path(bucket, key, found.info))
    await promote(fs, bucket, key)
    if found.current and await _current(fs, bucket, key) is None:
        await store.prune_parents(fs, bucket, store.key_path(bucket, key))
    with contextlib.suppress(KeelError):  # an archive left empty (never one still used)
        await fs.delete(archive_dir(bucket, key))
    return Deleted(found.vid, found.marker)


async def _add_marker(fs: AsyncClient, bucket: str, key: str, state: str) -> Deleted:
    await _archive_current(fs, bucket, key, state)
    vid = new_version_id() if state == ENABLED else NULL_VERSION
    if state == SUSPENDED:
        current = await _current(fs, bucket, key)
        if current is not None:  # the null version, replaced by the marker
            await _remove_entry(fs, current.info.path)
            await store.discard(fs, store.sidecar_path(bucket, key, current.info))
        await _remove_archived_null(fs, bucket, key)
    folder = await _ensure_archive(fs, bucket, key)
    with contextlib.suppress(AlreadyExists):
        await fs.mkdir(f"{folder}/{vid}", mode=0o755)
    await store.prune_parents(fs, bucket, store.key_path(bucket, key))
    return Deleted(vid, True)


# -- listing -------------------------------------------------------------------------------------
async def archived_keys(fs: AsyncClient, bucket: str) -> list[str]:
    """Every key with an archive, in S3's order (byte order of its UTF-8)."""
    root = archive_root(bucket)
    try:
        entries = [e async for e in fs.ls(root)]
    except (NotFound, NotADirectory):
        return []
    keys = []
    for entry in entries:
        if entry.path == root or not entry.is_dir:
            continue
        if entry.name.startswith("#"):
            try:
                keys.append((await fs.read_bytes(f"{entry.path}/{KEY_FILE}")).decode())
            except (KeelError, UnicodeDecodeError):
                continue
        else:
            keys.append(unquote(entry.name))
    return sorted(keys, key=str.encode)


async def has_versions(fs: AsyncClient, bucket: str) -> bool:
    """Whether any key of the bucket has an archived version or a delete marker."""
    for key in await archived_keys(fs, bucket):
        if await _archived(fs, bucket, key):
            return True
    return False
