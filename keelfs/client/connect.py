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
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from keelfs.client.sync import Client
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.rpc.pb import meta_pb2_grpc as pb_grpc

__all__ = [
    "ADDRESS_ENV",
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

    def __str__(self) -> str:
        return ",".join(self.addresses)


def connect(address: str | None = None, **options: Any) -> Client:
    """A client of the cluster at ``address``, found as the module docstring says.
    ``options`` go to :class:`keelfs.client.Client`."""
    seeds = resolve_seeds(address).addresses
    return Client(config_servers_of(seeds) or seeds, **options)


def parse_addresses(text: str) -> list[str]:
    """``HOST:PORT[,HOST:PORT...]`` as a list; ``ValueError`` when it names none."""
    addresses = [a.strip() for a in text.split(",") if a.strip()]
    if not addresses:
        raise ValueError(f"no address in {text!r} (give HOST:PORT, or several with commas)")
    return addresses


def resolve_seeds(address: str | None = None) -> Seeds:
    """Where the cluster is: ``address``, else ``$KEELFS_ADDRESS``, else the running local
    cluster's config servers, else :data:`DEFAULT_ADDRESS` (the module docstring)."""
    if address:
        return Seeds(parse_addresses(address), "--address")
    env = os.environ.get(ADDRESS_ENV)
    if env:
        return Seeds(parse_addresses(env), f"${ADDRESS_ENV}")
    recorded = _running_local_cluster()
    if recorded is not None:
        addresses, directory = recorded
        return Seeds(addresses, f"the local cluster running in {directory}")
    return Seeds([DEFAULT_ADDRESS], "the default address")


def local_cluster_record() -> Path:
    """The file where ``keelfs local-cluster up`` says where the cluster it started runs."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "keelfs" / "local-cluster.json"


def record_local_cluster(
    directory: Path, config_servers: Sequence[str], pids: Sequence[int]
) -> None:
    """Record the local cluster in ``directory`` (its config servers' client addresses and
    pids, by which a reader tells that it still runs) as the one to connect to."""
    path = local_cluster_record()
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"directory": str(directory), "config_servers": list(config_servers), "pids": list(pids)}
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


def _running_local_cluster() -> tuple[list[str], str] | None:
    """The recorded local cluster's config servers and directory, if one of them runs."""
    body = _read_record(local_cluster_record())
    if body is None:
        return None
    addresses = [str(a) for a in body.get("config_servers", [])]
    pids = [p for p in body.get("pids", []) if isinstance(p, int) and p > 0]
    if not addresses or not any(_alive(p) for p in pids):
        return None
    return addresses, str(body.get("directory", "?"))


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


def config_servers_of(seeds: list[str]) -> list[str] | None:
    """The config servers' client addresses, asked of the first of ``seeds`` that answers:
    any metadata node knows them (``Node.Registry``), so a master's address works too. None
    if no seed answers; a node that knows none gives an empty list."""
    for seed in seeds:
        try:
            with grpc.insecure_channel(seed) as channel:
                stub: Any = pb_grpc.NodeStub(channel)
                reply = stub.Registry(pb.RegistryRequest(), timeout=3.0)
        except grpc.RpcError:
            continue
        return list(reply.config_servers)
    return None
