"""Block access tokens (``keelfs.datapath.tokens``): the encoding and checks, key activation
with an injected clock, and a real ``ChunkNode`` refusing every token that is not exactly for
the block, stamp, mode and fence of the request (and acting on one that is)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from keelfs.chunk.commands import DeleteBlocks, Fence, ReplicateBlock, VerifyBlock
from keelfs.chunk.node import ChunkNode, ChunkNodeConfig
from keelfs.datapath.client import AsyncChunkClient
from keelfs.datapath.protocol import Target
from keelfs.datapath.replica import DeleteOutcome
from keelfs.datapath.tokens import (
    Access,
    BlockKey,
    BlockToken,
    KeyRing,
    TokenSigner,
    TokenVerifier,
    decode_token,
)
from keelfs.errors import PermissionDenied

SECRET = bytes(range(32))
KEY = BlockKey(1, SECRET)
NOW = 1_700_000_000_000


class Clock:
    def __init__(self, now: int = NOW) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def _token(
    block_id: int = 7,
    gen: int = 2,
    modes: Access = Access.READ,
    shard: str = "",
    epoch: int = 0,
    *,
    key: BlockKey = KEY,
    expiry_ms: int = NOW + 60_000,
) -> bytes:
    return BlockToken(key.key_id, block_id, gen, modes, expiry_ms, shard, epoch).sign(key.secret)


def test_a_token_round_trips_and_every_mismatch_is_refused() -> None:
    clock = Clock()
    ring = KeyRing(clock)
    ring.update([KEY])
    verifier = TokenVerifier(ring, skew_ms=1_000)
    raw = _token(modes=Access.WRITE, shard="shard-1", epoch=4)
    token, _, _ = decode_token(raw)
    assert (token.block_id, token.gen, token.shard_id, token.epoch) == (7, 2, "shard-1", 4)
    assert verifier.check(raw, 7, 2, Access.WRITE, ("shard-1", 4)) == token
    refused = {
        "no token": lambda: verifier.check(b"", 7, 2, Access.WRITE),
        "garbage": lambda: verifier.check(b"\x01" * 40, 7, 2, Access.WRITE),
        "another block": lambda: verifier.check(raw, 8, 2, Access.WRITE),
        "another stamp": lambda: verifier.check(raw, 7, 3, Access.WRITE),
        "another mode": lambda: verifier.check(raw, 7, 2, Access.DELETE),
        "another fence": lambda: verifier.check(raw, 7, 2, Access.WRITE, ("shard-1", 5)),
        "bad mac": lambda: verifier.check(raw[:-1] + bytes([raw[-1] ^ 1]), 7, 2, Access.WRITE),
        "unknown key": lambda: verifier.check(_token(key=BlockKey(9, SECRET)), 7, 2, Access.READ),
        "forged body": lambda: verifier.check(
            raw.replace((7).to_bytes(8, "big"), (8).to_bytes(8, "big"), 1), 8, 2, Access.WRITE
        ),
    }
    for what, check in refused.items():
        with pytest.raises(PermissionDenied):
            check()
            pytest.fail(what)
    clock.now = NOW + 60_000 + 1_000  # the expiry plus the skew allowed: still good
    verifier.check(raw, 7, 2, Access.WRITE)
    clock.now += 1
    with pytest.raises(PermissionDenied, match="expired"):
        verifier.check(raw, 7, 2, Access.WRITE)


def test_a_new_key_signs_only_once_active_and_an_expired_key_is_forgotten() -> None:
    clock = Clock()
    ring = KeyRing(clock)
    signer = TokenSigner(ring, lifetime_ms=10_000)
    assert signer.sign(1, 1, Access.READ) == b""  # no key: nothing to sign with
    ring.update([BlockKey(1, SECRET, NOW, NOW + 100_000)])
    ring.update([BlockKey(2, b"\x02" * 32, NOW + 30_000, NOW + 200_000)])
    assert decode_token(signer.sign(1, 1, Access.READ))[0].key_id == 1
    clock.now = NOW + 30_000
    token = decode_token(signer.sign(1, 1, Access.READ))[0]
    assert (token.key_id, token.expiry_ms) == (2, NOW + 40_000)
    clock.now = NOW + 100_001
    ring.update([])
    assert [k.key_id for k in ring.known()] == [2]


# -- a real ChunkNode --------------------------------------------------------------------------
def _node(tmp_path: Path, name: str) -> ChunkNode:
    data = tmp_path / name
    data.mkdir(mode=0o700)
    (data / "block-keys.json").write_text(json.dumps({"keys": [KEY.to_dict()]}))
    return ChunkNode(ChunkNodeConfig(data, server_id=name, io_threads=0))


def _real(
    block_id: int, gen: int, modes: Access, shard: str = "", epoch: int = 0, **kw: int
) -> bytes:
    from keelfs.datapath.tokens import wall_ms

    kw.setdefault("expiry_ms", wall_ms() + 60_000)
    return BlockToken(KEY.key_id, block_id, gen, modes, kw["expiry_ms"], shard, epoch).sign(SECRET)


def test_a_chunk_node_acts_only_on_the_right_token(tmp_path: Path) -> None:
    async def scenario() -> None:
        a, b = _node(tmp_path, "a"), _node(tmp_path, "b")
        await a.start()
        await b.start()
        data = b"t" * 100_000
        write = _real(7, 2, Access.WRITE, "shard-1", 3)
        try:
            async with AsyncChunkClient() as client:
                for bad in (
                    b"",
                    _real(7, 2, Access.WRITE, "shard-1", 3, expiry_ms=1),  # expired
                    _real(8, 2, Access.WRITE, "shard-1", 3),  # another block
                    _real(7, 1, Access.WRITE, "shard-1", 3),  # another stamp
                    _real(7, 2, Access.READ, "shard-1", 3),  # another mode
                    _real(7, 2, Access.WRITE, "shard-1", 4),  # another fence
                ):
                    with pytest.raises(PermissionDenied):
                        await client.write_block([a.address], 7, 2, data, "shard-1", 3, token=bad)
                assert a.block_report() == [] and a.epochs.snapshot() == {}
                # the pipeline: the token travels a -> b
                result = await client.write_block(
                    [a.address, b.address], 7, 2, data, "shard-1", 3, token=write
                )
                assert result.length == len(data) and a.epochs.snapshot() == {"shard-1": 3}
                for bad in (b"", _real(7, 3, Access.READ), _real(7, 2, Access.WRITE)):
                    with pytest.raises(PermissionDenied):
                        await client.read_block(a.address, 7, 2, token=bad)
                read = _real(7, 2, Access.READ)
                assert await client.read_block(a.address, 7, 2, token=read) == data
                wrong_delete = _real(7, 2, Access.DELETE, "shard-1", 9)
                with pytest.raises(PermissionDenied):
                    await client.delete_blocks(a.address, [(7, 2)], "shard-1", 3, [wrong_delete])
                with pytest.raises(PermissionDenied):
                    await client.delete_blocks(a.address, [(7, 2)], "shard-1", 3)
            # the commands that come in heartbeat replies
            fence = Fence("shard-1", 3)
            with pytest.raises(PermissionDenied):
                await a.execute(ReplicateBlock(fence, 7, 2, (Target(b.address, "b"),)))
            with pytest.raises(PermissionDenied):
                await a.execute(VerifyBlock(Fence("shard-1", 2**64 - 1), 7, 2, read))
            with pytest.raises(PermissionDenied):
                await a.execute(DeleteBlocks(Fence("shard-1", 2**64 - 1), ((7, 2),), (write,)))
            assert a.epochs.snapshot() == {"shard-1": 3}
            verified = await a.execute(
                VerifyBlock(fence, 7, 2, _real(7, 2, Access.READ, "shard-1", 3))
            )
            assert verified.length == len(data)
            delete = _real(7, 2, Access.DELETE, "shard-1", 3)
            [done] = await a.execute(DeleteBlocks(fence, ((7, 2),), (delete,)))
            assert done.outcome is DeleteOutcome.DELETED and a.block_report() == []
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(scenario())


def test_keys_learned_from_a_master_are_kept_across_a_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = ChunkNode(ChunkNodeConfig(tmp_path / "n", server_id="n", io_threads=0))
        await node.start()
        try:
            assert node.block_keys.known() == []
            await node.learn_keys([BlockKey(4, SECRET, 0, 0)])
        finally:
            await node.stop()
        again = ChunkNode(ChunkNodeConfig(tmp_path / "n", io_threads=0))
        await again.start()
        try:
            assert [k.key_id for k in again.block_keys.known()] == [4]
            assert (tmp_path / "n" / "block-keys.json").stat().st_mode & 0o077 == 0
        finally:
            await again.stop()

    asyncio.run(scenario())
