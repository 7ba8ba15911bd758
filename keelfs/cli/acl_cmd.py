"""The ACL commands of the CLI (HDFS's ``hdfs dfs -setfacl`` / ``-getfacl``):

    keelfs setfacl [-R] -m|-x|--set SPEC PATH     keelfs setfacl [-R] -b|-k PATH
    keelfs getfacl [-R] PATH

SPEC is an ACL spec (``user:bob:r-x,group:ops:rwx,default:user:bob:rwx``; for ``-x`` without
permissions: ``user:bob``). Options and exit codes as the file commands'
(``keelfs.cli.fs_cmd``); the rules in ``docs/security.md``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from keelfs.cli.fs_cmd import _client, _options, _walk
from keelfs.errors import InvalidArgument

if TYPE_CHECKING:
    from keelfs.client._ops import AclStatus

__all__ = ["ACL_COMMANDS"]

_ACTIONS = {
    "-m": "modify",
    "-x": "remove_entries",
    "--set": "set",
    "-b": "remove",
    "-k": "remove_default",
}


@click.command("setfacl")
@click.option("-R", "recursive", is_flag=True, help="Everything below as well.")
@click.option("-m", "modify", metavar="SPEC", help="Add these entries or change their permissions.")
@click.option("-x", "remove", metavar="SPEC", help="Remove these entries (no permissions).")
@click.option(
    "--set", "replace", metavar="SPEC", help="Replace the ACL (user::, group::, other:: needed)."
)
@click.option("-b", "remove_all", is_flag=True, help="Remove every entry beyond the mode.")
@click.option("-k", "remove_default", is_flag=True, help="Remove the default ACL.")
@click.argument("path")
@_options
def setfacl_cmd(
    recursive: bool,
    modify: str | None,
    remove: str | None,
    replace: str | None,
    remove_all: bool,
    remove_default: bool,
    path: str,
    address: str | None,
    as_json: bool,
) -> None:
    """Set the ACL of PATH (its owner or a superuser), as `hdfs dfs -setfacl`."""
    chosen = [
        (flag, value)
        for flag, value in (("-m", modify), ("-x", remove), ("--set", replace))
        if value is not None
    ]
    chosen += [(flag, "") for flag, on in (("-b", remove_all), ("-k", remove_default)) if on]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of -m, -x, --set, -b, -k")
    flag, spec = chosen[0]
    action = _ACTIONS[flag]
    from keelfs.meta import acls  # (not at the command's start-up: keelfs.meta is heavy)

    if spec:
        try:
            acls.parse_spec(spec, with_perm=flag != "-x")
        except InvalidArgument as e:
            raise click.BadParameter(str(e), param_hint=flag) from None
    with _client(address, path) as fs:
        for each in _walk(fs, path, recursive):
            info = _apply(fs, action, each, spec)
            if as_json:
                status = fs.acl_status(each) if info is None else _status_of(info)
                click.echo(json.dumps(_status_dict(status), sort_keys=True))


def _apply(fs: Any, action: str, path: str, spec: str) -> Any:
    if action == "set":
        return fs.set_acl(path, spec)
    if action == "modify":
        return fs.modify_acl_entries(path, spec)
    if action == "remove_entries":
        return fs.remove_acl_entries(path, spec)
    if action == "remove_default":
        return fs.remove_default_acl(path)
    return fs.remove_acl(path)


@click.command("getfacl")
@click.option("-R", "recursive", is_flag=True, help="Everything below as well.")
@click.argument("path")
@_options
def getfacl_cmd(recursive: bool, path: str, address: str | None, as_json: bool) -> None:
    """Show the ACL of PATH (anyone who may reach it), as `hdfs dfs -getfacl`."""
    with _client(address, path) as fs:
        for each in _walk(fs, path, recursive):
            status = fs.acl_status(each)
            if as_json:
                click.echo(json.dumps(_status_dict(status), sort_keys=True))
            else:
                click.echo("\n".join(getfacl_lines(status)) + "\n")


def getfacl_lines(status: AclStatus) -> list[str]:
    """HDFS's ``getfacl`` text: the header, then every entry (the base ones from the mode),
    a named or group entry the mask restricts followed by ``#effective:``."""
    from keelfs.meta import acls

    lines = [f"# file: {status.path}", f"# owner: {status.owner}", f"# group: {status.group}"]
    if status.sticky:
        lines.append("# flags: --t")
    entries = status.logical()
    masks = {e.default: e.perm for e in entries if e.kind == "mask"}
    for entry in entries:
        line = entry.to_text()
        mask = masks.get(entry.default)
        restricted = entry.kind == "group" or (entry.kind == "user" and entry.named)
        if mask is not None and restricted and entry.perm & mask != entry.perm:
            line += f"\t#effective:{acls.perm_text(entry.perm & mask)}"
        lines.append(line)
    return lines


def _status_of(info: Any) -> AclStatus:
    from keelfs.client._ops import AclStatus  # (not at the command's start-up: grpc)

    status: AclStatus = AclStatus.of(info)
    return status


def _status_dict(status: AclStatus) -> dict[str, Any]:
    """Hadoop's ``AclStatus`` JSON."""
    return {
        "path": status.path,
        "owner": status.owner,
        "group": status.group,
        "permission": format(status.mode & 0o7777, "o"),
        "stickyBit": status.sticky,
        "entries": [e.to_text() for e in status.entries],
    }


ACL_COMMANDS = [setfacl_cmd, getfacl_cmd]
