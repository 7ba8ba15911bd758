"""The errors a keelfs caller sees: one tree, one stable code per class.

::

    KeelError                                   code
    ├── RetryableError          try again: elsewhere, or later, or after re-routing
    │   ├── NotLeader           NOT_LEADER           group_id, leader_id, leader_address
    │   ├── Redirect            REDIRECT             path, shard_id, map_version, addresses
    │   ├── Unavailable         UNAVAILABLE          reason: certainly not applied
    │   │   └── OutcomeUnknown  OUTCOME_UNKNOWN      reason: a write that may or may not have
    │   │                                            applied (or may still apply)
    │   └── PipelineBroken      PIPELINE_BROKEN      block_id, acked_length, failed, reason
    ├── Internal                INTERNAL             a server failed unexpectedly (a bug); not
    │                                                retried
    └── OperationError          the request is wrong for the input or the current state;
        │                       the same request will fail the same way
        ├── InvalidArgument     INVALID_ARGUMENT     argument
        │   └── InvalidPath     INVALID_PATH         path, reason
        ├── NotFound            NOT_FOUND            kind, name
        ├── AlreadyExists       ALREADY_EXISTS       kind, name
        ├── NotADirectory       NOT_A_DIRECTORY      path
        ├── IsADirectory        IS_A_DIRECTORY       path
        ├── DirectoryNotEmpty   DIRECTORY_NOT_EMPTY  path
        ├── LeaseConflict       LEASE_CONFLICT       path, holder
        ├── SessionExpired      SESSION_EXPIRED      session_id
        ├── PermissionDenied    PERMISSION_DENIED    path, user
        ├── ResourceExhausted   RESOURCE_EXHAUSTED   resource, limit: a per-principal limit
        ├── QuotaExceeded       QUOTA_EXCEEDED       path, quota, limit, used, wanted: a
        │                                            directory's name or space quota
        │                       of the chunk servers (the data path):
        ├── Fenced              FENCED               shard_id, epoch, current_epoch
        ├── StaleGeneration     STALE_GENERATION     block_id, gen, replica_gen
        ├── CorruptReplica      CORRUPT_REPLICA      block_id, gen, offset, reason
        └── ChecksumMismatch    CHECKSUM_MISMATCH    block_id, offset, reason

Every class has a class attribute ``code`` (a stable string, never renamed: it crosses the wire)
and a fixed set of structured ``detail_fields``. ``err.to_details()`` is a JSON-safe ``dict``
(``code``, ``message`` and the detail fields); ``KeelError.from_details(d)`` rebuilds an
instance of the right class, so the gRPC boundary (and the metadata state machine's reply cache,
which stores error replies) can carry errors without pickling. Unknown detail fields are
dropped and an unknown ``code`` becomes a plain ``KeelError`` that keeps the code, so an older
peer can read a newer one's errors.

``SessionExpired`` is not a retryable condition although retrying is what the client does next:
the client must open a *new* session, and a command it sent on the expired one may or may not
have been applied (Raft dissertation §6.3), so the client has to find out (e.g. stat the file)
before it retries a non-idempotent command.

``LeaseConflict`` means another client session holds the writer lease on the file; it clears
when that session completes the file or its lease expires.

A chunk server answers with its own codes above and with the general ``NotFound`` (kind
``replica``), ``AlreadyExists`` (kind ``replica``), ``InvalidArgument`` and ``Unavailable``.
``CorruptReplica`` is about data at rest (a stored checksum does not match what the disk
returns: the replica is marked corrupt and no longer served); ``ChecksumMismatch`` about data in
flight (a packet or a read reply whose checksum does not match its bytes).

The names avoid Python's built-in ``NotADirectoryError``/``IsADirectoryError`` on purpose.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = [
    "AlreadyExists",
    "ChecksumMismatch",
    "CorruptReplica",
    "DirectoryNotEmpty",
    "Fenced",
    "Internal",
    "InvalidArgument",
    "InvalidPath",
    "IsADirectory",
    "KeelError",
    "LeaseConflict",
    "NotADirectory",
    "NotFound",
    "NotLeader",
    "OperationError",
    "OutcomeUnknown",
    "PermissionDenied",
    "PipelineBroken",
    "Redirect",
    "QuotaExceeded",
    "ResourceExhausted",
    "RetryableError",
    "SessionExpired",
    "StaleGeneration",
    "Unavailable",
]

Detail = str | int | bool | None | list[str] | dict[str, str]
"""What a detail field may hold: JSON-safe values only."""

_BY_CODE: dict[str, type[KeelError]] = {}


class KeelError(Exception):
    """Base of every keelfs error. ``code`` is stable; ``details`` holds the structured fields."""

    code: ClassVar[str] = "UNKNOWN"
    retryable: ClassVar[bool] = False
    detail_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, message: str = "", **details: Any) -> None:
        self.message = message or self.code
        self.details: dict[str, Any] = {k: details.get(k) for k in self.detail_fields}
        super().__init__(self.message)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            if cls.code in _BY_CODE:
                raise TypeError(f"error code {cls.code} defined twice")
            _BY_CODE[cls.code] = cls

    def to_details(self) -> dict[str, Any]:
        """JSON-safe form: ``{"code": ..., "message": ..., <detail fields>}``."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        out.update(self.details)
        return out

    @staticmethod
    def from_details(details: Mapping[str, Any]) -> KeelError:
        """Rebuild the error ``to_details()`` described (of the class its code names)."""
        code = str(details.get("code", "UNKNOWN"))
        cls = _BY_CODE.get(code)
        message = str(details.get("message", ""))
        if cls is None:
            err = KeelError(message)
            err.code = code  # type: ignore[misc]  # keep the unknown code on the instance
            return err
        err = cls.__new__(cls)
        KeelError.__init__(err, message, **{k: details.get(k) for k in cls.detail_fields})
        return err

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, KeelError)
            and type(other) is type(self)
            and other.to_details() == self.to_details()
        )

    def __hash__(self) -> int:
        return hash((self.code, self.message))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.details.items())
        return f"{type(self).__name__}({self.message!r}{', ' if fields else ''}{fields})"


# -- retryable -----------------------------------------------------------------------------------
class RetryableError(KeelError):
    """The request was not applied; it may succeed on another node, shard or a bit later."""

    retryable = True


class NotLeader(RetryableError):
    """This member does not lead its Raft group; ``leader_id``/``leader_address`` are a hint
    (``leader_id`` 0 and no address when it does not know one).

    ``leader_address`` is always an address a *client* can call. The Raft runtime, which knows
    only its peers' Raft addresses, leaves it None and puts the leader's Raft address in
    ``raft_address`` instead (kept in the process, never sent on the wire); a server that
    answers clients fills in the client address (``MetaNode.for_clients``)."""

    code = "NOT_LEADER"
    detail_fields = ("group_id", "leader_id", "leader_address")
    raft_address: str | None = None  # also when rebuilt by ``KeelError.from_details``

    def __init__(
        self,
        group_id: str = "",
        leader_id: int = 0,
        leader_address: str | None = None,
        *,
        raft_address: str | None = None,
        message: str = "",
    ) -> None:
        where = f"node {leader_id}" if leader_id else "unknown"
        if leader_id and (leader_address or raft_address):
            where += f" at {leader_address or raft_address}"
        super().__init__(
            message or f"not the leader of {group_id}; leader: {where}",
            group_id=group_id,
            leader_id=leader_id,
            leader_address=leader_address,
        )
        self.raft_address = raft_address

    @property
    def group_id(self) -> str:
        return str(self.details["group_id"] or "")

    @property
    def leader_id(self) -> int:
        return int(self.details["leader_id"] or 0)

    @property
    def leader_address(self) -> str | None:
        addr = self.details["leader_address"]
        return None if addr is None else str(addr)


class Redirect(RetryableError):
    """Another shard owns ``path`` in ShardMap ``map_version``: ask ``shard_id`` (its members'
    addresses in ``addresses``, node id as a string -> address), refreshing the cached map if it
    is older than ``map_version``."""

    code = "REDIRECT"
    detail_fields = ("path", "shard_id", "map_version", "addresses")

    def __init__(
        self,
        path: str = "",
        shard_id: str = "",
        map_version: int = 0,
        addresses: Mapping[str, str] | None = None,
        *,
        message: str = "",
    ) -> None:
        super().__init__(
            message or f"{path} is owned by shard {shard_id} (map version {map_version})",
            path=path,
            shard_id=shard_id,
            map_version=map_version,
            addresses=dict(addresses or {}),
        )

    @property
    def shard_id(self) -> str:
        return str(self.details["shard_id"])

    @property
    def map_version(self) -> int:
        return int(self.details["map_version"] or 0)


class Unavailable(RetryableError):
    """No leader, overloaded, shutting down, a map change in progress: try again later. The
    request was certainly not applied (else it is an ``OutcomeUnknown``)."""

    code = "UNAVAILABLE"
    detail_fields = ("reason",)

    def __init__(self, reason: str = "", *, message: str = "") -> None:
        super().__init__(message or f"unavailable: {reason}", reason=reason)


class OutcomeUnknown(Unavailable):
    """A write may or may not have been applied, or may still be: a proposal handed to Raft
    whose fate is unknown (a timeout, a shutdown, a snapshot that replaced it), a transaction
    not decided in time, or the client library's last word on such a write (its deadline
    passed, or its session expired meanwhile, or its shard is gone). It has a code of its own,
    so that ``UNAVAILABLE`` always means "not applied"; it is still an ``Unavailable`` for a
    caller that only backs off and retries with the same session and seq (which returns the
    first outcome). Anyone else must find out (e.g. stat the file) before doing it again."""

    code = "OUTCOME_UNKNOWN"

    def __init__(self, reason: str = "", *, message: str = "") -> None:
        super().__init__(reason, message=message or f"outcome unknown: {reason}")


class Internal(KeelError):
    """A server failed in a way it did not expect (a bug): the request may not be retried
    blindly, and the server's log has the traceback."""

    code = "INTERNAL"


# -- the request is wrong -------------------------------------------------------------------------
class OperationError(KeelError):
    """The request cannot succeed as it stands; nothing was changed."""


class InvalidArgument(OperationError):
    """An argument is malformed or out of range (``argument`` names it when there is one)."""

    code = "INVALID_ARGUMENT"
    detail_fields: ClassVar[tuple[str, ...]] = ("argument",)

    def __init__(self, message: str = "", argument: str = "", **details: Any) -> None:
        super().__init__(message or f"invalid argument {argument}", argument=argument, **details)


class InvalidPath(InvalidArgument):
    """``path`` is not a valid absolute keelfs path; ``reason`` says which rule it breaks."""

    code = "INVALID_PATH"
    detail_fields = ("argument", "path", "reason")

    def __init__(
        self, path: str = "", reason: str = "", *, argument: str = "path", message: str = ""
    ) -> None:
        super().__init__(
            message or f"invalid path {path!r}: {reason}",
            argument=argument,
            path=path,
            reason=reason,
        )

    @property
    def path(self) -> str:
        return str(self.details["path"])

    @property
    def reason(self) -> str:
        return str(self.details["reason"])


class NotFound(OperationError):
    """The named thing does not exist. ``kind``: ``path``, ``directory``, ``shard``, ``node``,
    ``chunk server``, ...; ``name``: its path or id."""

    code = "NOT_FOUND"
    detail_fields = ("kind", "name")

    def __init__(self, name: str = "", kind: str = "path", *, message: str = "") -> None:
        super().__init__(message or f"no such {kind}: {name}", kind=kind, name=name)

    @property
    def name(self) -> str:
        return str(self.details["name"])

    @property
    def kind(self) -> str:
        return str(self.details["kind"])


class AlreadyExists(OperationError):
    """The target exists and the request did not allow replacing it."""

    code = "ALREADY_EXISTS"
    detail_fields = ("kind", "name")

    def __init__(self, name: str = "", kind: str = "path", *, message: str = "") -> None:
        super().__init__(message or f"{kind} already exists: {name}", kind=kind, name=name)

    @property
    def name(self) -> str:
        return str(self.details["name"])


class NotADirectory(OperationError):
    """``path`` (the target or one of its ancestors) is a file where a directory is needed."""

    code = "NOT_A_DIRECTORY"
    detail_fields = ("path",)

    def __init__(self, path: str = "", *, message: str = "") -> None:
        super().__init__(message or f"not a directory: {path}", path=path)

    @property
    def path(self) -> str:
        return str(self.details["path"])


class IsADirectory(OperationError):
    """``path`` is a directory where a file is needed."""

    code = "IS_A_DIRECTORY"
    detail_fields = ("path",)

    def __init__(self, path: str = "", *, message: str = "") -> None:
        super().__init__(message or f"is a directory: {path}", path=path)

    @property
    def path(self) -> str:
        return str(self.details["path"])


class DirectoryNotEmpty(OperationError):
    """A non-recursive delete (or an overwriting rename) met a directory with entries."""

    code = "DIRECTORY_NOT_EMPTY"
    detail_fields = ("path",)

    def __init__(self, path: str = "", *, message: str = "") -> None:
        super().__init__(message or f"directory not empty: {path}", path=path)

    @property
    def path(self) -> str:
        return str(self.details["path"])


class LeaseConflict(OperationError):
    """Another session holds the writer lease on ``path`` (``holder``: the user it belongs
    to, empty when none or unknown; never the session's id, which is its owner's secret), or
    the caller needed a lease it does not hold."""

    code = "LEASE_CONFLICT"
    detail_fields = ("path", "holder")

    def __init__(self, path: str = "", holder: str = "", *, message: str = "") -> None:
        by = f" by {holder}" if holder else ""
        super().__init__(message or f"{path} is being written{by}", path=path, holder=holder)

    @property
    def holder(self) -> str:
        return str(self.details["holder"] or "")


class SessionExpired(OperationError):
    """The client session is unknown: expired, closed, or never registered (see module doc)."""

    code = "SESSION_EXPIRED"
    detail_fields = ("session_id",)

    def __init__(self, session_id: int = 0, *, message: str = "") -> None:
        super().__init__(
            message or f"client session {session_id} is unknown or expired",
            session_id=session_id,
        )


class PermissionDenied(OperationError):
    """The caller's identity may not do this to ``path`` (POSIX mode bits, owner rules:
    ``keelfs.meta.principals``). Nothing was changed."""

    code = "PERMISSION_DENIED"
    detail_fields = ("path", "user")

    def __init__(self, path: str = "", user: str = "", *, message: str = "") -> None:
        super().__init__(message or f"permission denied: {user} on {path}", path=path, user=user)

    @property
    def path(self) -> str:
        return str(self.details["path"])


class ResourceExhausted(OperationError):
    """A limit on what one principal may hold (sessions per user, writer leases per session)
    or on what a server may take (a chunk server's disk reservation) would be exceeded.
    Nothing was changed; it clears when the holder releases something."""

    code = "RESOURCE_EXHAUSTED"
    detail_fields = ("resource", "limit")

    def __init__(self, resource: str = "", limit: int = 0, *, message: str = "") -> None:
        super().__init__(
            message or f"limit on {resource} reached ({limit})", resource=resource, limit=limit
        )


class QuotaExceeded(OperationError):
    """A directory's quota would be exceeded: ``path`` the directory with the quota,
    ``quota`` "names" (files and directories in its subtree, itself included: HDFS's
    NSQuotaExceededException) or "space" (bytes times replication: HDFS's
    DSQuotaExceededException), its ``limit``, what is ``used`` and what the request
    ``wanted`` on top. Nothing was changed."""

    code = "QUOTA_EXCEEDED"
    detail_fields = ("path", "quota", "limit", "used", "wanted")

    def __init__(
        self,
        path: str = "",
        quota: str = "",
        limit: int = 0,
        used: int = 0,
        wanted: int = 0,
        *,
        message: str = "",
    ) -> None:
        what = "name" if quota == "names" else "space"
        super().__init__(
            message
            or f"the {what} quota of {path} is exceeded: limit {limit}, used {used}, "
            f"requested {wanted} more",
            path=path,
            quota=quota,
            limit=limit,
            used=used,
            wanted=wanted,
        )


class Fenced(OperationError):
    """``shard_id`` sent ``epoch`` but this chunk server has already seen ``current_epoch`` from
    that shard: the sender is a deposed leader (or replays an old command). Nothing was done."""

    code = "FENCED"
    detail_fields = ("shard_id", "epoch", "current_epoch")

    def __init__(
        self, shard_id: str = "", epoch: int = 0, current_epoch: int = 0, *, message: str = ""
    ) -> None:
        super().__init__(
            message
            or f"fenced: shard {shard_id} epoch {epoch} is older than epoch {current_epoch}",
            shard_id=shard_id,
            epoch=epoch,
            current_epoch=current_epoch,
        )

    @property
    def current_epoch(self) -> int:
        return int(self.details["current_epoch"] or 0)


class StaleGeneration(OperationError):
    """The replica of ``block_id`` here has stamp ``replica_gen``, not the ``gen`` asked for (to
    read it), or a newer one than ``gen`` (to write it). A stale stamp is never served."""

    code = "STALE_GENERATION"
    detail_fields = ("block_id", "gen", "replica_gen")

    def __init__(
        self, block_id: int = 0, gen: int = 0, replica_gen: int = 0, *, message: str = ""
    ) -> None:
        super().__init__(
            message or f"block {block_id}: generation stamp {gen} asked, replica has {replica_gen}",
            block_id=block_id,
            gen=gen,
            replica_gen=replica_gen,
        )


class CorruptReplica(OperationError):
    """The stored replica failed a check at ``offset`` (a chunk's CRC32C, or its files disagree
    on the length). It is marked corrupt, reported, and never served again."""

    code = "CORRUPT_REPLICA"
    detail_fields = ("block_id", "gen", "offset", "reason")

    def __init__(
        self,
        block_id: int = 0,
        gen: int = 0,
        offset: int = 0,
        reason: str = "",
        *,
        message: str = "",
    ) -> None:
        super().__init__(
            message or f"replica {block_id}_{gen} is corrupt at offset {offset}: {reason}",
            block_id=block_id,
            gen=gen,
            offset=offset,
            reason=reason,
        )


class ChecksumMismatch(OperationError):
    """Bytes that arrived at ``offset`` of ``block_id`` do not match the CRC32C sent with them."""

    code = "CHECKSUM_MISMATCH"
    detail_fields = ("block_id", "offset", "reason")

    def __init__(
        self, block_id: int = 0, offset: int = 0, reason: str = "", *, message: str = ""
    ) -> None:
        super().__init__(
            message or f"block {block_id}: checksum mismatch at offset {offset}: {reason}",
            block_id=block_id,
            offset=offset,
            reason=reason,
        )


class PipelineBroken(RetryableError):
    """A write pipeline lost nodes: ``failed`` lists their addresses, every node still holds
    bytes ``[0, acked_length)``. Retry with a new pipeline and a new generation stamp (from
    ``acked_length`` on the survivors, or from 0). ``result`` (not sent on the wire) is the
    :class:`keelfs.datapath.protocol.WriteResult` with each node's state and error."""

    code = "PIPELINE_BROKEN"
    detail_fields = ("block_id", "acked_length", "failed", "reason")
    result: Any = None  # also when rebuilt by ``KeelError.from_details``

    def __init__(
        self,
        block_id: int = 0,
        acked_length: int = 0,
        failed: list[str] | None = None,
        reason: str = "",
        *,
        message: str = "",
        result: Any = None,
    ) -> None:
        failed = list(failed or [])
        super().__init__(
            message
            or f"block {block_id}: pipeline broken at {', '.join(failed) or '?'} after "
            f"{acked_length} bytes: {reason}",
            block_id=block_id,
            acked_length=acked_length,
            failed=failed,
            reason=reason,
        )
        self.result = result

    @property
    def acked_length(self) -> int:
        return int(self.details["acked_length"] or 0)

    @property
    def failed(self) -> list[str]:
        return list(self.details["failed"] or [])
