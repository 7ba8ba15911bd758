"""The on-disk layout of a chunk server's data directory, and durable small-file writes.

::

    DATA/
      server.json                   identity: {"server_id": ...} (written once)
      epochs.json                   highest epoch per shard (keelfs.chunk.fencing)
      finalized/<xx>/blk_<id>_<gen>.data     complete replicas (xx: id & 0xff, two hex digits)
      finalized/<xx>/blk_<id>_<gen>.meta
      rbw/blk_<id>_<gen>.data       replicas being written
      rbw/blk_<id>_<gen>.meta
      tmp/                          scratch for atomic rewrites

A replica is two files: ``.data`` (the bytes) and the sidecar ``.meta``: a 128-byte header
(:class:`SidecarHeader`) followed by one CRC32C per chunk (``keelfs.datapath.checksums``). The
generation stamp is in both names and in the header.

Commit point. A replica is finalized by fsyncing both files in ``rbw/``, renaming the ``.meta``
into ``finalized/<xx>/``, then the ``.data``, then fsyncing that directory. A ``.data`` file in
``finalized/`` is therefore whole (its sidecar went first), and a crash at any point leaves
either a complete replica or leftovers that :meth:`keelfs.chunk.store.BlockStore.open` removes:
everything in ``rbw/`` and ``tmp/``, a ``finalized`` ``.meta`` without its ``.data``, and an
older stamp of a block next to a newer one. Deleting unlinks the ``.data`` first for the same
reason.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from keelfs.datapath.checksums import crc32c
from keelfs.storage.private import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, private_dir

__all__ = [
    "HEADER_SIZE",
    "Layout",
    "SidecarHeader",
    "fsync_dir",
    "parse_name",
    "write_atomically",
]

HEADER_SIZE = 128
_MAGIC = b"KFSM"
_VERSION = 1
_FLAG_FINALIZED = 1
# magic, version, flags, chunk_size, reserved, block_id, gen, length, shard length, shard id
_FIELDS = struct.Struct("<4sHHIIQQQB64s")
_CRC_AT = HEADER_SIZE - 4
_NAME = re.compile(r"blk_(\d{1,20})_(\d{1,20})\.(data|meta)\Z")


@dataclass(frozen=True, slots=True)
class SidecarHeader:
    block_id: int
    gen: int
    chunk_size: int
    shard_id: str
    length: int = 0
    """Valid once ``finalized``; while being written the data file's size is the length."""
    finalized: bool = False

    def encode(self) -> bytes:
        shard = self.shard_id.encode("ascii")
        flags = _FLAG_FINALIZED if self.finalized else 0
        body = _FIELDS.pack(
            _MAGIC,
            _VERSION,
            flags,
            self.chunk_size,
            0,
            self.block_id,
            self.gen,
            self.length,
            len(shard),
            shard,
        ).ljust(_CRC_AT, b"\0")
        return body + struct.pack("<I", crc32c(body))

    @classmethod
    def decode(cls, raw: bytes) -> SidecarHeader:
        """ValueError if ``raw`` is not an intact header of this version."""
        if len(raw) < HEADER_SIZE:
            raise ValueError(f"sidecar header truncated ({len(raw)} bytes)")
        body = raw[:_CRC_AT]
        (stored,) = struct.unpack_from("<I", raw, _CRC_AT)
        if crc32c(body) != stored:
            raise ValueError("sidecar header checksum mismatch")
        magic, version, flags, chunk, _, block_id, gen, length, n, shard = _FIELDS.unpack_from(body)
        if magic != _MAGIC or version != _VERSION:
            raise ValueError(f"not a keelfs sidecar (magic {magic!r}, version {version})")
        return cls(
            block_id=block_id,
            gen=gen,
            chunk_size=chunk,
            shard_id=shard[:n].decode("ascii"),
            length=length,
            finalized=bool(flags & _FLAG_FINALIZED),
        )


def parse_name(name: str) -> tuple[int, int, str] | None:
    """``"blk_7_3.data"`` -> ``(7, 3, "data")``; None for any other name."""
    m = _NAME.match(name)
    return (int(m[1]), int(m[2]), m[3]) if m else None


class Layout:
    """Paths inside one data directory (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.finalized = root / "finalized"
        self.rbw = root / "rbw"
        self.tmp = root / "tmp"
        self.epochs_file = root / "epochs.json"
        self.identity_file = root / "server.json"
        self.block_keys_file = root / "block-keys.json"

    def create_dirs(self) -> None:
        private_dir(self.root)
        for d in (self.finalized, self.rbw, self.tmp):
            d.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)

    def finalized_dir(self, block_id: int) -> Path:
        return self.finalized / f"{block_id & 0xFF:02x}"

    @staticmethod
    def files(directory: Path, block_id: int, gen: int) -> tuple[Path, Path]:
        """The ``(.data, .meta)`` paths of a replica in ``directory``."""
        stem = f"blk_{block_id}_{gen}"
        return directory / f"{stem}.data", directory / f"{stem}.meta"


def fsync_dir(path: Path) -> None:
    """Make the entries of ``path`` (creations, renames, removals) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, tmp_dir: Path | None = None) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new content, never
    a mix: write a temporary file, fsync it, rename it over ``path``, fsync the directory.
    ``tmp_dir`` must be on the same file system (default: ``path``'s directory)."""
    tmp = (tmp_dir or path.parent) / f".{path.name}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
