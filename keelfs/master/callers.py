"""Who an RPC acts for: the ``Caller`` (``keelfs.meta.principals``) a master puts in every
command it proposes and every read it serves for a client.

With TLS the certificate decides (``keelfs.tls.Authenticator``): a client certificate's user
and groups, a superuser if it is an admin or in the superuser group; a peer (a master or config
server acting for itself) is the superuser. Whatever a request or its metadata claims is
ignored, with one exception: a certificate with proxy rights (``keelfs://proxy/USER`` or
``keelfs://proxy/*``, HDFS's proxy users: a gateway serving many users) acts for the user its
call's ``keelfs-user`` metadata names, if it may name that one (``PermissionDenied``
otherwise); that user's groups are the host's of that name (as in simple mode), and a user
acted for is never a superuser.

Without TLS ("simple" mode, HDFS's, for loopback only) the client's word is taken: the user
name in the ``keelfs-user`` metadata (the client library sends the OS user by default), its
groups those of that name on this host (``grp``, HDFS's ``ShellBasedUnixGroupsMapping``), a
superuser if it is the OS user running this master or in the superuser group. A request that
names no user at all is the superuser: it comes from an old client or a raw gRPC tool, and
refusing it would secure nothing, since in simple mode anyone may name the superuser anyway.

A master acting for a client through another master (``keelfs.client.identity.ACTING_FOR``)
sends the whole caller (``keelfs-caller``): taken from a peer with TLS, from anyone without
(who could as well name any user).
"""

from __future__ import annotations

import contextlib
import getpass
import grp
import json
import pwd
import threading
import time
from typing import Any

from keelfs.client.identity import CALLER_METADATA_KEY, USER_METADATA_KEY
from keelfs.errors import InvalidArgument, PermissionDenied
from keelfs.meta.principals import SUPERUSER, Caller, check_principal
from keelfs.tls.credentials import Authenticator
from keelfs.tls.identity import Client, Peer

__all__ = ["DEFAULT_SUPERUSER_GROUP", "Callers", "os_groups"]

DEFAULT_SUPERUSER_GROUP = "supergroup"
_GROUPS_TTL_S = 300.0
"""How long a user's OS groups are cached (HDFS: ``hadoop.security.groups.cache.secs``)."""


def os_groups(user: str) -> tuple[str, ...]:
    """The groups of ``user`` on this host: its primary group first, then every group that
    lists it as a member; none for a name this host does not know."""
    names: list[str] = []
    with contextlib.suppress(KeyError):
        names.append(grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name)
    for entry in grp.getgrall():
        if user in entry.gr_mem and entry.gr_name not in names:
            names.append(entry.gr_name)
    return tuple(names)


class Callers:
    """The ``Caller`` of each request context of one master process (module doc)."""

    def __init__(
        self,
        authenticator: Authenticator | None = None,
        *,
        superuser_group: str = DEFAULT_SUPERUSER_GROUP,
        process_user: str | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.superuser_group = superuser_group
        self.process_user = process_user if process_user is not None else getpass.getuser()
        self._groups: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._lock = threading.Lock()

    def caller_of(self, context: Any) -> Caller:
        """The caller of one request (``context``: a servicer context or a batch item's)."""
        metadata = _metadata(context)
        if self.authenticator is not None:
            identity = self.authenticator.identity_of(context)
            if isinstance(identity, Peer) and CALLER_METADATA_KEY in metadata:
                return _decode_caller(metadata[CALLER_METADATA_KEY])
            return self._certified(identity, metadata.get(USER_METADATA_KEY))
        if CALLER_METADATA_KEY in metadata:
            return _decode_caller(metadata[CALLER_METADATA_KEY])
        if USER_METADATA_KEY not in metadata:
            return SUPERUSER
        user = check_principal(metadata[USER_METADATA_KEY], USER_METADATA_KEY)
        groups = self._os_groups(user)
        superuser = user == self.process_user or self.superuser_group in groups
        return Caller(user, groups, superuser)

    def _certified(self, identity: object, named: str | None = None) -> Caller:
        if isinstance(identity, Peer):
            return SUPERUSER
        if (
            isinstance(identity, Client)
            and identity.proxy_for
            and named not in (None, "", identity.user)
        ):
            return self._acted_for(identity, str(named))
        if isinstance(identity, Client):
            groups = tuple(sorted(identity.groups))
            superuser = identity.admin or self.superuser_group in groups
            return Caller(identity.user, groups, superuser)
        raise PermissionDenied("", "", message="permission denied: no authenticated identity")

    def _acted_for(self, identity: Client, named: str) -> Caller:
        """The user a proxy certificate names (module doc)."""
        user = check_principal(named, USER_METADATA_KEY)
        if not identity.may_act_for(user):
            raise PermissionDenied(
                "", "", message=f"permission denied: {identity.user} may not act for {user}"
            )
        return Caller(user, self._os_groups(user), False)

    def _os_groups(self, user: str) -> tuple[str, ...]:
        now = time.monotonic()
        with self._lock:
            cached = self._groups.get(user)
        if cached is not None and cached[0] > now:
            return cached[1]
        groups = os_groups(user)
        with self._lock:
            if len(self._groups) > 4096:
                self._groups.clear()
            self._groups[user] = (now + _GROUPS_TTL_S, groups)
        return groups


def _metadata(context: Any) -> dict[str, str]:
    """The request's keelfs identity metadata (the first value of each key)."""
    found: dict[str, str] = {}
    method = getattr(context, "invocation_metadata", None)
    for key, value in (method() if method is not None else None) or ():
        if key in (USER_METADATA_KEY, CALLER_METADATA_KEY) and key not in found:
            text = value if isinstance(value, str) else bytes(value).decode("utf-8", "replace")
            found[key] = text
    return found


def _decode_caller(text: str) -> Caller:
    try:
        raw = json.loads(text)
    except ValueError:
        raise InvalidArgument(f"{CALLER_METADATA_KEY} is not JSON", CALLER_METADATA_KEY) from None
    return Caller.decode(raw)
