"""Data on disk is readable by the keelfs user only (etcd's and HDFS's rule).

Every data root (a master's or server's data directory, a chunk server's block directory, the
RocksDB and snapshot directories) is a directory of mode 0700, so no other local user can even
list it; the files keelfs creates itself are 0600 as well, and processes start with umask 077
(``keelfs.runtime.lifecycle``) so that what a library creates (RocksDB's files) follows. A data
root that exists with wider permissions — made by hand, or by an older keelfs — is tightened
when it is opened, with a warning naming it.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import BinaryIO, cast

log = logging.getLogger(__name__)

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
PRIVATE_UMASK = 0o077


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and missing parents) as a 0700 directory, or tighten an existing one
    that grants anything to its group or others; the path."""
    root = Path(path)
    root.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    mode = stat.S_IMODE(root.stat().st_mode)
    if mode & 0o077:
        log.warning(
            "data directory %s had mode %o (readable by others); setting it to %o",
            root,
            mode,
            PRIVATE_DIR_MODE,
        )
        root.chmod(PRIVATE_DIR_MODE)
    return root


def private_opener(path: str, flags: int) -> int:
    """An ``opener`` for :func:`open` that creates the file with mode 0600."""
    return os.open(path, flags, PRIVATE_FILE_MODE)


def create_private(path: str | os.PathLike[str]) -> BinaryIO:
    """Open ``path`` for writing (truncating it), created with mode 0600."""
    return cast(BinaryIO, open(path, "wb", opener=private_opener))  # noqa: SIM115 - caller closes
