"""Entry point of the ``keelfs`` command."""

from __future__ import annotations

import os
import sys

import click

from keelfs.cli.acl_cmd import ACL_COMMANDS
from keelfs.cli.admin import admin as _admin
from keelfs.cli.bench_cmd import bench as _bench
from keelfs.cli.certs_cmd import certs as _certs
from keelfs.cli.chaos_cmd import chaos as _chaos
from keelfs.cli.edit_cmd import EDIT_COMMANDS
from keelfs.cli.fleet_cmd import FLEET_COMMANDS
from keelfs.cli.fs_cmd import FILE_COMMANDS
from keelfs.cli.s3_cmd import s3 as _s3
from keelfs.cli.server_cmd import register as _register_server
from keelfs.cli.snapshot_cmd import SNAPSHOT_COMMANDS
from keelfs.cli.webhdfs_cmd import webhdfs as _webhdfs


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="keelfs")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """keelfs: a distributed file system whose masters never stop being available."""
    _trace_client_command(ctx)


def _trace_client_command(ctx: click.Context) -> None:
    """Run a client command under ``$KEELFS_REQUEST_ID`` when it is set, so that every call
    it makes carries the id into the servers' logs (docs/operations.md, "Logs and request
    ids"). Only commands that are one client operation: a server started with the variable
    set must not stamp everything it ever does with one id."""
    from keelfs.runtime.requests import REQUEST_ID_ENV, request_scope

    if os.environ.get(REQUEST_ID_ENV) and ctx.invoked_subcommand in _CLIENT_COMMANDS:
        ctx.with_resource(request_scope())


@cli.command("demo-raft")
@click.option("--seconds", default=10.0, show_default=True, help="How long to run.")
@click.option("--seed", default=1, show_default=True, help="Simulation seed (replays exactly).")
@click.option("--kill-every", default=3.0, show_default=True, help="Seconds between leader kills.")
@click.option("--fast", is_flag=True, help="Do not pace the simulation in real time.")
def demo(seconds: float, seed: int, kill_every: float, fast: bool) -> None:
    """Run a live simulated 3-master Raft group and narrate elections and failovers."""
    from keelfs.cli.demo import run_demo

    sys.exit(run_demo(seconds, seed, kill_every, realtime=not fast))


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def sim(args: tuple[str, ...]) -> None:
    """Run the deterministic Raft simulator (same flags as python -m keelfs.raft.sim)."""
    from keelfs.raft.sim import main as sim_main

    sys.exit(sim_main(list(args)))


for _fleet_command in FLEET_COMMANDS:  # decommission, maintenance, servers, balance
    _admin.add_command(_fleet_command)
cli.add_command(_admin)
cli.add_command(_bench)
cli.add_command(_certs)
cli.add_command(_chaos)
cli.add_command(_s3)
cli.add_command(_webhdfs)
_register_server(cli)  # server, master, config-server, chunkserver, local-cluster, demo
for _command in [*FILE_COMMANDS, *EDIT_COMMANDS, *SNAPSHOT_COMMANDS, *ACL_COMMANDS]:
    cli.add_command(_command)
_CLIENT_COMMANDS = frozenset(
    {"admin", *(c.name for c in [*FILE_COMMANDS, *EDIT_COMMANDS, *SNAPSHOT_COMMANDS])}
)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
