"""``keelfs chaos``: soak-test a running cluster under faults and check every acknowledged
file (``keelfs.chaos``). The report is one JSON object on stdout (or ``--report FILE``);
progress goes to stderr. Exit status: 0 no violation, 1 violations, 2 the run could not start.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

__all__ = ["chaos"]


def _faults(text: str) -> tuple[str, ...]:
    from keelfs.chaos import ALL_FAULTS

    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in ALL_FAULTS]
    if unknown:
        raise click.BadParameter(
            f"unknown fault {unknown[0]!r} (choose from {','.join(ALL_FAULTS)})",
            param_hint="--faults",
        )
    return kinds


@click.command("chaos")
@click.option("--minutes", type=float, default=5.0, show_default=True, help="How long to run.")
@click.option("--seed", type=int, default=1, show_default=True, help="Draws workload and faults.")
@click.option(
    "--address",
    envvar="KEELFS_ADDRESS",
    default="",
    help="Any metadata node's client address, or several separated by commas (env "
    "KEELFS_ADDRESS; default: the config servers of --cluster-dir, else 127.0.0.1:7001).",
)
@click.option(
    "--cluster-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Directory of a `keelfs local-cluster`: lets chaos kill, freeze and restart its "
    "processes, and partition them if it was started with --netns (root) (without it: "
    "leadership transfers and resharding only).",
)
@click.option("--writers", type=int, default=4, show_default=True, help="Writer threads.")
@click.option("--renamers", type=int, default=2, show_default=True, help="Renamer threads.")
@click.option(
    "--contenders", type=int, default=3, show_default=True, help="Threads racing on shared names."
)
@click.option(
    "--faults",
    "faults_text",
    default="kill,stop,restart,transfer,reshard,partition",
    show_default=True,
    help="Fault kinds to inject (those the cluster does not allow are listed in the "
    "report's faults.not_available, with the reason).",
)
@click.option("--no-faults", is_flag=True, help="Run the workload only.")
@click.option(
    "--max-file-mib", type=float, default=4.0, show_default=True, help="Largest file written."
)
@click.option(
    "--settle-timeout",
    type=float,
    default=120.0,
    show_default=True,
    help="Seconds to heal and settle after the run (not settled by then: a violation).",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the JSON report to this file instead of stdout.",
)
def chaos(
    minutes: float,
    seed: int,
    address: str,
    cluster_dir: Path | None,
    writers: int,
    renamers: int,
    contenders: int,
    faults_text: str,
    no_faults: bool,
    max_file_mib: float,
    settle_timeout: float,
    report_path: Path | None,
) -> None:
    """Soak-test a running cluster: writers, renamers and racing contenders for --minutes
    while killing, freezing and restarting processes, partitioning them (a cluster started with
    `keelfs local-cluster up --netns`, as root), moving leaders and resharding; then heal,
    read back every acknowledged file (MD5) and print a JSON report. Exit status 1 if any
    acknowledged write was lost or changed, or a deleted name reappeared."""
    from keelfs.chaos import ChaosError, Options, run
    from keelfs.server.local_cluster import LocalClusterError

    if minutes <= 0:
        raise click.BadParameter("must be positive", param_hint="--minutes")
    if min(writers, renamers, contenders) < 0 or writers + renamers + contenders == 0:
        raise click.UsageError("give at least one writer, renamer or contender")
    options = Options(
        minutes=minutes,
        seed=seed,
        address=address if address or cluster_dir else "127.0.0.1:7001",
        cluster_dir=cluster_dir,
        writers=writers,
        renamers=renamers,
        contenders=contenders,
        faults=() if no_faults else _faults(faults_text),
        max_size=max(0, int(max_file_mib * (1 << 20))),
        settle_timeout_s=settle_timeout,
    )
    # a writer that chaos abandoned keeps warning about its lease: progress lines only
    logging.getLogger("keelfs.client").setLevel(logging.ERROR)
    try:
        report = run(options, progress=lambda msg: click.echo(msg, err=True))
    except (ChaosError, LocalClusterError) as exc:
        click.echo(f"keelfs chaos: {exc}", err=True)
        sys.exit(2)
    text = json.dumps(report, indent=2, sort_keys=True)
    if report_path is not None:
        report_path.write_text(text + "\n")
        click.echo(f"report written to {report_path}", err=True)
    else:
        click.echo(text)
    checked = report["checked"]
    click.echo(
        f"chaos: {report['operations']['total']} operations, "
        f"{sum(report['faults']['injected'].values())} faults, {checked['files']} acknowledged "
        f"files checked, {len(report['violations'])} violations",
        err=True,
    )
    sys.exit(1 if report["violations"] else 0)
