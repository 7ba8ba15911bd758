"""The block key of the chunk-server tests: servers run without masters hold it (provisioned in
their data directories), and the tests' clients sign their own tokens with it."""

from __future__ import annotations

from pathlib import Path

from keelfs.chunk.keys import save_keys
from keelfs.datapath.tokens import Access, BlockKey, KeyRing, TokenSigner
from keelfs.server.chunkservers import LocalChunkServers

__all__ = ["BLOCK_KEY", "Access", "provision", "provisioned", "signer"]

BLOCK_KEY = BlockKey(1, bytes(range(32)))
BLOCK_KEYS = KeyRing()
BLOCK_KEYS.update([BLOCK_KEY])


def signer() -> TokenSigner:
    return TokenSigner(BLOCK_KEYS)


def provision(data: Path) -> Path:
    """``data`` (a chunk server's data directory, made if missing) holding the key."""
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    save_keys(data / "block-keys.json", [BLOCK_KEY])
    return data


def provisioned(servers: LocalChunkServers) -> LocalChunkServers:
    """``servers``, each data directory holding the key (call before start)."""
    for i in range(len(servers.addresses)):
        provision(servers.data_dir(i))
    return servers
