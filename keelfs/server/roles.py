"""The role commands: ``keelfs master``, ``keelfs config-server``, ``keelfs chunkserver``.

Each is built from its settings table (``keelfs.server.settings``) as ``keelfs server`` is:
a flag, else the ``[master]`` / ``[config-server]`` / ``[chunkserver]`` table of the TOML file
(``--config`` or ``KEELFS_CONFIG``), else ``KEELFS_<NAME>``, else the default; ``--help`` lists
every setting with its variable and default. Settings that cannot be used stop the command
with status 2 before anything starts; the running process follows
``keelfs.runtime.lifecycle`` (``READY`` line, SIGTERM/SIGINT, status 1 with a one-line reason).

Addresses are named as in ``keelfs server``: ``--listen`` is the address clients connect to,
``--raft-listen`` the Raft transport's (either one may be derived from the other: Raft =
client port - 1).

``python -m keelfs.server.master`` / ``.config_server`` / ``.chunkserver`` run the same
commands (:func:`run_module`). The two metadata modules keep the spelling they always had,
``--listen`` for the Raft address and ``--client-listen`` for the client address (command
lines recorded by an older ``keelfs local-cluster`` restart unchanged); :func:`legacy_argv`
translates it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from keelfs.runtime.lifecycle import configure_logging, run_process
from keelfs.server.settings import (
    CHUNKSERVER_SETTINGS,
    CONFIG_SERVER_SETTINGS,
    MASTER_SETTINGS,
    ConfigError,
    Setting,
    checked_log_format,
    checked_log_level,
    click_options,
    resolve,
)

__all__ = [
    "ROLE_COMMANDS",
    "chunkserver",
    "config_from_args",
    "config_server",
    "legacy_argv",
    "master",
    "resolve_args",
    "run_module",
]

if TYPE_CHECKING:
    from keelfs.master.node import NodeConfig

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _values(
    settings: tuple[Setting, ...], section: str, flags: Mapping[str, Any], config_file: Path | None
) -> dict[str, Any]:
    """The resolved settings with the log level checked; a usage error (status 2) if any is
    unusable."""
    try:
        values = dict(resolve(settings, section, flags, config_file).values)
        values["log_level"] = checked_log_level(values["log_level"])
        values["log_format"] = checked_log_format(values["log_format"])
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    return values


def _run_meta(role: str, command: str, values: Mapping[str, Any]) -> None:
    from keelfs.server.master_process import node_config, serve

    try:
        config, http = node_config(role, values)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    configure_logging(values["log_level"], f"n{config.node_id}", values["log_format"])
    sys.exit(run_process(command, lambda: serve(config, http)))


@click.command("master", context_settings=_CONTEXT)
@click_options(MASTER_SETTINGS)
def master(config_file: Path | None, **flags: Any) -> None:
    """Run a metadata master: members of one or more data shards' Raft groups (--shard,
    repeatable), and with --config-member one of the config group. It registers its client
    address with the config group; an operator then adds the shard to the map once
    (`keelfs admin add-shard`) and formats the namespace once."""
    _run_meta("master", "master", _values(MASTER_SETTINGS, "master", flags, config_file))


@click.command("config-server", context_settings=_CONTEXT)
@click_options(CONFIG_SERVER_SETTINGS)
def config_server(config_file: Path | None, **flags: Any) -> None:
    """Run one member of the config group (the ShardMap, the registry of masters and chunk
    servers); --shard also hosts data-shard members in this process."""
    values = _values(CONFIG_SERVER_SETTINGS, "config-server", flags, config_file)
    _run_meta("config", "config-server", values)


@click.command("chunkserver", context_settings=_CONTEXT)
@click_options(CHUNKSERVER_SETTINGS)
def chunkserver(config_file: Path | None, **flags: Any) -> None:
    """Run a chunk server: it stores block replicas, serves the data path on --listen, and
    registers with the config servers and reports to every master."""
    from keelfs.chunk.memory import tune_malloc
    from keelfs.server.chunk_process import chunk_config, serve

    values = _values(CHUNKSERVER_SETTINGS, "chunkserver", flags, config_file)
    try:
        config, reporting, http = chunk_config(values)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    configure_logging(values["log_level"], "chunk", values["log_format"])
    if not tune_malloc():
        logging.getLogger("keelfs.server.chunkserver").info(
            "not glibc: malloc thresholds left as they are"
        )
    sys.exit(run_process("chunkserver", lambda: serve(config, reporting, http)))


ROLE_COMMANDS: tuple[click.Command, ...] = (master, config_server, chunkserver)

_MODULES = {"master": master, "config_server": config_server, "chunkserver": chunkserver}


def legacy_argv(argv: list[str]) -> list[str]:
    """A metadata module's command line in the role commands' spelling: ``--listen`` (its
    Raft address) becomes ``--raft-listen``, ``--client-listen`` becomes ``--listen``."""
    renames = {"--listen": "--raft-listen", "--client-listen": "--listen"}
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        out.append(renames.get(name, name) + eq + value if name in renames else arg)
    return out


def run_module(module: str, argv: list[str] | None = None) -> int:
    """``python -m keelfs.server.<module>``: the role command, its exit status."""
    command = _MODULES[module]
    args = sys.argv[1:] if argv is None else argv
    if module != "chunkserver":
        args = legacy_argv(args)
    try:
        command.main(args, prog_name=f"python -m keelfs.server.{module}")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


def resolve_args(
    command: click.Command, argv: list[str], environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The settings ``command`` would run with given ``argv`` and ``environ`` (default: this
    process's), without running it: for tests and tools. ``ConfigError`` if any is unusable."""
    settings, section = _TABLES[command.name or ""]
    try:
        ctx = command.make_context(command.name, list(argv))
    except click.UsageError as exc:
        raise ConfigError(exc.format_message()) from None
    flags = dict(ctx.params)
    config_file = flags.pop("config_file")
    return dict(resolve(settings, section, flags, config_file, environ).values)


_TABLES: dict[str, tuple[tuple[Setting, ...], str]] = {
    "master": (MASTER_SETTINGS, "master"),
    "config-server": (CONFIG_SERVER_SETTINGS, "config-server"),
    "chunkserver": (CHUNKSERVER_SETTINGS, "chunkserver"),
}


def config_from_args(
    role: str, argv: list[str], environ: Mapping[str, str] | None = None
) -> NodeConfig:
    """The node config that ``python -m keelfs.server.master`` (``role="master"``) or
    ``.config_server`` (``"config"``) would run with ``argv`` (the modules' spelling);
    ``SystemExit`` with the reason if a setting is unusable."""
    from keelfs.server.master_process import node_config

    command = master if role == "master" else config_server
    try:
        return node_config(role, resolve_args(command, legacy_argv(argv), environ))[0]
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None
