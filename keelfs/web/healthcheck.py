"""``python -m keelfs.web.healthcheck``: the probe of a container's ``HEALTHCHECK`` (or any
supervisor's): exit status 0 if the process on this host answers ``/health`` with 200, else 1
with the reason on stderr.

It asks the node's own HTTP side (``--http-listen``) over loopback, where no credentials are
needed: the address is the argument, else ``$KEELFS_HTTP_LISTEN`` (the setting's variable, as
the container's environment sets it); a wildcard host (``0.0.0.0``) is asked at 127.0.0.1.
With TLS (``$KEELFS_TLS_DIR`` or ``$KEELFS_TLS_CERT`` set, or ``--https``) it speaks HTTPS
without checking the certificate: it dials its own host, and ``/health`` is open to all
(``keelfs.web.listen``). ``--tcp HOST:PORT`` only checks that something accepts connections
there (the S3 gateway, which has no ``/health``).
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

__all__ = ["health_url", "main"]

TIMEOUT_S = 4.0


def _loopback(address: str) -> str:
    host, _, port = address.rpartition(":")
    if host.strip("[]") in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"{host}:{port}"


def health_url(address: str, environ: Mapping[str, str], https: bool = False) -> str:
    """The ``/health`` URL of the HTTP side listening on ``address`` (see the module doc)."""
    tls = https or bool(environ.get("KEELFS_TLS_DIR") or environ.get("KEELFS_TLS_CERT"))
    return f"{'https' if tls else 'http'}://{_loopback(address)}/health"


def _probe_http(url: str) -> str | None:
    """None if ``url`` answers 200, else why not."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # our own host, an open path: nothing to verify
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S, context=context) as reply:
            return None if reply.status == 200 else f"{url}: HTTP {reply.status}"
    except urllib.error.HTTPError as exc:
        return f"{url}: HTTP {exc.code} {exc.read(200).decode(errors='replace')}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {getattr(exc, 'reason', exc)}"


def _probe_tcp(address: str) -> str | None:
    host, _, port = _loopback(address).rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=TIMEOUT_S):
            return None
    except (OSError, ValueError) as exc:
        return f"{address}: {exc}"


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="python -m keelfs.web.healthcheck")
    parser.add_argument("address", nargs="?", help="HOST:PORT (default: $KEELFS_HTTP_LISTEN)")
    parser.add_argument("--https", action="store_true", help="HTTPS even without TLS settings")
    parser.add_argument("--tcp", metavar="HOST:PORT", help="only check that it accepts TCP")
    args = parser.parse_args(argv)
    if args.tcp:
        failure = _probe_tcp(args.tcp)
    else:
        address = args.address or env.get("KEELFS_HTTP_LISTEN", "")
        if not address or address.lower() == "off":
            print("healthcheck: no address (give one, or set KEELFS_HTTP_LISTEN)", file=sys.stderr)
            return 1
        failure = _probe_http(health_url(address, env, args.https))
    if failure is not None:
        print(f"unhealthy: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
