"""The WebHDFS gateway's HTTPS listener (``docs/webhdfs.md``, "HTTPS").

``--https-cert``/``--https-key``: the gateway serves HTTPS with that certificate (a
``keelfs certs issue`` node certificate, or any other), still on loopback only: a caller
names itself with ``user.name``, which nothing checks.

``--https-client-ca``: every caller must present a certificate of that CA (mutual TLS; the
handshake fails otherwise), and **its user is the certificate's** (``keelfs://user/NAME``, what
``keelfs certs issue-client`` writes): a ``user.name`` naming anyone else is refused, and
``doas`` is allowed only to a certificate user listed with ``--proxy-user``. Only then may the
gateway listen off the loopback (issue [9]'s rule: off-host only with TLS and authentication).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from keelfs.tls.certs import load_certificate, uris_of
from keelfs.tls.identity import Client, identity_from_uris

__all__ = ["HttpsSettings", "certificate_user"]


@dataclass(frozen=True)
class HttpsSettings:
    """The listener's certificate and key; ``client_ca``: the CA whose certificates callers
    must present (None: no client certificates, loopback only)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        if self.client_ca is not None:
            ctx.load_verify_locations(cafile=str(self.client_ca))
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def host_names(self) -> frozenset[str]:
        """The DNS names and IP addresses of the certificate (lower case): what a request's
        ``Host`` may name besides loopback and the listen address."""
        try:
            san = (
                load_certificate(self.cert)
                .extensions.get_extension_for_class(x509.SubjectAlternativeName)
                .value
            )
        except x509.ExtensionNotFound:
            return frozenset()
        names = {n.lower() for n in san.get_values_for_type(x509.DNSName)}
        names.update(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
        return frozenset(names)


def certificate_user(ssl_object: ssl.SSLObject | None) -> str | None:
    """The keelfs user a caller's verified certificate names (None: no certificate, or one
    naming no single user)."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    identity = identity_from_uris(
        uris_of(x509.load_der_x509_certificate(der)), peer_ca=False, client_ca=True
    )
    return identity.user if isinstance(identity, Client) else None
