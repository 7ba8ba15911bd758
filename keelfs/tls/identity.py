"""Who a certificate names: the ``keelfs://`` URIs in its subject alternative names.

A node certificate (signed by the peer CA) carries exactly one node URI::

    keelfs://master/3        a metadata master, Raft node id 3
    keelfs://config/1        a config-group member, Raft node id 1
    keelfs://chunkserver/cs-2

A client certificate (signed by the client CA) carries one user URI, a group URI per group and,
for an operator, the admin URI::

    keelfs://user/alice   keelfs://group/staff   keelfs://role/admin

and, for a gateway acting for other users (a proxy user, as HDFS's
``hadoop.proxyuser.*``), one URI per user it may name, or ``*`` for any::

    keelfs://proxy/bob   keelfs://proxy/*

A URI counts only in a certificate of the CA that may issue it (``identity_from_uris`` is told
which signed it): the client CA cannot make a peer, whatever it writes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ADMIN_URI",
    "ANONYMOUS",
    "METADATA_ROLES",
    "NODE_ROLES",
    "Anonymous",
    "Client",
    "Identity",
    "Peer",
    "TlsError",
    "check_name",
    "group_uri",
    "identity_from_uris",
    "node_uri",
    "proxy_uri",
    "user_uri",
]

SCHEME = "keelfs://"
METADATA_ROLES = frozenset({"master", "config"})
"""Roles whose id is a Raft node id (a process hosting Raft groups)."""
NODE_ROLES = METADATA_ROLES | {"chunkserver"}
ADMIN_URI = f"{SCHEME}role/admin"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")


class TlsError(ValueError):
    """A certificate, key or name that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Peer:
    """A cluster node, authenticated by a peer-CA certificate."""

    role: str
    node_id: str

    @property
    def raft_node(self) -> int | None:
        """The Raft node id of a metadata node (master or config server); None otherwise."""
        return int(self.node_id) if self.role in METADATA_ROLES else None

    def __str__(self) -> str:
        return f"{self.role} {self.node_id}"


@dataclass(frozen=True)
class Client:
    """A user, authenticated by a client-CA certificate."""

    user: str
    groups: frozenset[str] = frozenset()
    admin: bool = False
    proxy_for: frozenset[str] = frozenset()
    """Users this certificate may act for (``*``: any), named in each call's metadata."""

    def __str__(self) -> str:
        return f"user {self.user}{' (admin)' if self.admin else ''}"

    def may_act_for(self, user: str) -> bool:
        return "*" in self.proxy_for or user in self.proxy_for


@dataclass(frozen=True)
class Anonymous:
    """No verified certificate, or one that names nobody this cluster knows."""

    def __str__(self) -> str:
        return "an unauthenticated caller"


ANONYMOUS = Anonymous()
Identity = Peer | Client | Anonymous


def check_name(kind: str, name: str) -> str:
    """``name`` if it is a valid user, group or chunk-server name (letters, digits, ``._@-``,
    starting with a letter or digit, at most 128); else ``TlsError``."""
    if not _NAME.fullmatch(name):
        raise TlsError(f"invalid {kind} name {name!r}: letters, digits and ._@- only")
    return name


def check_node(role: str, node_id: str) -> tuple[str, str]:
    """``(role, node_id)`` if valid: a known role; a metadata node's id a positive integer."""
    if role not in NODE_ROLES:
        raise TlsError(f"unknown node role {role!r} (known: {', '.join(sorted(NODE_ROLES))})")
    if role in METADATA_ROLES:
        if not node_id.isdigit() or int(node_id) == 0 or node_id != str(int(node_id)):
            raise TlsError(f"a {role}'s id is its Raft node id, a positive integer: {node_id!r}")
    else:
        check_name(f"{role} id", node_id)
    return role, node_id


def node_uri(role: str, node_id: str | int) -> str:
    role, node = check_node(role, str(node_id))
    return f"{SCHEME}{role}/{node}"


def user_uri(user: str) -> str:
    return f"{SCHEME}user/{check_name('user', user)}"


def proxy_uri(user: str) -> str:
    """The URI letting a certificate act for ``user`` (``*``: any user)."""
    return f"{SCHEME}proxy/{user if user == '*' else check_name('user', user)}"


def group_uri(group: str) -> str:
    return f"{SCHEME}group/{check_name('group', group)}"


def identity_from_uris(uris: Iterable[str], *, peer_ca: bool, client_ca: bool) -> Identity:
    """The identity a verified certificate's URIs name, given which CA signed it (both, when
    one CA serves as both). Node URIs count only from the peer CA, user URIs only from the
    client CA; a certificate naming two principals, or none, is ``ANONYMOUS``."""
    nodes: list[tuple[str, str]] = []
    users: list[str] = []
    groups: set[str] = set()
    proxies: set[str] = set()
    admin = False
    for uri in uris:
        if not uri.startswith(SCHEME):
            continue
        kind, _, name = uri[len(SCHEME) :].partition("/")
        if uri == ADMIN_URI:
            admin = True
        elif kind == "user" and _NAME.fullmatch(name):
            users.append(name)
        elif kind == "group" and _NAME.fullmatch(name):
            groups.add(name)
        elif kind == "proxy" and (name == "*" or _NAME.fullmatch(name)):
            proxies.add(name)
        elif kind in NODE_ROLES:
            try:
                nodes.append(check_node(kind, name))
            except TlsError:
                return ANONYMOUS
    if peer_ca and len(nodes) == 1 and not users:
        return Peer(*nodes[0])
    if client_ca and len(users) == 1 and not nodes:
        return Client(users[0], frozenset(groups), admin, frozenset(proxies))
    return ANONYMOUS
