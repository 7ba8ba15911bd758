"""The on-disk format version of a data directory, checked before anything in it is opened.

Every data directory (a master's or config server's, a chunk server's, ``keelfs server``'s)
holds a file ``FORMAT``: one line ``keelfs-data-format N``. :func:`check_data_format` runs at
start, before RocksDB or the block store opens:

- an empty or new directory gets the current version (:data:`DATA_FORMAT`);
- a directory holding data but no ``FORMAT`` was written by a keelfs from before the version
  existed: format 0, whose layout is format 1's, so it is upgraded in place (the file is
  written; nothing else changes) and the upgrade logged;
- a version newer than this keelfs knows is refused with :class:`DataFormatError` (a node
  rolled back past a format change must not guess at data it cannot read: run the newer
  version again), as is a version older than :data:`OLDEST_UPGRADABLE` and a ``FORMAT`` file
  that does not parse;
- an older version this keelfs can upgrade is upgraded (today: 0 -> 1, nothing to convert)
  before the node starts, and the file rewritten last, so that a crash in the middle leaves
  the old version to upgrade again.

Rolling upgrades (``docs/operations.md``) rely on this: a release that changes the format
bumps :data:`DATA_FORMAT` and adds its step to :data:`_UPGRADES`; a node restarted on the new
release upgrades its own directory, and one restarted on an older release refuses to start
rather than misread it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from keelfs.storage.private import create_private

__all__ = [
    "DATA_FORMAT",
    "FORMAT_FILE",
    "OLDEST_UPGRADABLE",
    "DataFormatError",
    "check_data_format",
    "read_data_format",
    "write_data_format",
]

log = logging.getLogger(__name__)

DATA_FORMAT = 1
"""The format this keelfs writes."""
OLDEST_UPGRADABLE = 0
FORMAT_FILE = "FORMAT"
_PREFIX = "keelfs-data-format "
_IGNORED = frozenset({FORMAT_FILE, "lost+found"})
"""Entries that do not make a directory "hold data" (a fresh volume's lost+found)."""


class DataFormatError(RuntimeError):
    """The data directory's format cannot be used by this keelfs (the message says why and
    what to do)."""


_UPGRADES: dict[int, Callable[[Path], None]] = {
    0: lambda root: None,  # format 0 is format 1 without the FORMAT file
}
"""Version v -> the step that turns a directory of format v into v + 1."""


def read_data_format(root: Path) -> int | None:
    """The version ``root``'s ``FORMAT`` names; None when there is no such file;
    ``DataFormatError`` when it does not parse."""
    path = root / FORMAT_FILE
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return None
    line = text.strip()
    if not line.startswith(_PREFIX) or not line[len(_PREFIX) :].isdigit():
        raise DataFormatError(
            f"{path} does not name a keelfs data format (found {line[:60]!r}); "
            f"it is not a keelfs data directory, or the file is damaged"
        )
    return int(line[len(_PREFIX) :])


def write_data_format(root: Path, version: int = DATA_FORMAT) -> None:
    """Write ``FORMAT`` durably (a temporary file, fsynced, renamed, the directory fsynced)."""
    tmp = root / (FORMAT_FILE + ".tmp")
    tmp.unlink(missing_ok=True)
    with create_private(tmp) as f:
        f.write(f"{_PREFIX}{version}\n".encode("ascii"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / FORMAT_FILE)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_data_format(root: Path) -> int:
    """Check (and if need be set or upgrade) ``root``'s format, creating ``root`` if missing;
    the version it had (0 for data from before versions, :data:`DATA_FORMAT` for a new one)."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    (root / (FORMAT_FILE + ".tmp")).unlink(missing_ok=True)
    found = read_data_format(root)
    if found is None:
        if not any(entry.name not in _IGNORED for entry in root.iterdir()):
            write_data_format(root)
            return DATA_FORMAT
        found = 0
    if found > DATA_FORMAT:
        raise DataFormatError(
            f"{root} holds keelfs data format {found}, newer than this keelfs reads "
            f"(format {DATA_FORMAT}): it was written by a newer release; start that release "
            f"(going back past a format change is not supported, docs/operations.md)"
        )
    if found < OLDEST_UPGRADABLE:
        raise DataFormatError(
            f"{root} holds keelfs data format {found}, older than this keelfs upgrades "
            f"(from {OLDEST_UPGRADABLE}): upgrade through an intermediate release first"
        )
    for version in range(found, DATA_FORMAT):
        _UPGRADES[version](root)
        log.info("upgraded data directory %s from format %d to %d", root, version, version + 1)
    if found != DATA_FORMAT:
        write_data_format(root)
    return found
