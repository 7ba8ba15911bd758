"""Errors as WebHDFS answers them: ``{"RemoteException": {"exception", "javaClassName",
"message"}}`` with the HTTP status Hadoop's ``ExceptionHandler`` gives the exception's class
(``FileNotFoundException`` 404; ``SecurityException`` 401; any other ``IOException`` 403;
``IllegalArgumentException`` and ``UnsupportedOperationException`` 400; the rest 500).

:data:`HADOOP_EXCEPTIONS` is the one table from every ``KeelError`` code to the Hadoop exception
a Hadoop client expects for the same condition; :class:`HadoopError` is what the gateway raises
for conditions of its own (a bad parameter, an unsupported operation).
"""

from __future__ import annotations

import json
from typing import NamedTuple

from aiohttp import web

from keelfs.errors import KeelError

__all__ = [
    "HADOOP_EXCEPTIONS",
    "HadoopError",
    "HadoopException",
    "illegal_argument",
    "invalid_token",
    "remote_exception",
    "security",
    "snapshot_exception",
    "unsupported",
]


class HadoopException(NamedTuple):
    """A Hadoop exception class: its simple name, its Java class name and its HTTP status."""

    name: str
    java_class: str
    status: int


FILE_NOT_FOUND = HadoopException("FileNotFoundException", "java.io.FileNotFoundException", 404)
ACCESS_CONTROL = HadoopException(
    "AccessControlException", "org.apache.hadoop.security.AccessControlException", 403
)
ILLEGAL_ARGUMENT = HadoopException(
    "IllegalArgumentException", "java.lang.IllegalArgumentException", 400
)
UNSUPPORTED = HadoopException(
    "UnsupportedOperationException", "java.lang.UnsupportedOperationException", 400
)
IO_EXCEPTION = HadoopException("IOException", "java.io.IOException", 403)
RETRIABLE = HadoopException("RetriableException", "org.apache.hadoop.ipc.RetriableException", 503)
INTERNAL = HadoopException("RuntimeException", "java.lang.RuntimeException", 500)
SECURITY = HadoopException("SecurityException", "java.lang.SecurityException", 401)
"""A request whose credentials cannot be read at all (Hadoop: "Failed to obtain user group
information")."""
INVALID_TOKEN = HadoopException(
    "InvalidToken", "org.apache.hadoop.security.token.SecretManager$InvalidToken", 403
)
"""A delegation token that is forged, expired or cancelled (an ``IOException``: 403); Hadoop's
``WebHdfsFileSystem`` asks for a new token when it sees this class."""
SNAPSHOT = HadoopException(
    "SnapshotException", "org.apache.hadoop.hdfs.protocol.SnapshotException", 403
)
"""HDFS's answer to a snapshot operation it refuses: a directory that is not snapshottable, a
snapshot that exists or does not, snapshots left at a disallow."""

HADOOP_EXCEPTIONS: dict[str, HadoopException] = {
    "NOT_FOUND": FILE_NOT_FOUND,
    "PERMISSION_DENIED": ACCESS_CONTROL,
    "INVALID_ARGUMENT": ILLEGAL_ARGUMENT,
    "INVALID_PATH": HadoopException(
        "InvalidPathException", "org.apache.hadoop.fs.InvalidPathException", 400
    ),
    "ALREADY_EXISTS": HadoopException(
        "FileAlreadyExistsException", "org.apache.hadoop.fs.FileAlreadyExistsException", 403
    ),
    "NOT_A_DIRECTORY": HadoopException(
        "ParentNotDirectoryException", "org.apache.hadoop.fs.ParentNotDirectoryException", 403
    ),
    # HDFS answers an open/append of a directory with "Path is not a file"
    "IS_A_DIRECTORY": FILE_NOT_FOUND,
    "DIRECTORY_NOT_EMPTY": HadoopException(
        "PathIsNotEmptyDirectoryException",
        "org.apache.hadoop.fs.PathIsNotEmptyDirectoryException",
        403,
    ),
    "LEASE_CONFLICT": HadoopException(
        "AlreadyBeingCreatedException",
        "org.apache.hadoop.hdfs.protocol.AlreadyBeingCreatedException",
        403,
    ),
    "SESSION_EXPIRED": HadoopException(
        "LeaseExpiredException",
        "org.apache.hadoop.hdfs.server.namenode.LeaseExpiredException",
        403,
    ),
    # HDFS throws NSQuotaExceededException or DSQuotaExceededException, both of this class
    "QUOTA_EXCEEDED": HadoopException(
        "QuotaExceededException", "org.apache.hadoop.hdfs.protocol.QuotaExceededException", 403
    ),
    "RESOURCE_EXHAUSTED": RETRIABLE,
    "NOT_LEADER": RETRIABLE,
    "REDIRECT": RETRIABLE,
    "UNAVAILABLE": RETRIABLE,
    "PIPELINE_BROKEN": RETRIABLE,
    # applied or not, nobody knows: a plain retry is not safe, so not "retriable"
    "OUTCOME_UNKNOWN": IO_EXCEPTION,
    "FENCED": IO_EXCEPTION,
    "STALE_GENERATION": IO_EXCEPTION,
    "CORRUPT_REPLICA": HadoopException(
        "ChecksumException", "org.apache.hadoop.fs.ChecksumException", 403
    ),
    "CHECKSUM_MISMATCH": HadoopException(
        "ChecksumException", "org.apache.hadoop.fs.ChecksumException", 403
    ),
    "INTERNAL": INTERNAL,
}
"""Every ``KeelError.code`` -> the Hadoop exception for the same condition (a code missing
here, e.g. one of a newer server, is a ``RuntimeException``, 500)."""


class HadoopError(Exception):
    """A condition the gateway itself answers with a Hadoop exception."""

    def __init__(self, exception: HadoopException, message: str) -> None:
        super().__init__(message)
        self.exception = exception
        self.message = message


def illegal_argument(message: str) -> HadoopError:
    return HadoopError(ILLEGAL_ARGUMENT, message)


def unsupported(message: str) -> HadoopError:
    return HadoopError(UNSUPPORTED, message)


def access_denied(message: str) -> HadoopError:
    return HadoopError(ACCESS_CONTROL, message)


def security(message: str) -> HadoopError:
    return HadoopError(SECURITY, message)


def invalid_token(message: str) -> HadoopError:
    return HadoopError(INVALID_TOKEN, message)


def snapshot_exception(exc: KeelError) -> HadoopError | KeelError:
    """What HDFS answers for a keelfs error of a snapshot operation: ``SnapshotException``
    for the refusals that are about snapshots (not snapshottable, snapshots nest or remain, a
    snapshot that exists or not); others (a missing directory, rights) as any operation."""
    about_snapshot = exc.code in ("INVALID_ARGUMENT", "ALREADY_EXISTS") or (
        exc.code == "NOT_FOUND" and exc.details.get("kind") == "snapshot"
    )
    return HadoopError(SNAPSHOT, str(exc)) if about_snapshot else exc


def remote_exception(exc: BaseException, path: str = "") -> web.Response:
    """The WebHDFS answer for ``exc`` (a ``KeelError``, a ``HadoopError``, anything else) to
    a request about ``path``. A missing path is said in Hadoop's words (``File PATH does not
    exist.``): clients read the message (HdfsCLI's ``upload`` looks for "does not exist")."""
    if isinstance(exc, HadoopError):
        exception, message = exc.exception, exc.message
    elif isinstance(exc, KeelError):
        exception, message = HADOOP_EXCEPTIONS.get(exc.code, INTERNAL), str(exc)
        if exc.code == "NOT_FOUND" and path:
            message = f"File {path} does not exist."
    else:
        exception, message = INTERNAL, f"{type(exc).__name__}: {exc}"
    body = {
        "RemoteException": {
            "exception": exception.name,
            "javaClassName": exception.java_class,
            "message": message,
        }
    }
    return web.Response(
        text=json.dumps(body), status=exception.status, content_type="application/json"
    )
