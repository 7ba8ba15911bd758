"""Settings of ``keelfs server`` and ``keelfs local-cluster``: flags, a TOML file, ``KEELFS_*``.

Every setting is one row of a table (:data:`SERVER_SETTINGS`, :data:`LOCAL_CLUSTER_SETTINGS`);
the click options, the environment variable names, the TOML keys and ``docs/configuration.md``
all follow from it. A value is taken from the first of these that has it::

    1. the command-line flag          --http-listen 127.0.0.1:9080
    2. the TOML file (--config FILE)  [server] http_listen = "127.0.0.1:9080"
    3. the environment                KEELFS_HTTP_LISTEN=127.0.0.1:9080
    4. the default                    127.0.0.1:7080

The TOML file holds one table per command (``[server]``, ``[local-cluster]``); a key it does
not know, or a value of the wrong type, is an error naming the file and the key (nothing
starts). :func:`resolve` does the whole job without side effects, so it is tested without
processes.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CONFIG_ENV",
    "LOCAL_CLUSTER_SETTINGS",
    "SERVER_SETTINGS",
    "ConfigError",
    "Resolved",
    "Setting",
    "resolve",
]

CONFIG_ENV = "KEELFS_CONFIG"
"""The environment variable naming the TOML file when ``--config`` is not given."""

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A setting has a value that cannot be used (its source is named in the message)."""


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    """Python and TOML name (``http_listen``): flag ``--http-listen``, env
    ``KEELFS_HTTP_LISTEN``."""
    kind: type
    """``str``, ``int``, ``float``, ``bool`` or ``Path``."""
    default: Any
    help: str
    env_prefix: str = "KEELFS_"
    """``env`` is this followed by the name in capitals."""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return self.env_prefix + self.name.upper()

    def parse_env(self, text: str) -> Any:
        """The value of the environment variable's ``text``."""
        try:
            if self.kind is bool:
                low = text.strip().lower()
                if low not in _TRUE + _FALSE:
                    raise ValueError(f"expected one of {'/'.join(_TRUE + _FALSE)}")
                return low in _TRUE
            return self.kind(text)
        except ValueError as exc:
            raise ConfigError(f"{self.env}={text!r}: {exc}") from None

    def check_toml(self, value: Any, where: str) -> Any:
        """``value`` from the TOML file, checked against the setting's type."""
        if self.kind is Path and isinstance(value, str):
            return Path(value)
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if self.kind is not Path and type(value) is self.kind:
            return value
        want = "string" if self.kind in (str, Path) else self.kind.__name__
        raise ConfigError(f"{where}: {self.name} must be a {want}, not {value!r}")


SERVER_SETTINGS: tuple[Setting, ...] = (
    Setting("data", Path, Path("keelfs-data"), "data directory (created on first start)"),
    Setting(
        "listen",
        str,
        "127.0.0.1:7001",
        "client API address HOST:PORT (what clients and `keelfs admin` connect to)",
    ),
    Setting(
        "raft_listen",
        str,
        "",
        "Raft transport address (empty: the host of --listen, its port - 1)",
    ),
    Setting(
        "chunk_listen",
        str,
        "",
        "chunk server (data path) address (empty: the host of --listen, its port + 1)",
    ),
    Setting(
        "http_listen",
        str,
        "127.0.0.1:7080",
        "dashboard, /health, /metrics on this loopback HOST:PORT (empty or `off`: none)",
    ),
    Setting(
        "replication",
        int,
        1,
        "replication of files created without one (1: the embedded chunk server alone)",
    ),
    Setting(
        "fsync_on_close",
        bool,
        True,
        "fsync a block replica when it is finalized (Raft's log is always fsynced)",
    ),
    Setting(
        "scan_interval_s",
        float,
        6 * 3600.0,
        "seconds between block scanner passes over the replicas (0: no scanner)",
    ),
    Setting(
        "heartbeat_interval_s",
        float,
        1.0,
        "seconds between the chunk server's heartbeats to the master",
    ),
    Setting("tick_ms", float, 15.0, "one Raft tick in ms (the election timeout is 10-20 ticks)"),
    Setting("log_level", str, "INFO", "DEBUG, INFO, WARNING or ERROR (logs go to stderr)"),
)

LOCAL_CLUSTER_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "dir",
        Path,
        Path("keelfs-cluster"),
        "directory of the local cluster: its state file, logs and every node's data",
        "KEELFS_CLUSTER_",
    ),
    Setting("chunk_servers", int, 3, "chunk server processes started by `up`", "KEELFS_CLUSTER_"),
    Setting(
        "http_port",
        int,
        0,
        "dashboard port of config server 1 on 127.0.0.1 (0: any free port; -1: none)",
        "KEELFS_CLUSTER_",
    ),
    Setting(
        "netns",
        bool,
        False,
        "run every process in its own network namespace, reached through a gateway link, so "
        "that `keelfs chaos` can partition them (root only; first `up`)",
        "KEELFS_CLUSTER_",
    ),
)


@dataclass(frozen=True)
class Resolved:
    values: dict[str, Any]
    """Setting name -> value."""
    sources: dict[str, str]
    """Setting name -> where its value came from: ``flag``, the TOML file, ``env`` or
    ``default``."""
    config_file: Path | None


def _load_toml(path: Path, section: str, settings: tuple[Setting, ...]) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    table = doc.get(section, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{section}] must be a table")
    by_name = {s.name: s for s in settings}
    out: dict[str, Any] = {}
    for key, value in table.items():
        setting = by_name.get(key.replace("-", "_"))
        if setting is None:
            known = ", ".join(sorted(by_name))
            raise ConfigError(f"{path}: [{section}] has an unknown key {key!r} (known: {known})")
        out[setting.name] = setting.check_toml(value, f"{path} [{section}]")
    return out


def resolve(
    settings: tuple[Setting, ...],
    section: str,
    flags: Mapping[str, Any],
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Resolved:
    """Every setting's value: ``flags`` (name -> value, None when the flag was not given),
    then the ``[section]`` table of ``config_file`` (default: ``$KEELFS_CONFIG``, if set),
    then ``environ`` (default: ``os.environ``), then the default. ``ConfigError`` if any
    source holds something unusable."""
    env = os.environ if environ is None else environ
    if config_file is None and env.get(CONFIG_ENV):
        config_file = Path(env[CONFIG_ENV])
    from_file = _load_toml(config_file, section, settings) if config_file is not None else {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for s in settings:
        flag = flags.get(s.name)
        if flag is not None:
            values[s.name], sources[s.name] = flag, "flag"
        elif s.name in from_file:
            values[s.name], sources[s.name] = from_file[s.name], str(config_file)
        elif s.env in env:
            values[s.name], sources[s.name] = s.parse_env(env[s.env]), "env"
        else:
            values[s.name], sources[s.name] = s.default, "default"
    return Resolved(values, sources, config_file)
