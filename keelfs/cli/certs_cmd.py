"""``keelfs certs``: the certificate authorities and certificates of a TLS cluster.

::

    keelfs certs init ./certs                                  # peer CA + client CA
    keelfs certs issue ./certs master/1 --host 10.0.0.1 --host m1.example
    keelfs certs issue ./certs chunkserver/cs-1 --host 10.0.0.21
    keelfs certs issue ./certs user/alice --group staff
    keelfs certs issue ./certs user/root --admin
    keelfs certs show ./certs/master-1.crt

NAME is the identity the certificate proves, as its ``keelfs://`` URI writes it: ``master/ID``
and ``config/ID`` (the Raft node id), ``chunkserver/ID``, ``user/NAME``. The library is
``keelfs.tls.certs``; its docstring has the directory layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

__all__ = ["certs"]


class CertsError(click.ClickException):
    """One line on stderr, exit status 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"keelfs certs: {self.format_message()}", err=True)


@click.group()
def certs() -> None:
    """Make the CAs and the node and user certificates of a TLS cluster."""


@certs.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--days", default=3650, show_default=True, help="Validity of the two CAs.")
def init_cmd(directory: Path, days: int) -> None:
    """Make the peer CA (nodes) and the client CA (users) in DIRECTORY (created 0700)."""
    from keelfs.tls.certs import init_authorities
    from keelfs.tls.identity import TlsError

    try:
        peer, client = init_authorities(directory, days=days)
    except TlsError as exc:
        raise CertsError(str(exc)) from None
    click.echo(f"peer CA:   {peer.cert}\nclient CA: {client.cert}")
    click.echo("Keep the .key files secret: whoever has one can issue certificates.")


@certs.command("issue")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.argument("name")
@click.option("--host", "hosts", multiple=True, help="A DNS name or IP the node is dialled at.")
@click.option("--group", "groups", multiple=True, help="A group of the user (repeatable).")
@click.option("--admin", is_flag=True, help="The user may call admin RPCs.")
@click.option(
    "--proxy-for",
    "proxy_for",
    multiple=True,
    help="A user this certificate may act for (repeatable; '*': any), e.g. for a gateway "
    "serving many users (docs/webhdfs.md).",
)
@click.option("--days", default=365, show_default=True, help="Validity of the certificate.")
@click.option("--force", is_flag=True, help="Replace an existing certificate of that name.")
def issue_cmd(
    directory: Path,
    name: str,
    hosts: tuple[str, ...],
    groups: tuple[str, ...],
    admin: bool,
    proxy_for: tuple[str, ...],
    days: int,
    force: bool,
) -> None:
    """Issue NAME's certificate and key into DIRECTORY: master/ID, config/ID, chunkserver/ID
    (signed by the peer CA) or user/NAME (signed by the client CA)."""
    from keelfs.tls.certs import issue_client, issue_node
    from keelfs.tls.identity import TlsError

    kind, _, ident = name.partition("/")
    if not ident:
        raise click.BadParameter("ROLE/ID or user/NAME, e.g. master/3", param_hint="NAME")
    user = kind == "user"
    if user and hosts:
        raise click.BadParameter("--host is for node certificates", param_hint="--host")
    if not user and (groups or admin or proxy_for):
        raise click.BadParameter("--group, --admin and --proxy-for are for user certificates")
    try:
        if user:
            pair = issue_client(
                directory,
                ident,
                groups=groups,
                admin=admin,
                days=days,
                overwrite=force,
                proxy_for=proxy_for,
            )
        else:
            pair = issue_node(directory, kind, ident, hosts, days=days, overwrite=force)
    except TlsError as exc:
        raise CertsError(str(exc)) from None
    click.echo(f"certificate: {pair.cert}\nkey:         {pair.key}")


@certs.command("show")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def show_cmd(path: Path, as_json: bool) -> None:
    """What a certificate proves: its keelfs:// names, hosts, issuer and validity."""
    from keelfs.tls.certs import describe, load_certificate
    from keelfs.tls.identity import TlsError

    try:
        info = describe(load_certificate(path))
    except TlsError as exc:
        raise CertsError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(info))
        return
    for key, value in info.items():
        shown = ", ".join(value) if isinstance(value, list) else value
        click.echo(f"{key + ':':12} {shown}")
