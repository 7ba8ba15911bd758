"""Decoded namespace records are remembered by their bytes (``records.decode_cached``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from meta_helpers import formatted

from keelfs.meta import records
from keelfs.meta.commands import Create, CreateInline, Mkdir
from keelfs.meta.namespace import ShardStateMachine
from keelfs.meta.principals import READ, Caller
from keelfs.meta.records import (
    DECODED_ENTRIES,
    DECODED_LARGE_ENTRIES,
    MAX_INLINE_BYTES,
    Inode,
    decode_cached,
)


def test_creates_in_one_directory_decode_its_records_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every create reads its directory's records (and its ancestors' for the permission
    check): those are decoded once, not once per create, and what the memo answers is what
    decoding the bytes gives."""
    sm = ShardStateMachine(tmp_path / "db")
    d = formatted(sm)
    d.ok(Mkdir("/a/b/c", parents=True))
    s = d.session()
    decoded = 0
    decode = Inode.decode.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Inode], raw: bytes) -> Inode:
        nonlocal decoded
        decoded += 1
        return decode(cls, raw)  # type: ignore[no-any-return]

    monkeypatch.setattr(Inode, "decode", classmethod(counting))
    for i in range(200):
        d.ok(Create(f"/a/b/c/f{i}"), s, i + 1)
    assert decoded < 100, f"{decoded} records decoded for 200 creates"
    for i in range(0, 200, 37):
        info = sm.stat(f"/a/b/c/f{i}")
        assert info.path == f"/a/b/c/f{i}" and not info.is_dir and info.under_construction


def test_the_memo_is_bounded_and_answers_what_decoding_gives() -> None:
    first = Inode("file", 0o644, "u", "g", 1, 1, replication=3, block_size=1 << 20)
    for i in range(DECODED_ENTRIES + 10):
        raw = first.evolve(mtime=i).encode()
        assert decode_cached(raw) == Inode.decode(raw) == first.evolve(mtime=i)
        assert decode_cached(raw) is decode_cached(raw)
    assert 0 < len(records._DECODED) <= DECODED_ENTRIES
    big = first.evolve(blocks=tuple(records.BlockInfo(i, 1, 1) for i in range(200))).encode()
    assert decode_cached(big) == Inode.decode(big) and big not in records._DECODED


def _counting_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    decoded = [0]
    decode = Inode.decode.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Inode], raw: bytes) -> Inode:
        decoded[0] += 1
        return decode(cls, raw)  # type: ignore[no-any-return]

    monkeypatch.setattr(Inode, "decode", classmethod(counting))
    return decoded


def test_a_readers_stat_of_an_inline_file_decodes_its_record_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader's GetFileInfo looks the file up for the stat, the READ check and the content
    (several lookups of one record of up to ~88 KB): decoded once, not once per lookup."""
    sm = ShardStateMachine(tmp_path / "db")
    d = formatted(sm)
    alice = Caller("alice", ("staff",))
    d.ok(Mkdir("/d", mode=0o777))
    data = bytes(range(256)) * (MAX_INLINE_BYTES // 256)
    d.ok(CreateInline.of("/d/f", data), d.session(alice), 1, caller=alice)
    decoded = _counting_decodes(monkeypatch)
    records._DECODED_LARGE.clear()
    sm.stat("/d/f", caller=alice)
    info = sm.check_access("/d/f", READ, caller=alice, with_data=True)
    sm.check_access("/d/f", READ, caller=alice)
    assert info.data == data
    assert decoded[0] == 1


def test_the_memo_of_large_records_is_bounded_and_keeps_no_huge_record() -> None:
    first = Inode("file", 0o644, "u", "g", 1, 1, replication=3, block_size=1 << 20)
    for i in range(DECODED_LARGE_ENTRIES + 10):
        raw = first.evolve(mtime=i, under_construction=False, data=bytes(2000)).encode()
        assert decode_cached(raw) is decode_cached(raw) == Inode.decode(raw)
    assert 0 < len(records._DECODED_LARGE) <= DECODED_LARGE_ENTRIES
    huge = first.evolve(blocks=tuple(records.BlockInfo(i, 1, 1) for i in range(20000))).encode()
    assert len(huge) > 128 << 10
    assert decode_cached(huge) == Inode.decode(huge) and huge not in records._DECODED_LARGE


@pytest.mark.parametrize("text", ["QUJD!", "QU JD", "QUJD\\n", "=QUJD", "QQ==QQ==", "QUJDé"])
def test_inline_data_that_is_not_strict_base64_is_refused(text: str) -> None:
    first = Inode("file", 0o644, "u", "g", 1, 1, replication=3, block_size=1 << 20, data=b"ABC")
    raw = first.encode()
    assert b'"QUJD"' in raw and Inode.decode(raw).data == b"ABC"
    with pytest.raises(ValueError):
        Inode.decode(raw.replace(b'"QUJD"', f'"{text}"'.encode()))
