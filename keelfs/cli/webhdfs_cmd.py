"""``keelfs webhdfs``: the WebHDFS gateway (``keelfs.gateways.webhdfs``, ``docs/webhdfs.md``)."""

from __future__ import annotations

import sys
from typing import Any

import click

from keelfs.cli.config_file import config_file_option

__all__ = ["webhdfs"]


@click.command("webhdfs")
@config_file_option("webhdfs")
@click.option(
    "--listen",
    default="127.0.0.1:9870",
    show_default=True,
    help="HOST:PORT to serve /webhdfs/v1/ on (port 0: any free port); loopback only, unless "
    "with --https-client-ca.",
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
@click.option(
    "--https-cert",
    default=None,
    help="Serve HTTPS with this certificate (PEM), e.g. one of `keelfs certs issue`.",
)
@click.option("--https-key", default=None, help="The private key of --https-cert (PEM).")
@click.option(
    "--https-client-ca",
    default=None,
    help="With --https-cert: callers must present a certificate of this CA, and act as its "
    "user (e.g. the client-ca.crt of `keelfs certs`); then the gateway may listen off the "
    "loopback.",
)
@click.option(
    "--token-secret-file",
    default=None,
    help="Issue and accept delegation tokens (GETDELEGATIONTOKEN, delegation=), signed with "
    "the secret in this file (at least 32 bytes); give every gateway of the cluster the same "
    "file. Tokens are bearer credentials: off the loopback only over HTTPS.",
)
@click.option(
    "--token-renew-interval",
    type=click.IntRange(1, None),
    default=24 * 3600,
    show_default=True,
    help="Seconds a delegation token lives unless renewed (HDFS's renew-interval).",
)
@click.option(
    "--token-max-lifetime",
    type=click.IntRange(1, None),
    default=7 * 24 * 3600,
    show_default=True,
    help="Seconds after which no renewal keeps a delegation token alive (HDFS's max-lifetime).",
)
@click.option(
    "--token-dir",
    default="/.webhdfs-tokens",
    show_default=True,
    help="The cluster directory holding renewals and cancellations of delegation tokens "
    "(shared by every gateway; written as the gateway's own user, mode 0700).",
)
def webhdfs(
    listen: str,
    cluster: tuple[str, ...],
    proxy_users: tuple[str, ...],
    ls_limit: int,
    tls_dir: str | None,
    user: str | None,
    https_cert: str | None,
    https_key: str | None,
    https_client_ca: str | None,
    token_secret_file: str | None,
    token_renew_interval: int,
    token_max_lifetime: int,
    token_dir: str,
) -> None:
    """Serve Hadoop's WebHDFS REST API for a keelfs cluster (a stateless client of it: run
    as many as you like). Clients: HdfsCLI, fsspec's webhdfs, Hadoop's webhdfs://."""
    from keelfs.gateways.webhdfs.app import GatewaySettings, parse_listen
    from keelfs.gateways.webhdfs.process import run
    from keelfs.gateways.webhdfs.tokens import TokenPolicy

    addresses = tuple(a.strip() for item in cluster for a in item.split(",") if a.strip())
    https = _https_settings(https_cert, https_key, https_client_ca)
    try:
        parse_listen(listen, off_loopback=https is not None and https.client_ca is not None)
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
        addresses,
        listen,
        frozenset(proxy_users),
        ls_limit,
        tls,
        (user or "") if tls else "",
        https,
        _token_secret(token_secret_file),
        TokenPolicy(token_renew_interval * 1000, token_max_lifetime * 1000),
        token_dir,
    )
    sys.exit(run(settings))


def _token_secret(path: str | None) -> Any:
    """``--token-secret-file``, checked readable and long enough (None: no tokens)."""
    if path is None:
        return None
    from pathlib import Path

    from keelfs.gateways.webhdfs.tokens import load_secret

    try:
        load_secret(Path(path))
    except (OSError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--token-secret-file") from None
    return Path(path)


def _https_settings(cert: str | None, key: str | None, client_ca: str | None) -> Any:
    """The HTTPS listener's files, each checked readable (None: plain HTTP)."""
    from pathlib import Path

    from keelfs.gateways.webhdfs.https import HttpsSettings

    if cert is None and key is None:
        if client_ca is not None:
            raise click.BadParameter(
                "needs --https-cert and --https-key", param_hint="--https-client-ca"
            )
        return None
    if cert is None or key is None:
        raise click.BadParameter(
            "give both --https-cert and --https-key", param_hint="--https-cert"
        )
    for name, value in (
        ("--https-cert", cert),
        ("--https-key", key),
        ("--https-client-ca", client_ca),
    ):
        if value is not None and not Path(value).is_file():
            raise click.BadParameter(f"no such file: {value}", param_hint=name)
    settings = HttpsSettings(Path(cert), Path(key), Path(client_ca) if client_ca else None)
    try:
        settings.ssl_context()
    except (OSError, ValueError) as exc:
        raise click.BadParameter(
            f"cannot load the certificate: {exc}", param_hint="--https-cert"
        ) from None
    return settings
