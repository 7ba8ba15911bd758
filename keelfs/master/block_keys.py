"""Block-token keys on a master: rotation by the config leader, the masters' copy, signing.

DESIGN §2.13: chunk servers act only on block access tokens signed by masters
(``keelfs.datapath.tokens``). The keys live in the config group's replicated state
(``keelfs.meta.shardmap``, ``AddBlockKey``):

- **rotation** (:meth:`BlockKeys.rotate_loop`, on a node that hosts the config group): while
  it leads the config group it proposes a new key (32 random bytes from ``secrets``) when the
  newest one has signed for ``rotate_every_ms`` (:func:`rotation_due`). A new key becomes
  active ``activation_ms`` later, so that every master and, through their heartbeat replies,
  every chunk server knows it before a token signed with it arrives; the very first key is
  active at once (nothing was signed before). A key is accepted until its last token can have
  expired (:func:`new_key`);
- **the masters' copy** (:meth:`BlockKeys.refresh_loop`, on a node that hosts shards): fetched
  from the config group every ``refresh_s`` (``FetchBlockKeys``, internal), held in a
  ``KeyRing``, and passed to the chunk servers in every heartbeat reply (:meth:`to_pb`);
- **signing** (:meth:`BlockKeys.sign`): with the newest active key; ``Unavailable`` before any
  key arrived (a writer retries; ``locate`` hands out no token instead and the reader asks
  again).

Every clock is wall-clock milliseconds and injectable (``clock``), so rotation is tested
without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from keelfs.datapath.tokens import (
    DEFAULT_LIFETIME_MS,
    DEFAULT_SKEW_MS,
    Access,
    BlockKey,
    KeyRing,
    TokenSigner,
    wall_ms,
)
from keelfs.errors import KeelError, Unavailable
from keelfs.meta.commands import AddBlockKey
from keelfs.rpc.pb import meta_pb2 as pb

if TYPE_CHECKING:
    from keelfs.master.node import MetaNode

__all__ = [
    "DEFAULT_ACTIVATION_MS",
    "DEFAULT_ROTATE_EVERY_MS",
    "BlockKeys",
    "new_key",
    "rotation_due",
]

log = logging.getLogger("keelfs.master.block_keys")

DEFAULT_ROTATE_EVERY_MS = 3_600_000
DEFAULT_ACTIVATION_MS = 30_000
"""A new key signs only this long after it was proposed: masters fetch keys every second and
chunk servers get them with the next heartbeat reply."""
SECRET_BYTES = 32
ROTATE_CHECK_S = 1.0


def rotation_due(
    keys: Sequence[BlockKey],
    now_ms: int,
    every_ms: int = DEFAULT_ROTATE_EVERY_MS,
    activation_ms: int = DEFAULT_ACTIVATION_MS,
) -> bool:
    """Whether the config leader should propose a new key now: there is none alive, or the
    newest one will have signed for ``every_ms`` by the time a new one would activate."""
    alive = [k for k in keys if not k.expired(now_ms)]
    if not alive:
        return True
    newest = max(alive, key=lambda k: k.key_id)
    return newest.active_ms + every_ms <= now_ms + activation_ms


def new_key(
    keys: Sequence[BlockKey],
    now_ms: int,
    *,
    every_ms: int = DEFAULT_ROTATE_EVERY_MS,
    activation_ms: int = DEFAULT_ACTIVATION_MS,
    lifetime_ms: int = DEFAULT_LIFETIME_MS,
    skew_ms: int = DEFAULT_SKEW_MS,
) -> AddBlockKey:
    """The command adding a fresh random key: active at once if no key is alive, else after
    ``activation_ms``; accepted until the next key has taken over (``every_ms`` and its own
    activation later) and the last token signed with this one has expired (plus skew)."""
    alive = any(not k.expired(now_ms) for k in keys)
    active = now_ms + activation_ms if alive else now_ms
    expires = active + every_ms + activation_ms + lifetime_ms + skew_ms
    return AddBlockKey(secrets.token_bytes(SECRET_BYTES).hex(), active, expires)


class BlockKeys:
    """One master's keys (see the module docstring)."""

    def __init__(
        self,
        node: MetaNode,
        *,
        clock: Callable[[], int] = wall_ms,
        rotate_every_ms: int = DEFAULT_ROTATE_EVERY_MS,
        activation_ms: int = DEFAULT_ACTIVATION_MS,
        lifetime_ms: int = DEFAULT_LIFETIME_MS,
        refresh_s: float = 1.0,
    ) -> None:
        self.node = node
        self.ring = KeyRing(clock)
        self.signer = TokenSigner(self.ring, lifetime_ms)
        self.rotate_every_ms = rotate_every_ms
        self.activation_ms = activation_ms
        self.lifetime_ms = lifetime_ms
        self.refresh_s = refresh_s

    # -- signing ----------------------------------------------------------------------------
    def sign(
        self, block_id: int, gen: int, modes: Access, shard_id: str = "", epoch: int = 0
    ) -> bytes:
        """A token; ``Unavailable`` (retry) while this master has no active key yet."""
        token = self.signer.sign(block_id, gen, modes, shard_id, epoch)
        if not token:
            raise Unavailable(
                "block keys",
                message="this master has no block-token key from the config group yet; retry",
            )
        return token

    def try_sign(self, block_id: int, gen: int, modes: Access) -> bytes:
        """A token, or ``b""`` with no key yet (a reader refused for it asks again)."""
        return self.signer.sign(block_id, gen, modes)

    def to_pb(self) -> list[pb.BlockKey]:
        """The keys for a chunk server's heartbeat reply."""
        return [
            pb.BlockKey(
                key_id=k.key_id, secret=k.secret, active_ms=k.active_ms, expires_ms=k.expires_ms
            )
            for k in self.ring.known()
        ]

    # -- the masters' copy ------------------------------------------------------------------
    async def refresh(self) -> None:
        self.ring.update(await self.node.internal.fetch_block_keys(deadline=3.0))

    async def refresh_loop(self) -> None:
        while True:
            with contextlib.suppress(KeelError, TimeoutError):
                await self.refresh()
            await asyncio.sleep(self.refresh_s if self.signer.ready() else 0.1)

    # -- rotation (config group) --------------------------------------------------------------
    async def rotate_once(self) -> bool:
        """Propose a new key if this node leads the config group and one is due."""
        member = self.node.config_member
        if member is None or not member.group.is_leader:
            return False
        now = self.ring.clock()
        keys = member.sm.block_keys()
        if not rotation_due(keys, now, self.rotate_every_ms, self.activation_ms):
            return False
        command = new_key(
            keys,
            now,
            every_ms=self.rotate_every_ms,
            activation_ms=self.activation_ms,
            lifetime_ms=self.lifetime_ms,
        )
        result, _, _ = await self.node.propose(member, command, None, 5.0)
        log.info("block key %s added", result.unwrap().get("key_id"))
        return True

    async def rotate_loop(self) -> None:
        while True:
            try:
                await self.rotate_once()
            except KeelError as exc:
                log.info("block key rotation skipped: %s", exc)
            await asyncio.sleep(ROTATE_CHECK_S)
