"""``keelfs s3``: the S3 gateway (``docs/s3.md``)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click

from keelfs.cli.config_file import config_file_option

__all__ = ["s3"]


def _finite(seconds: float) -> float:
    """``FloatRange`` lets ``nan`` through (every comparison with it is false)."""
    if math.isnan(seconds):
        raise click.BadParameter("must be a number of seconds from 0 to 60")
    return seconds


@click.command("s3")
@config_file_option("s3")
@click.option(
    "--listen",
    default="127.0.0.1:7090",
    show_default=True,
    help="HOST:PORT to serve S3 on (port 0: any free port).",
)
@click.option(
    "--cluster",
    "cluster",
    multiple=True,
    help="A config server or master of the cluster (repeat, or comma-separate; default: "
    "as every command finds it, $KEELFS_ADDRESS or 127.0.0.1:7001).",
)
@click.option(
    "--credentials",
    "credentials",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="TOML or JSON file: access key id -> secret and keelfs user.",
)
@click.option(
    "--tls-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The cluster's certificate directory: each user's requests present that user's "
    "client certificate.",
)
@click.option(
    "--settings-ttl",
    type=click.FloatRange(min=0, max=60),
    callback=lambda _ctx, _param, value: _finite(value),
    default=1.0,
    show_default=True,
    help="Seconds a bucket's settings (policy, versioning, CORS, ...) are kept per gateway: "
    "how long a change made through another gateway may take to apply here; 0: read them "
    "for every request (docs/s3.md).",
)
@click.option("--insecure", is_flag=True, help="Allow a listen address off the loopback.")
@click.option("--log-level", default="INFO", show_default=True)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: one line each; json: one object per line (docs/operations.md).",
)
def s3(
    listen: str,
    cluster: tuple[str, ...],
    credentials: Path,
    tls_dir: Path | None,
    settings_ttl: float,
    insecure: bool,
    log_level: str,
    log_format: str,
) -> None:
    """Serve the cluster over S3: buckets are top-level directories, keys paths below them,
    access keys mapped to keelfs users whose permissions apply."""
    from keelfs.client.connect import resolve_seeds
    from keelfs.gateways.s3.credentials import CredentialsError, load_credentials
    from keelfs.gateways.s3.serve import GatewayConfig, check_listen, run

    try:
        check_listen(listen, insecure)
        keys = load_credentials(credentials)
    except (ValueError, CredentialsError) as exc:
        raise click.UsageError(str(exc)) from None
    seeds = [a for item in cluster for a in item.split(",") if a]
    if not seeds:
        try:
            seeds = list(resolve_seeds(None).addresses)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    config = GatewayConfig(
        listen, seeds, keys, tls_dir, log_level, log_format, settings_ttl=settings_ttl
    )
    sys.exit(run(config))
