"""The one place where keelfs errors meet gRPC, in both directions.

Server side: every refusal is a ``keelfs.errors.KeelError`` (the Raft runtime raises the tree's
own ``NotLeader``, ``Unavailable`` and ``OutcomeUnknown``); :func:`abort` ends the RPC with
the status code from :data:`STATUS_OF_CODE` and trailing metadata ``keelfs-error`` holding the
error's ``to_details()`` as ASCII JSON (strings clipped so that the trailer stays well under
gRPC's 8 KiB metadata limit). :func:`from_exception` gives any other exception that reaches a
servicer its meaning.

Client side: :func:`error_from_rpc` rebuilds the ``KeelError`` from the trailer, and gives the
gRPC-level failures that carry none (a connection that broke, a deadline, a request over the
size limit) their meaning for a caller: :func:`transport_failure`.

``UNAVAILABLE`` means one thing: the request was certainly not applied. A write that may or may
not have been applied is ``OUTCOME_UNKNOWN`` (``keelfs.errors.OutcomeUnknown``). Both travel
with gRPC status ``UNAVAILABLE``, gRPC's word for "transient", which says nothing about whether
a request was applied (a connection that broke mid-call has it too).
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

import grpc

from keelfs.errors import (
    AlreadyExists,
    ChecksumMismatch,
    CorruptReplica,
    DirectoryNotEmpty,
    Fenced,
    Internal,
    InvalidArgument,
    InvalidPath,
    IsADirectory,
    KeelError,
    LeaseConflict,
    NotADirectory,
    NotFound,
    NotLeader,
    OutcomeUnknown,
    PermissionDenied,
    PipelineBroken,
    QuotaExceeded,
    Redirect,
    ResourceExhausted,
    SessionExpired,
    StaleGeneration,
    Unavailable,
)

__all__ = [
    "ERROR_KEY",
    "INTERNAL_CODE",
    "STATUS_OF_CODE",
    "TransportFailure",
    "abort",
    "decode_error",
    "encode_error",
    "error_from_rpc",
    "from_exception",
    "internal_error",
    "status_of",
    "transport_failure",
]

ERROR_KEY = "keelfs-error"
"""Trailing metadata key of a refusal: JSON of ``KeelError.to_details()``."""
INTERNAL_CODE = Internal.code
"""The code of an unexpected server-side failure (a bug); not retried by clients."""

_MAX_STRING = 512
_MAX_MESSAGE = 1024

STATUS_OF_CODE: dict[str, grpc.StatusCode] = {
    NotLeader.code: grpc.StatusCode.FAILED_PRECONDITION,
    Redirect.code: grpc.StatusCode.FAILED_PRECONDITION,
    Unavailable.code: grpc.StatusCode.UNAVAILABLE,
    OutcomeUnknown.code: grpc.StatusCode.UNAVAILABLE,
    InvalidArgument.code: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidPath.code: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound.code: grpc.StatusCode.NOT_FOUND,
    AlreadyExists.code: grpc.StatusCode.ALREADY_EXISTS,
    NotADirectory.code: grpc.StatusCode.FAILED_PRECONDITION,
    IsADirectory.code: grpc.StatusCode.FAILED_PRECONDITION,
    DirectoryNotEmpty.code: grpc.StatusCode.FAILED_PRECONDITION,
    LeaseConflict.code: grpc.StatusCode.FAILED_PRECONDITION,
    SessionExpired.code: grpc.StatusCode.FAILED_PRECONDITION,
    PermissionDenied.code: grpc.StatusCode.PERMISSION_DENIED,
    ResourceExhausted.code: grpc.StatusCode.RESOURCE_EXHAUSTED,
    QuotaExceeded.code: grpc.StatusCode.FAILED_PRECONDITION,
    # the chunk servers' (the data path)
    Fenced.code: grpc.StatusCode.FAILED_PRECONDITION,
    StaleGeneration.code: grpc.StatusCode.FAILED_PRECONDITION,
    CorruptReplica.code: grpc.StatusCode.DATA_LOSS,
    ChecksumMismatch.code: grpc.StatusCode.DATA_LOSS,
    PipelineBroken.code: grpc.StatusCode.UNAVAILABLE,
    Internal.code: grpc.StatusCode.INTERNAL,
}
"""keelfs error code -> gRPC status code, for every service; any other code (a bug) is
``INTERNAL``."""


def status_of(err: KeelError) -> grpc.StatusCode:
    return STATUS_OF_CODE.get(err.code, grpc.StatusCode.INTERNAL)


# -- server side ------------------------------------------------------------------------------
def from_exception(exc: BaseException) -> KeelError:
    """The ``KeelError`` a servicer answers with for ``exc``: a ``KeelError`` is itself; a
    ``TimeoutError`` (a wait inside the server that outlasted its limit) is ``Unavailable``;
    anything else is a bug (``INTERNAL``)."""
    if isinstance(exc, KeelError):
        return exc
    if isinstance(exc, TimeoutError):
        return Unavailable("timed out")
    return internal_error(exc)


def internal_error(exc: BaseException) -> Internal:
    """The ``INTERNAL`` error for an exception a server did not expect (a bug)."""
    return Internal(f"internal error: {type(exc).__name__}: {exc}")


def _clip_string(value: str, limit: int) -> str:
    """``value`` cut so that its ASCII JSON form stays within about ``limit`` bytes (a non-ASCII
    or control character takes up to 12)."""
    if len(value) <= limit and value.isascii() and value.isprintable():
        return value
    size = 0
    for i, ch in enumerate(value):
        size += 1 if " " <= ch <= "~" else len(json.dumps(ch)) - 2
        if size > limit:
            return value[:i] + f"...({len(value) - i} more)"
    return value


def _clip(value: Any, limit: int = _MAX_STRING) -> Any:
    if isinstance(value, str):
        return _clip_string(value, limit)
    if isinstance(value, list):
        return [_clip(v, limit) for v in value[:64]]
    if isinstance(value, dict):
        return {str(_clip(k, 128)): _clip(v, limit) for k, v in list(value.items())[:64]}
    return value


def encode_error(err: KeelError) -> str:
    """The ``keelfs-error`` trailer value: printable-ASCII JSON with long strings clipped."""
    details = err.to_details()
    out = {k: _clip(v, _MAX_MESSAGE if k == "message" else _MAX_STRING) for k, v in details.items()}
    return json.dumps(out, ensure_ascii=True, separators=(",", ":"), sort_keys=True)


async def abort(context: Any, err: KeelError) -> NoReturn:
    """End the RPC with ``err`` (a ``grpc.aio`` servicer context)."""
    await context.abort(
        status_of(err), _clip(err.message, _MAX_MESSAGE), ((ERROR_KEY, encode_error(err)),)
    )
    raise AssertionError("context.abort returned")  # pragma: no cover


# -- client side ------------------------------------------------------------------------------
def _trailer(err: grpc.RpcError) -> str | None:
    try:
        md = err.trailing_metadata()
    except Exception:
        return None
    for key, value in md or ():
        if key == ERROR_KEY:
            return value if isinstance(value, str) else bytes(value).decode("ascii", "replace")
    return None


def error_from_rpc(err: grpc.RpcError) -> KeelError | None:
    """The ``KeelError`` a keelfs server refused with, or None when gRPC itself failed the call
    (no ``keelfs-error`` trailer): see :func:`transport_failure` for those."""
    raw = _trailer(err)
    return None if raw is None else decode_error(raw)


def decode_error(raw: str) -> KeelError:
    """The ``KeelError`` of a ``keelfs-error`` JSON (``Internal`` when it cannot be read):
    from a trailer, or from a chunk pipeline's per-node result."""
    try:
        details = json.loads(raw)
    except ValueError:
        details = None
    if not isinstance(details, dict):
        return Internal(f"unreadable {ERROR_KEY} trailer: {raw[:200]!r}")
    return KeelError.from_details(details)


class TransportFailure:
    """What a gRPC-level failure (no ``keelfs-error``) means for the caller.

    ``error`` is raised at once when it is not None (the request can never succeed as sent);
    otherwise the failure is transient: ``never_sent`` tells whether the request certainly did
    not reach a server (so a write was certainly not applied)."""

    __slots__ = ("code", "message", "error", "never_sent")

    def __init__(
        self, code: grpc.StatusCode, message: str, error: KeelError | None, never_sent: bool
    ) -> None:
        self.code = code
        self.message = message
        self.error = error
        self.never_sent = never_sent


_CONCURRENCY_LIMIT = "concurrent rpc limit"
"""What gRPC's server answers (RESOURCE_EXHAUSTED) beyond ``maximum_concurrent_rpcs``."""


def transport_failure(err: grpc.RpcError, address: str, method: str) -> TransportFailure:
    code = err.code()
    message = str(err.details() or "")
    error: KeelError | None = None
    busy = code is grpc.StatusCode.RESOURCE_EXHAUSTED and _CONCURRENCY_LIMIT in message.lower()
    if busy:
        pass  # the server's maximum_concurrent_rpcs: it never started the call; retry later
    elif code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        error = InvalidArgument(
            f"request too large for {address} ({method}): {message}", argument="request"
        )
    elif code is grpc.StatusCode.PERMISSION_DENIED:
        # a TLS port's access interceptor (keelfs.rpc.access) refused the method before any
        # handler ran: final, asking again cannot help
        error = PermissionDenied(message=f"{address} refused {method}: {message}")
    elif code is grpc.StatusCode.UNIMPLEMENTED:
        error = InvalidArgument(
            f"{address} does not serve {method} (is it the right kind of node?)",
            argument="address",
        )
    refused = code is grpc.StatusCode.UNAVAILABLE and "failed to connect" in message.lower()
    denied = code is grpc.StatusCode.PERMISSION_DENIED
    return TransportFailure(code, message, error, refused or busy or denied)
