"""``keelfs webhdfs``: the WebHDFS gateway (``keelfs.gateways.webhdfs``, ``docs/webhdfs.md``)."""

from __future__ import annotations

import sys

import click

from keelfs.cli.config_file import config_file_option

__all__ = ["webhdfs"]


@click.command("webhdfs")
@config_file_option("webhdfs")
@click.option(
    "--listen",
    default="127.0.0.1:9870",
    show_default=True,
    help="HOST:PORT to serve /webhdfs/v1/ on (loopback only; port 0: any free port).",
)
@click.option(
    "--cluster",
    "cluster",
    multiple=True,
    required=True,
    help="A config server's (or master's) client address; repeat it or separate with commas.",
)
@click.option(
    "--proxy-user",
    "proxy_users",
    multiple=True,
    help="A user.name allowed to act for any other user with doas= (Hadoop's proxy users).",
)
@click.option(
    "--ls-limit",
    type=click.IntRange(1, 10_000),
    default=1000,
    show_default=True,
    help="Entries per LISTSTATUS_BATCH page (HDFS's dfs.ls.limit).",
)
@click.option(
    "--tls-dir",
    default=None,
    help="A TLS cluster: the `keelfs certs` directory holding the certificate of --user.",
)
@click.option(
    "--user",
    default=None,
    help="With --tls-dir: whose certificate to present; the gateway serves that user alone.",
)
def webhdfs(
    listen: str,
    cluster: tuple[str, ...],
    proxy_users: tuple[str, ...],
    ls_limit: int,
    tls_dir: str | None,
    user: str | None,
) -> None:
    """Serve Hadoop's WebHDFS REST API for a keelfs cluster (a stateless client of it: run
    as many as you like). Clients: HdfsCLI, fsspec's webhdfs, Hadoop's webhdfs://."""
    from keelfs.gateways.webhdfs.app import GatewaySettings, parse_listen
    from keelfs.gateways.webhdfs.process import run

    addresses = tuple(a.strip() for item in cluster for a in item.split(",") if a.strip())
    try:
        parse_listen(listen)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen") from None
    if not addresses:
        raise click.BadParameter("no address given", param_hint="--cluster")
    tls = None
    if tls_dir:
        from keelfs.client.connect import client_tls

        if not user:
            raise click.BadParameter("--tls-dir needs --user NAME", param_hint="--user")
        try:
            tls = client_tls(tls_dir=tls_dir, user=user, environ={})
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--tls-dir") from None
    settings = GatewaySettings(
        addresses, listen, frozenset(proxy_users), ls_limit, tls, (user or "") if tls else ""
    )
    sys.exit(run(settings))
