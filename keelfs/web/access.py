"""The HTTP side's settings: where it listens, its TLS and the bearer token that may stand in
for a certificate (the rules are ``keelfs.web.listen``'s docstring)."""

from __future__ import annotations

import hmac
import ssl
from dataclasses import dataclass, field

from cryptography import x509

from keelfs.tls.certs import load_certificate
from keelfs.tls.credentials import TlsSettings

__all__ = ["HttpSettings"]


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
