"""Listen addresses and advertised addresses.

A node **listens** on one address (``--listen``: a host IP, or a wildcard such as ``0.0.0.0``
that takes every interface) and **advertises** another, the one the others reach it by
(``--advertise``): what a master registers with the config group and the config group hands
to clients and leader hints, what a chunk server registers and reports to the masters, what
``Status`` shows. They differ behind NAT or in a container: the process binds ``0.0.0.0:7001``
inside, and is reached as ``master-11:7001`` or ``10.0.0.11:17001``.

``advertise`` is ``HOST`` (the bound port is kept) or ``HOST:PORT`` (a port mapped elsewhere);
an IPv6 host is written in brackets (``[fd00::11]``, ``[fd00::11]:7001``). A wildcard is never
advertised: nobody can dial ``0.0.0.0``.
"""

from __future__ import annotations

import ipaddress

__all__ = ["advertised_address", "is_wildcard", "split_advertise"]


def _host_of(address: str) -> str:
    return address.rpartition(":")[0].strip("[]")


def is_wildcard(address: str) -> bool:
    """True if ``HOST:PORT`` binds every interface (``0.0.0.0``, ``[::]``, an empty host):
    an address to listen on, not one to give others."""
    host = _host_of(address)
    if not host:
        return True
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def split_advertise(advertise: str) -> tuple[str, int]:
    """``(host, port)`` of ``HOST`` (port 0: keep the bound one) or ``HOST:PORT``;
    ``ValueError`` for an empty or wildcard host, or a bad port."""
    text = advertise.strip()
    if text.startswith("["):  # [v6] or [v6]:port
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else rest
        if rest and not rest.startswith(":"):
            raise ValueError(f"advertise: expected HOST or HOST:PORT, got {advertise!r}")
        host = f"[{host}]"
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        if ":" in text:
            raise ValueError(f"advertise: write an IPv6 address in brackets, not {advertise!r}")
        host, port_text = text, ""
    if port_text and (not port_text.isdigit() or not 0 < int(port_text) <= 65535):
        raise ValueError(f"advertise: bad port in {advertise!r}")
    if not host.strip("[]") or is_wildcard(f"{host}:0"):
        raise ValueError(
            f"advertise: {advertise!r} is not an address others can dial (a host name or IP)"
        )
    return host, int(port_text or 0)


def advertised_address(advertise: str, bound: str) -> str:
    """The address to give others: ``advertise`` (its port, else ``bound``'s), else ``bound``
    (the address actually listened on, with its real port)."""
    if not advertise:
        return bound
    host, port = split_advertise(advertise)
    return f"{host}:{port or int(bound.rpartition(':')[2])}"
