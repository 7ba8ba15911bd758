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
  credentials, and it tells nothing a port scan would not.

Either way, a request must name this server by a loopback name or address, the address it
listens on, or a name or address of the node's certificate: a DNS-rebinding page reaches
the server under the attacker's own host name, which the browser sends in ``Host`` (the
check is in ``keelfs.web.app``).
"""

from __future__ import annotations

import hmac
import ipaddress
import ssl
from dataclasses import dataclass, field

from cryptography import x509

from keelfs.tls.certs import load_certificate
from keelfs.tls.credentials import TlsSettings

__all__ = ["OPEN_PATHS", "HttpSettings", "is_loopback_host", "parse_http_listen"]

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


@dataclass(frozen=True)
class HttpSettings:
    """The HTTP side of a process: ``listen`` (empty: none), ``tls`` (None: plain HTTP on
    loopback) and the bearer ``token`` that may stand in for a certificate (None:
    certificates only)."""

    listen: str = ""
    tls: TlsSettings | None = None
    token: str | None = field(default=None, repr=False)

    def ssl_context(self) -> ssl.SSLContext | None:
        """HTTPS with the node's certificate; a caller's certificate asked for and verified
        against both CAs when given."""
        if self.tls is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.tls.cert, self.tls.key)
        ctx.load_verify_locations(cafile=str(self.tls.peer_ca))
        if self.tls.client_ca is not None:
            ctx.load_verify_locations(cafile=str(self.tls.client_ca))
        ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx

    def server_names(self) -> frozenset[str]:
        """Names besides loopback ones that a request may call this server by (lower case):
        the host it listens on and, with TLS, the names and addresses of its certificate."""
        names = {self.listen.rpartition(":")[0].strip("[]").lower()}
        if self.tls is not None:
            try:
                san = (
                    load_certificate(self.tls.cert)
                    .extensions.get_extension_for_class(x509.SubjectAlternativeName)
                    .value
                )
            except x509.ExtensionNotFound:
                pass
            else:
                names.update(n.lower() for n in san.get_values_for_type(x509.DNSName))
                names.update(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
        return frozenset(names - {"", "0.0.0.0", "::"})

    def token_matches(self, authorization: str) -> bool:
        """Whether an ``Authorization`` header carries this bearer token (constant time)."""
        if not self.token:
            return False
        scheme, _, credentials = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode(), self.token.encode()
        )
