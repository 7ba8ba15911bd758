"""keelfs paths: what is valid, the one canonical spelling, and how a path splits.

A valid path is absolute (``/`` first), UTF-8 encodable, at most ``MAX_PATH_BYTES`` bytes, and
every component is a non-empty name of at most ``MAX_NAME_BYTES`` bytes that is not ``.`` or
``..`` and holds no ``/``, NUL or other control character (Unicode category ``Cc``: C0, DEL,
C1). One trailing ``/`` is accepted and dropped (``/a/`` is ``/a``), as HDFS's ``Path`` does;
an empty component anywhere else (``//``, ``/a//b``) is an error rather than silently merged,
so that two spellings never name one file and a typo does not land somewhere unexpected.
``.``/``..`` are refused rather than resolved for the same reason: the namespace has no
symlinks, and a server that resolves ``..`` invites clients to build paths by string surgery.

Nothing here is Unicode-normalised: names are compared as UTF-8 bytes (as HDFS compares Java
strings), so ``é`` precomposed and decomposed are two names.

``validate``/``normalize`` raise ``keelfs.errors.InvalidPath`` with a ``reason``; the other
helpers expect a normalised path.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from keelfs.errors import InvalidPath

__all__ = [
    "MAX_NAME_BYTES",
    "MAX_PATH_BYTES",
    "ROOT",
    "SNAPSHOT_DIR",
    "SnapshotPath",
    "ancestors",
    "is_ancestor",
    "is_root",
    "join",
    "live_path",
    "name",
    "normalize",
    "parent",
    "routing_key",
    "snapshot_path",
    "split",
    "validate",
    "validate_name",
]

ROOT = "/"
SNAPSHOT_DIR = ".snapshot"
"""The reserved name under a snapshottable directory through which its snapshots are read
(HDFS's ``/dir/.snapshot/<name>/...``): no entry may be named so (``keelfs.meta.snapshots``)."""
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096


def _control(ch: str) -> bool:
    return unicodedata.category(ch) == "Cc"


def validate_name(component: str, path: str | None = None) -> None:
    """Check one path component (a file or directory name)."""
    where = component if path is None else path
    if not isinstance(component, str):
        raise InvalidPath(repr(component), "a name must be a string")
    if component == "":
        raise InvalidPath(where, "empty name")
    if component in (".", ".."):
        raise InvalidPath(where, f"{component!r} is not allowed as a name")
    if "/" in component:
        raise InvalidPath(where, "a name must not contain '/'")
    if "\x00" in component:
        raise InvalidPath(where, "NUL character")
    if component.isascii() and component.isprintable():
        size = len(component)  # the common case: no control character, one byte each
    else:
        bad = next((ch for ch in component if _control(ch)), None)
        if bad is not None:
            raise InvalidPath(where, f"control character U+{ord(bad):04X}")
        try:
            size = len(component.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidPath(where, "not encodable as UTF-8 (lone surrogate)") from None
    if size > MAX_NAME_BYTES:
        raise InvalidPath(where, f"name of {size} bytes (at most {MAX_NAME_BYTES})")


def normalize(path: str) -> str:
    """The canonical spelling of ``path``, or ``InvalidPath`` saying why there is none."""
    if not isinstance(path, str):
        raise InvalidPath(repr(path), f"a path must be a string, not {type(path).__name__}")
    return _normalize(path)


@lru_cache(maxsize=4096)
def _normalize(path: str) -> str:
    if path == "":
        raise InvalidPath(path, "empty path")
    if not path.startswith("/"):
        raise InvalidPath(path, "not absolute (must start with '/')")
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidPath(path, "not encodable as UTF-8 (lone surrogate)") from None
    if size > MAX_PATH_BYTES:
        raise InvalidPath(path, f"path of {size} bytes (at most {MAX_PATH_BYTES})")
    if path == ROOT:
        return ROOT
    body = path[1:-1] if path.endswith("/") else path[1:]
    if body == "" or "//" in path:
        raise InvalidPath(path, "empty component ('//')")
    for component in body.split("/"):
        validate_name(component, path)
    return "/" + body


def validate(path: str) -> str:
    """Same as ``normalize``: returns the canonical path, raises ``InvalidPath``."""
    return normalize(path)


def is_root(path: str) -> bool:
    return path == ROOT


def split(path: str) -> list[str]:
    """The components of a normalised path: ``/a/b`` -> ``["a", "b"]``, ``/`` -> ``[]``."""
    return [] if path == ROOT else path[1:].split("/")


def parent(path: str) -> str:
    """The parent directory of a normalised path; the root has none (``InvalidPath``)."""
    if path == ROOT:
        raise InvalidPath(path, "the root has no parent")
    cut = path.rindex("/")
    return ROOT if cut == 0 else path[:cut]


def name(path: str) -> str:
    """The last component of a normalised path (``""`` for the root)."""
    return path[path.rindex("/") + 1 :]


def join(directory: str, child: str) -> str:
    """``directory`` + ``/`` + ``child`` for a normalised directory and a valid name."""
    return directory + child if directory == ROOT else f"{directory}/{child}"


def ancestors(path: str) -> list[str]:
    """Every proper ancestor, outermost first: ``/a/b/c`` -> ``["/", "/a", "/a/b"]``."""
    out = [ROOT]
    for component in split(path)[:-1]:
        out.append(join(out[-1], component))
    return out if path != ROOT else []


def is_ancestor(ancestor: str, path: str) -> bool:
    """Whether ``ancestor`` is a proper ancestor of ``path`` (both normalised)."""
    if ancestor == path:
        return False
    if ancestor == ROOT:
        return True
    return path.startswith(ancestor + "/")


def routing_key(path: str) -> str:
    """The string the hash ring places ``path`` by: its parent directory (so one directory's
    entries share a shard), and for the root itself, ``/``."""
    return ROOT if path == ROOT else parent(path)


@dataclass(frozen=True, slots=True)
class SnapshotPath:
    """A normalised path that reads through a snapshot: ``root/.snapshot`` (``name`` None:
    the list of ``root``'s snapshots) or ``root/.snapshot/name[/rest]``; ``live`` is the path
    the record had when the snapshot was taken (``root/rest``, or ``root``)."""

    root: str
    name: str | None
    live: str


def snapshot_path(path: str) -> SnapshotPath | None:
    """The snapshot ``path`` reads through (its first ``.snapshot`` component), or None for
    an ordinary path (normalised)."""
    if "/" + SNAPSHOT_DIR not in path:
        return None
    parts = split(path)
    if SNAPSHOT_DIR not in parts:
        return None
    i = parts.index(SNAPSHOT_DIR)
    root = "/" + "/".join(parts[:i])
    if len(parts) == i + 1:
        return SnapshotPath(root, None, root)
    live = "/" + "/".join(parts[:i] + parts[i + 2 :])
    return SnapshotPath(root, parts[i + 1], live)


def live_path(path: str) -> str:
    """Where the records ``path`` reads are placed: a snapshot path's ``live`` path (the
    copies of a snapshot stay on the shards of the paths they were taken from), else
    ``path`` itself."""
    snap = snapshot_path(path)
    return path if snap is None else snap.live
