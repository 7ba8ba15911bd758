"""Block-token key rotation on a master (``keelfs.master.block_keys``) with an injected clock:
the config leader proposes keys into the real ``ConfigStateMachine``, masters fetch them,
sign with the newest active one, and a chunk server's verifier accepts a key's tokens until
the key expires."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "meta"))

from meta_helpers import T0, Driver  # noqa: E402

from keelfs.datapath.tokens import Access, BlockKey, KeyRing, TokenVerifier  # noqa: E402
from keelfs.errors import PermissionDenied, Unavailable  # noqa: E402
from keelfs.master.block_keys import BlockKeys  # noqa: E402
from keelfs.meta.shardmap import ConfigStateMachine  # noqa: E402

EVERY, ACTIVATION, LIFETIME = 3_600_000, 30_000, 600_000


class Clock:
    now = T0

    def __call__(self) -> int:
        return self.now


class FakeNode:
    """The parts of ``MetaNode`` ``BlockKeys`` uses: the config member, proposals, and the
    internal client's ``fetch_block_keys``."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.config = Driver(ConfigStateMachine())
        group = SimpleNamespace(is_leader=True)
        self.config_member = SimpleNamespace(group=group, sm=self.config.sm)
        self.internal = self

    async def propose(self, member: Any, command: Any, header: Any, timeout: float) -> Any:
        return self.config.apply(command, now=self.clock.now), 0, 0

    async def fetch_block_keys(self, *, deadline: float | None = None) -> Any:
        return self.config.sm.block_keys()


def test_keys_rotate_sign_and_expire_on_an_injected_clock() -> None:
    clock = Clock()
    node = FakeNode(clock)
    keys = BlockKeys(
        node,  # type: ignore[arg-type]
        clock=clock,
        rotate_every_ms=EVERY,
        activation_ms=ACTIVATION,
        lifetime_ms=LIFETIME,
    )
    chunk_ring = KeyRing(clock)  # what a chunk server learns from heartbeat replies
    verifier = TokenVerifier(chunk_ring, skew_ms=0)

    def heartbeat() -> None:
        asyncio.run(keys.refresh())
        chunk_ring.update(
            BlockKey(p.key_id, p.secret, p.active_ms, p.expires_ms) for p in keys.to_pb()
        )

    with pytest.raises(Unavailable):  # no key yet: a writer is told to retry
        keys.sign(1, 1, Access.WRITE, "shard-1", 1)
    node.config_member.group.is_leader = False
    assert not asyncio.run(keys.rotate_once())  # only the config leader rotates
    node.config_member.group.is_leader = True
    assert asyncio.run(keys.rotate_once())
    assert not asyncio.run(keys.rotate_once())  # one key per interval
    heartbeat()
    first = keys.sign(1, 1, Access.READ)
    assert verifier.check(first, 1, 1, Access.READ).key_id == 1

    clock.now = T0 + EVERY - ACTIVATION
    assert asyncio.run(keys.rotate_once())
    heartbeat()
    last_of_first = keys.sign(1, 1, Access.READ)  # the new key is not active yet
    assert verifier.check(last_of_first, 1, 1, Access.READ).key_id == 1
    clock.now = T0 + EVERY  # the new key is active: every chunk server has had it 30 s
    second = keys.sign(1, 1, Access.READ)
    assert verifier.check(second, 1, 1, Access.READ).key_id == 2
    # the old key's tokens stay good until they expire
    assert verifier.check(last_of_first, 1, 1, Access.READ).key_id == 1
    with pytest.raises(PermissionDenied, match="expired"):
        verifier.check(first, 1, 1, Access.READ)

    clock.now = T0 + 3 * EVERY  # keys rotated meanwhile; the first one has expired
    for _ in range(3):
        asyncio.run(keys.rotate_once())
        clock.now += EVERY
    heartbeat()
    assert 1 not in {k.key_id for k in node.config.sm.block_keys()}
    assert 1 not in {k.key_id for k in chunk_ring.known()}
    with pytest.raises(PermissionDenied, match="unknown key 1"):
        verifier.check(last_of_first, 1, 1, Access.READ)
