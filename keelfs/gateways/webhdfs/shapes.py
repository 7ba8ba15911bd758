"""The JSON bodies of WebHDFS answers, as Hadoop's WebHDFS REST API documents them."""

from __future__ import annotations

import hashlib
from typing import Any

from keelfs.meta.records import ContentSummary, FileInfo

__all__ = [
    "SNAPSHOT_QUOTA",
    "acl_status",
    "content_summary",
    "diff_entry",
    "file_checksum",
    "file_id",
    "file_status",
    "permission_text",
    "quota_usage",
]

SNAPSHOT_QUOTA = 65536
"""Snapshots allowed per directory, as HDFS shows it (keelfs has no such limit but the
records a shard may copy per snapshot)."""
NO_QUOTA = -1
DIFF_TYPES = {"+": "CREATE", "-": "DELETE", "M": "MODIFY", "R": "RENAME"}

DEFAULT_STORAGE_POLICY = 0
"""HDFS's "unspecified" storage policy id (keelfs has no storage policies)."""


def permission_text(mode: int) -> str:
    """Hadoop's ``permission``: the octal mode without a leading zero (``"755"``, ``"1777"``)."""
    return format(mode & 0o7777, "o")


def file_id(path: str) -> int:
    """A stable positive 63-bit number for ``path``: keelfs records have no inode number, so
    the id names the path (it changes when the path is renamed, unlike HDFS's inode id)."""
    digest = hashlib.blake2b(path.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1 or 1


def file_status(info: FileInfo, path_suffix: str = "", children: int = 0) -> dict[str, Any]:
    """A ``FileStatus`` object (``pathSuffix``: the entry's name in a listing, ``""`` for the
    path asked about)."""
    is_dir = info.is_dir
    status: dict[str, Any] = {
        "accessTime": info.atime,
        "blockSize": 0 if is_dir else info.block_size,
        "childrenNum": children,
        "fileId": file_id(info.path),
        "group": info.group,
        "length": 0 if is_dir else info.length,
        "modificationTime": info.mtime,
        "owner": info.owner,
        "pathSuffix": path_suffix,
        "permission": permission_text(info.mode),
        "replication": 0 if is_dir else info.replication,
        "storagePolicy": DEFAULT_STORAGE_POLICY,
        "type": "DIRECTORY" if is_dir else "FILE",
    }
    if info.acl:  # as Hadoop's JsonUtil: only when there is an ACL
        status["aclBit"] = True
    return status


def acl_status(info: FileInfo) -> dict[str, Any]:
    """An ``AclStatus`` object: the entries beyond the mode (``group::`` and the named ones,
    then the default ones), and the mode whose group bits are the mask."""
    return {
        "entries": [e.to_text() for e in info.acl],
        "group": info.group,
        "owner": info.owner,
        "permission": permission_text(info.mode),
        "stickyBit": bool(info.mode & 0o1000),
    }


def content_summary(
    summary: ContentSummary, names_quota: int | None = None, space_quota: int | None = None
) -> dict[str, Any]:
    """A ``ContentSummary`` object; a quota that is not set is ``-1``, as HDFS shows "none"
    (keelfs has no per-storage-type quotas: ``typeQuota`` is empty)."""
    return {
        "directoryCount": summary.directory_count,
        "fileCount": summary.file_count,
        "length": summary.length,
        "quota": NO_QUOTA if names_quota is None else names_quota,
        "spaceConsumed": summary.space_consumed,
        "spaceQuota": NO_QUOTA if space_quota is None else space_quota,
        "typeQuota": {},
    }


def quota_usage(
    names_used: int, names_quota: int | None, space_used: int, space_quota: int | None
) -> dict[str, Any]:
    """A ``QuotaUsage`` object (``fileAndDirectoryCount`` counts the directory itself, as
    HDFS's namespace quota does)."""
    return {
        "fileAndDirectoryCount": names_used,
        "quota": NO_QUOTA if names_quota is None else names_quota,
        "spaceConsumed": space_used,
        "spaceQuota": NO_QUOTA if space_quota is None else space_quota,
        "typeQuota": {},
    }


def diff_entry(entry: dict[str, str]) -> dict[str, Any]:
    """One ``diffList`` entry of a ``SnapshotDiffReport`` from keelfs's diff entry
    (``{"type": "+", "path": "./a"[, "to": "./b"]}``): paths relative to the snapshot root
    without the ``./`` (the root itself: ``""``), as HDFS's ``DiffReportEntry`` bytes."""
    out: dict[str, Any] = {
        "sourcePath": _relative(entry["path"]),
        "type": DIFF_TYPES[entry["type"]],
    }
    if "to" in entry:
        out["targetPath"] = _relative(entry["to"])
    return out


def _relative(path: str) -> str:
    if path in (".", "./"):
        return ""
    return path[2:] if path.startswith("./") else path.lstrip("/")


def file_checksum(algorithm: str, hex_bytes: str, length: int) -> dict[str, Any]:
    """A ``FileChecksum`` object."""
    return {"algorithm": algorithm, "bytes": hex_bytes, "length": length}
