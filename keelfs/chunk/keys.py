"""The block-token keys a chunk server knows, kept in ``block-keys.json`` (0600).

A chunk server learns the keys from its masters' heartbeat replies (``keelfs.chunk.reporting``)
and never from clients. It keeps them on disk so that after a restart it can check tokens at
once, not only after its first heartbeat; an operator may also provision a key there (with
``expires_ms`` 0, as SeaweedFS's ``security.toml`` signing key) for a chunk server used without
masters (tests, benchmarks). Without any key every request that needs a token is refused.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Iterable
from pathlib import Path

from keelfs.chunk.layout import write_atomically
from keelfs.datapath.tokens import BlockKey, KeyRing
from keelfs.storage.private import private_dir

__all__ = ["learn_keys", "load_keys", "provision_key", "save_keys", "wait_for_keys"]

log = logging.getLogger("keelfs.chunk.keys")


def load_keys(path: Path) -> list[BlockKey]:
    if not path.exists():
        return []
    raw = json.loads(path.read_text())
    return [BlockKey.from_dict(d) for d in raw["keys"]]


def save_keys(path: Path, keys: Iterable[BlockKey], tmp_dir: Path | None = None) -> None:
    body = json.dumps({"keys": [k.to_dict() for k in keys]}, sort_keys=True).encode()
    write_atomically(path, body, tmp_dir)


def learn_keys(ring: KeyRing, keys: Iterable[BlockKey], path: Path, tmp_dir: Path) -> None:
    """Add ``keys`` to ``ring`` and, when that changed anything, persist the ring (blocking)."""
    if ring.update(keys):
        save_keys(path, ring.known(), tmp_dir)
        log.info("block keys now %s", [k.key_id for k in ring.known()])


def provision_key(data_dirs: Iterable[Path]) -> KeyRing:
    """Provision one fresh random key that never expires into each chunk server data directory
    of ``data_dirs`` (before the servers start), for chunk servers run without masters; the
    ring holding it, for a ``TokenSigner`` (``AsyncChunkClient(signer=...)``)."""
    key = BlockKey(1, secrets.token_bytes(32))
    for data_dir in data_dirs:
        save_keys(private_dir(data_dir) / "block-keys.json", [key])
    ring = KeyRing()
    ring.update([key])
    return ring


def wait_for_keys(data_dir: Path, timeout_s: float = 30.0) -> KeyRing:
    """The keys the chunk server of ``data_dir`` holds, once it holds any (it learns them
    from its masters' first heartbeat replies): for a tool running beside it that must sign
    tokens of its own, as tests planting a block do. ``TimeoutError`` after ``timeout_s``."""
    path = data_dir / "block-keys.json"
    deadline = time.monotonic() + timeout_s
    while not (keys := load_keys(path)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no block keys in {data_dir} within {timeout_s} s")
        time.sleep(0.05)
    ring = KeyRing()
    ring.update(keys)
    return ring
