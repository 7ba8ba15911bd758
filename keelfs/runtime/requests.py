"""Request ids that follow one operation through client, master and chunk server, and the log
formats that show them.

A client operation runs under one id (:func:`request_scope`; ``keelfs`` commands open one per
command, ``$KEELFS_REQUEST_ID`` names it). Every gRPC call made under it carries the id as the
metadata ``x-keelfs-request-id`` (the client's interceptors, ``keelfs.client.identity`` and
``keelfs.datapath.wire``); a server's interceptor (``keelfs.rpc.observe``) puts the id it
received back into :data:`REQUEST_ID` for the handler, so the server's own log lines, and the
calls it makes to other servers on the request's behalf, carry it too. A call made outside
any scope carries no id.

Logs: :class:`TextFormatter` (the default) appends ``[rid=ID]`` to a line written under an
id; :class:`JsonFormatter` (``--log-format json``) writes one JSON object per line with the
fields ``ts``, ``level``, ``logger``, ``process`` (the process's tag), ``msg``, and
``request_id`` and ``exc`` when there are any.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime

__all__ = [
    "LOG_FORMATS",
    "REQUEST_ID",
    "REQUEST_ID_ENV",
    "REQUEST_ID_METADATA_KEY",
    "JsonFormatter",
    "TextFormatter",
    "new_request_id",
    "formatter",
    "request_id_from_metadata",
    "request_metadata",
    "request_scope",
    "with_request_id",
]

REQUEST_ID_METADATA_KEY = "x-keelfs-request-id"
REQUEST_ID_ENV = "KEELFS_REQUEST_ID"
MAX_REQUEST_ID_CHARS = 64
"""Longer ids from a caller are cut: a log line is not the caller's to fill."""

LOG_FORMATS = ("text", "json")

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "keelfs_request_id", default=None
)
"""The id of the operation the running code works for (None: none)."""


def new_request_id() -> str:
    """A fresh id: 16 hex digits (64 random bits)."""
    return secrets.token_hex(8)


@contextlib.contextmanager
def request_scope(request_id: str | None = None) -> Iterator[str]:
    """Run the block under ``request_id`` (default: ``$KEELFS_REQUEST_ID``, else a new one);
    yields the id."""
    rid = _clean(request_id or os.environ.get(REQUEST_ID_ENV) or new_request_id())
    token = REQUEST_ID.set(rid)
    try:
        yield rid
    finally:
        REQUEST_ID.reset(token)


def _clean(rid: str) -> str:
    """Printable ASCII, no spaces or quotes, at most ``MAX_REQUEST_ID_CHARS``: safe in a log
    line and in gRPC metadata."""
    kept = "".join(c for c in rid if 33 <= ord(c) < 127 and c not in "\"'\\")
    return kept[:MAX_REQUEST_ID_CHARS]


def with_request_id(metadata: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``metadata`` plus the current request id, if there is one (and it is not there yet)."""
    rid = REQUEST_ID.get()
    if rid and all(key != REQUEST_ID_METADATA_KEY for key, _ in metadata):
        metadata.append((REQUEST_ID_METADATA_KEY, rid))
    return metadata


def request_metadata() -> tuple[tuple[str, str], ...] | None:
    """The ``metadata=`` of a call made now: the request id, or None outside a scope."""
    rid = REQUEST_ID.get()
    return None if not rid else ((REQUEST_ID_METADATA_KEY, rid),)


def request_id_from_metadata(metadata: object) -> str | None:
    """The request id a call's invocation metadata carries (cleaned), else None."""
    for item in metadata or ():  # type: ignore[attr-defined]
        key, value = item[0], item[1]
        if key == REQUEST_ID_METADATA_KEY:
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
            return _clean(text) or None
    return None


class TextFormatter(logging.Formatter):
    """``<time> <tag> <LEVEL> <logger>: <message>``, then `` [rid=ID]`` under a request id."""

    def __init__(self, tag: str) -> None:
        super().__init__(f"%(asctime)s {tag} %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = getattr(record, "request_id", None) or REQUEST_ID.get()
        if not rid:
            return line
        first, nl, rest = line.partition("\n")  # after the message, before a traceback
        return f"{first} [rid={rid}]{nl}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module docstring)."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": self.tag,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or REQUEST_ID.get()
        if rid:
            out["request_id"] = rid
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def formatter(log_format: str, tag: str) -> logging.Formatter:
    """The formatter of ``log_format`` (``text`` or ``json``); ``ValueError`` otherwise."""
    if log_format == "json":
        return JsonFormatter(tag)
    if log_format == "text":
        return TextFormatter(tag)
    raise ValueError(
        f"unknown log format {log_format!r} (expected one of {', '.join(LOG_FORMATS)})"
    )
