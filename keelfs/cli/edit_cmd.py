"""The CLI's content edits: ``keelfs append|truncate|concat`` (``keelfs.meta.file_edits``).

Same options, messages and exit codes as the other file commands (``keelfs.cli.fs_cmd``).
"""

from __future__ import annotations

import json
import sys
from typing import BinaryIO

import click

from keelfs.cli.fs_cmd import _client, _options

__all__ = ["EDIT_COMMANDS"]

_PIECE = 4 << 20


@click.command("append")
@click.argument("local", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.argument("remote")
@_options
def append_cmd(local: str, remote: str, address: str | None, as_json: bool) -> None:
    """Append a local file (- for standard input) to the end of an existing file (HDFS's
    appendToFile). Refused while another client writes the file."""
    with _client(address, remote) as fs:
        source: BinaryIO = sys.stdin.buffer if local == "-" else open(local, "rb")  # noqa: SIM115
        try:
            n = 0
            with fs.open(remote, "ab") as f:
                while piece := source.read(_PIECE):
                    f.write(piece)
                    n += len(piece)
            length = fs.stat(remote).length
        finally:
            if source is not sys.stdin.buffer:
                source.close()
    if as_json:
        click.echo(json.dumps({"path": remote, "appended": n, "length": length}))
    else:
        click.echo(f"{remote}: {n} bytes appended ({length} in all)")


@click.command("truncate")
@click.argument("path")
@click.argument("length", type=click.IntRange(min=0))
@_options
def truncate_cmd(path: str, length: int, address: str | None, as_json: bool) -> None:
    """Shorten a file to LENGTH bytes (never longer than it is). Returns once done: a cut
    inside a block copies that block's kept bytes into a new block first."""
    with _client(address, path) as fs:
        info = fs.truncate(path, length)
    if as_json:
        click.echo(json.dumps({"path": info.path, "length": info.length}))
    else:
        click.echo(f"{info.path}: {info.length} bytes")


@click.command("concat")
@click.argument("target")
@click.argument("sources", nargs=-1, required=True)
@_options
def concat_cmd(target: str, sources: tuple[str, ...], address: str | None, as_json: bool) -> None:
    """Move the blocks of SOURCES (in order) to the end of TARGET and remove the sources, in
    one atomic step (metadata only). Every file closed, with the same block size, and on the
    target's shard (the same directory always is)."""
    with _client(address, target) as fs:
        info = fs.concat(target, list(sources))
    if as_json:
        click.echo(json.dumps({"path": info.path, "length": info.length}))
    else:
        click.echo(f"{info.path}: {info.length} bytes ({len(sources)} files joined)")


EDIT_COMMANDS = [append_cmd, truncate_cmd, concat_cmd]
