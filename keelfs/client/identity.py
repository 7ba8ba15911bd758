"""Who a client says it is, in "simple" mode (no TLS): the ``keelfs-user`` gRPC metadata on
every metadata call, the OS user unless told otherwise (as HDFS's simple mode). With TLS the
certificate names the user and masters ignore this. ``Client(user=...)``, the CLI's ``--user``
and fsspec's ``user`` option name another; ``$KEELFS_USER`` does for all.

A master that acts for a client through another master (its internal client, e.g. the
missing parents of a ``mkdir -p`` on another shard) sets ``ACTING_FOR`` around the call: the
call then carries the whole caller (``keelfs-caller``), which the other master takes from a
peer (``keelfs.master.callers``).
"""

from __future__ import annotations

import contextvars
import getpass
import json
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import grpc
import grpc.aio

from keelfs.runtime.requests import with_request_id

__all__ = [
    "ACTING_FOR",
    "CALLER_METADATA_KEY",
    "USER_ENV",
    "USER_METADATA_KEY",
    "aio_interceptors",
    "default_user",
    "with_user",
]

USER_METADATA_KEY = "keelfs-user"
CALLER_METADATA_KEY = "keelfs-caller"

ACTING_FOR: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "keelfs_acting_for", default=None
)
"""The encoded ``Caller`` (``keelfs.meta.principals.Caller.encode``) a master's internal call
acts for; None: the client's own user."""


USER_ENV = "KEELFS_USER"


def default_user() -> str:
    """``$KEELFS_USER`` (as HDFS's ``HADOOP_USER_NAME``), else the OS user running this
    process."""
    return os.environ.get(USER_ENV) or getpass.getuser()


def _metadata(user: str | None, existing: Any) -> list[tuple[str, str]]:
    metadata = with_request_id(list(existing or ()))
    acting = ACTING_FOR.get()
    if acting is not None:
        metadata.append((CALLER_METADATA_KEY, json.dumps(acting, separators=(",", ":"))))
    elif user:
        metadata.append((USER_METADATA_KEY, user))
    return metadata


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class _SyncDetails(_Details, grpc.ClientCallDetails):
    pass


class _UserInterceptor(grpc.UnaryUnaryClientInterceptor):
    def __init__(self, user: str | None) -> None:
        self.user = user

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        new = _SyncDetails(
            details.method,
            details.timeout,
            _metadata(self.user, details.metadata),
            details.credentials,
            details.wait_for_ready,
            getattr(details, "compression", None),
        )
        return continuation(new, request)


class _AioUserInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, user: str | None) -> None:
        self.user = user

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        new = grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            _metadata(self.user, details.metadata),
            details.credentials,
            details.wait_for_ready,
        )
        return await continuation(new, request)


def with_user(channel: grpc.Channel, user: str | None) -> grpc.Channel:
    """``channel`` with every unary call naming ``user`` (sync client)."""
    return grpc.intercept_channel(channel, _UserInterceptor(user))


def aio_interceptors(user: str | None) -> list[Any]:
    """What to pass as ``interceptors=`` to an asyncio channel of a client of ``user``."""
    return [_AioUserInterceptor(user)]
