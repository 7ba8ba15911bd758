"""The ``--http-listen HOST:PORT`` flag: loopback hosts only (the HTTP side has no
authentication), port 0 for any free port; empty (the default) for no HTTP server."""

from __future__ import annotations

import argparse
import ipaddress

__all__ = ["add_http_argument", "check_http_listen", "is_loopback_host", "parse_http_listen"]

_LOOPBACK_NAMES = ("localhost",)


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or an IP address, no port) is ``localhost`` or a loopback IP."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_http_listen(value: str) -> tuple[str, int]:
    """``(host, port)`` of ``HOST:PORT``; ``ValueError`` unless the host is loopback."""
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    if not is_loopback_host(host):
        raise ValueError(f"the HTTP server listens on loopback only (127.0.0.1), not {host}")
    return host, int(port_text)


def add_http_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--http-listen",
        default="",
        help="serve /health, /metrics, /raft/state (and the dashboard on metadata nodes) "
        "on this loopback HOST:PORT, e.g. 127.0.0.1:9100 (default: no HTTP server)",
    )


def check_http_listen(value: str) -> str:
    """``value`` if empty or valid; ``SystemExit`` with the reason otherwise."""
    if value:
        try:
            parse_http_listen(value)
        except ValueError as exc:
            raise SystemExit(f"--http-listen: {exc}") from None
    return value
