"""The file commands of the CLI: ``keelfs put|get|cat|ls|mkdir|rm|expunge|mv|stat|du|setrep``,
``quota set|clear|show``, ``chmod|chown|chgrp``, ``checksum`` and ``touch``.

Each takes ``--address`` (any config server or master, or several separated by commas; without
it ``$KEELFS_ADDRESS``, else the running ``keelfs local-cluster``, else ``127.0.0.1:7001``: the
client finds the rest through the node registry; ``keelfs.client.connect``) and ``--json``
(one JSON object per result, for scripts), and ``--user`` (with TLS whose certificate to
present, without TLS who to act as; else ``$KEELFS_USER``, else the OS user).
Exit codes: 0 done, 1 the operation failed (one line: the path and what is wrong), 2 usage.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from keelfs.cli.admin import address_option, open_cluster
from keelfs.errors import DirectoryNotEmpty, InvalidPath, KeelError, NotFound

if TYPE_CHECKING:
    from keelfs.datapath.file_checksum import FileChecksum
    from keelfs.meta.records import FileInfo

__all__ = ["FILE_COMMANDS"]

_MESSAGES = {
    "NOT_FOUND": "no such file or directory",
    "ALREADY_EXISTS": "already exists",
    "NOT_A_DIRECTORY": "not a directory",
    "IS_A_DIRECTORY": "is a directory",
    "DIRECTORY_NOT_EMPTY": "directory not empty (use -r)",
    "LEASE_CONFLICT": "being written by another client",
    "SESSION_EXPIRED": "the write's lease expired (another client may have taken over)",
    "PERMISSION_DENIED": "permission denied",
}


class Failed(click.ClickException):
    """The operation failed: one line on stderr (``keelfs: PATH: what is wrong``), status 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"keelfs: {self.format_message()}", err=True)


def _options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--json", "as_json", is_flag=True, help="Print JSON instead.")(f)
    return address_option(f)


@contextmanager
def _client(address: str | None, path: str = "") -> Iterator[Any]:
    """A connected client (``open_cluster``: the same ``--address`` as ``keelfs admin``); a
    ``KeelError`` becomes one line and exit status 1."""
    from keelfs.client.admin_client import Unreachable

    try:
        cluster = open_cluster(address)
    except Unreachable as exc:
        raise Failed(str(exc)) from None
    try:
        yield cluster.client
    except InvalidPath as exc:
        raise Failed(f"{exc.path or path}: invalid path ({exc.reason})") from None
    except KeelError as exc:
        what = _MESSAGES.get(exc.code)
        where = exc.details.get("path") or exc.details.get("name") or path
        line = f"{where}: {what}" if what and where else str(exc)
        raise Failed(line) from None
    except OSError as exc:  # the local side of put/get: a missing directory, no permission
        where = exc.filename if exc.filename is not None else path
        raise Failed(f"{where}: {(exc.strerror or str(exc)).lower()}") from None
    finally:
        cluster.close()


def _info(i: FileInfo) -> dict[str, Any]:
    d = asdict(i)
    d["blocks"] = [asdict(b) for b in i.blocks]
    d["acl"] = [e.to_text() for e in i.acl]
    return d


def _writer(i: FileInfo) -> str:
    """Whether the file is open for writing, and by whom (the user, never a session id)."""
    if not i.under_construction:
        return "no"
    return f"yes, by {i.lease_user}" if i.lease_user else "yes"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _mode(i: FileInfo) -> str:
    bits = "".join(c if i.mode & (1 << (8 - n)) else "-" for n, c in enumerate("rwxrwxrwx"))
    return ("d" if i.is_dir else "-") + bits + ("+" if i.acl else "")  # + : an ACL (HDFS's)


def _bar() -> Progress:
    """A progress bar on stderr, shown only on a terminal (no stray lines in pipes and logs)."""
    console = Console(stderr=True)
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


@click.command("put")
@click.argument("local", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("remote")
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing file.")
@click.option("--replication", type=click.IntRange(1, 32), default=None)
@_options
def put_cmd(
    local: Path,
    remote: str,
    force: bool,
    replication: int | None,
    address: str | None,
    as_json: bool,
) -> None:
    """Copy a local file into keelfs."""
    with _client(address, remote) as fs, _bar() as bar:
        task = bar.add_task(f"put {remote}", total=local.stat().st_size)
        n = fs.put(
            local,
            remote,
            overwrite=force,
            replication=replication,
            progress=lambda done: bar.update(task, completed=done),
        )
    click.echo(json.dumps({"path": remote, "bytes": n}) if as_json else f"{remote}: {n} bytes")


@click.command("get")
@click.argument("remote")
@click.argument("local", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--verify",
    is_flag=True,
    help="Compare the copy's checksum with the file's (keelfs checksum); a mismatch removes "
    "the copy and fails.",
)
@_options
def get_cmd(remote: str, local: Path, verify: bool, address: str | None, as_json: bool) -> None:
    """Copy a file out of keelfs."""
    if not local.absolute().parent.is_dir():  # before any transfer, naming what is missing
        raise Failed(f"{local.absolute().parent}: no such file or directory")
    with _client(address, remote) as fs:
        info = fs.stat(remote)
        with _bar() as bar:
            task = bar.add_task(f"get {remote}", total=info.length)
            n = fs.get(remote, local, progress=lambda done: bar.update(task, completed=done))
        checksum = _verified(fs, remote, local, info) if verify else None
    if as_json:
        out: dict[str, Any] = {"path": str(local), "bytes": n}
        if checksum is not None:
            out["checksum"] = checksum.to_json()
        click.echo(json.dumps(out))
    else:
        click.echo(f"{local}: {n} bytes" + (", checksum verified" if checksum else ""))


def _verified(fs: Any, remote: str, local: Path, info: FileInfo) -> FileChecksum:
    """The file's checksum, once the local copy's (cut as the file's blocks were when it was
    copied) equals it; else the copy is removed and the command fails."""
    from keelfs.client.checksums import local_checksum

    expected = fs.checksum(remote)
    try:
        got = local_checksum(local, info, expected.bytes_per_crc)
    except ValueError:
        got = None
    if got == expected:
        return expected
    local.unlink(missing_ok=True)
    changed = fs.stat(remote)
    why = (
        "the file changed while it was copied"
        if (changed.length, changed.blocks, changed.mtime) != (info.length, info.blocks, info.mtime)
        else f"{expected.algorithm} {expected.hex} expected, the copy has "
        f"{got.hex if got else 'another length'}"
    )
    raise Failed(f"{remote}: checksum mismatch ({why}); {local} removed")


@click.command("cat")
@click.argument("path")
@_options
def cat_cmd(path: str, address: str | None, as_json: bool) -> None:
    """Write a file's content to standard output (with --json: one object, the content as
    base64)."""
    with _client(address, path) as fs, fs.open(path, "rb") as f:
        if as_json:
            data = f.read()
            b64 = base64.b64encode(data).decode()
            click.echo(json.dumps({"path": path, "length": len(data), "base64": b64}))
            return
        out = sys.stdout.buffer
        while piece := f.read(1 << 20):
            out.write(piece)
        out.flush()


@click.command("ls")
@click.argument("path", default="/")
@click.option(
    "-l", "long", is_flag=True, help="Long form: mode, replication, owner, group, size, time."
)
@click.option(
    "-u", "access_time", is_flag=True, help="With -l: the access time instead of modification."
)
@click.option("-R", "recursive", is_flag=True, help="Everything below, directory by directory.")
@_options
def ls_cmd(
    path: str,
    long: bool,
    access_time: bool,
    recursive: bool,
    address: str | None,
    as_json: bool,
) -> None:
    """List a directory (a file lists as itself). With -l, as ``hdfs dfs -ls``: mode,
    replication (- for a directory), owner, group, size, modification time (UTC), name."""
    with _client(address, path) as fs:
        todo = [path]
        while todo:
            directory = todo.pop(0)
            entries = list(fs.ls(directory))
            if recursive:
                todo += [e.path for e in entries if e.is_dir and e.path != directory]
            if as_json:
                for e in entries:
                    click.echo(json.dumps(_info(e), sort_keys=True))
                continue
            if recursive:
                gap = "" if directory == path else "\n"  # a blank line between directories
                click.echo(f"{gap}{directory}:")
            if not long:
                for e in entries:
                    click.echo(e.name + ("/" if e.is_dir else ""))
                continue
            for line in _long_lines(entries, access_time):
                click.echo(line)


def _long_lines(entries: list[FileInfo], access_time: bool) -> list[str]:
    """``ls -l``'s lines, as ``hdfs dfs -ls``: mode, replication (- for a directory), owner,
    group, size, time (UTC), name; columns aligned (numbers to the right), the name never cut
    whatever the terminal's width."""
    rows = [
        (
            _mode(e), "-" if e.is_dir else str(e.replication), e.owner, e.group, str(e.length),
            _when(e.atime if access_time else e.mtime), e.name + ("/" if e.is_dir else ""),
        )
        for e in entries
    ]  # fmt: skip
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(6)]
    right = (False, True, False, False, True, False)

    def line(row: tuple[str, ...]) -> str:
        cells = zip(row[:6], widths, right, strict=True)
        return " ".join([*(c.rjust(w) if r else c.ljust(w) for c, w, r in cells), row[6]])

    return [line(row) for row in rows]


@click.command("mkdir")
@click.argument("path")
@click.option("-p", "parents", is_flag=True, help="Create missing parents; no error if it exists.")
@_options
def mkdir_cmd(path: str, parents: bool, address: str | None, as_json: bool) -> None:
    """Create a directory."""
    with _client(address, path) as fs:
        created = fs.mkdir(path, parents=parents)
    click.echo(json.dumps({"created": created}) if as_json else "\n".join(created))


@click.command("rm")
@click.argument("path")
@click.option("-r", "recursive", is_flag=True, help="A directory and everything in it.")
@click.option("--skip-trash", is_flag=True, help="Delete at once instead of moving to the trash.")
@_options
def rm_cmd(
    path: str, recursive: bool, skip_trash: bool, address: str | None, as_json: bool
) -> None:
    """Remove a file or a directory: moved to your trash (/.Trash/USER/Current/PATH, kept for
    the cluster's trash interval; `keelfs expunge` empties it), or deleted at once with
    --skip-trash, when the cluster has no trash, or for a path in the trash already."""
    with _client(address, path) as fs:
        where = None if skip_trash else _to_trash(fs, path, recursive)
        if where is not None:
            if as_json:
                click.echo(json.dumps({"path": path, "trash": where}, sort_keys=True))
            else:
                click.echo(f"{path}: moved to trash at {where}")
            return
        result = fs.delete(path, recursive=recursive)
    if as_json:
        click.echo(json.dumps({"path": path, **asdict(result)}, sort_keys=True))


def _to_trash(fs: Any, path: str, recursive: bool) -> str | None:
    """Move ``path`` to the trash (None: not moved, delete it). A directory with something
    in it needs -r, as for a delete."""
    if not recursive and fs.stat(path).is_dir and next(iter(fs.ls(path)), None) is not None:
        raise DirectoryNotEmpty(path)
    where: str | None = fs.move_to_trash(path)
    return where


@click.command("expunge")
@click.option(
    "--immediate", is_flag=True, help="Delete everything in your trash now, Current included."
)
@_options
def expunge_cmd(immediate: bool, address: str | None, as_json: bool) -> None:
    """Empty your trash: delete the checkpoints older than the trash interval and make
    Current a new checkpoint (as `hdfs dfs -expunge`); the masters do this every interval."""
    with _client(address) as fs:
        deleted = fs.expunge(immediate=immediate)
    if as_json:
        click.echo(json.dumps({"deleted": deleted}))
    else:
        for checkpoint in deleted:
            click.echo(f"deleted {checkpoint}")


@click.command("mv")
@click.argument("src")
@click.argument("dst")
@_options
def mv_cmd(src: str, dst: str, address: str | None, as_json: bool) -> None:
    """Rename a file or directory (atomic, across shards too); into DST when DST is an
    existing directory, as mv does."""
    with _client(address, src) as fs:
        try:
            into = fs.stat(dst).is_dir
        except NotFound:
            into = False
        if into:
            dst = dst.rstrip("/") + "/" + src.rstrip("/").rsplit("/", 1)[-1]
        fs.rename(src, dst)
    if as_json:
        click.echo(json.dumps({"src": src, "dst": dst}))


@click.command("stat")
@click.argument("path")
@_options
def stat_cmd(path: str, address: str | None, as_json: bool) -> None:
    """A file's or directory's attributes and blocks."""
    with _client(address, path) as fs:
        i = fs.stat(path)
    if as_json:
        click.echo(json.dumps(_info(i), sort_keys=True))
        return
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("path", i.path), ("kind", i.kind), ("size", str(i.length)), ("mode", _mode(i)),
        ("owner", f"{i.owner}:{i.group}"), ("modified", _when(i.mtime)),
        ("replication", str(i.replication)), ("block size", str(i.block_size)),
        ("blocks", str(len(i.blocks))),
        ("being written", _writer(i)),
    ]  # fmt: skip
    for row in rows:
        table.add_row(*row)
    Console().print(table, highlight=False)


@click.command("checksum")
@click.argument("path")
@click.option(
    "--composite",
    is_flag=True,
    help="HDFS's COMPOSITE_CRC mode: the whole file's CRC32C, whatever the block size.",
)
@_options
def checksum_cmd(path: str, composite: bool, address: str | None, as_json: bool) -> None:
    """A file's checksum: HDFS's MD5-of-MD5-of-CRC32C, as ``hdfs dfs -checksum`` and WebHDFS
    give it, from the chunk servers' stored CRCs (the data is not read). Equal files written
    with equal block sizes have equal checksums; with --composite (COMPOSITE-CRC32C) equal
    files have equal checksums whatever their block sizes."""
    with _client(address, path) as fs:
        c = fs.checksum(path, mode="COMPOSITE_CRC" if composite else "MD5MD5CRC")
    if as_json:
        click.echo(json.dumps({"path": path, **c.to_json()}, sort_keys=True))
    else:
        click.echo(f"{path}\t{c.algorithm}\t{c.hex}")


def _parse_time(value: str) -> int:
    """``now``, seconds since the epoch (``1700000000`` or ``@1700000000.5``), or ISO 8601
    (``2024-05-01``, ``2024-05-01T12:00:00``, with an offset or ``Z``; without one: UTC, the
    zone ``ls -l`` shows) -> ms since the epoch."""
    text = value.strip()
    if text == "now":
        return int(datetime.now(UTC).timestamp() * 1000)
    try:
        seconds = float(text.removeprefix("@"))
    except ValueError:
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise click.BadParameter(
                f"{value!r}: give now, seconds since the epoch, or an ISO 8601 time "
                "such as 2024-05-01T12:00:00Z"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp()
    if not 0 <= seconds < 2**53 / 1000:
        raise click.BadParameter(f"{value!r} is before 1970 or too far ahead")
    return int(seconds * 1000)


class _Time(click.ParamType):
    name = "TIME"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        return value if isinstance(value, int) else _parse_time(str(value))


@click.command("touch")
@click.argument("path")
@click.option("-m", "--mtime", type=_Time(), default=None, help="Set the modification time.")
@click.option("-a", "--atime", type=_Time(), default=None, help="Set the access time.")
@_options
def touch_cmd(
    path: str, mtime: int | None, atime: int | None, address: str | None, as_json: bool
) -> None:
    """Create an empty file if PATH does not exist; set its times (both to now unless -m or
    -a say which, and when). TIME: now, seconds since the epoch, or ISO 8601 (UTC unless it
    says)."""
    import contextlib

    from keelfs.errors import AlreadyExists

    if mtime is None and atime is None:
        mtime = atime = _parse_time("now")
    with _client(address, path) as fs:
        try:
            fs.stat(path)
        except NotFound:
            with contextlib.suppress(AlreadyExists):  # created meanwhile: touch it as it is
                fs.write_bytes(path, b"")
        i = fs.set_times(path, mtime=mtime, atime=atime)
    if as_json:
        click.echo(json.dumps(_info(i), sort_keys=True))


@click.command("du")
@click.argument("path", default="/")
@_options
def du_cmd(path: str, address: str | None, as_json: bool) -> None:
    """Bytes, files and directories under a path (and the space their replicas take), and
    the directory's quota if it has one."""
    with _client(address, path) as fs:
        s = fs.du(path)
        quota = fs.quota(path) if s.directory_count else None
    has_quota = quota is not None and (
        quota.names_limit is not None or quota.space_limit is not None
    )
    if as_json:
        out: dict[str, Any] = {"path": path, **asdict(s)}
        if has_quota:
            out["quota"] = _quota_dict(quota)
        click.echo(json.dumps(out, sort_keys=True))
        return
    click.echo(
        f"{s.length} bytes in {s.file_count} files, {s.directory_count} directories "
        f"({s.space_consumed} bytes with replicas)  {path}"
    )
    if has_quota:
        click.echo(_quota_line(quota))


def _quota_dict(q: Any) -> dict[str, Any]:
    return {
        "path": q.path,
        "names_limit": q.names_limit,
        "names_used": q.names_used,
        "names_remaining": q.names_remaining,
        "space_limit": q.space_limit,
        "space_used": q.space_used,
        "space_remaining": q.space_remaining,
    }


def _quota_line(q: Any) -> str:
    def part(what: str, limit: int | None, used: int, left: int | None) -> str:
        if limit is None:
            return f"{what}: no quota ({used} used)"
        return f"{what}: {used} of {limit} used, {left} remaining"

    names = part("names", q.names_limit, q.names_used, q.names_remaining)
    space = part("space", q.space_limit, q.space_used, q.space_remaining)
    return f"quota of {q.path}: {names}; {space}"


@click.group("quota")
def quota_group() -> None:
    """Directory quotas (HDFS's): how many names (files and directories, the directory
    included) and how much space (bytes times replication) a directory's subtree may hold.
    Setting and clearing them is for superusers."""


@quota_group.command("set")
@click.argument("path")
@click.option("--names", type=click.IntRange(1), default=None, help="Files and directories.")
@click.option("--space", type=click.IntRange(0), default=None, help="Bytes times replication.")
@_options
def quota_set_cmd(
    path: str, names: int | None, space: int | None, address: str | None, as_json: bool
) -> None:
    """Set PATH's quota (a limit not given is removed)."""
    if names is None and space is None:
        raise click.UsageError("give --names and/or --space (or use `keelfs quota clear`)")
    with _client(address, path) as fs:
        fs.set_quota(path, names=names, space=space)
        q = fs.quota(path)
    click.echo(json.dumps(_quota_dict(q), sort_keys=True) if as_json else _quota_line(q))


@quota_group.command("clear")
@click.argument("path")
@_options
def quota_clear_cmd(path: str, address: str | None, as_json: bool) -> None:
    """Remove PATH's name and space quotas."""
    with _client(address, path) as fs:
        fs.clear_quota(path)
    if as_json:
        click.echo(json.dumps({"path": path, "cleared": True}))


@quota_group.command("show")
@click.argument("path")
@_options
def quota_show_cmd(path: str, address: str | None, as_json: bool) -> None:
    """PATH's quotas: limit, used and remaining (as `hdfs dfs -count -q`)."""
    with _client(address, path) as fs:
        q = fs.quota(path)
    click.echo(json.dumps(_quota_dict(q), sort_keys=True) if as_json else _quota_line(q))


@click.command("setrep")
@click.argument("replication", type=click.IntRange(1, 32))
@click.argument("path")
@_options
def setrep_cmd(replication: int, path: str, address: str | None, as_json: bool) -> None:
    """Set a file's replication (the masters copy or delete replicas to match)."""
    with _client(address, path) as fs:
        i = fs.set_replication(path, replication)
    if as_json:
        click.echo(json.dumps(_info(i), sort_keys=True))
    else:
        click.echo(f"{path}: replication {i.replication}")


def _walk(fs: Any, path: str, recursive: bool) -> Iterator[str]:
    """``path``, then with ``recursive`` everything below it (directories before what they
    hold)."""
    yield path
    if not recursive or not fs.stat(path).is_dir:
        return
    todo = [path]
    while todo:
        directory = todo.pop(0)
        for e in fs.ls(directory):
            if e.path == directory:
                continue
            yield e.path
            if e.is_dir:
                todo.append(e.path)


def _change(
    address: str | None,
    path: str,
    recursive: bool,
    as_json: bool,
    change: Callable[[Any, str], FileInfo],
) -> None:
    with _client(address, path) as fs:
        for each in _walk(fs, path, recursive):
            i = change(fs, each)
            if as_json:
                click.echo(json.dumps(_info(i), sort_keys=True))


def _parse_mode(value: str) -> int:
    try:
        mode = int(value, 8)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an octal mode such as 750") from None
    if not 0 <= mode <= 0o7777:
        raise click.BadParameter(f"{value} is not a mode (0 to 7777)")
    return mode


_RECURSIVE = click.option("-R", "recursive", is_flag=True, help="Everything below as well.")


@click.command("chmod")
@click.argument("mode")
@click.argument("path")
@_RECURSIVE
@_options
def chmod_cmd(mode: str, path: str, recursive: bool, address: str | None, as_json: bool) -> None:
    """Set the permission bits (octal, e.g. 750); the owner or a superuser only."""
    bits = _parse_mode(mode)
    _change(address, path, recursive, as_json, lambda fs, p: fs.chmod(p, bits))


@click.command("chown")
@click.argument("owner")
@click.argument("path")
@_RECURSIVE
@_options
def chown_cmd(owner: str, path: str, recursive: bool, address: str | None, as_json: bool) -> None:
    """Set the owner, as USER or USER:GROUP (a superuser only; HDFS's rule)."""
    user, _, group = owner.partition(":")
    new_owner, new_group = user or None, group or None
    if new_owner is None and new_group is None:
        raise click.BadParameter("give USER, USER:GROUP or :GROUP")
    _change(address, path, recursive, as_json, lambda fs, p: fs.chown(p, new_owner, new_group))


@click.command("chgrp")
@click.argument("group")
@click.argument("path")
@_RECURSIVE
@_options
def chgrp_cmd(group: str, path: str, recursive: bool, address: str | None, as_json: bool) -> None:
    """Set the group (the owner, to a group it is in, or a superuser)."""
    _change(address, path, recursive, as_json, lambda fs, p: fs.chown(p, None, group))


FILE_COMMANDS = [
    put_cmd, get_cmd, cat_cmd, ls_cmd, mkdir_cmd, rm_cmd, expunge_cmd, mv_cmd, stat_cmd, du_cmd,
    setrep_cmd, quota_group, chmod_cmd, chown_cmd, chgrp_cmd,
]  # fmt: skip
FILE_COMMANDS += [checksum_cmd, touch_cmd]
