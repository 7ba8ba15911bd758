"""Snapshot images of one Raft group, kept as plain files.

Layout of a group's directory::

    snap-<term>-<index>          the state-machine image, byte for byte
    snap-<term>-<index>.meta     its description: index, term, membership, size, CRC32C
    *.tmp                        anything being written; never valid, removed on open
    recv-<term>-<index>.tmp      the image being received through InstallSnapshot
    *.corrupt                    a complete snapshot that failed verification, kept for autopsy

Why the files are written the way they are: every file is written under a temporary name,
``fsync``-ed, renamed over its final name and then the *directory* is ``fsync``-ed. The rename
makes the file appear whole or not at all (a reader never sees a prefix of it), the file fsync
makes its bytes durable before the name points at them, and the directory fsync makes the rename
itself durable (without it a power cut can bring back the old directory entry even though the
data blocks were written). The image is put in place before its ``.meta`` file, so the meta
file is the commit point: an image without a valid meta is a half-written snapshot and is
deleted when the store is opened. The meta records the image's size and CRC32C, so a torn or
bit-rotted image is never taken for a good one either.

Images are streamed to and from disk in chunks; nothing here reads a whole image into memory
except ``read_all``, which exists for callers whose API is "give me the bytes".
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import google_crc32c

from keelfs.raft.errors import SnapshotOutOfDateError
from keelfs.raft.messages import ConfState, SnapshotMeta
from keelfs.storage.private import create_private

TMP_SUFFIX = ".tmp"
META_SUFFIX = ".meta"
CORRUPT_SUFFIX = ".corrupt"
DEFAULT_CHUNK = 1 << 20
_IMAGE_RE = re.compile(r"^snap-(\d+)-(\d+)$")
_META_VERSION = 1


class ByteSink(Protocol):
    """What a snapshot writer callable is handed: something with ``write(bytes)``."""

    def write(self, data: bytes, /) -> int: ...


SnapshotSource = Callable[[ByteSink], object] | Iterable[bytes] | bytes
"""A snapshot image: a callable that writes it into a sink, an iterable of chunks, or bytes."""


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A complete, verified snapshot on disk."""

    meta: SnapshotMeta
    path: Path
    size: int
    crc32c: int


def fsync_dir(path: Path) -> None:
    """Make renames/creations/unlinks inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path: Path) -> None:
    """Create ``path`` (and parents) durably: each new entry's parent directory is fsynced."""
    if path.is_dir():
        return
    ensure_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        path.mkdir()
    fsync_dir(path.parent)


class _HashingFile:
    """A write-only file wrapper that counts bytes and keeps a running CRC32C."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.size = 0
        self.crc = 0

    def write(self, data: bytes, /) -> int:
        n = self._f.write(data)
        self.size += len(data)
        self.crc = google_crc32c.extend(self.crc, bytes(data))
        return n


def _write_durably(path: Path, chunks: Iterable[bytes]) -> None:
    """Write a small file through tmp + fsync + rename + directory fsync."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with create_private(tmp) as f:
        for chunk in chunks:
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _encode_meta(
    meta: SnapshotMeta, size: int, crc: int, alt: tuple[int, int] | None = None
) -> bytes:
    body: dict[str, object] = {
        "version": _META_VERSION,
        "index": meta.index,
        "term": meta.term,
        "voters": sorted(meta.conf.voters),
        "learners": sorted(meta.conf.learners),
        "size": size,
        "crc32c": crc,
    }
    if alt is not None:
        body["alt"] = list(alt)
    text = json.dumps(body, sort_keys=True).encode()
    return b"%08x\n" % google_crc32c.value(text) + text


def _decode_meta(raw: bytes) -> tuple[SnapshotMeta, list[tuple[int, int]]]:
    """The meta and the acceptable (size, crc32c) pairs of its image; ValueError if bad."""
    head, sep, text = raw.partition(b"\n")
    if not sep or len(head) != 8 or int(head, 16) != google_crc32c.value(text):
        raise ValueError("meta checksum mismatch")
    body = json.loads(text)
    if body.get("version") != _META_VERSION:
        raise ValueError(f"unknown meta version {body.get('version')!r}")
    conf = ConfState(
        frozenset(int(v) for v in body["voters"]), frozenset(int(v) for v in body["learners"])
    )
    meta = SnapshotMeta(int(body["index"]), int(body["term"]), conf)
    accept = [(int(body["size"]), int(body["crc32c"]))]
    if "alt" in body:
        accept.append((int(body["alt"][0]), int(body["alt"][1])))
    return meta, accept


def file_crc32c(path: Path, chunk: int = DEFAULT_CHUNK) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            crc = google_crc32c.extend(crc, block)
    return crc


@dataclass(slots=True)
class _Receiving:
    meta: SnapshotMeta
    path: Path
    file: _HashingFile
    raw: BinaryIO


class SnapshotStore:
    """The snapshots of one group in one directory (see the module docstring for the layout).

    Opening the store removes temporary files and half-written snapshots, and verifies every
    complete one (size and CRC32C, unless ``verify=False``); a complete snapshot that fails is
    renamed to ``*.corrupt``. What was discarded and why is listed in ``discarded`` so that a
    caller expecting one of them can say precisely what went wrong.

    Not thread-safe: one group's snapshots are driven by that group's thread.
    """

    def __init__(self, directory: str | os.PathLike[str], *, verify: bool = True) -> None:
        self.directory = Path(directory)
        ensure_dir(self.directory)
        self._snaps: dict[tuple[int, int], SnapshotInfo] = {}
        self._receiving: _Receiving | None = None
        self.discarded: builtins.list[tuple[str, str]] = []
        self._scan(verify)

    # -- opening ---------------------------------------------------------------------------
    def _discard(self, path: Path, reason: str, *, quarantine: bool = False) -> None:
        self.discarded.append((path.name, reason))
        if quarantine:
            os.replace(path, path.with_name(path.name + CORRUPT_SUFFIX))
        else:
            path.unlink(missing_ok=True)

    def _scan(self, verify: bool) -> None:
        names = sorted(os.listdir(self.directory))
        changed = False
        for name in names:
            path = self.directory / name
            if name.endswith(TMP_SUFFIX):
                self._discard(path, "temporary file of an unfinished write")
                changed = True
        for name in names:
            path = self.directory / name
            if name.endswith((TMP_SUFFIX, CORRUPT_SUFFIX)) or not path.exists():
                continue  # temporary, quarantined, or already discarded with its image
            if name.endswith(META_SUFFIX):
                if not (self.directory / name[: -len(META_SUFFIX)]).exists():
                    self._discard(path, "meta file without its image")
                    changed = True
                continue
            m = _IMAGE_RE.match(name)
            if m is None:
                continue  # not ours; leave it alone
            term, index = int(m.group(1)), int(m.group(2))
            meta_path = path.with_name(name + META_SUFFIX)
            try:
                meta, accept = _decode_meta(meta_path.read_bytes())
            except FileNotFoundError:
                self._discard(path, "image without meta file (half-written snapshot)")
                changed = True
                continue
            except (ValueError, KeyError, TypeError) as e:
                self._discard(meta_path, f"bad meta file: {e}")
                self._discard(path, f"bad meta file: {e}")
                changed = True
                continue
            reason = None
            size = path.stat().st_size
            if (meta.term, meta.index) != (term, index):
                reason = f"meta says {meta.term}/{meta.index}"
            elif size not in {s for s, _ in accept}:
                reason = f"size {size} != expected {accept[0][0]}"
            crc = next(c for s, c in accept if s == size) if reason is None else 0
            if reason is None and verify:
                actual = file_crc32c(path)
                if (size, actual) not in accept:
                    reason = f"crc32c {actual:08x} != expected {accept[0][1]:08x}"
                crc = actual
            if reason is not None:
                self._discard(path, reason, quarantine=True)
                self._discard(meta_path, reason, quarantine=True)
                changed = True
                continue
            if len(accept) > 1:  # finish an interrupted replacement: keep only the live pair
                _write_durably(meta_path, [_encode_meta(meta, size, crc)])
            self._snaps[(index, term)] = SnapshotInfo(meta, path, size, crc)
        if changed:
            fsync_dir(self.directory)

    # -- queries ---------------------------------------------------------------------------
    def image_path(self, meta: SnapshotMeta) -> Path:
        return self.directory / f"snap-{meta.term}-{meta.index}"

    def list(self) -> builtins.list[SnapshotInfo]:
        """Complete snapshots, oldest first."""
        return [self._snaps[k] for k in sorted(self._snaps)]

    def latest(self) -> tuple[SnapshotMeta, Path] | None:
        if not self._snaps:
            return None
        info = self._snaps[max(self._snaps)]
        return info.meta, info.path

    def get(self, meta: SnapshotMeta) -> SnapshotInfo | None:
        """The stored snapshot exactly matching ``meta`` (membership included), if any."""
        info = self._snaps.get((meta.index, meta.term))
        return info if info is not None and info.meta == meta else None

    def _require(self, meta: SnapshotMeta) -> SnapshotInfo:
        info = self.get(meta)
        if info is None:
            raise SnapshotOutOfDateError(meta.index)
        return info

    def read_chunk(self, meta: SnapshotMeta, offset: int, max_bytes: int) -> tuple[bytes, bool]:
        """Up to ``max_bytes`` from ``offset`` and whether the image ends there."""
        info = self._require(meta)
        if offset >= info.size:
            return b"", True
        with open(info.path, "rb") as f:
            f.seek(offset)
            data = f.read(min(max_bytes, info.size - offset))
        return data, offset + len(data) >= info.size

    def open_chunks(
        self, meta: SnapshotMeta, offset: int = 0, max_bytes: int = DEFAULT_CHUNK
    ) -> Iterator[bytes]:
        """Stream the image from ``offset`` in chunks of at most ``max_bytes``.

        The file is opened before the first chunk is asked for, so a snapshot deleted while the
        stream is being consumed still streams whole (POSIX keeps unlinked open files).
        """
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        info = self._require(meta)
        f = open(info.path, "rb")  # noqa: SIM115 - closed by the generator

        def gen() -> Iterator[bytes]:
            with f:
                f.seek(offset)
                remaining = info.size - offset
                while remaining > 0:
                    block = f.read(min(max_bytes, remaining))
                    if not block:
                        return
                    remaining -= len(block)
                    yield block

        return gen()

    def read_all(self, meta: SnapshotMeta) -> bytes:
        return self._require(meta).path.read_bytes()

    # -- creating --------------------------------------------------------------------------
    def create(self, meta: SnapshotMeta, source: SnapshotSource) -> SnapshotMeta:
        """Write a complete snapshot durably and return its meta.

        ``source`` is a callable that writes the image into the sink it is given (for state
        machines that serialise themselves), an iterable of byte chunks, or plain bytes.
        """
        final = self.image_path(meta)
        tmp = final.with_name(final.name + TMP_SUFFIX)
        try:
            with create_private(tmp) as raw:
                sink = _HashingFile(raw)
                if isinstance(source, bytes | bytearray | memoryview):
                    sink.write(bytes(source))
                elif callable(source):
                    source(sink)
                else:
                    for chunk in source:
                        sink.write(chunk)
                raw.flush()
                os.fsync(raw.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._commit(meta, tmp, sink.size, sink.crc)
        return meta

    def _commit(self, meta: SnapshotMeta, tmp: Path, size: int, crc: int) -> Path:
        """Move a fsynced image from ``tmp`` into place and write its meta (the commit point).

        Replacing an existing snapshot of the same term and index (a re-sent snapshot) must not
        leave a moment where the name holds a valid image the meta rejects; so the meta is first
        rewritten to accept both images, then the image is renamed, then the meta is narrowed.
        """
        final = self.image_path(meta)
        meta_path = final.with_name(final.name + META_SUFFIX)
        old = self._snaps.get((meta.index, meta.term))
        if old is not None and (old.size, old.crc32c, old.meta) == (size, crc, meta):
            tmp.unlink()  # byte-identical to what is already there
            return final
        if old is not None:
            _write_durably(meta_path, [_encode_meta(meta, size, crc, (old.size, old.crc32c))])
            self._snaps.pop((meta.index, meta.term))
        os.replace(tmp, final)
        fsync_dir(self.directory)
        _write_durably(meta_path, [_encode_meta(meta, size, crc)])
        self._snaps[(meta.index, meta.term)] = SnapshotInfo(meta, final, size, crc)
        return final

    # -- deleting --------------------------------------------------------------------------
    def _unlink(self, info: SnapshotInfo) -> None:
        # meta first: an image without meta is "half-written" and would be cleaned anyway,
        # whereas a meta without image would be a lie for a moment
        info.path.with_name(info.path.name + META_SUFFIX).unlink(missing_ok=True)
        info.path.unlink(missing_ok=True)
        del self._snaps[(info.meta.index, info.meta.term)]

    def delete(self, meta: SnapshotMeta) -> bool:
        info = self._snaps.get((meta.index, meta.term))
        if info is None:
            return False
        self._unlink(info)
        fsync_dir(self.directory)
        return True

    def delete_older_than(self, index: int) -> int:
        """Delete every snapshot whose index is below ``index``; return how many."""
        victims = [i for k, i in self._snaps.items() if k[0] < index]
        for info in victims:
            self._unlink(info)
        if victims:
            fsync_dir(self.directory)
        return len(victims)

    def delete_all_except(self, keep: SnapshotMeta | None) -> int:
        """Delete every snapshot but ``keep`` (older ones and newer orphans alike)."""
        key = None if keep is None else (keep.index, keep.term)
        victims = [i for k, i in self._snaps.items() if k != key]
        for info in victims:
            self._unlink(info)
        if victims:
            fsync_dir(self.directory)
        return len(victims)

    # -- receiving (InstallSnapshot) -------------------------------------------------------
    def receiving(self) -> tuple[SnapshotMeta, int] | None:
        """The snapshot being received and how many bytes of it are staged."""
        r = self._receiving
        return None if r is None else (r.meta, r.file.size)

    def begin_receive(self, meta: SnapshotMeta) -> None:
        """Start staging ``meta``'s image, discarding whatever was being received."""
        self.abort_receive()
        path = self.directory / f"recv-{meta.term}-{meta.index}{TMP_SUFFIX}"
        raw = create_private(path)  # kept open across chunks
        self._receiving = _Receiving(meta, path, _HashingFile(raw), raw)

    def write_chunk(self, meta: SnapshotMeta, offset: int, data: bytes) -> None:
        """Append a received chunk; ``offset`` must equal the bytes staged so far."""
        r = self._receiving
        if r is None or r.meta != meta:
            raise SnapshotOutOfDateError(meta.index)
        if offset != r.file.size:
            raise ValueError(f"snapshot chunk at {offset}, staged {r.file.size} bytes")
        r.file.write(data)

    def finish_receive(self, meta: SnapshotMeta) -> Path:
        """Make the staged image durable and atomically put it in place; return its path."""
        r = self._receiving
        if r is None or r.meta != meta:
            raise SnapshotOutOfDateError(meta.index)
        self._receiving = None
        try:
            r.raw.flush()
            os.fsync(r.raw.fileno())
        finally:
            r.raw.close()
        return self._commit(meta, r.path, r.file.size, r.file.crc)

    def abort_receive(self) -> None:
        r, self._receiving = self._receiving, None
        if r is not None:
            r.raw.close()
            r.path.unlink(missing_ok=True)

    def close(self) -> None:
        self.abort_receive()
