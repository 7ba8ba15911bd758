"""Multipart Complete's assembly (``multipart._assemble``) against a fake cluster client:
a ``concat`` of the parts into an empty hidden file of the upload's directory (metadata only),
and the copy of the bytes only where the cluster refuses the concat."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from keelfs.errors import InvalidArgument
from keelfs.gateways.s3 import multipart

UPLOAD = "/b/.s3/uploads/u1"


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    async def __aenter__(self) -> _Reader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def iter_range(self, start: int, end: int) -> AsyncIterator[bytes]:
        yield self.data[start:end]


class _FakeFs:
    """Files as a dict; ``concat`` joins them (removing the sources) unless ``refuse``."""

    def __init__(self, files: dict[str, bytes], *, refuse: bool = False) -> None:
        self.files = dict(files)
        self.refuse = refuse
        self.concats: list[tuple[str, list[str]]] = []

    async def write_bytes(self, path: str, data: bytes, **_: Any) -> None:
        self.files[path] = data

    async def concat(self, target: str, sources: list[str]) -> None:
        self.concats.append((target, list(sources)))
        if self.refuse:
            raise InvalidArgument("concat of files in blocks with files kept inline", "sources")
        self.files[target] += b"".join(self.files.pop(s) for s in sources)

    async def delete(self, path: str, **_: Any) -> None:
        del self.files[path]

    async def open(self, path: str) -> _Reader:
        return _Reader(self.files[path])

    async def create(self, path: str, **_: Any) -> Any:
        raise AssertionError("the copy goes through write_temp")


def _parts(fs: _FakeFs) -> list[multipart.Part]:
    return [
        multipart.Part(n, "0" * 32, len(fs.files[p]), 0, p)
        for n, p in enumerate(sorted(p for p in fs.files if "/p" in p), start=1)
    ]


def test_complete_concats_the_parts_in_order_without_copying() -> None:
    fs = _FakeFs({f"{UPLOAD}/p00001.x": b"one-", f"{UPLOAD}/p00002.x": b"two"})
    parts = _parts(fs)
    path = asyncio.run(multipart._assemble(fs, "b", UPLOAD, parts))  # type: ignore[arg-type]
    assert path.startswith(f"{UPLOAD}/c")
    assert fs.concats == [(path, [p.path for p in parts])]
    assert fs.files == {path: b"one-two"}  # the parts became the file: nothing copied


def test_a_refused_concat_falls_back_to_a_copy(monkeypatch: Any) -> None:
    fs = _FakeFs({f"{UPLOAD}/p00001.x": b"one-", f"{UPLOAD}/p00002.x": b"two"}, refuse=True)
    parts = _parts(fs)
    written: dict[str, bytes] = {}

    async def write_temp(_fs: Any, bucket: str, chunks: AsyncIterator[bytes]) -> Any:
        written["/b/.s3/tmp/t"] = b"".join([c async for c in chunks])
        return multipart.store.Written("/b/.s3/tmp/t", 7, b"", "")

    monkeypatch.setattr(multipart.store, "write_temp", write_temp)
    path = asyncio.run(multipart._assemble(fs, "b", UPLOAD, parts))  # type: ignore[arg-type]
    assert path == "/b/.s3/tmp/t" and written[path] == b"one-two"
    assert sorted(fs.files) == [p.path for p in parts]  # the parts stay; the empty target is gone
