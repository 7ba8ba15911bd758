"""``keelfs server``, the role commands, ``keelfs local-cluster up|down|status|stop|restart`` and
``keelfs demo``.

``register(cli)`` adds them to the ``keelfs`` command. The flags of ``server`` and
``local-cluster`` are generated from the settings tables of ``keelfs.server.settings`` (each
flag also read from a TOML file and from ``KEELFS_*``; ``docs/configuration.md``).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

from keelfs.server.roles import ROLE_COMMANDS
from keelfs.server.settings import (
    LOCAL_CLUSTER_SETTINGS,
    SERVER_SETTINGS,
    ConfigError,
    Resolved,
    Setting,
    click_options,
    resolve,
)

__all__ = ["demo", "local_cluster", "register", "server"]


def _resolve(
    settings: tuple[Setting, ...], section: str, flags: dict[str, Any], config_file: Path | None
) -> Resolved:
    try:
        return resolve(settings, section, flags, config_file)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


# ---------------------------------------------------------------------------------------------
# keelfs server


@click.command("server")
@click_options(SERVER_SETTINGS)
def server(config_file: Path | None, **flags: Any) -> None:
    """Run all of keelfs in one process on one data directory: a single-node config group
    and shard-1, one chunk server, the dashboard. Restart it on the same --data to carry on."""
    from keelfs.server.embedded import ServerConfig, run

    resolved = _resolve(SERVER_SETTINGS, "server", flags, config_file)
    try:
        config = ServerConfig.from_resolved(resolved)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    sys.exit(run(config))


# ---------------------------------------------------------------------------------------------
# keelfs local-cluster


@click.group("local-cluster")
def local_cluster() -> None:
    """A cluster of separate processes on 127.0.0.1: 3 config servers, shard-1 and shard-2 of
    3 masters each, 3 chunk servers. They run in the background until `down`; meanwhile the
    other commands (`keelfs ls /`, `keelfs admin status`, ...) connect to it without
    --address (`up` records it in $XDG_STATE_HOME/keelfs/local-cluster.json)."""


def _cluster_settings(config_file: Path | None, flags: dict[str, Any]) -> dict[str, Any]:
    return _resolve(LOCAL_CLUSTER_SETTINGS, "local-cluster", flags, config_file).values


def _fail(message: str) -> NoReturn:
    click.echo(f"keelfs local-cluster: {message}", err=True)
    sys.exit(1)


def _print_status(st: dict[str, Any]) -> None:
    con = Console()
    groups = Table(title=f"keelfs local cluster in {st['directory']}")
    for col in ("group", "leader", "term", "commit", "members"):
        groups.add_column(col)
    for gid, g in st["groups"].items():
        members = " ".join(f"{i}:{role}" for i, role in g["members"].items()) or "-"
        leader = f"n{g['leader']}" if g["leader"] else "NO LEADER"
        groups.add_row(
            gid, leader, str(g["term"]), str(g["commit"]), members,
            style="" if g["leader"] else "bold red",
        )  # fmt: skip
    con.print(groups)
    procs = Table(title="processes")
    for col in ("name", "role", "pid", "address", "groups", "http"):
        procs.add_column(col)
    for name, p in st["processes"].items():
        procs.add_row(
            name,
            p["role"],
            str(p["pid"]) if p["alive"] else "down",
            p["address"],
            ",".join(p["groups"]),
            p["http_url"] if p["alive"] else "",
            style="" if p["alive"] else "red",
        )
    con.print(procs)


def _status_json(st: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in st.items() if k != "nodes"}


@local_cluster.command("up")
@click_options(LOCAL_CLUSTER_SETTINGS)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (the status).")
def local_cluster_up(config_file: Path | None, as_json: bool, **flags: Any) -> None:
    """Start the cluster in the background; on an existing one, start again on the same data
    whichever of its processes are not running (all after `down`, or one that was killed)."""
    from keelfs.server.local_cluster import LocalClusterError, cluster_status, up

    s = _cluster_settings(config_file, flags)
    err = Console(stderr=True)
    try:
        state = up(
            s["dir"],
            chunk_servers=s["chunk_servers"],
            http_port=s["http_port"],
            netns=s["netns"],
            tls=s["tls"],
            progress=lambda msg: err.print(msg, highlight=False),
        )
        st = cluster_status(state)
    except LocalClusterError as exc:
        _fail(f"{exc}\n(whatever started is recorded: `keelfs local-cluster down` stops it)")
        return
    _record_for_clients(state)
    if as_json:
        click.echo(json.dumps(_status_json(st), sort_keys=True))
        return
    _print_status(st)
    config = ",".join(state.config_addresses)
    click.echo(f"clients connect to {config}   e.g. keelfs.client.Client({config!r})")
    click.echo("while it runs, `keelfs ls /` and the other commands find it without --address")
    click.echo(f"stop it with: keelfs local-cluster down --dir {s['dir']}")


def _record_for_clients(state: Any) -> None:
    """Tell the other commands where the cluster runs (its config servers' addresses and
    pids: a restarted config server has a new pid)."""
    from keelfs.client.connect import record_local_cluster
    from keelfs.server.layout import ADMIN_USER

    config_servers = [p for p in state.processes if p.role == "config"]
    record_local_cluster(
        Path(state.directory),
        [p.address for p in config_servers],
        [p.pid for p in config_servers],
        tls_dir=Path(state.tls_dir) if state.tls_dir else None,
        tls_user=ADMIN_USER,
    )


def _existing_state(directory: Path) -> Any:
    """The state of the local cluster in ``directory``; exit status 1 if there is none."""
    from keelfs.server.local_cluster import LocalClusterError, load_state

    try:
        state = load_state(directory.resolve())
    except LocalClusterError as exc:
        _fail(str(exc))
    if state is None:
        _fail(f"no local cluster in {directory}")
    return state


@local_cluster.command("stop")
@click.argument("node")
@click_options(LOCAL_CLUSTER_SETTINGS[:1])
@click.option("--kill", is_flag=True, help="SIGKILL at once (a crash) instead of SIGTERM.")
def local_cluster_stop(node: str, config_file: Path | None, kill: bool, **flags: Any) -> None:
    """Stop one process of the cluster, NODE as `status` names it (n1, n11, cs0, ...): SIGTERM,
    SIGKILL after 10 s. `up` or `restart NODE` starts it again on the same data."""
    from keelfs.server.local_cluster import LocalClusterError, stop_process

    state = _existing_state(_cluster_settings(config_file, flags)["dir"])
    try:
        was_running = stop_process(state, node, kill=kill)
    except LocalClusterError as exc:
        _fail(str(exc))
        return
    if state.alive():
        _record_for_clients(state)
    how = "killed" if kill else "stopped"
    click.echo(f"{how} {node}" if was_running else f"{node} was not running")


@local_cluster.command("restart")
@click.argument("node")
@click_options(LOCAL_CLUSTER_SETTINGS[:1])
@click.option("--kill", is_flag=True, help="SIGKILL it (a crash) rather than SIGTERM first.")
def local_cluster_restart(node: str, config_file: Path | None, kill: bool, **flags: Any) -> None:
    """Stop one process of the cluster (if running) and start it again with the same command,
    addresses and data; waits until it serves (its READY line)."""
    from keelfs.server.local_cluster import LocalClusterError, restart_process, stop_process

    state = _existing_state(_cluster_settings(config_file, flags)["dir"])
    try:
        stop_process(state, node, kill=kill)
        p = restart_process(state, node)
    except LocalClusterError as exc:
        _fail(str(exc))
        return
    _record_for_clients(state)
    click.echo(f"restarted {node}: pid {p.pid}, {p.address}")


@local_cluster.command("down")
@click_options(LOCAL_CLUSTER_SETTINGS[:1])
@click.option("--wipe", is_flag=True, help="Also delete the directory (every node's data).")
def local_cluster_down(config_file: Path | None, wipe: bool, **flags: Any) -> None:
    """Stop exactly the processes `up` started (SIGTERM, then SIGKILL after 10 s)."""
    from keelfs.server.local_cluster import LocalClusterError, down

    s = _cluster_settings(config_file, flags)
    try:
        stopped = down(s["dir"], wipe=wipe)
    except LocalClusterError as exc:
        _fail(str(exc))
        return
    from keelfs.client.connect import forget_local_cluster

    forget_local_cluster(Path(s["dir"]).resolve())
    click.echo(f"stopped {len(stopped)} processes" + (f": {' '.join(stopped)}" if stopped else ""))


@local_cluster.command("status")
@click_options(LOCAL_CLUSTER_SETTINGS[:1])
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
def local_cluster_status(config_file: Path | None, as_json: bool, **flags: Any) -> None:
    """Who leads config, shard-1 and shard-2, and every recorded process. Exit status 1 if a
    process is down or a group has no leader."""
    from keelfs.server.local_cluster import LocalClusterError, cluster_status, load_state

    s = _cluster_settings(config_file, flags)
    try:
        state = load_state(Path(s["dir"]).resolve())
    except LocalClusterError as exc:
        _fail(str(exc))
        return
    if state is None:
        _fail(f"no local cluster in {s['dir']}")
        return
    st = cluster_status(state)
    if as_json:
        click.echo(json.dumps(_status_json(st), sort_keys=True))
    else:
        _print_status(st)
    healthy = all(p["alive"] for p in st["processes"].values()) and all(
        g["leader"] for g in st["groups"].values()
    )
    sys.exit(0 if healthy else 1)


# ---------------------------------------------------------------------------------------------
# keelfs demo


def _start_server(
    data: Path, ports: list[int], log_path: Path
) -> tuple[subprocess.Popen[bytes], Any]:
    """``keelfs server`` as a child process (client, Raft and chunk ports); its READY info
    once it serves."""
    client, raft, chunk = (f"127.0.0.1:{p}" for p in ports)
    log = log_path.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "keelfs.cli.main", "server", "--data", str(data)]
        + ["--listen", client, "--raft-listen", raft, "--chunk-listen", chunk]
        + ["--http-listen", "off", "--log-level", "WARNING"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    log.close()
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip()
        if line.startswith("READY "):
            return proc, json.loads(line[len("READY ") :])
        click.echo(f"  | {line}")
    proc.wait()
    raise click.ClickException(
        f"keelfs server exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}"
    )


def _stop_server(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


@click.command("demo")
@click.option(
    "--data",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Data directory of the demo server (default: a temporary one, removed after).",
)
def demo(data: Path | None) -> None:
    """Start `keelfs server`, put a file and get it back, restart the server on the same
    data and read the file again."""
    from keelfs.client import Client
    from keelfs.runtime.processes import free_ports

    scratch = Path(tempfile.mkdtemp(prefix="keelfs-demo-"))
    data = data or scratch / "data"
    ports = free_ports(3)
    payload = b"hello from keelfs\n" * 1000
    proc: subprocess.Popen[bytes] | None = None
    try:
        click.echo(f"$ keelfs server --data {data} --listen 127.0.0.1:{ports[0]} ...")
        proc, info = _start_server(data, ports, scratch / "server.log")
        address = info["client"]
        with Client(address, deadline=30.0) as fs:
            t0 = time.monotonic()
            fs.mkdir("/demo", parents=True)
            fs.write_bytes("/demo/hello.txt", payload, overwrite=True)
            took = time.monotonic() - t0
            st = fs.stat("/demo/hello.txt")
            click.echo(
                f"put /demo/hello.txt: {st.length:,} bytes, replication {st.replication} "
                f"({took * 1000:.0f} ms)"
            )
            back = fs.read_bytes("/demo/hello.txt")
            click.echo(f"get /demo/hello.txt: {len(back):,} bytes, identical: {back == payload}")
            if back != payload:
                raise click.ClickException("the file read back differs from the file written")
        rc = _stop_server(proc)
        proc = None
        click.echo(f"server stopped (SIGTERM, exit status {rc}); starting it again on {data}")
        proc, info = _start_server(data, ports, scratch / "server.log")
        with Client(info["client"], deadline=30.0) as fs:
            again = fs.read_bytes("/demo/hello.txt")
            names = [e.path for e in fs.ls("/demo")]
        click.echo(f"after restart: ls /demo -> {names}; content identical: {again == payload}")
        if again != payload:
            raise click.ClickException("the file read after the restart differs")
        click.echo("done: run your own with `keelfs server` (data in ./keelfs-data)")
    finally:
        if proc is not None:
            _stop_server(proc)
        shutil.rmtree(scratch, ignore_errors=True)  # a --data given elsewhere is kept


def register(cli: click.Group) -> None:
    """Add ``server``, the role commands (``master``, ``config-server``, ``chunkserver``),
    ``local-cluster`` and ``demo`` to the ``keelfs`` command."""
    for command in (server, *ROLE_COMMANDS, local_cluster, demo):
        cli.add_command(command)
