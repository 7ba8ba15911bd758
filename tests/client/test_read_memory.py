"""``keelfs.datapath.memory.join_fresh``: the join a large read returns, built on transparent
huge pages."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from keelfs.datapath.memory import HUGE_JOIN_MIN, join_fresh

MiB = 1 << 20


def _parts(total: int, seed: int) -> list[bytes | memoryview]:
    """Pieces of ``total`` bytes as a reader has them: views into the tails of larger messages
    (and a few plain bytes), of uneven sizes."""
    rnd = random.Random(seed)
    out: list[bytes | memoryview] = []
    left = total
    while left:
        n = min(left, rnd.choice([1, 777, 65_536, MiB - 3, MiB]))
        prefix = rnd.randbytes(rnd.randrange(0, 12))
        if rnd.random() < 0.2:
            out.append(rnd.randbytes(n))
        else:
            out.append(memoryview(prefix + rnd.randbytes(n))[len(prefix) :])
        left -= n
    return out


@pytest.mark.parametrize("total", [0, 10, HUGE_JOIN_MIN - 1, HUGE_JOIN_MIN, 9 * MiB + 12_345])
def test_join_fresh_is_the_join(total: int) -> None:
    parts = _parts(total, total)
    joined = join_fresh(parts, total)
    assert type(joined) is bytes
    assert joined == b"".join(parts)
    assert hash(joined) == hash(b"".join(parts))


def test_the_result_is_a_copy() -> None:
    source = bytearray(random.Random(2).randbytes(HUGE_JOIN_MIN + 5))
    joined = join_fresh([memoryview(source)[:7], memoryview(source)[7:]], len(source))
    before = bytes(source)
    source[:] = bytes(len(source))
    assert joined == before


@pytest.mark.parametrize("delta", [-1, 1])
def test_a_wrong_size_is_refused(delta: int) -> None:
    parts = _parts(HUGE_JOIN_MIN + 100, 3)
    with pytest.raises(ValueError):
        join_fresh(parts, HUGE_JOIN_MIN + 100 + delta)


def _thp_mode() -> str:
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return ""
    return text.split("[", 1)[1].split("]", 1)[0] if "[" in text else ""


_ADVISED_CHILD = """
import os, sys
from pathlib import Path
from keelfs.datapath.memory import join_fresh, tune_malloc_for_client

def flags_at(address):
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= address < hi
        elif inside and head == "VmFlags:":
            return set(line.split()[1:])
    return set()

tune_malloc_for_client()  # as a client runs: a 16 MiB result comes from the heap
size = 16 << 20
parts = [os.urandom(1 << 20) for _ in range(16)]
joined = (JOIN)(parts, size)
middle = id(joined) + sys.getsizeof(b"") - 1 + size // 2
assert joined[size // 2 : size // 2 + 4] == __import__("ctypes").string_at(middle, 4)
print("advised" if "hg" in flags_at(middle) else "not advised")
"""


def _advice_in_a_fresh_process(join: str) -> str:
    """Whether a 16 MiB result joined by ``join`` lies in a mapping advised onto huge pages,
    asked of a process that joined nothing before: in this one an earlier ``join_fresh``
    may have left a freed heap range advised, where a plain join could land."""
    code = _ADVISED_CHILD.replace("JOIN", join)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout.strip()


@pytest.mark.process
@pytest.mark.skipif(
    sys.platform != "linux" or _thp_mode() != "madvise",
    reason="huge pages only on advice: Linux with transparent_hugepage=madvise",
)
def test_a_large_result_is_advised_onto_huge_pages() -> None:
    """What is checked is the advice (``hg`` in the mapping's flags), not the huge pages the
    kernel then gives: those depend on free, unfragmented memory (a loaded machine had none:
    ``AnonHugePages`` 0). A plain join, what deleting the advice leaves, is not advised."""
    assert _advice_in_a_fresh_process("join_fresh") == "advised"
    assert _advice_in_a_fresh_process("lambda parts, size: b''.join(parts)") == "not advised"
