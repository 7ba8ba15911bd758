"""The JSON bodies of WebHDFS answers, as Hadoop's WebHDFS REST API documents them."""

from __future__ import annotations

import hashlib
from typing import Any

from keelfs.meta.records import ContentSummary, FileInfo

__all__ = [
    "acl_status",
    "content_summary",
    "file_checksum",
    "file_id",
    "file_status",
    "permission_text",
]

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


def content_summary(summary: ContentSummary) -> dict[str, Any]:
    """A ``ContentSummary`` object (no quotas: ``-1``, as HDFS shows "none")."""
    return {
        "directoryCount": summary.directory_count,
        "fileCount": summary.file_count,
        "length": summary.length,
        "quota": -1,
        "spaceConsumed": summary.space_consumed,
        "spaceQuota": -1,
        "typeQuota": {},
    }


def file_checksum(algorithm: str, hex_bytes: str, length: int) -> dict[str, Any]:
    """A ``FileChecksum`` object."""
    return {"algorithm": algorithm, "bytes": hex_bytes, "length": length}
