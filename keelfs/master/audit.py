"""The audit log: one line per namespace change and per denied request, as HDFS's
``hdfs-audit.log``::

    2026-12-06 22:40:01,123 allowed=false ugi=bob ip=127.0.0.1 cmd=listStatus
        src=/home/alice dst=null perm=null      (one line)

It goes to the ``keelfs.audit`` logger (a child per node), which does not propagate to the
process's log, and from
there to the file the ``audit_log`` setting names (off by default, as HDFS's ``NullAppender``).
Requests only enqueue their line (a ``QueueHandler``); a listener thread formats and writes it,
so a slow disk never holds up a request.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
from pathlib import Path
from typing import Any

from keelfs.meta.principals import Caller

__all__ = ["AUDIT_LOGGER", "AuditLog", "client_ip"]

AUDIT_LOGGER = "keelfs.audit"
_FORMAT = "%(asctime)s %(message)s"


def client_ip(context: Any) -> str:
    """The address a request came from (``ipv4:127.0.0.1:5000`` -> ``127.0.0.1``)."""
    peer = getattr(context, "peer", None)
    text = str(peer()) if peer is not None else ""
    kind, _, rest = text.partition(":")
    if kind in ("ipv4", "ipv6"):
        host = rest.rpartition(":")[0]
        return host.strip("[]") or rest
    return text or "unknown"


class AuditLog:
    """The audit log of one master process; a no-op without a ``path``."""

    def __init__(self, path: Path | None, node_id: int = 0) -> None:
        # a child per node: several masters in one process (tests, the embedded server) each
        # write their own file; ``keelfs.audit`` itself still sees every line, and never
        # passes one on to the process's log
        logging.getLogger(AUDIT_LOGGER).propagate = False
        self.logger = logging.getLogger(f"{AUDIT_LOGGER}.node{node_id}")
        self._listener: logging.handlers.QueueListener | None = None
        self._handler: logging.Handler | None = None
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(path, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter(_FORMAT))
        lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._listener = logging.handlers.QueueListener(lines, file_handler)
        self._handler = logging.handlers.QueueHandler(lines)
        self.logger.addHandler(self._handler)
        self.logger.setLevel(logging.INFO)
        self._listener.start()

    @property
    def enabled(self) -> bool:
        return self._listener is not None

    def record(
        self,
        allowed: bool,
        caller: Caller,
        ip: str,
        cmd: str,
        src: str,
        dst: str | None = None,
        perm: str | None = None,
    ) -> None:
        if not self.enabled:
            return
        self.logger.info(
            "allowed=%s ugi=%s ip=%s cmd=%s src=%s dst=%s perm=%s",
            "true" if allowed else "false",
            caller.user,
            ip,
            cmd,
            src or "null",
            dst or "null",
            perm or "null",
        )

    def close(self) -> None:
        """Write what is queued and stop the listener (idempotent)."""
        if self._listener is None:
            return
        self._listener.stop()
        if self._handler is not None:
            self.logger.removeHandler(self._handler)
        for handler in self._listener.handlers:
            handler.close()
        self._listener = None
