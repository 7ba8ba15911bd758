"""TLS or not, for a process about to listen: its ``TlsSettings`` from the resolved settings,
and the rule that keeps a newcomer safe.

The rule: a process listening on an address that is not loopback serves the whole cluster's
RPCs to anyone who can reach it, so without TLS it refuses to start (``ConfigError``: the
role commands exit with status 2) unless told ``--insecure``, which is then said loudly on
stderr. On loopback without TLS nothing changes: ``keelfs server`` and ``keelfs local-cluster
up`` stay one command.

Where the TLS material comes from (settings of every node, ``keelfs.server.settings``):
``tls_dir``, a ``keelfs certs`` directory holding both CA certificates and this node's own
pair (``master-3.crt``, ``chunkserver-cs-2.crt``: found by role and id), or the four files
named one by one (``tls_cert``, ``tls_key``, ``tls_peer_ca``, ``tls_client_ca``); the files
override the directory's.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from keelfs.server.settings import ConfigError, checked_http_listen, split_address
from keelfs.tls.certs import PEER_SERVER_NAME
from keelfs.tls.credentials import TlsSettings
from keelfs.web.access import HttpSettings

__all__ = ["INSECURE_WARNING", "check_listen", "http_settings", "is_loopback", "node_tls"]

INSECURE_WARNING = (
    "WARNING: --insecure: listening on {addresses} WITHOUT TLS. Anyone who can reach these "
    "ports can read and change every file and call every internal RPC (Raft, transactions, "
    "chunk commands). Use --tls-dir (docs/security.md) on any network you do not fully trust."
)


def is_loopback(address: str) -> bool:
    """True if ``HOST:PORT`` listens on the loopback interface only (``localhost``, 127/8,
    ``::1``); a wildcard (``0.0.0.0``, ``[::]``) or a name other than localhost is not."""
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def node_tls(values: Mapping[str, Any], role: str, node_id: str | int) -> TlsSettings | None:
    """The settings of node ``role``/``node_id`` from resolved values (``tls_dir`` and the
    ``tls_*`` files; any that a table lacks counts as empty); None when none is given.
    ``ConfigError`` for an incomplete set or files that do not exist."""
    tls_dir = str(values.get("tls_dir") or "")
    files = {k: str(values.get(f"tls_{k}") or "") for k in ("cert", "key", "peer_ca", "client_ca")}
    if not tls_dir and not any(files.values()):
        return None
    if tls_dir:
        if node_id in ("", None):
            raise ConfigError(f"tls_dir: a {role}'s certificate is found by its id: give one")
        settings = TlsSettings.for_node(Path(tls_dir), role, node_id)
    else:
        missing = [f"tls_{k}" for k in ("cert", "key", "peer_ca") if not files[k]]
        if missing:
            raise ConfigError(f"TLS needs {', '.join(missing)} (or tls_dir)")
        settings = TlsSettings(
            peer_ca=Path(files["peer_ca"]), cert=Path(files["cert"]), key=Path(files["key"])
        )
    overrides: dict[str, Any] = {
        field: Path(files[key])
        for key, field in (
            ("cert", "cert"),
            ("key", "key"),
            ("peer_ca", "peer_ca"),
            ("client_ca", "client_ca"),
        )
        if files[key]
    }
    # Nodes verify each other by the peer CA and the name every node certificate carries: a
    # node is dialled at addresses its certificate may not list (its own wildcard listen
    # address, an address registered behind NAT). Who the caller is, is still checked by the
    # server from the caller's certificate (keelfs.rpc.access).
    settings = replace(settings, server_name=PEER_SERVER_NAME, **overrides)
    for path in (settings.peer_ca, settings.cert, settings.key, settings.client_ca):
        if path is not None and not path.is_file():
            raise ConfigError(f"TLS: {path} does not exist (keelfs certs issue makes it)")
    return settings


def check_listen(addresses: Iterable[str], tls: TlsSettings | None, insecure: bool) -> None:
    """Refuse (``ConfigError``) to listen on a non-loopback address without TLS unless
    ``insecure``; with ``insecure``, write the warning on stderr."""
    if tls is not None:
        return
    exposed = []
    for address in addresses:
        if address:
            split_address(address, "listen")
            if not is_loopback(address):
                exposed.append(address)
    if not exposed:
        return
    if insecure:
        print(INSECURE_WARNING.format(addresses=", ".join(exposed)), file=sys.stderr, flush=True)
        return
    raise ConfigError(
        f"refusing to listen on {', '.join(exposed)} without TLS: anyone who can reach it could "
        "call every RPC. Give --tls-dir (see `keelfs certs` and docs/security.md), or "
        "--insecure to run without TLS anyway"
    )


def http_settings(values: Mapping[str, Any], tls: TlsSettings | None) -> HttpSettings:
    """The HTTP side from resolved values: ``http_listen`` (checked: loopback only without
    TLS), the node's TLS and the bearer token of ``http_token_file``. ``ConfigError`` for a
    token without TLS (it would cross the network in the clear) and for an unreadable or
    empty token file."""
    listen = checked_http_listen(values["http_listen"], tls=tls is not None)
    token_file = str(values.get("http_token_file") or "")
    if not token_file:
        return HttpSettings(listen, tls)
    if tls is None:
        raise ConfigError("http_token_file: a token is only accepted over HTTPS: give --tls-dir")
    try:
        token = Path(token_file).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"http_token_file: cannot read {token_file}: {exc.strerror}") from None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise ConfigError(
            f"http_token_file: {token_file} must hold one token of 16 characters or more"
        )
    return HttpSettings(listen, tls, token)
