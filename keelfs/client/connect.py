"""``keelfs.connect``: a client from any metadata node's address, and the one rule that says
which address that is when none is given (every CLI command and ``keelfs.connect`` use it).

Where the cluster is, first match wins:

1. the address given (``--address`` on the command line, ``address=`` here);
2. ``$KEELFS_ADDRESS``;
3. the cluster the last ``keelfs local-cluster up`` started, while its config servers run: ``up``
   records their addresses in ``$XDG_STATE_HOME/keelfs/local-cluster.json`` (default
   ``~/.local/state/keelfs/``) and ``down`` removes the record;
4. ``127.0.0.1:7001``, where ``keelfs server`` listens by default.

An address is any config server or master (the client finds the rest through the node
registry), or several separated by commas (the first that answers is used).

TLS (a cluster started with certificates), first match wins: the settings given
(``tls=``; the CLI's ``--tls-dir DIR --user NAME`` or ``--tls-cert/--tls-key/--tls-ca``), then
``$KEELFS_TLS_DIR`` + ``$KEELFS_USER`` or ``$KEELFS_TLS_CERT/KEY/CA`` (:func:`client_tls`), then
the running local cluster's record when its address is the one used (``local-cluster up
--tls`` records its certificate directory and admin user), else none: plain gRPC.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc

from keelfs.client.sync import Client
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.rpc.pb import meta_pb2_grpc as pb_grpc
from keelfs.tls.certs import PEER_CA, authority_files
from keelfs.tls.credentials import TlsSettings, open_channel

__all__ = [
    "ADDRESS_ENV",
    "client_tls",
    "DEFAULT_ADDRESS",
    "Seeds",
    "connect",
    "forget_local_cluster",
    "local_cluster_record",
    "parse_addresses",
    "record_local_cluster",
    "resolve_seeds",
]

DEFAULT_ADDRESS = "127.0.0.1:7001"
"""Where ``keelfs server`` listens by default."""

ADDRESS_ENV = "KEELFS_ADDRESS"


@dataclass(frozen=True)
class Seeds:
    """The addresses to try, in order, and where they came from (for error messages)."""

    addresses: list[str]
    origin: str
    tls: TlsSettings | None = None
    """The TLS settings to dial them with (None: plain gRPC)."""

    def __str__(self) -> str:
        return ",".join(self.addresses)


def connect(
    address: str | None = None, *, tls: TlsSettings | None = None, **options: Any
) -> Client:
    """A client of the cluster at ``address``, found as the module docstring says, with
    ``tls`` (or what the module docstring says); ``options`` go to
    :class:`keelfs.client.Client`."""
    found = resolve_seeds(address, tls)
    seeds = found.addresses
    return Client(config_servers_of(seeds, found.tls) or seeds, tls=found.tls, **options)


TLS_ENV = {
    "tls_dir": "KEELFS_TLS_DIR",
    "user": "KEELFS_USER",
    "cert": "KEELFS_TLS_CERT",
    "key": "KEELFS_TLS_KEY",
    "ca": "KEELFS_TLS_CA",
}
"""The environment variables :func:`client_tls` reads for a value not given."""


def client_tls(
    *,
    tls_dir: str | Path | None = None,
    user: str | None = None,
    cert: str | Path | None = None,
    key: str | Path | None = None,
    ca: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> TlsSettings | None:
    """A user's TLS settings from a ``keelfs certs`` directory and a user name (the
    directory's ``user-NAME.crt/.key`` and ``peer-ca.crt``), or from explicit files (``cert``,
    ``key``; ``ca``: the peer CA, default the directory's); each value not given is read from
    :data:`TLS_ENV`. None when nothing names any; ``ValueError`` when what is named is
    incomplete."""
    env = os.environ if environ is None else environ
    given = {"tls_dir": tls_dir, "user": user, "cert": cert, "key": key, "ca": ca}
    v = {k: (val if val else env.get(TLS_ENV[k]) or None) for k, val in given.items()}
    if v["cert"] or v["key"]:
        if not (v["cert"] and v["key"]):
            raise ValueError("TLS: give both --tls-cert and --tls-key")
        ca_path = Path(v["ca"]) if v["ca"] else _directory_ca(v["tls_dir"])
        return TlsSettings(peer_ca=ca_path, cert=Path(v["cert"]), key=Path(v["key"]))
    if v["tls_dir"]:
        if not v["user"]:
            raise ValueError("TLS: --tls-dir needs --user NAME (whose certificate to present)")
        settings = TlsSettings.for_user(Path(v["tls_dir"]), str(v["user"]))
        if v["ca"]:
            settings = replace(settings, peer_ca=Path(v["ca"]))
        return settings
    return None


def _directory_ca(tls_dir: str | Path | None) -> Path:
    if not tls_dir:
        raise ValueError("TLS: --tls-cert needs --tls-ca (the peer CA) or --tls-dir")
    return authority_files(Path(tls_dir), PEER_CA).cert


def parse_addresses(text: str) -> list[str]:
    """``HOST:PORT[,HOST:PORT...]`` as a list; ``ValueError`` when it names none."""
    addresses = [a.strip() for a in text.split(",") if a.strip()]
    if not addresses:
        raise ValueError(f"no address in {text!r} (give HOST:PORT, or several with commas)")
    return addresses


def resolve_seeds(address: str | None = None, tls: TlsSettings | None = None) -> Seeds:
    """Where the cluster is: ``address``, else ``$KEELFS_ADDRESS``, else the running local
    cluster's config servers, else :data:`DEFAULT_ADDRESS`; and the TLS settings to dial it
    with (the module docstring). ``ValueError`` for an unusable address or TLS setting."""
    tls = tls or client_tls()
    if address:
        return Seeds(parse_addresses(address), "--address", tls)
    env = os.environ.get(ADDRESS_ENV)
    if env:
        return Seeds(parse_addresses(env), f"${ADDRESS_ENV}", tls)
    recorded = _running_local_cluster()
    if recorded is not None:
        addresses, directory, recorded_tls = recorded
        return Seeds(addresses, f"the local cluster running in {directory}", tls or recorded_tls)
    return Seeds([DEFAULT_ADDRESS], "the default address", tls)


def local_cluster_record() -> Path:
    """The file where ``keelfs local-cluster up`` says where the cluster it started runs."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "keelfs" / "local-cluster.json"


def record_local_cluster(
    directory: Path,
    config_servers: Sequence[str],
    pids: Sequence[int],
    tls_dir: Path | None = None,
    tls_user: str = "",
) -> None:
    """Record the local cluster in ``directory`` (its config servers' client addresses and
    pids, by which a reader tells that it still runs; with TLS, the ``keelfs certs``
    directory and the user whose certificate clients present) as the one to connect to."""
    path = local_cluster_record()
    path.parent.mkdir(parents=True, exist_ok=True)
    body: dict[str, Any] = {
        "directory": str(directory),
        "config_servers": list(config_servers),
        "pids": list(pids),
    }
    if tls_dir is not None:
        body["tls"] = {"dir": str(tls_dir), "user": tls_user}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def forget_local_cluster(directory: Path) -> None:
    """Remove the record if it names the cluster in ``directory`` (another may have replaced
    it since)."""
    path = local_cluster_record()
    body = _read_record(path)
    if body is not None and body.get("directory") == str(directory):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _running_local_cluster() -> tuple[list[str], str, TlsSettings | None] | None:
    """The recorded local cluster's config servers, directory and client TLS settings, if
    one of them runs."""
    body = _read_record(local_cluster_record())
    if body is None:
        return None
    addresses = [str(a) for a in body.get("config_servers", [])]
    pids = [p for p in body.get("pids", []) if isinstance(p, int) and p > 0]
    if not addresses or not any(_alive(p) for p in pids):
        return None
    tls = body.get("tls")
    settings = None
    if isinstance(tls, dict) and tls.get("dir") and tls.get("user"):
        settings = TlsSettings.for_user(Path(str(tls["dir"])), str(tls["user"]))
    return addresses, str(body.get("directory", "?")), settings


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # none, or not ours to read: as if nothing were recorded
    return body if isinstance(body, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user
    return True


def config_servers_of(seeds: list[str], tls: TlsSettings | None = None) -> list[str] | None:
    """The config servers' client addresses, asked of the first of ``seeds`` that answers:
    any metadata node knows them (``Node.Registry``), so a master's address works too. None
    if no seed answers; a node that knows none gives an empty list."""
    for seed in seeds:
        try:
            with open_channel(seed, tls) as channel:
                stub: Any = pb_grpc.NodeStub(channel)
                reply = stub.Registry(pb.RegistryRequest(), timeout=3.0)
        except grpc.RpcError:
            continue
        return list(reply.config_servers)
    return None
