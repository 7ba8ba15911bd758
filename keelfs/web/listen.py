"""Where the HTTP side of a process listens, and who may reach it.

- **Without TLS** it listens on loopback only and asks nobody who they are: whoever runs
  code on this host may read the metrics and the dashboard (``--http-listen 127.0.0.1:PORT``;
  port 0: any free port).
- **With TLS** (the process's ``TlsSettings``) it serves HTTPS with the node's certificate
  and may listen on any address. A request from another host must then prove who sends it:
  a certificate of the peer CA or the client CA (asked for in the handshake, not required
  by it, so that a token can do instead), or ``Authorization: Bearer TOKEN`` with the token
  of ``http_token_file`` (what Prometheus sends with ``authorization.credentials_file``).
  ``/health`` stays open to all: the probe of a load balancer or an orchestrator carries no
  credentials, and it tells nothing a port scan would not. (``keelfs.web.access``: the
  settings; this module stays light, for the ``keelfs`` command's start-up.)

Either way, a request must name this server by a loopback name or address, the address it
listens on, or a name or address of the node's certificate: a DNS-rebinding page reaches
the server under the attacker's own host name, which the browser sends in ``Host`` (the
check is in ``keelfs.web.app``).
"""

from __future__ import annotations

import ipaddress

__all__ = ["OPEN_PATHS", "is_loopback_host", "parse_http_listen"]

_LOOPBACK_NAMES = ("localhost",)
OPEN_PATHS = frozenset({"/health"})
"""Paths a request from another host reaches without credentials."""


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or an IP address, no port) is ``localhost`` or a loopback IP."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_http_listen(value: str, *, tls: bool = False) -> tuple[str, int]:
    """``(host, port)`` of ``HOST:PORT``; ``ValueError`` for a malformed value, or a host
    that is not loopback when there is no TLS."""
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    if not tls and not is_loopback_host(host):
        raise ValueError(
            f"without TLS the HTTP server listens on loopback only (127.0.0.1), not {host}: "
            "give the node --tls-dir to serve HTTPS, with authentication, on other addresses"
        )
    return host, int(port_text)
