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

The role commands (``keelfs master``, ``keelfs config-server``, ``keelfs chunkserver``) are
built the same way from :data:`MASTER_SETTINGS`, :data:`CONFIG_SERVER_SETTINGS` and
:data:`CHUNKSERVER_SETTINGS` (TOML tables ``[master]``, ``[config-server]``,
``[chunkserver]``). A role's table is the rows it uses; rows every process shares (``data``,
``log_level``, ...) are one :class:`Setting` each, put in several tables, so that a new
setting of every node (TLS, say) is one row added to :data:`NODE_SETTINGS`.
:func:`click_options` turns a table into the command's flags.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from keelfs.web.listen import parse_http_listen

__all__ = [
    "CHUNKSERVER_SETTINGS",
    "CONFIG_ENV",
    "CONFIG_SERVER_SETTINGS",
    "LOCAL_CLUSTER_SETTINGS",
    "MASTER_SETTINGS",
    "NODE_SETTINGS",
    "SERVER_SETTINGS",
    "ConfigError",
    "Resolved",
    "Setting",
    "check_limits",
    "checked_advertise",
    "checked_http_listen",
    "checked_log_format",
    "checked_log_level",
    "click_options",
    "neighbour_address",
    "resolve",
    "split_address",
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
    required: bool = False
    """No default: one of the sources must give it (``default`` is then unused)."""
    repeated: bool = False
    """A tuple of ``kind``: the flag may be repeated, the TOML value is an array, the
    environment variable a comma-separated list."""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return self.env_prefix + self.name.upper()

    def parse_env(self, text: str) -> Any:
        """The value of the environment variable's ``text``."""
        if self.repeated:
            return tuple(self._parse_one(t.strip()) for t in text.split(",") if t.strip())
        return self._parse_one(text)

    def _parse_one(self, text: str) -> Any:
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
        if not self.repeated:
            return self._check_one(value, where)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {self.name} must be an array, not {value!r}")
        return tuple(self._check_one(v, where) for v in value)

    def _check_one(self, value: Any, where: str) -> Any:
        if self.kind is Path and isinstance(value, str):
            return Path(value)
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if self.kind is not Path and type(value) is self.kind:
            return value
        want = "string" if self.kind in (str, Path) else self.kind.__name__
        raise ConfigError(f"{where}: {self.name} must be a {want}, not {value!r}")

    def default_text(self) -> str:
        """The default as ``--help`` and the docs show it (empty: none worth showing)."""
        if self.default in ("", ()):
            return ""
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        return str(self.default)

    def but(self, **changes: Any) -> Setting:
        """This row with some fields changed (a role's own default or help)."""
        return dataclasses.replace(self, **changes)


# The defaults below are the code's own (``HostConfig``, ``NodeConfig``, ``ChunkNodeConfig``),
# written out so that the `keelfs` command starts without importing the servers;
# tests/cli/test_roles.py checks that they agree.

# -- rows every process that runs a node shares --------------------------------------------------

_DATA = Setting("data", Path, Path("keelfs-data"), "data directory (created on first start)")
_LOG_LEVEL = Setting("log_level", str, "INFO", "DEBUG, INFO, WARNING or ERROR (logs go to stderr)")
_LOG_FORMAT = Setting(
    "log_format",
    str,
    "text",
    "text (one line each, `[rid=ID]` under a request id) or json (one object per line: ts, "
    "level, logger, process, msg, request_id)",
)
_HTTP_LISTEN = Setting(
    "http_listen",
    str,
    "",
    "dashboard, /health, /metrics on this HOST:PORT (empty or `off`: none); loopback only, "
    "unless with TLS: then HTTPS, other hosts authenticated (docs/security.md)",
)
_HTTP_TOKEN_FILE = Setting(
    "http_token_file",
    str,
    "",
    "a file holding a bearer token that HTTPS requests from other hosts may present instead "
    "of a client certificate (e.g. Prometheus' credentials_file); TLS only",
)
_TICK_MS = Setting(
    "tick_ms", float, 15.0, "one Raft tick in ms (the election timeout is 10-20 ticks)"
)
_FSYNC_ON_CLOSE = Setting(
    "fsync_on_close",
    bool,
    True,
    "fsync a block replica when it is finalized (Raft's log is always fsynced)",
)
_SCAN_INTERVAL_S = Setting(
    "scan_interval_s",
    float,
    6 * 3600.0,
    "seconds between block scanner passes over the replicas (0: no scanner)",
)
_HEARTBEAT_INTERVAL_S = Setting(
    "heartbeat_interval_s",
    float,
    1.0,
    "seconds between the chunk server's heartbeats to the master",
)

_TRASH_INTERVAL = Setting(
    "trash_interval",
    float,
    1440.0,
    "minutes the trash keeps what `keelfs rm` moved there (HDFS's fs.trash.interval; emptied "
    "every interval); 0: no trash, rm deletes at once (same on every master)",
)
_SUPERUSER_GROUP = Setting(
    "superuser_group", str, "supergroup", "members of this group are superusers"
)
_AUDIT_LOG = Setting("audit_log", str, "", "append the audit log to this file (empty: none)")
_MAX_CONCURRENT_RPCS = Setting(
    "max_concurrent_rpcs",
    int,
    4096,
    "client calls in progress at once on the client address; more are refused with "
    "RESOURCE_EXHAUSTED (the client backs off and retries)",
)
_SHARD_LIMITS: tuple[Setting, ...] = (
    Setting(
        "max_sessions_per_user",
        int,
        4096,
        "client sessions one user may hold open on a shard (same on every member)",
    ),
    Setting(
        "max_leases_per_session",
        int,
        100_000,
        "files one client session may hold open for writing on a shard (same on every member)",
    ),
    Setting(
        "max_open_txns",
        int,
        10_000,
        "cross-shard transactions open at once on a shard (same on every member)",
    ),
)
_CHUNK_MAX_CONCURRENT_RPCS = _MAX_CONCURRENT_RPCS.but(
    default=1024,
    help="calls in progress at once on the chunk server (each pipeline stage holds one); "
    "more are refused with RESOURCE_EXHAUSTED",
)
_RESERVED_BYTES = Setting(
    "reserved_bytes",
    int,
    0,
    "bytes of the chunk server's volume kept free: no new block once free space is down to "
    "it (the writer goes to another server); left out of the capacity reported to the masters",
)

_TLS_DIR = Setting(
    "tls_dir",
    str,
    "",
    "a `keelfs certs` directory: its CAs and this node's certificate (found by role and id) "
    "turn on mutual TLS on every port and channel (docs/security.md)",
)
_INSECURE = Setting(
    "insecure",
    bool,
    False,
    "allow listening on a non-loopback address without TLS (anyone who reaches the "
    "ports may call every RPC)",
)
_TLS_FILES: tuple[Setting, ...] = (
    Setting("tls_cert", str, "", "this node's certificate (instead of --tls-dir)"),
    Setting("tls_key", str, "", "its private key"),
    Setting("tls_peer_ca", str, "", "the peer CA's certificate (verifies nodes)"),
    Setting(
        "tls_client_ca",
        str,
        "",
        "the client CA's certificate (verifies users; empty: nodes only may call)",
    ),
)

NODE_SETTINGS: tuple[Setting, ...] = (
    _LOG_LEVEL,
    _LOG_FORMAT,
    _TLS_DIR,
    *_TLS_FILES,
    _INSECURE,
    _HTTP_TOKEN_FILE,
)
"""Rows of every node's table (``server``, ``master``, ``config-server``, ``chunkserver``)
besides their own: a setting every process has goes here."""

SERVER_SETTINGS: tuple[Setting, ...] = (
    _DATA,
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
        "advertise",
        str,
        "",
        "HOST others reach this server by, standing for the host of its client, Raft and "
        "chunk addresses (each keeps its own port); empty: the listen addresses themselves, "
        "which must then not be wildcards such as 0.0.0.0",
    ),
    _HTTP_LISTEN.but(default="127.0.0.1:7080"),
    _HTTP_TOKEN_FILE,
    Setting(
        "webhdfs_listen",
        str,
        "",
        "the WebHDFS gateway (docs/webhdfs.md) on this HOST:PORT, loopback only (empty or "
        "`off`: none; not with TLS)",
    ),
    Setting(
        "webhdfs_token_secret_file",
        str,
        "",
        "the WebHDFS gateway's delegation tokens: a file holding the HMAC secret every "
        "gateway of the cluster shares, at least 32 bytes (docs/webhdfs.md; empty: no tokens)",
    ),
    Setting(
        "replication",
        int,
        1,
        "replication of files created without one (1: the embedded chunk server alone)",
    ),
    _FSYNC_ON_CLOSE,
    _SCAN_INTERVAL_S,
    _HEARTBEAT_INTERVAL_S,
    _TICK_MS,
    _TRASH_INTERVAL,
    _SUPERUSER_GROUP,
    _AUDIT_LOG,
    _MAX_CONCURRENT_RPCS,
    *_SHARD_LIMITS,
    _CHUNK_MAX_CONCURRENT_RPCS.but(
        name="chunk_max_concurrent_rpcs",
        help="calls in progress at once on the embedded chunk server's address; more are "
        "refused with RESOURCE_EXHAUSTED",
    ),
    _RESERVED_BYTES,
    _LOG_LEVEL,
    _LOG_FORMAT,
    _TLS_DIR.but(
        help="a `keelfs certs` directory holding master-1 and chunkserver-ID certificates "
        "(ID: the embedded chunk server's, cs-1 on a first start): mutual TLS everywhere "
        "(docs/security.md)"
    ),
    _INSECURE,
    Setting(
        "s3_listen",
        str,
        "",
        "serve S3 on this address HOST:PORT too (docs/s3.md; port 0: any free port; empty: "
        "no S3 gateway)",
    ),
    Setting(
        "s3_credentials",
        str,
        "",
        "the S3 gateway's access keys (TOML or JSON, docs/s3.md); empty: "
        "<data>/s3-credentials.toml, made on first use with one key for the user running "
        "the server",
    ),
)

# -- the metadata roles: keelfs config-server, keelfs master -------------------------------------

_META_ADDRESSES: tuple[Setting, ...] = (
    Setting("id", int, 0, "node id, unique among all metadata nodes (positive)", required=True),
    _DATA.but(required=True, default=None),
    Setting(
        "listen",
        str,
        "",
        "client API address HOST:PORT (empty: the host of --raft-listen, its port + 1)",
    ),
    Setting(
        "raft_listen",
        str,
        "",
        "Raft transport address (empty: the host of --listen, its port - 1); "
        "one of the two is needed",
    ),
    Setting(
        "peers",
        str,
        "",
        "ID=HOST:PORT,... every initial member's Raft address (first start only: "
        "membership is kept in --data afterwards)",
    ),
    Setting(
        "advertise",
        str,
        "",
        "HOST or HOST:PORT others reach the client address by (registered with the config "
        "group, handed to clients); its host stands for the Raft address's too; empty: "
        "--listen, which must then not be a wildcard such as 0.0.0.0",
    ),
    Setting(
        "raft_advertise",
        str,
        "",
        "HOST or HOST:PORT of the Raft address as reported (empty: the host of --advertise, "
        "the port of --raft-listen); peers dial what --peers or add-member told them",
    ),
    Setting(
        "raft_stream_port",
        int,
        0,
        "port of the Raft transport's framed streams, on the host of --raft-listen (0: any "
        "free port, told to peers at each handshake on the Raft port; -1: none, every link "
        "over gRPC as in earlier releases). Peers must reach it at the host they dial",
    ),
)

_RAFT_HOST: tuple[Setting, ...] = (
    _TICK_MS,
    Setting("election_tick", int, 10, "ticks per election timeout"),
    Setting("snapshot_every", int, 20_000, "entries applied between snapshots"),
    Setting("keep_log", int, 2_000, "entries kept behind a snapshot"),
    Setting("request_timeout", float, 5.0, "server-side limit per request (s)"),
    Setting(
        "quiesce_after_ticks",
        int,
        20,
        "idle ticks before a group goes quiet (0: never)",
    ),
    Setting(
        "pack_proposals",
        bool,
        True,
        "carry a round's concurrent client writes in one Raft entry (only while every member "
        "of the group said it applies them: a rolling upgrade from a release without packs "
        "writes one entry each until its last member is upgraded)",
    ),
)

_META_TUNING: tuple[Setting, ...] = (
    Setting(
        "join",
        bool,
        False,
        "host empty members of the groups --data lacks, waiting to be added "
        "(keelfs admin add-member GROUP NODE ADDRESS)",
    ),
    Setting(
        "session_ttl_ms",
        int,
        120_000,
        "client session lifetime when idle (same on every member)",
    ),
    Setting("lease_ttl_ms", int, 60_000, "writer lease lifetime (same on every member)"),
    Setting(
        "txn_prepare_timeout_ms",
        int,
        10_000,
        "a cross-shard transaction whose participants did not all prepare within this "
        "(log time) is aborted",
    ),
    Setting(
        "txn_retention_ms",
        int,
        3_600_000,
        "how long finished transaction records are kept (same on every member)",
    ),
    Setting(
        "min_replicas",
        int,
        1,
        "replicas each block needs reported before a file can be closed",
    ),
    Setting(
        "default_replication",
        int,
        3,
        "replication of files created without one (the client asks for the default)",
    ),
    Setting(
        "chunk_dead_after",
        float,
        10.0,
        "seconds without a heartbeat after which a chunk server counts as dead",
    ),
    Setting("vnodes", int, 64, "ring points per shard (config group)"),
    Setting("map_refresh", float, 1.0, "seconds between ShardMap polls"),
    _TRASH_INTERVAL,
    _SUPERUSER_GROUP,
    _AUDIT_LOG,
    _MAX_CONCURRENT_RPCS,
    *_SHARD_LIMITS,
    _HTTP_LISTEN,
)

CONFIG_SERVER_SETTINGS: tuple[Setting, ...] = (
    *_META_ADDRESSES,
    Setting(
        "shard",
        str,
        (),
        "also host a member of this data shard (repeatable)",
        repeated=True,
    ),
    Setting(
        "config_servers",
        str,
        "",
        "client addresses of the other config servers ADDR,... (optional: helps them register)",
    ),
    *_RAFT_HOST,
    *_META_TUNING,
    *NODE_SETTINGS,
)

MASTER_SETTINGS: tuple[Setting, ...] = (
    *_META_ADDRESSES,
    Setting(
        "shard",
        str,
        (),
        "host a member of this data shard, e.g. shard-1 (repeatable; at least one)",
        repeated=True,
        required=True,
    ),
    Setting(
        "config_servers",
        str,
        "",
        "client addresses of config servers ADDR,... (any of them; needed unless --config-member)",
    ),
    Setting(
        "config_member",
        bool,
        False,
        "also host a member of the config group in this process",
    ),
    *_RAFT_HOST,
    *_META_TUNING,
    *NODE_SETTINGS,
)

# -- keelfs chunkserver ---------------------------------------------------------------------------

CHUNKSERVER_SETTINGS: tuple[Setting, ...] = (
    _DATA.but(required=True, default=None),
    Setting("listen", str, "", "data-path address HOST:PORT (port 0: any)", required=True),
    Setting(
        "advertise",
        str,
        "",
        "HOST or HOST:PORT others reach the data path by (registered and reported to the "
        "masters); empty: --listen, which must then not be a wildcard such as 0.0.0.0",
    ),
    Setting("server_id", str, "", "id on first start (empty: generated; then stored in --data)"),
    Setting("rack", str, "/default-rack", "rack, for replica placement"),
    Setting(
        "config_servers",
        str,
        "",
        "config-server addresses ADDR,...: register there and report to every master "
        "(empty: a standalone server, for tests of the data path alone)",
    ),
    _SCAN_INTERVAL_S,
    Setting(
        "scan_rate_mb",
        float,
        32.0,
        "block scanner read rate, MiB/s",
    ),
    _FSYNC_ON_CLOSE.but(
        help="fsync a replica when it is finalized (--no-fsync-on-close: tests, benchmarks)"
    ),
    Setting(
        "ack_timeout_s",
        float,
        60.0,
        "pipeline: a next node silent this long is declared failed",
    ),
    Setting(
        "rbw_expiry_s",
        float,
        3600.0,
        "abandoned being-written replicas are removed after this long",
    ),
    _HEARTBEAT_INTERVAL_S.but(
        help="seconds between heartbeats to each master (changes are reported sooner)"
    ),
    _RESERVED_BYTES,
    _CHUNK_MAX_CONCURRENT_RPCS,
    _HTTP_LISTEN,
    *NODE_SETTINGS,
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
    Setting(
        "tls",
        bool,
        False,
        "mutual TLS everywhere: `up` makes <dir>/certs (CAs, a certificate per process, an "
        "admin user's) and the CLI presents the admin certificate (first `up`)",
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
        if flag is not None and flag != ():  # a repeatable flag not given reads as ()
            values[s.name], sources[s.name] = tuple(flag) if s.repeated else flag, "flag"
        elif s.name in from_file:
            values[s.name], sources[s.name] = from_file[s.name], str(config_file)
        elif s.env in env:
            values[s.name], sources[s.name] = s.parse_env(env[s.env]), "env"
        elif s.required:
            raise ConfigError(
                f"{s.name} is required: give {s.flag}, {s.name} in [{section}] of the config "
                f"file, or {s.env}"
            )
        else:
            values[s.name], sources[s.name] = s.default, "default"
    return Resolved(values, sources, config_file)


# -- checks of values that several roles share ----------------------------------------------------


def split_address(address: str, what: str) -> tuple[str, int]:
    """``(host, port)`` of ``HOST:PORT``; ``ConfigError`` naming ``what`` otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{what}: expected HOST:PORT, got {address!r}")
    return host, int(port)


def neighbour_address(address: str, offset: int, what: str) -> str:
    """The host of ``address`` with its port + ``offset`` (port 0 stays 0: any free port)."""
    host, port = split_address(address, what)
    if port and not 0 < port + offset <= 65535:
        raise ConfigError(f"cannot derive a port {offset:+d} from {address}: set it explicitly")
    return f"{host}:{port + offset if port else 0}"


def checked_advertise(listen: str, advertise: str, what: str = "listen") -> str:
    """``advertise`` if usable with ``listen``: a ``HOST`` or ``HOST:PORT`` others can dial
    (``keelfs.rpc.addresses``), required when ``listen`` is a wildcard (``0.0.0.0``)."""
    from keelfs.rpc.addresses import is_wildcard, split_advertise

    if not advertise:
        if is_wildcard(listen):
            raise ConfigError(
                f"{what} {listen} takes every interface, which no one can dial: give "
                "--advertise HOST[:PORT], the address others reach this node by"
            )
        return ""
    try:
        split_advertise(advertise)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return advertise


def check_limits(values: Mapping[str, Any], *names: str, least: int = 1) -> None:
    """``ConfigError`` unless each setting of ``names`` is at least ``least``."""
    for name in names:
        if values[name] < least:
            raise ConfigError(f"{name} must be at least {least}, not {values[name]}")


def trash_interval(minutes: float) -> int:
    """The ``trash_interval`` setting (minutes, as HDFS's ``fs.trash.interval``) in ms."""
    if not 0 <= minutes <= 10 * 365 * 24 * 60:
        raise ConfigError(f"trash_interval must be 0 (off) to 10 years in minutes, not {minutes}")
    return round(minutes * 60_000)


def checked_log_format(value: str) -> str:
    fmt = str(value).lower()
    if fmt not in ("text", "json"):
        raise ConfigError(f"log_format: unknown format {value!r} (expected text or json)")
    return fmt


def checked_log_level(value: str) -> str:
    level = str(value).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"log_level: unknown level {value!r}")
    return level


def checked_http_listen(value: str, *, tls: bool) -> str:
    """``value`` if a ``HOST:PORT`` the HTTP side may listen on (loopback only without
    ``tls``); empty for empty or ``off`` (no HTTP server)."""
    if not value or str(value).lower() == "off":
        return ""
    try:
        parse_http_listen(value, tls=tls)
    except ValueError as exc:
        raise ConfigError(f"http_listen: {exc}") from None
    return value


_CLICK_TYPES: dict[type, Any] = {
    str: click.STRING,
    int: click.INT,
    float: click.FLOAT,
    Path: click.Path(path_type=Path),
}


def click_options(
    settings: tuple[Setting, ...],
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """One click option per setting, plus ``--config FILE``. Every option defaults to None
    (so that a flag not given is told apart from one given with the default value); its
    help ends with the default and the environment variable. The command receives
    ``config_file`` and one keyword per setting: :func:`resolve`'s ``flags``."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        for s in reversed(settings):
            default = s.default_text()
            shown = " [required]" if s.required else f" [default: {default}]" if default else ""
            help_text = f"{s.help}.{shown} [env {s.env}]"
            if s.kind is bool:
                name = s.flag[2:]
                f = click.option(f"--{name}/--no-{name}", s.name, default=None, help=help_text)(f)
            else:
                f = click.option(
                    s.flag,
                    s.name,
                    type=_CLICK_TYPES[s.kind],
                    default=None,
                    multiple=s.repeated,
                    help=help_text,
                )(f)
        return click.option(
            "--config",
            "config_file",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help=f"TOML file of settings (flags win over it, it wins over KEELFS_* variables) "
            f"[env {CONFIG_ENV}]",
        )(f)

    return decorate
