"""``--config FILE`` for the commands whose flags are plain click options (``keelfs s3``,
``keelfs webhdfs``): the ``[section]`` table of a TOML file gives their defaults, a flag on
the command line wins over it. The server roles build their flags from settings tables
instead (``keelfs.server.settings``), with the same file format and the same precedence.

A key is a flag's name without the dashes, ``-`` or ``_`` alike (``proxy_user`` or
``proxy-user`` for ``--proxy-user``); a repeatable flag takes an array (or one string). A key
the command does not have, or a file that is not TOML, stops the command with status 2 naming
the file and the key: a typo in ``/etc/keelfs/s3.toml`` must not be silently ignored.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

__all__ = ["config_file_option", "toml_defaults"]

F = TypeVar("F", bound=Callable[..., Any])

CONFIG_ENV = "KEELFS_CONFIG"


def toml_defaults(command: click.Command, section: str, path: Path) -> dict[str, Any]:
    """``param name -> value`` from the ``[section]`` table of ``path`` for ``command``;
    ``click.BadParameter`` for an unreadable file, an unknown key or a wrong shape."""
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise click.BadParameter(f"{path}: not valid TOML: {exc}") from None
    table = doc.get(section, {})
    if not isinstance(table, dict):
        raise click.BadParameter(f"{path}: [{section}] must be a table")
    params = {
        p.name: p
        for p in command.params
        if isinstance(p, click.Option) and p.name and p.name != "config_file"
    }
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        param = params.get(name)
        if param is None:
            known = ", ".join(sorted(params))
            raise click.BadParameter(f"{path}: [{section}] has an unknown key {key!r} ({known})")
        if param.multiple and isinstance(value, str):
            value = [value]
        if isinstance(value, dict) or (isinstance(value, list) and not param.multiple):
            raise click.BadParameter(f"{path}: [{section}] {key} must be a single value")
        out[name] = value
    return out


def config_file_option(section: str) -> Callable[[F], F]:
    """Add ``--config FILE`` (or ``$KEELFS_CONFIG``) to a command: its ``[section]`` table
    becomes the defaults of the other options (see the module docstring)."""

    def load(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
        if value is None:
            return
        defaults = toml_defaults(ctx.command, section, value)
        ctx.default_map = {**(ctx.default_map or {}), **defaults}

    return click.option(
        "--config",
        "config_file",
        type=click.Path(path_type=Path, dir_okay=False),
        envvar=CONFIG_ENV,
        is_eager=True,
        expose_value=False,
        callback=load,
        help=f"TOML file whose [{section}] table gives defaults to these flags (a flag given "
        f"wins) [env {CONFIG_ENV}]",
    )
