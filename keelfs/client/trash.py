"""The trash, as HDFS keeps it: where ``rm`` puts what it removes, and how that ages out.

Layout (``TRASH_ROOT`` is ``/.Trash``; HDFS keeps ``/user/<user>/.Trash``, keelfs has no
home directories)::

    /.Trash                                  0711, the superuser's: users may pass, not list
    /.Trash/<user>                           0700, the user's: nobody else reads it
    /.Trash/<user>/Current/<original path>   what rm moved there (one rename, atomic)
    /.Trash/<user>/<yyMMddHHmmss>/...        a checkpoint: Current renamed when emptied

``/.Trash`` and ``/.Trash/<user>`` are made by a master for the user on the first ``rm``
(``Mkdir`` of a path under the caller's own trash: ``keelfs.master.namespace_service``),
owned as above, so no user can make another's trash or read it. A name that is taken in
``Current`` (the same path removed twice) gets the time in ms appended, as HDFS does; so does
a directory of the original path that is a file in ``Current``.

Emptying (``expunge``, and the masters every interval: ``keelfs.master.trash_emptier``):
checkpoints older than the trash interval are deleted, then ``Current`` becomes a checkpoint
named by the time. A file removed at time t is thus deleted between one and two intervals
after t (HDFS's rule). ``immediate``: every checkpoint goes, ``Current`` included.

The steps are written once, as generators of client calls (``Call``), driven by the sync
client (:func:`run_sync`) and the asyncio one (:func:`run_async`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from keelfs.errors import (
    AlreadyExists,
    InvalidArgument,
    KeelError,
    NotADirectory,
    NotFound,
    Unavailable,
)
from keelfs.meta import paths
from keelfs.meta.principals import check_principal

__all__ = [
    "CURRENT",
    "DEFAULT_TRASH_INTERVAL_MS",
    "TRASH_HOME_MODE",
    "TRASH_ROOT",
    "TRASH_ROOT_MODE",
    "Call",
    "checkpoint_name",
    "checkpoint_time_ms",
    "expunge_steps",
    "home",
    "home_owner",
    "in_trash",
    "inside_home",
    "move_steps",
    "run_async",
    "run_sync",
]

TRASH_ROOT = "/.Trash"
TRASH_ROOT_MODE = 0o711
TRASH_HOME_MODE = 0o700
CURRENT = "Current"
DEFAULT_TRASH_INTERVAL_MS = 24 * 3600 * 1000
"""One day: HDFS's own default is 0 (off), but most distributions turn it on with a day,
which is what an HDFS user expects of ``rm``; 0 turns the trash off."""
_CHECKPOINT_FORMAT = "%y%m%d%H%M%S"
_MAX_TRIES = 20
"""Names tried for one move or checkpoint before giving up (each taken one gets a suffix)."""


def home(user: str) -> str:
    """``/.Trash/<user>``: the trash of ``user``."""
    check_principal(user, "user")
    return paths.join(TRASH_ROOT, user)


def home_owner(path: str) -> str | None:
    """The user whose trash ``path`` (normalised) is in or is, else None."""
    if not paths.is_ancestor(TRASH_ROOT, path):
        return None
    return path[len(TRASH_ROOT) + 1 :].split("/", 1)[0]


def inside_home(user: str, path: str) -> bool:
    """Whether ``path`` (normalised) is below ``user``'s trash directory (not it)."""
    try:
        return paths.is_ancestor(home(user), path)
    except InvalidArgument:
        return False


def in_trash(path: str) -> bool:
    """Whether ``path`` is the trash or inside it (``rm`` deletes such paths at once)."""
    return path == TRASH_ROOT or paths.is_ancestor(TRASH_ROOT, path)


def checkpoint_name(now_ms: int) -> str:
    """The name of a checkpoint made at ``now_ms`` (UTC, ``yyMMddHHmmss`` as HDFS)."""
    return datetime.fromtimestamp(now_ms / 1000, UTC).strftime(_CHECKPOINT_FORMAT)


def checkpoint_time_ms(name: str) -> int | None:
    """When the checkpoint ``name`` was made (ms), or None if ``name`` is not a checkpoint
    (``Current``, or something a user put there). A ``-N`` suffix (two checkpoints in one
    second) is allowed."""
    stem = name.split("-", 1)[0]
    if len(stem) != 12 or not stem.isdigit():
        return None
    try:
        when = datetime.strptime(stem, _CHECKPOINT_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(when.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Call:
    """One call of the client: ``method`` of ``Client``/``AsyncClient`` (``ls`` answers a
    list), with these arguments."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()


Steps = Generator[Call, Any, Any]


def _call(method: str, *args: Any, **kwargs: Any) -> Call:
    return Call(method, args, tuple(kwargs.items()))


def _replaced(path: str, taken: str, now_ms: int) -> str:
    """``path`` with its ancestor-or-self ``taken`` renamed ``taken<now_ms>`` (HDFS)."""
    return taken + str(now_ms) + path[len(taken) :]


def move_steps(user: str, path: str, now: Callable[[], int]) -> Steps:
    """Move ``path`` into ``user``'s trash; the generator returns where it went, or None when
    ``path`` is in the trash already (the caller deletes it then, as HDFS's ``rm``)."""
    path = paths.normalize(path)
    if in_trash(path):
        return None
    if path == paths.ROOT:
        raise InvalidArgument("cannot move / to the trash: it holds the trash", "path")
    top = paths.join(home(user), CURRENT)
    yield _call("stat", path)  # NotFound before any directory is made
    for _ in range(_MAX_TRIES):
        directory = yield from _made_directory(top, path, now)
        target = paths.join(directory, paths.name(path))
        for _ in range(_MAX_TRIES):
            try:
                yield _call("rename", path, target)
                return target
            except AlreadyExists:
                target = paths.join(directory, paths.name(path) + str(now()))
            except NotFound as exc:
                # Either the file is gone (the stat says so, and that is the answer) or the
                # directory just made is: the emptier turned Current into a checkpoint between
                # the mkdir and the rename (HDFS's trash retries the same way). Again.
                missing = exc.details.get("name") or ""
                if not (missing == top or paths.is_ancestor(top, missing)):
                    raise
                yield _call("stat", path)
                break
        else:
            raise AlreadyExists(target, message=f"no free name in the trash for {path}")
    raise Unavailable(
        "trash changing", message=f"the trash changed under every try to move {path} there"
    )


def _made_directory(top: str, path: str, now: Callable[[], int]) -> Steps:
    """Make ``path``'s parent directories under the trash's ``top`` (``Current``); returns the
    directory made, renamed as HDFS does where a file of the trash was in the way."""
    directory = top + paths.parent(path) if paths.parent(path) != paths.ROOT else top
    for _ in range(_MAX_TRIES):
        try:
            yield _call("mkdir", directory, parents=True, mode=TRASH_HOME_MODE)
            return directory
        except (AlreadyExists, NotADirectory) as exc:
            taken = exc.details.get("name") or exc.details.get("path") or directory
            if not (taken == directory or paths.is_ancestor(taken, directory)):
                raise
            if taken == top or not paths.is_ancestor(top, taken):
                raise  # Current itself is a file: not ours to rename
            directory = _replaced(directory, taken, now())
    raise AlreadyExists(directory, message=f"no free name in the trash for {path}")


def expunge_steps(trash_home: str, interval_ms: int, now_ms: int, immediate: bool) -> Steps:
    """Empty one user's trash (``trash_home``): checkpoints older than ``interval_ms`` are
    deleted, then ``Current`` becomes a checkpoint (``immediate``: first the checkpoint, then
    every checkpoint is deleted). The generator returns the paths deleted."""
    deleted: list[str] = []
    if immediate:
        yield from _checkpoint(trash_home, now_ms)
    try:
        entries = yield _call("ls", trash_home)
    except NotFound:
        return deleted
    for entry in entries:
        made = checkpoint_time_ms(entry.name)
        if made is None or not entry.is_dir:
            continue
        if immediate or now_ms - made >= interval_ms:
            try:
                yield _call("delete", entry.path, recursive=True)
            except NotFound:
                continue  # another emptier was first
            deleted.append(entry.path)
    if not immediate:
        yield from _checkpoint(trash_home, now_ms)
    return deleted


def _checkpoint(trash_home: str, now_ms: int) -> Steps:
    """``Current`` renamed to a checkpoint of ``now_ms`` (nothing if there is no Current)."""
    current = paths.join(trash_home, CURRENT)
    name = checkpoint_name(now_ms)
    for attempt in range(_MAX_TRIES):
        target = paths.join(trash_home, name if attempt == 0 else f"{name}-{attempt}")
        try:
            yield _call("rename", current, target)
            return
        except NotFound:
            return
        except AlreadyExists:
            continue
    raise AlreadyExists(current, message=f"no free checkpoint name in {trash_home}")


def run_sync(client: Any, steps: Steps) -> Any:
    """Drive ``steps`` with a sync ``Client``."""
    try:
        call = next(steps)
        while True:
            try:
                value = getattr(client, call.method)(*call.args, **dict(call.kwargs))
                if call.method == "ls":
                    value = list(value)
            except KeelError as exc:
                call = steps.throw(exc)
                continue
            call = steps.send(value)
    except StopIteration as stop:
        return stop.value


async def run_async(client: Any, steps: Steps) -> Any:
    """Drive ``steps`` with an ``AsyncClient``."""
    try:
        call = next(steps)
        while True:
            try:
                method = getattr(client, call.method)
                if call.method == "ls":
                    value: Any = [e async for e in method(*call.args, **dict(call.kwargs))]
                else:
                    awaited: Awaitable[Any] = method(*call.args, **dict(call.kwargs))
                    value = await awaited
            except KeelError as exc:
                call = steps.throw(exc)
                continue
            call = steps.send(value)
    except StopIteration as stop:
        return stop.value


def now_ms() -> int:
    return int(time.time() * 1000)
