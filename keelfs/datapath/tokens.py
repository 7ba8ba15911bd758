"""Block access tokens: what lets a chunk server act (DESIGN §2.13), as HDFS's
``BlockTokenSecretManager`` and SeaweedFS's JWT-signed volume writes.

A master signs a token for each block it hands out: for reading (``GetFileInfo``), for writing
(``AllocateBlock``, ``RecoverPipeline``: the token travels client → CS1 → CS2 → CS3 in the
``WriteHeader``), and for every command it sends a chunk server (replicate, delete, verify).
A chunk server acts on a request only inside a valid token; anything else is
``PermissionDenied`` and nothing changes on disk.

A token names:

- ``key_id``: which of the cluster's block keys signed it;
- ``block_id`` and ``gen``: the one replica it opens (for a delete, the stamp the command names:
  the replica is deleted if its stamp is that one or older, 0 any stamp);
- ``modes``: a set of :class:`Access` bits (a replication token is ``REPLICATE | WRITE``: the
  source forwards it to its targets' ``WriteBlock``);
- ``expiry_ms``: wall-clock milliseconds (chunk servers allow ``DEFAULT_SKEW_MS`` of skew);
- ``shard_id`` and ``epoch``: the fence, for writes and commands. A fence (``Fence`` in
  proto/chunk.proto) is accepted only when a valid token names the same shard and epoch: a
  forged ``DeleteBlocks`` with epoch 2^64-1 cannot fence a shard out of a chunk server.

Encoding: a fixed big-endian struct (version, key id, block id, stamp, modes, expiry, epoch,
shard id) followed by the HMAC-SHA256 of those bytes under the key. Clients treat it as opaque
bytes.

Keys (``BlockKey``: id, secret, when it starts signing, when it stops being accepted) are
generated at random by the config group's leader and kept in its replicated state
(``keelfs.meta.shardmap``); masters read them from the config group, chunk servers from their
masters' heartbeat replies. :class:`KeyRing` holds the ones a process knows.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from keelfs.errors import PermissionDenied
from keelfs.meta.shardmap import BlockKey

__all__ = [
    "DEFAULT_LIFETIME_MS",
    "DEFAULT_SKEW_MS",
    "Access",
    "BlockKey",
    "BlockToken",
    "KeyRing",
    "TokenSigner",
    "TokenVerifier",
    "decode_token",
    "wall_ms",
]

DEFAULT_LIFETIME_MS = 3_600_000
"""How long a token is good for (an hour: a reader holding a file open longer fetches fresh
locations, and tokens, when every replica refuses it)."""
DEFAULT_SKEW_MS = 60_000
"""Clock difference between a master and a chunk server that a token's expiry allows."""

_VERSION = 1
_HEAD = struct.Struct(">BIQQBQQB")
_MAC_BYTES = 32
MAX_SHARD_ID_BYTES = 255


def wall_ms() -> int:
    return int(time.time() * 1000)


class Access(enum.IntFlag):
    READ = 1
    WRITE = 2
    REPLICATE = 4
    DELETE = 8


@dataclass(frozen=True, slots=True)
class BlockToken:
    key_id: int
    block_id: int
    gen: int
    modes: Access
    expiry_ms: int
    shard_id: str = ""
    epoch: int = 0

    def body(self) -> bytes:
        shard = self.shard_id.encode()
        if len(shard) > MAX_SHARD_ID_BYTES:
            raise ValueError("shard id too long for a token")
        head = _HEAD.pack(
            _VERSION,
            self.key_id,
            self.block_id,
            self.gen,
            int(self.modes),
            self.expiry_ms,
            self.epoch,
            len(shard),
        )
        return head + shard

    def sign(self, secret: bytes) -> bytes:
        body = self.body()
        return body + hmac.new(secret, body, hashlib.sha256).digest()

    def describe(self) -> str:
        fence = f" {self.shard_id}@{self.epoch}" if self.shard_id else ""
        return f"blk_{self.block_id}_{self.gen} {self.modes!r}{fence} key {self.key_id}"


def decode_token(raw: bytes) -> tuple[BlockToken, bytes, bytes]:
    """``(token, signed body, mac)``; ``PermissionDenied`` for bytes that are not a token."""
    if len(raw) < _HEAD.size + _MAC_BYTES:
        raise _denied("malformed block token")
    version, key_id, block_id, gen, modes, expiry, epoch, n = _HEAD.unpack_from(raw)
    if version != _VERSION or len(raw) != _HEAD.size + n + _MAC_BYTES:
        raise _denied("malformed block token")
    body = raw[: _HEAD.size + n]
    try:
        shard = body[_HEAD.size :].decode()
    except UnicodeDecodeError:
        raise _denied("malformed block token") from None
    token = BlockToken(key_id, block_id, gen, Access(modes), expiry, shard, epoch)
    return token, body, raw[_HEAD.size + n :]


def _denied(why: str, block_id: int | None = None) -> PermissionDenied:
    what = f"blk_{block_id}" if block_id is not None else "block"
    return PermissionDenied(what, "", message=f"permission denied on {what}: {why}")


class KeyRing:
    """The block keys a process knows, by id. Thread-safe (chunk servers verify in worker
    threads too); ``clock`` is wall-clock milliseconds (injected by tests)."""

    def __init__(self, clock: Callable[[], int] = wall_ms) -> None:
        self.clock = clock
        self._keys: dict[int, BlockKey] = {}
        self._lock = threading.Lock()

    def update(self, keys: Iterable[BlockKey]) -> bool:
        """Learn ``keys`` and forget those expired; whether anything new was learned."""
        now = self.clock()
        with self._lock:
            fresh = {k.key_id: k for k in keys if not k.expired(now)}
            changed = any(self._keys.get(i) != k for i, k in fresh.items())
            kept = {i: k for i, k in self._keys.items() if not k.expired(now)}
            self._keys = {**kept, **fresh}
        return changed

    def known(self) -> list[BlockKey]:
        with self._lock:
            return sorted(self._keys.values(), key=lambda k: k.key_id)

    def get(self, key_id: int) -> BlockKey | None:
        with self._lock:
            return self._keys.get(key_id)

    def signing_key(self) -> BlockKey | None:
        """The newest key already active (a new key waits ``active_ms`` so that every chunk
        server has heard of it before a token signed with it arrives)."""
        now = self.clock()
        active = [k for k in self.known() if k.active_ms <= now and not k.expired(now)]
        return max(active, key=lambda k: k.key_id, default=None)


class TokenSigner:
    """What a master signs tokens with."""

    def __init__(self, ring: KeyRing, lifetime_ms: int = DEFAULT_LIFETIME_MS) -> None:
        self.ring = ring
        self.lifetime_ms = lifetime_ms

    def ready(self) -> bool:
        return self.ring.signing_key() is not None

    def sign(
        self, block_id: int, gen: int, modes: Access, shard_id: str = "", epoch: int = 0
    ) -> bytes:
        """A token, or ``b""`` when no key is active yet (a chunk server refuses it: the
        caller retries once the keys arrived)."""
        key = self.ring.signing_key()
        if key is None:
            return b""
        expiry = self.ring.clock() + self.lifetime_ms
        token = BlockToken(key.key_id, block_id, gen, modes, expiry, shard_id, epoch)
        return token.sign(key.secret)


class TokenVerifier:
    """What a chunk server checks tokens with."""

    def __init__(self, ring: KeyRing, skew_ms: int = DEFAULT_SKEW_MS) -> None:
        self.ring = ring
        self.skew_ms = skew_ms

    def check(
        self,
        raw: bytes,
        block_id: int,
        gen: int,
        mode: Access,
        fence: tuple[str, int] | None = None,
    ) -> BlockToken:
        """The token ``raw`` if it allows ``mode`` on ``blk_<block_id>_<gen>`` (and names the
        fence ``(shard_id, epoch)`` when one is given), else ``PermissionDenied``."""
        if not raw:
            raise _denied("no block token", block_id)
        token, body, mac = decode_token(raw)
        key = self.ring.get(token.key_id)
        if key is None:
            raise _denied(f"block token signed with unknown key {token.key_id}", block_id)
        expected = hmac.new(key.secret, body, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, mac):
            raise _denied("block token signature does not match", block_id)
        if token.expiry_ms + self.skew_ms < self.ring.clock():
            raise _denied("block token expired", block_id)
        if token.block_id != block_id or token.gen != gen:
            raise _denied(f"block token is for {token.describe()}", block_id)
        if mode not in token.modes:
            raise _denied(f"block token does not allow {mode.name}", block_id)
        if fence is not None and (token.shard_id, token.epoch) != fence:
            raise _denied(
                f"fence {fence[0]}@{fence[1]} is not the token's "
                f"({token.shard_id or '-'}@{token.epoch})",
                block_id,
            )
        return token
