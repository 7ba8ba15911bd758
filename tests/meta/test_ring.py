"""The consistent-hash ring: stable hashes, balanced shares, minimal movement on changes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from keelfs.errors import InvalidArgument, Unavailable
from keelfs.meta.ring import (
    HASH_MAX,
    HashRange,
    HashRing,
    changed_ranges,
    key_hash,
    moved_keys,
)

KEYS = [f"/data/user{u}/dir{d}" for u in range(100) for d in range(200)]  # 20,000 directories


def counts(ring: HashRing, keys: list[str]) -> dict[str, int]:
    out = dict.fromkeys(ring.shards, 0)
    for k in keys:
        out[ring.lookup(k)] += 1
    return out


@pytest.mark.process
def test_hash_is_stable_across_processes() -> None:
    """Not Python's salted hash(): another interpreter computes the same positions."""
    code = (
        "from keelfs.meta.ring import key_hash, HashRing;"
        "print(key_hash('/a/b'), HashRing(['s1','s2','s3']).lookup('/a/b'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert int(out[0]) == key_hash("/a/b")
    assert out[1] == HashRing(["s1", "s2", "s3"]).lookup("/a/b")


def test_hash_golden_values() -> None:
    """Ring positions are part of the on-disk placement: they must never change."""
    assert key_hash("/") == 17864279041766278089
    assert key_hash("/a/b") == 14393487080394258458
    ring = HashRing(["shard-1", "shard-2", "shard-3"])
    assert [ring.lookup(k) for k in ("/", "/a", "/a/b", "/users")] == GOLDEN


GOLDEN = ["shard-3", "shard-1", "shard-3", "shard-1"]


def test_lookup_is_deterministic_and_order_independent() -> None:
    a = HashRing(["s1", "s2", "s3", "s4"])
    b = HashRing(["s4", "s2", "s1", "s3"])
    assert all(a.lookup(k) == b.lookup(k) for k in KEYS[:2000])
    assert a.points() == b.points()
    assert len(a.points()) == 4 * 64


def test_shard_for_path_uses_the_parent() -> None:
    ring = HashRing(["s1", "s2", "s3", "s4"])
    for d in KEYS[:200]:
        owner = ring.lookup(d)
        assert {ring.shard_for_path(f"{d}/{name}") for name in ("a", "b", "c.txt")} == {owner}
    assert ring.shard_for_path("/") == ring.lookup("/")
    assert ring.shard_for_path("/top") == ring.lookup("/")


@pytest.mark.parametrize("n", [2, 4, 8])
def test_distribution_is_balanced(n: int) -> None:
    ring = HashRing([f"shard-{i}" for i in range(n)])
    mean = len(KEYS) / n
    c = counts(ring, KEYS)
    assert min(c.values()) > 0.6 * mean, c
    assert max(c.values()) < 1.4 * mean, c
    shares = ring.shares()
    assert abs(sum(shares.values()) - 1.0) < 1e-9
    assert all(0.6 / n < s < 1.4 / n for s in shares.values()), shares


def test_more_vnodes_balance_better() -> None:
    def spread(vnodes: int) -> float:
        shares = HashRing([f"shard-{i}" for i in range(8)], vnodes).shares().values()
        return max(shares) / min(shares)

    assert spread(256) < spread(1)


def test_adding_a_shard_moves_only_keys_to_it() -> None:
    old = HashRing([f"shard-{i}" for i in range(4)])
    new = HashRing([f"shard-{i}" for i in range(5)])
    moved = moved_keys(old, new, KEYS)
    assert all(dst == "shard-4" for _, dst in moved.values())
    # about a fifth of the keys move: the new shard's fair share, and nothing more
    assert 0.12 < len(moved) / len(KEYS) < 0.28
    assert len(moved) == counts(new, KEYS)["shard-4"]


def test_removing_a_shard_moves_only_its_keys() -> None:
    old = HashRing([f"shard-{i}" for i in range(5)])
    new = HashRing([f"shard-{i}" for i in range(5) if i != 2])
    moved = moved_keys(old, new, KEYS)
    assert all(src == "shard-2" for src, _ in moved.values())
    assert len(moved) == counts(old, KEYS)["shard-2"]
    # its keys are spread over the survivors, not dumped on one neighbour
    assert len({dst for _, dst in moved.values()}) == 4


def test_changed_ranges_agree_with_lookups() -> None:
    old = HashRing([f"shard-{i}" for i in range(4)])
    new = HashRing([f"shard-{i}" for i in (0, 1, 3, 4, 5)])
    ranges = changed_ranges(old, new)
    assert ranges == sorted(ranges, key=lambda r: r.first)
    for a, b in zip(ranges, ranges[1:], strict=False):
        assert a.last < b.first
    for key in KEYS:
        h = key_hash(key)
        hit = [r for r in ranges if r.covers(h)]
        if old.lookup(key) == new.lookup(key):
            assert hit == []
        else:
            assert [(r.old, r.new) for r in hit] == [(old.lookup(key), new.lookup(key))]
    # the boundaries themselves
    for r in ranges:
        for h in (r.first, r.last):
            assert (old.owner_of_hash(h), new.owner_of_hash(h)) == (r.old, r.new)


def test_changed_ranges_edge_cases() -> None:
    ring = HashRing(["a", "b"])
    assert changed_ranges(ring, HashRing(["b", "a"])) == []
    assert changed_ranges(HashRing([]), ring) == []
    with pytest.raises(InvalidArgument):
        changed_ranges(ring, HashRing([]))
    whole = changed_ranges(HashRing(["a"]), HashRing(["b"]))
    assert whole == [HashRange(0, HASH_MAX, "a", "b")] or (
        # the wrapping arc may come out in two pieces
        sum(r.last - r.first + 1 for r in whole) == HASH_MAX + 1
    )


def test_bad_rings() -> None:
    with pytest.raises(InvalidArgument, match="duplicate"):
        HashRing(["a", "a"])
    with pytest.raises(InvalidArgument, match="vnodes"):
        HashRing(["a"], vnodes=0)
    with pytest.raises(Unavailable):
        HashRing([]).lookup("/a")
