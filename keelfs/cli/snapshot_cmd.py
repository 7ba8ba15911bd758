"""The snapshot commands of the CLI (HDFS's): ``keelfs snapshot create|delete|list|diff`` and
``keelfs admin allow-snapshot|disallow-snapshot``. A snapshot is read through
``DIR/.snapshot/NAME/...`` with the ordinary commands (``ls``, ``cat``, ``get``, ``stat``).
Options and exit codes as the file commands' (``keelfs.cli.fs_cmd``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from keelfs.cli.admin import admin
from keelfs.cli.fs_cmd import _client, _options

__all__ = ["SNAPSHOT_COMMANDS"]


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@admin.command("allow-snapshot")
@click.argument("path")
@_options
def allow_snapshot_cmd(path: str, address: str | None, as_json: bool) -> None:
    """Make directory PATH snapshottable (its owner or a superuser; as `hdfs dfsadmin
    -allowSnapshot`)."""
    with _client(address, path) as fs:
        fs.allow_snapshot(path)
    click.echo(json.dumps({"path": path, "snapshottable": True}) if as_json else
               f"Allowing snapshot on {path} succeeded")  # fmt: skip


@admin.command("disallow-snapshot")
@click.argument("path")
@_options
def disallow_snapshot_cmd(path: str, address: str | None, as_json: bool) -> None:
    """Make PATH not snapshottable (refused while it has snapshots)."""
    with _client(address, path) as fs:
        fs.disallow_snapshot(path)
    click.echo(json.dumps({"path": path, "snapshottable": False}) if as_json else
               f"Disallowing snapshot on {path} succeeded")  # fmt: skip


@click.group("snapshot")
def snapshot_group() -> None:
    """Read-only snapshots of a snapshottable directory (`keelfs admin allow-snapshot`),
    read through DIR/.snapshot/NAME/... ; the blocks a snapshot holds are kept until it is
    deleted."""


@snapshot_group.command("create")
@click.argument("path")
@click.argument("name", required=False)
@_options
def create_cmd(path: str, name: str | None, address: str | None, as_json: bool) -> None:
    """Take snapshot NAME of PATH (default sYYYYMMDD-HHMMSS.mmm, as HDFS). Running it again
    after a failure finishes the snapshot."""
    with _client(address, path) as fs:
        where = fs.create_snapshot(path, name)
    click.echo(json.dumps({"path": where}) if as_json else f"Created snapshot {where}")


@snapshot_group.command("delete")
@click.argument("path")
@click.argument("name")
@_options
def delete_cmd(path: str, name: str, address: str | None, as_json: bool) -> None:
    """Delete snapshot NAME of PATH (the blocks only it held are released)."""
    with _client(address, path) as fs:
        fs.delete_snapshot(path, name)
    if as_json:
        click.echo(json.dumps({"path": path, "deleted": name}))


@snapshot_group.command("rename")
@click.argument("path")
@click.argument("name")
@click.argument("new_name")
@_options
def rename_cmd(path: str, name: str, new_name: str, address: str | None, as_json: bool) -> None:
    """Rename snapshot NAME of PATH to NEW_NAME (as `hdfs dfs -renameSnapshot`). Running it
    again after a failure finishes the rename."""
    with _client(address, path) as fs:
        where = fs.rename_snapshot(path, name, new_name)
    click.echo(json.dumps({"path": where, "from": name}) if as_json else f"Renamed to {where}")


@snapshot_group.command("list")
@click.argument("path", required=False)
@_options
def list_cmd(path: str | None, address: str | None, as_json: bool) -> None:
    """The snapshots of PATH; without PATH, the snapshottable directories (as `hdfs
    lsSnapshottableDir`)."""
    with _client(address, path or "") as fs:
        if path is None:
            roots = fs.snapshottable_directories()
            click.echo(json.dumps({"snapshottable": roots}) if as_json else "\n".join(roots))
            return
        found = fs.list_snapshots(path)
    if as_json:
        rows = [{"name": s.name, "path": s.path, "created": s.created, "complete": s.complete}
                for s in found]  # fmt: skip
        click.echo(json.dumps({"path": path, "snapshots": rows}))
        return
    for s in found:
        note = "" if s.complete else "  (incomplete: run the create again, or delete it)"
        click.echo(f"{_when(s.created)}  {s.path}{note}")


@snapshot_group.command("diff")
@click.argument("path")
@click.argument("from_name", metavar="FROM")
@click.argument("to_name", metavar="TO")
@_options
def diff_cmd(path: str, from_name: str, to_name: str, address: str | None, as_json: bool) -> None:
    """What changed under PATH from snapshot FROM to TO ('.' for now), as `hdfs
    snapshotDiff`: + created, - deleted, M modified, R renamed."""
    with _client(address, path) as fs:
        report = fs.snapshot_diff(path, from_name, to_name)
    if as_json:
        click.echo(json.dumps({"path": path, "from": from_name, "to": to_name, "diff": report}))
        return
    click.echo(f"Difference between {from_name} and {to_name} under directory {path}:")
    for e in report:
        rest = f" -> {e['to']}" if e["type"] == "R" else ""
        click.echo(f"{e['type']}\t{e['path']}{rest}")


SNAPSHOT_COMMANDS = [snapshot_group]
