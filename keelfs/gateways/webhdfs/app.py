"""``WebHdfsGateway``: Hadoop's WebHDFS REST API on aiohttp, a stateless client of the cluster.

Every request ``/webhdfs/v1/<path>?op=OP&...`` is served by a ``keelfs.client.AsyncClient``
acting as the request's user (one client per user, kept while in use and evicted least
recently used past :data:`MAX_CLIENTS`). ``docs/webhdfs.md`` lists the operations.

**Who a request acts for** (Hadoop's "simple" authentication): ``user.name`` (no name: the
anonymous ``dr.who``, as Hadoop's default), sent to the masters as the client's user name
(``keelfs.client.identity``), whose word they take without TLS. ``doas=OTHER`` acts for
OTHER when ``user.name`` is a proxy user of this gateway (``--proxy-user NAME``, Hadoop's
``hadoop.proxyuser.NAME.*`` with ``*`` for users, groups and hosts) and is refused with
``AccessControlException`` otherwise. The gateway listens on loopback only (plain HTTP, as the
HTTP side of every keelfs process, ``keelfs.web.listen``) and refuses a request whose ``Host``
is not a loopback name or its listen address (DNS rebinding). A ``delegation=`` token
(``keelfs.gateways.webhdfs.tokens``, with ``--token-secret-file``) acts as the user it names
and no one else; its renewals and cancellations are kept in the cluster, so every gateway
sharing the secret sees them.

**A cluster with TLS** takes the user from the client's certificate and ignores the name a
request gives; the gateway then holds one user's certificate (``--tls-dir DIR --user NAME``)
and serves that user alone (any other ``user.name``/``doas``: ``AccessControlException``),
unless that certificate has proxy rights (``keelfs certs issue ... --proxy-for``: the masters
then take the user each call names, ``keelfs.master.callers``) **and** the gateway's own
callers are authenticated by their client certificates (``--https-client-ca``): then it acts
for each caller the certificate may name. Proxy rights are never used for a ``user.name``
nobody checked.

**Data** (CREATE, APPEND, OPEN) takes Hadoop's two steps: the first request answers ``307``
with a ``Location`` on the data endpoint (this same gateway: the same URL plus
``datanode=true``), or ``200 {"Location": ...}`` with ``noredirect=true``; the second request
carries the bytes, streamed both ways. A CREATE writes a hidden file beside the target
(``.NAME._WEBHDFS_<random>_COPYING_``) and renames it into place once complete, so a CREATE
that fails (client gone, cluster failover) leaves the target as it was, never half-written;
the hidden file is deleted (or, if the gateway itself dies, left behind under that name).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import posixpath
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from multidict import MultiDict

from keelfs.client import AsyncClient
from keelfs.client.identity import default_user
from keelfs.errors import AlreadyExists, InvalidArgument, KeelError, NotADirectory, NotFound
from keelfs.gateways.site import HttpSite
from keelfs.gateways.webhdfs import errors, shapes, tokens
from keelfs.gateways.webhdfs.https import HttpsSettings, certificate_user
from keelfs.gateways.webhdfs.tokens import DelegationToken, TokenPolicy, TokenSigner
from keelfs.meta.records import MAX_INLINE_BYTES, FileInfo
from keelfs.tls.credentials import TlsSettings

__all__ = [
    "ANONYMOUS_USER",
    "MAX_CLIENTS",
    "PREFIX",
    "GatewaySettings",
    "WebHdfsGateway",
    "file_checksum",
    "home_directory",
    "is_loopback_host",
    "parse_listen",
    "trash_root",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
PREFIX = "/webhdfs/v1"
ANONYMOUS_USER = "dr.who"
"""Who a request without ``user.name`` acts for (Hadoop's anonymous user)."""
MAX_CLIENTS = 128
"""Clients (one per user) kept at most; an idle one is closed to make room."""
LIST_PAGE = 1000
"""Entries per ``LISTSTATUS_BATCH`` page (HDFS's ``dfs.ls.limit``)."""
BODY_PIECE = 1 << 20
TOKEN_DIR = "/.webhdfs-tokens"
"""Where renewals and cancellations of delegation tokens are kept (``tokens``)."""
QUOTA_DONT_SET = (1 << 63) - 1
"""HDFS's ``HdfsConstants.QUOTA_DONT_SET`` (Long.MAX_VALUE): leave that quota as it is."""
QUOTA_RESET = -1
"""HDFS's ``QUOTA_RESET``: remove that quota."""
ACL_SPEC_OPS: dict[str, Callable[[AsyncClient, str, str], Awaitable[Any]]] = {
    "SETACL": AsyncClient.set_acl,
    "MODIFYACLENTRIES": AsyncClient.modify_acl_entries,
    "REMOVEACLENTRIES": AsyncClient.remove_acl_entries,
}
ACL_OPS = frozenset({*ACL_SPEC_OPS, "REMOVEDEFAULTACL", "REMOVEACL"})
UNBUILT_OPS: dict[str, str] = {
    **dict.fromkeys(("SETXATTR", "REMOVEXATTR", "GETXATTRS", "LISTXATTRS"), "extended attributes"),
    **dict.fromkeys(
        (
            "SETSTORAGEPOLICY",
            "UNSETSTORAGEPOLICY",
            "GETSTORAGEPOLICY",
            "GETALLSTORAGEPOLICY",
            "SATISFYSTORAGEPOLICY",
        ),
        "storage policies",
    ),
    **dict.fromkeys(
        ("ENABLEECPOLICY", "DISABLEECPOLICY", "SETECPOLICY", "GETECPOLICY", "UNSETECPOLICY"),
        "erasure coding",
    ),
    **dict.fromkeys(("GETFILEBLOCKLOCATIONS", "GET_BLOCK_LOCATIONS"), "block locations"),
    "CREATESYMLINK": "symbolic links",
    "SETQUOTABYSTORAGETYPE": "storage types (a quota per type)",
    "GETSNAPSHOTDIFFLISTING": "inode ids for a paged diff (GETSNAPSHOTDIFF answers it whole)",
    "CHECKACCESS": "access checks without an operation",
    "GETSERVERDEFAULTS": "server defaults",
    "GETSTATUS": "file system status",
}
"""Hadoop operations keelfs does not have, each answered ``UnsupportedOperationException``
naming what is missing (an op Hadoop does not have is an ``IllegalArgumentException``)."""


@dataclass(frozen=True)
class GatewaySettings:
    """``cluster``: config server (or master) addresses; ``listen``: ``HOST:PORT`` on
    loopback (port 0: any free port); ``proxy_users``: who may act for others (``doas``);
    ``ls_limit``: entries per ``LISTSTATUS_BATCH`` page; ``tls``, ``tls_user``: a TLS
    cluster's client certificate and its user."""

    cluster: tuple[str, ...]
    listen: str = "127.0.0.1:9870"
    proxy_users: frozenset[str] = field(default_factory=frozenset)
    ls_limit: int = LIST_PAGE
    """Entries per ``LISTSTATUS_BATCH`` page (HDFS's ``dfs.ls.limit``), 1 to 10,000."""
    tls: TlsSettings | None = None
    """A cluster with TLS: the certificate of ``tls_user``, whom the gateway then serves alone
    (the masters take the user from the certificate, never from the request)."""
    tls_user: str = ""
    https: HttpsSettings | None = None
    """Serve HTTPS (``keelfs.gateways.webhdfs.https``: with a client CA, callers are their
    certificates' users, and the gateway may listen off the loopback)."""

    token_secret_file: Path | None = None
    """Delegation tokens: the HMAC secret every gateway of the cluster shares (``tokens``);
    None: the token operations are ``UnsupportedOperationException``."""
    token_policy: TokenPolicy = field(default_factory=TokenPolicy)
    token_dir: str = TOKEN_DIR

    @property
    def authenticates_callers(self) -> bool:
        return self.https is not None and self.https.client_ca is not None


def home_directory(user: str) -> str:
    """GETHOMEDIRECTORY: ``/user/<user>``, as HDFS."""
    return f"/user/{user}"


def trash_root(user: str) -> str:
    """GETTRASHROOT: keelfs keeps each user's trash in ``/.Trash/<user>`` (HDFS:
    ``/user/<user>/.Trash``)."""
    return f"/.Trash/{user}"


async def file_checksum(client: AsyncClient, path: str) -> tuple[str, str, int]:
    """(algorithm, checksum bytes in hex, their length) of file ``path``: HDFS's
    MD5-of-MD5-of-CRC32C, from the chunk servers' stored CRCs (``AsyncClient.checksum``)."""
    result = await client.checksum(path)
    return result.algorithm, result.hex, result.length


class _Clients:
    """One ``AsyncClient`` per user, closed when idle and the least recently used."""

    def __init__(
        self, cluster: tuple[str, ...], tls: TlsSettings | None = None, limit: int = MAX_CLIENTS
    ) -> None:
        self.cluster = cluster
        self.tls = tls
        self.limit = limit
        self._clients: OrderedDict[str, AsyncClient] = OrderedDict()
        self._in_use: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def use(self, user: str) -> AsyncIterator[AsyncClient]:
        client = self._clients.get(user)
        if client is None:
            client = AsyncClient(list(self.cluster), user=user, tls=self.tls)
            self._clients[user] = client
            await self._evict()
        self._clients.move_to_end(user)
        self._in_use[user] = self._in_use.get(user, 0) + 1
        try:
            yield client
        finally:
            self._in_use[user] -= 1
            if not self._in_use[user]:
                del self._in_use[user]

    async def _evict(self) -> None:
        for user in list(self._clients):
            if len(self._clients) <= self.limit:
                return
            if user not in self._in_use:
                await self._clients.pop(user).close()

    async def close(self) -> None:
        clients, self._clients = self._clients, OrderedDict()
        for client in clients.values():
            await client.close()


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")


def _boolean(value: bool) -> web.Response:
    return _json({"boolean": value})


_EMPTY = web.Response  # 200 with no body: SETOWNER, SETPERMISSION, SETTIMES, CONCAT, APPEND


class _Params:
    """The query's WebHDFS parameters, names case-insensitive as Hadoop takes them."""

    def __init__(self, query: Any) -> None:
        self._values: dict[str, str] = {}
        for key, value in query.items():
            self._values.setdefault(key.lower(), value)

    def text(self, name: str, default: str | None = None) -> str | None:
        return self._values.get(name.lower(), default)

    def required(self, name: str) -> str:
        value = self.text(name)
        if value is None or value == "":
            raise errors.illegal_argument(f"Required param {name} for op is null or empty")
        return value

    def boolean(self, name: str, default: bool = False) -> bool:
        value = self.text(name)
        if value is None or value == "":
            return default
        if value.lower() not in ("true", "false"):
            raise errors.illegal_argument(f'Invalid value for webhdfs parameter "{name}"')
        return value.lower() == "true"

    def integer(self, name: str, default: int | None = None, minimum: int = 0) -> int | None:
        value = self.text(name)
        if value is None or value == "" or value.lower() == "null":
            return default
        try:
            number = int(value)
        except ValueError:
            raise errors.illegal_argument(
                f'Invalid value for webhdfs parameter "{name}": {value!r} is not a number'
            ) from None
        if number < minimum:
            raise errors.illegal_argument(
                f'Invalid value for webhdfs parameter "{name}": {number} < {minimum}'
            )
        return number

    def permission(self, name: str = "permission") -> int | None:
        value = self.text(name)
        if value is None or value == "":
            return None
        try:
            mode = int(value, 8)
        except ValueError:
            mode = -1
        if not 0 <= mode <= 0o1777:
            raise errors.illegal_argument(
                f'Invalid value for webhdfs parameter "{name}": {value!r} is not an octal mode'
            )
        return mode


@dataclass
class _Call:
    """One request as the operations see it."""

    request: web.Request
    path: str
    params: _Params
    user: str
    client: AsyncClient
    token: DelegationToken | None = None
    """The delegation token the request was authenticated with (``delegation=``)."""


Handler = Callable[["WebHdfsGateway", _Call], Awaitable[web.StreamResponse]]


class WebHdfsGateway:
    """The gateway (module docstring): ``start()`` binds, ``stop()`` closes; ``address`` is
    the bound ``HOST:PORT``, ``url`` the base URL."""

    def __init__(self, settings: GatewaySettings) -> None:
        if not settings.cluster:
            raise ValueError("the gateway needs the cluster's address (--cluster)")
        if not 1 <= settings.ls_limit <= 10_000:
            raise ValueError(f"ls_limit must be 1..10000, not {settings.ls_limit}")
        self.settings = settings
        self.host, self.port = parse_listen(
            settings.listen, off_loopback=settings.authenticates_callers
        )
        self._names = settings.https.host_names() if settings.https is not None else frozenset()
        self._proxy_for = _proxy_rights(settings)
        if (settings.tls is None) != (not settings.tls_user):
            raise ValueError("a TLS cluster's gateway needs both tls and tls_user")
        self._clients = _Clients(settings.cluster, settings.tls)
        self._site = HttpSite(self.host, self.port)
        self._signer: TokenSigner | None = None
        if settings.token_secret_file is not None:
            secret = tokens.load_secret(settings.token_secret_file)
            self._signer = TokenSigner(secret, settings.token_policy)
        state_user = settings.tls_user or default_user()
        self._token_state = tokens.TokenStateStore(
            settings.token_dir, _ClusterDirectory(self._clients, state_user)
        )
        self.address = ""

    # -- serving --------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._host_guard], client_max_size=1 << 20)
        app.router.add_route("*", PREFIX + "{path:.*}", self._dispatch)
        return app

    async def start(self) -> None:
        https = self.settings.https
        context = https.ssl_context() if https is not None else None
        self.address = await self._site.start(self.app(), ssl_context=context)

    @property
    def url(self) -> str:
        return self._site.url

    async def stop(self) -> None:
        await self._site.stop()
        await self._clients.close()

    @web.middleware
    async def _host_guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        host = _host_of(request.host)
        if not (is_loopback_host(host) or host == self.host or host.lower() in self._names):
            raise web.HTTPMisdirectedRequest(
                text=f"this gateway does not answer to the host name {host!r}\n"
            )
        return await handler(request)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = ""
        try:
            params = _Params(request.query)
            op = params.required("op").upper()
            path = _path(request.match_info["path"])
            handler = _OPERATIONS.get((request.method, op))
            if handler is None:
                raise _unknown(request.method, op)
            user, token = await self._authenticate(params, request)
            async with self._clients.use(user) as client:
                return await handler(self, _Call(request, path, params, user, client, token))
        except (KeelError, errors.HadoopError) as exc:
            return errors.remote_exception(exc, path)
        except (ConnectionError, asyncio.CancelledError):
            raise  # the client went away: nobody to answer
        except Exception as exc:  # noqa: BLE001  # a Hadoop client expects a RemoteException
            log.exception("%s %s failed", request.method, _loggable(request))
            return errors.remote_exception(exc, path)

    async def _authenticate(
        self, params: _Params, request: web.Request
    ) -> tuple[str, DelegationToken | None]:
        """Who the request acts for, and the delegation token that says so (if any): a
        ``delegation=`` token acts as its owner alone (Hadoop: the user is the token's; a
        ``user.name`` or ``doas`` naming anyone else is refused), whoever presents it."""
        text = params.text("delegation")
        if not text:
            return self._acting_user(params, request), None
        token = await self._live_token(text)
        user = token.owner
        named = params.text("user.name")
        if named and named != user:
            raise errors.HadoopError(
                errors.IO_EXCEPTION, f"Usernames not matched: name={named} != expected={user}"
            )
        doas = params.text("doas")
        if doas and doas != user:
            raise errors.access_denied(
                f"User: {user} (a delegation token's) is not allowed to impersonate {doas}"
            )
        self._check_served(user)
        return user, token

    async def _live_token(self, text: str) -> DelegationToken:
        if self._signer is None:
            raise errors.security(
                "Failed to obtain user group information: this gateway accepts no delegation "
                "tokens (it was started without --token-secret-file)"
            )
        token = self._signer.verify(text)
        await tokens.check_live(self._signer, self._token_state, token)
        return token

    def _acting_user(self, params: _Params, request: web.Request | None = None) -> str:
        user = self._caller(params, request)
        doas = params.text("doas")
        if doas and doas != user:
            if user not in self.settings.proxy_users:
                raise errors.access_denied(f"User: {user} is not allowed to impersonate {doas}")
            user = doas
        self._check_served(user)
        return user

    def _caller(self, params: _Params, request: web.Request | None) -> str:
        """Who sent the request (before ``doas``): the certificate's user, or ``user.name``."""
        if self.settings.authenticates_callers:
            return self._certificate_user(params, request)
        return params.text("user.name") or ANONYMOUS_USER

    def _check_served(self, user: str) -> None:
        only = self.settings.tls_user
        if only and user != only and not self._may_proxy(user):
            raise errors.access_denied(
                f"User: {user}: this gateway acts for {only} alone (its TLS certificate's user)"
            )

    def _may_proxy(self, user: str) -> bool:
        """Whether the gateway's certificate may act for ``user`` on a TLS cluster: only for
        callers authenticated by their own certificates."""
        if not self.settings.authenticates_callers:
            return False
        return "*" in self._proxy_for or user in self._proxy_for

    @staticmethod
    def _certificate_user(params: _Params, request: web.Request | None) -> str:
        """The caller's certificate's user; a ``user.name`` naming anyone else is refused."""
        transport = request.transport if request is not None else None
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        user = certificate_user(ssl_object)
        if user is None:
            raise errors.access_denied("the client certificate names no keelfs user")
        named = params.text("user.name")
        if named and named != user:
            raise errors.access_denied(
                f"User: {named} is not the user of the client certificate ({user})"
            )
        return user

    # -- the two steps of CREATE, APPEND, OPEN ---------------------------------------------------
    def _data_location(self, call: _Call) -> web.StreamResponse:
        query = MultiDict(call.request.query)
        query["datanode"] = "true"
        query.pop("noredirect", None)
        location = str(call.request.url.with_query(query))
        if call.params.boolean("noredirect"):
            return _json({"Location": location})
        return web.Response(status=307, headers={"Location": location})

    # -- reads -----------------------------------------------------------------------------------
    async def _open(self, call: _Call) -> web.StreamResponse:
        offset = call.params.integer("offset", 0) or 0
        length = call.params.integer("length")
        call.params.integer("buffersize")
        if not call.params.boolean("datanode"):
            info = await call.client.stat(call.path)
            _require_file(info)
            return self._data_location(call)
        reader = await call.client.open(call.path)
        try:
            if offset > reader.length:
                raise errors.HadoopError(
                    errors.IO_EXCEPTION,
                    f"Offset={offset} out of the range [0, {reader.length}]; "
                    f"OPEN, path={call.path}",
                )
            end = reader.length if length is None else min(reader.length, offset + length)
            response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            response.content_length = end - offset
            await response.prepare(call.request)
            try:
                async for piece in reader.iter_range(offset, end):
                    await response.write(piece)
            except KeelError:
                # the status line is out: cut the connection, the client sees a short body
                log.warning("OPEN %s failed after %d bytes", call.path, offset, exc_info=True)
                if call.request.transport is not None:
                    call.request.transport.close()
                return response
            await response.write_eof()
            return response
        finally:
            await reader.close()

    async def _get_file_status(self, call: _Call) -> web.StreamResponse:
        return _json({"FileStatus": shapes.file_status(await call.client.stat(call.path))})

    async def _list_status(self, call: _Call) -> web.StreamResponse:
        statuses = [
            shapes.file_status(e, "" if e.path == call.path else e.name)
            async for e in call.client.ls(call.path)
        ]
        return _json({"FileStatuses": {"FileStatus": statuses}})

    async def _list_status_batch(self, call: _Call) -> web.StreamResponse:
        start_after = call.params.text("startAfter") or None
        info = await call.client.stat(call.path)
        if not info.is_dir:
            page, remaining = [shapes.file_status(info)], 0
        else:
            limit = self.settings.ls_limit
            entries = await call.client.list_page(call.path, start_after, limit)
            page = [shapes.file_status(e, e.name) for e in entries]
            remaining = 0
            if len(entries) == limit:
                rest = await call.client.list_page(call.path, entries[-1].name, 10_000)
                remaining = len(rest)
        body = {
            "DirectoryListing": {
                "partialListing": {"FileStatuses": {"FileStatus": page}},
                "remainingEntries": remaining,
            }
        }
        return _json(body)

    async def _content_summary(self, call: _Call) -> web.StreamResponse:
        summary = await call.client.du(call.path)
        names = space = None
        if summary.directory_count:  # a directory: its quotas (a file has none)
            quota = await call.client.quota(call.path)
            names, space = quota.names_limit, quota.space_limit
        return _json({"ContentSummary": shapes.content_summary(summary, names, space)})

    async def _quota_usage(self, call: _Call) -> web.StreamResponse:
        q = await call.client.quota(call.path)
        body = shapes.quota_usage(q.names_used, q.names_limit, q.space_used, q.space_limit)
        return _json({"QuotaUsage": body})

    async def _set_quota(self, call: _Call) -> web.StreamResponse:
        """HDFS's ``setQuota`` (superusers, the masters check): each of ``namespacequota``
        and ``storagespacequota`` a limit, ``-1`` to remove it, or absent (Long.MAX_VALUE) to
        leave it as it is."""
        names = call.params.integer("namespacequota", QUOTA_DONT_SET, minimum=QUOTA_RESET)
        space = call.params.integer("storagespacequota", QUOTA_DONT_SET, minimum=QUOTA_RESET)
        assert names is not None and space is not None
        if names == 0:
            raise errors.illegal_argument(
                f"Invalid values for quota : {names} and {space} (a namespace quota is >= 1)"
            )
        if QUOTA_DONT_SET in (names, space):
            current = await call.client.quota(call.path)
            kept_names, kept_space = current.names_limit, current.space_limit
        else:
            kept_names = kept_space = None
        new_names = _quota_value(names, kept_names)
        new_space = _quota_value(space, kept_space)
        if new_names is None and new_space is None:
            await call.client.clear_quota(call.path)
        else:
            await call.client.set_quota(call.path, names=new_names, space=new_space)
        return _EMPTY()

    async def _file_checksum(self, call: _Call) -> web.StreamResponse:
        _require_file(await call.client.stat(call.path))
        algorithm, hex_bytes, length = await file_checksum(call.client, call.path)
        return _json({"FileChecksum": shapes.file_checksum(algorithm, hex_bytes, length)})

    async def _home_directory(self, call: _Call) -> web.StreamResponse:
        return _json({"Path": home_directory(call.user)})

    async def _trash_root(self, call: _Call) -> web.StreamResponse:
        return _json({"Path": trash_root(call.user)})

    async def _acl_status(self, call: _Call) -> web.StreamResponse:
        return _json({"AclStatus": shapes.acl_status(await call.client.stat(call.path))})

    async def _acl_change(self, call: _Call) -> web.StreamResponse:
        """SETACL, MODIFYACLENTRIES, REMOVEACLENTRIES (``aclspec``), REMOVEDEFAULTACL,
        REMOVEACL: the client's ACL calls (the masters check the owner and the spec)."""
        op = (call.params.text("op") or "").upper()
        client, path = call.client, call.path
        if op in ACL_SPEC_OPS:
            spec = call.params.text("aclspec") or ""
            if not spec:
                raise errors.illegal_argument(f"Required param aclspec for op {op} is null")
            await ACL_SPEC_OPS[op](client, path, spec)
        elif op == "REMOVEDEFAULTACL":
            await client.remove_default_acl(path)
        else:
            await client.remove_acl(path)
        return _EMPTY()

    # -- writes ----------------------------------------------------------------------------------
    async def _create(self, call: _Call) -> web.StreamResponse:
        overwrite = call.params.boolean("overwrite")
        replication = call.params.integer("replication", minimum=1)
        block_size = call.params.integer("blocksize", minimum=1)
        mode = call.params.permission()
        call.params.integer("buffersize")
        if not call.params.boolean("datanode"):
            await _check_creatable(call.client, call.path, overwrite)
            return self._data_location(call)
        await self._write_new(call, overwrite, replication, block_size, mode)
        location = f"webhdfs://{call.request.host}{call.path}"
        return web.Response(status=201, headers={"Location": location})

    async def _write_new(
        self,
        call: _Call,
        overwrite: bool,
        replication: int | None,
        block_size: int | None,
        mode: int | None,
    ) -> None:
        """The body into a hidden file beside ``call.path``, renamed into place when complete
        (module docstring); the hidden file is removed when anything fails."""
        await _check_creatable(call.client, call.path, overwrite)
        directory, name = posixpath.split(call.path)
        hidden = posixpath.join(directory, f".{name}._WEBHDFS_{uuid.uuid4().hex[:16]}_COPYING_")
        client = call.client
        try:
            head = await _read_head(call.request, MAX_INLINE_BYTES + 1)
            if len(head) <= MAX_INLINE_BYTES:
                await _with_parents(
                    client,
                    directory,
                    lambda: client.write_bytes(
                        hidden, head, replication=replication, block_size=block_size
                    ),
                )
            else:
                writer = await _with_parents(
                    client,
                    directory,
                    lambda: client.open(
                        hidden, "wb", replication=replication, block_size=block_size
                    ),
                )
                try:
                    await writer.write(head)
                    async for piece in call.request.content.iter_chunked(BODY_PIECE):
                        await writer.write(piece)
                except BaseException:
                    await writer.abort()
                    raise
                await writer.close()
            if mode is not None:
                await client.chmod(hidden, mode)
            await client.rename(hidden, call.path, overwrite=overwrite)
        except BaseException:
            with contextlib.suppress(KeelError, OSError, asyncio.CancelledError):
                await asyncio.shield(client.delete(hidden))
            raise

    async def _mkdirs(self, call: _Call) -> web.StreamResponse:
        mode = call.params.permission()
        await call.client.mkdir(call.path, parents=True, mode=mode)
        return _boolean(True)

    async def _rename(self, call: _Call) -> web.StreamResponse:
        destination = _path(call.params.required("destination"))
        try:
            with contextlib.suppress(NotFound):
                if (await call.client.stat(destination)).is_dir:
                    destination = posixpath.join(destination, posixpath.basename(call.path))
            await call.client.rename(call.path, destination)
        except (NotFound, AlreadyExists, NotADirectory, InvalidArgument):
            return _boolean(False)  # HDFS's rename says false for these
        return _boolean(True)

    async def _set_replication(self, call: _Call) -> web.StreamResponse:
        replication = call.params.integer("replication", minimum=1)
        info = await call.client.stat(call.path)
        if info.is_dir:
            return _boolean(False)
        if replication is not None:
            await call.client.set_replication(call.path, replication)
        return _boolean(True)

    async def _set_owner(self, call: _Call) -> web.StreamResponse:
        owner = call.params.text("owner") or None
        group = call.params.text("group") or None
        if owner is None and group is None:
            raise errors.illegal_argument("Both owner and group are empty.")
        await call.client.chown(call.path, owner, group)
        return _EMPTY()

    async def _set_permission(self, call: _Call) -> web.StreamResponse:
        mode = call.params.permission()
        await call.client.chmod(call.path, 0o755 if mode is None else mode)
        return _EMPTY()

    async def _set_times(self, call: _Call) -> web.StreamResponse:
        mtime = call.params.integer("modificationtime", -1, minimum=-1)
        atime = call.params.integer("accesstime", -1, minimum=-1)
        if mtime == -1 and atime == -1:
            return _EMPTY()
        await call.client.set_times(
            call.path,
            mtime=None if mtime == -1 else mtime,
            atime=None if atime == -1 else atime,
        )
        return _EMPTY()

    async def _append(self, call: _Call) -> web.StreamResponse:
        call.params.integer("buffersize")
        if not call.params.boolean("datanode"):
            _require_file(await call.client.stat(call.path))
            return self._data_location(call)
        writer = await call.client.open(call.path, "ab")
        try:
            async for piece in call.request.content.iter_chunked(BODY_PIECE):
                await writer.write(piece)
        except BaseException:
            await writer.abort()
            raise
        await writer.close()
        return _EMPTY()

    async def _concat(self, call: _Call) -> web.StreamResponse:
        sources = [_path(s) for s in call.params.required("sources").split(",") if s]
        await call.client.concat(call.path, sources)
        return _EMPTY()

    async def _truncate(self, call: _Call) -> web.StreamResponse:
        length = call.params.integer("newlength")
        if length is None:
            raise errors.illegal_argument("Required param newlength for op TRUNCATE is null")
        await call.client.truncate(call.path, length)
        return _boolean(True)

    async def _delete(self, call: _Call) -> web.StreamResponse:
        recursive = call.params.boolean("recursive")
        try:
            await call.client.delete(call.path, recursive=recursive)
        except NotFound:
            return _boolean(False)
        except InvalidArgument:
            if not await _disallow_snapshots_within(call.client, call.path):
                raise
            try:
                await call.client.delete(call.path, recursive=recursive)
            except NotFound:
                return _boolean(False)
        return _boolean(True)

    # -- snapshots (docs/data.md, "Snapshots") ---------------------------------------------------
    async def _allow_snapshot(self, call: _Call) -> web.StreamResponse:
        await _snapshot_call(call.client.allow_snapshot(call.path))
        return _EMPTY()

    async def _disallow_snapshot(self, call: _Call) -> web.StreamResponse:
        await _snapshot_call(call.client.disallow_snapshot(call.path))
        return _EMPTY()

    async def _create_snapshot(self, call: _Call) -> web.StreamResponse:
        name = call.params.text("snapshotname") or None
        where = await _snapshot_call(call.client.create_snapshot(call.path, name))
        return _json({"Path": where})

    async def _delete_snapshot(self, call: _Call) -> web.StreamResponse:
        name = call.params.required("snapshotname")
        await _snapshot_call(call.client.delete_snapshot(call.path, name))
        return _EMPTY()

    async def _rename_snapshot(self, call: _Call) -> web.StreamResponse:
        old = call.params.required("oldsnapshotname")
        new = call.params.required("snapshotname")
        await _snapshot_call(call.client.rename_snapshot(call.path, old, new))
        return _EMPTY()

    async def _snapshot_diff(self, call: _Call) -> web.StreamResponse:
        """HDFS's ``getSnapshotDiffReport``: an empty name (or ``.``) is the live tree."""
        old = call.params.text("oldsnapshotname") or ""
        new = call.params.text("snapshotname") or ""
        entries = await _snapshot_call(call.client.snapshot_diff(call.path, old or ".", new or "."))
        report = {
            "diffList": [shapes.diff_entry(e) for e in entries],
            "fromSnapshot": old,
            "snapshotRoot": call.path,
            "toSnapshot": new,
        }
        return _json({"SnapshotDiffReport": report})

    async def _snapshottable_list(self, call: _Call) -> web.StreamResponse:
        """Every snapshottable directory the caller may stat and read (HDFS: a superuser's
        all, another user's own; keelfs's masters show every one, and the gateway cannot
        tell a superuser)."""
        out = []
        for directory in await call.client.snapshottable_directories():
            try:
                info = await call.client.stat(directory)
                count = len(await call.client.list_snapshots(directory))
            except KeelError:
                continue
            parent, name = posixpath.split(directory)
            out.append(
                {
                    "dirStatus": shapes.file_status(info, name),
                    "parentFullPath": parent if name else "",
                    "snapshotNumber": count,
                    "snapshotQuota": shapes.SNAPSHOT_QUOTA,
                }
            )
        return _json({"SnapshottableDirectoryList": out})

    async def _snapshot_list(self, call: _Call) -> web.StreamResponse:
        found = await _snapshot_call(call.client.list_snapshots(call.path))
        found.sort(key=lambda s: (s.created, s.name))
        out = []
        for number, snap in enumerate(found):
            info = await call.client.stat(snap.path)
            out.append(
                {
                    "dirStatus": shapes.file_status(info, snap.name),
                    "fullPath": call.path,
                    "snapshotID": number,
                    "deletionStatus": "ACTIVE",
                }
            )
        return _json({"SnapshotList": out})

    # -- delegation tokens (``tokens``) ------------------------------------------------------------
    def _token_signer(self, op: str) -> TokenSigner:
        if self._signer is None:
            raise errors.unsupported(
                f"{op}: this gateway issues no delegation tokens (start it with "
                "--token-secret-file)"
            )
        return self._signer

    @staticmethod
    def _not_with_token(call: _Call, what: str) -> None:
        """HDFS: a token is got or renewed only by a caller authenticated otherwise (a
        token cannot make itself a new life)."""
        if call.token is not None:
            raise errors.HadoopError(
                errors.IO_EXCEPTION,
                f"Delegation Token can be {what} only with kerberos or web authentication "
                "(this request was authenticated by a delegation token)",
            )

    async def _get_delegation_token(self, call: _Call) -> web.StreamResponse:
        signer = self._token_signer("GETDELEGATIONTOKEN")
        self._not_with_token(call, "issued")
        caller = self._caller(call.params, call.request)
        https = call.request.scheme == "https" or self.settings.https is not None
        kind = call.params.text("kind") or (tokens.HTTPS_KIND if https else tokens.KIND)
        service = call.params.text("service") or call.request.host
        renewer = call.params.text("renewer") or ""
        real_user = caller if caller != call.user else ""
        _, text = signer.issue(call.user, renewer, real_user, kind, service)
        return _json({"Token": {"urlString": text}})

    async def _renew_delegation_token(self, call: _Call) -> web.StreamResponse:
        signer = self._token_signer("RENEWDELEGATIONTOKEN")
        self._not_with_token(call, "renewed")
        token = signer.verify(call.params.required("token"))
        expiry = await tokens.renew(signer, self._token_state, token, call.user)
        return _json({"long": expiry})

    async def _cancel_delegation_token(self, call: _Call) -> web.StreamResponse:
        signer = self._token_signer("CANCELDELEGATIONTOKEN")
        token = signer.verify(call.params.required("token"))
        await tokens.cancel(self._token_state, token, call.user)
        return _EMPTY()

    async def _unsupported(self, call: _Call) -> web.StreamResponse:
        op = (call.params.text("op") or "").upper()
        raise errors.unsupported(f"{op}: keelfs has no {UNBUILT_OPS[op]}")


_OPERATIONS: dict[tuple[str, str], Handler] = {
    ("GET", "OPEN"): WebHdfsGateway._open,
    ("GET", "GETFILESTATUS"): WebHdfsGateway._get_file_status,
    ("GET", "LISTSTATUS"): WebHdfsGateway._list_status,
    ("GET", "LISTSTATUS_BATCH"): WebHdfsGateway._list_status_batch,
    ("GET", "GETCONTENTSUMMARY"): WebHdfsGateway._content_summary,
    ("GET", "GETFILECHECKSUM"): WebHdfsGateway._file_checksum,
    ("GET", "GETHOMEDIRECTORY"): WebHdfsGateway._home_directory,
    ("GET", "GETTRASHROOT"): WebHdfsGateway._trash_root,
    ("GET", "GETACLSTATUS"): WebHdfsGateway._acl_status,
    ("PUT", "CREATE"): WebHdfsGateway._create,
    ("PUT", "MKDIRS"): WebHdfsGateway._mkdirs,
    ("PUT", "RENAME"): WebHdfsGateway._rename,
    ("PUT", "SETREPLICATION"): WebHdfsGateway._set_replication,
    ("PUT", "SETOWNER"): WebHdfsGateway._set_owner,
    ("PUT", "SETPERMISSION"): WebHdfsGateway._set_permission,
    ("PUT", "SETTIMES"): WebHdfsGateway._set_times,
    **{("PUT", op): WebHdfsGateway._acl_change for op in ACL_OPS},
    ("POST", "APPEND"): WebHdfsGateway._append,
    ("POST", "CONCAT"): WebHdfsGateway._concat,
    ("POST", "TRUNCATE"): WebHdfsGateway._truncate,
    ("DELETE", "DELETE"): WebHdfsGateway._delete,
    ("GET", "GETQUOTAUSAGE"): WebHdfsGateway._quota_usage,
    ("PUT", "SETQUOTA"): WebHdfsGateway._set_quota,
    ("PUT", "ALLOWSNAPSHOT"): WebHdfsGateway._allow_snapshot,
    ("PUT", "DISALLOWSNAPSHOT"): WebHdfsGateway._disallow_snapshot,
    ("PUT", "CREATESNAPSHOT"): WebHdfsGateway._create_snapshot,
    ("DELETE", "DELETESNAPSHOT"): WebHdfsGateway._delete_snapshot,
    ("PUT", "RENAMESNAPSHOT"): WebHdfsGateway._rename_snapshot,
    ("GET", "GETSNAPSHOTDIFF"): WebHdfsGateway._snapshot_diff,
    ("GET", "GETSNAPSHOTTABLEDIRECTORYLIST"): WebHdfsGateway._snapshottable_list,
    ("GET", "GETSNAPSHOTLIST"): WebHdfsGateway._snapshot_list,
    ("GET", "GETDELEGATIONTOKEN"): WebHdfsGateway._get_delegation_token,
    ("PUT", "RENEWDELEGATIONTOKEN"): WebHdfsGateway._renew_delegation_token,
    ("PUT", "CANCELDELEGATIONTOKEN"): WebHdfsGateway._cancel_delegation_token,
}
for _op in UNBUILT_OPS:
    for _method in ("GET", "PUT", "POST", "DELETE"):
        _OPERATIONS.setdefault((_method, _op), WebHdfsGateway._unsupported)


def _proxy_rights(settings: GatewaySettings) -> frozenset[str]:
    """Whom the gateway's cluster certificate may act for (``keelfs://proxy/...``); read
    only where they may be used (callers authenticated by their certificates)."""
    if settings.tls is None or not settings.authenticates_callers:
        return frozenset()
    from keelfs.tls.certs import load_certificate, uris_of
    from keelfs.tls.identity import Client, identity_from_uris

    uris = uris_of(load_certificate(settings.tls.cert))
    identity = identity_from_uris(uris, peer_ca=False, client_ca=True)
    return identity.proxy_for if isinstance(identity, Client) else frozenset()


def _unknown(method: str, op: str) -> errors.HadoopError:
    known = sorted({o for m, o in _OPERATIONS if m == method})
    if any(o == op for _, o in _OPERATIONS):
        return errors.illegal_argument(f"Invalid operation {op} for HTTP method {method}")
    return errors.illegal_argument(
        f'Invalid value for webhdfs parameter "op": No enum constant {op} '
        f"(the {method} operations: {', '.join(known)})"
    )


def parse_listen(value: str, *, off_loopback: bool = False) -> tuple[str, int]:
    """``(host, port)`` of ``HOST:PORT`` on loopback (as every keelfs HTTP side without TLS
    and authentication: ``keelfs.web.listen``), or anywhere with ``off_loopback`` (HTTPS with
    client certificates); ``ValueError`` otherwise."""
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    if not is_loopback_host(host) and not off_loopback:
        raise ValueError(
            f"the WebHDFS gateway listens on loopback only (127.0.0.1), not {host}, unless "
            "it serves HTTPS with client certificates (--https-client-ca)"
        )
    return host, int(port_text)


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or an IP address, no port) is ``localhost`` or a loopback IP."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_of(header: str) -> str:
    """The host name of a ``Host`` header (``name``, ``name:port``, ``[v6]:port``)."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else ""
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def _path(raw: str) -> str:
    """The keelfs path of a WebHDFS path (``""`` is the root)."""
    path = raw if raw.startswith("/") else "/" + raw
    if len(path) > 1:
        path = path.rstrip("/") or "/"
    return path


def _loggable(request: web.Request) -> str:
    """The request's path and query with its tokens hidden (a token in a log is a bearer
    credential handed to whoever reads the log)."""
    query = MultiDict(request.query)
    for key in list(query):
        if key.lower() in ("delegation", "token"):
            query[key] = "<hidden>"
    return str(request.rel_url.with_query(query))


def _quota_value(value: int, current: int | None) -> int | None:
    """One quota of a ``SETQUOTA``: kept (``QUOTA_DONT_SET``), removed (``-1``: None), or
    ``value``."""
    if value == QUOTA_DONT_SET:
        return current
    return None if value == QUOTA_RESET else value


async def _snapshot_call(work: Awaitable[T]) -> T:
    """``work``, with keelfs's refusals of a snapshot operation as HDFS's
    ``SnapshotException`` (``errors.snapshot_exception``)."""
    try:
        return await work
    except KeelError as exc:
        mapped = errors.snapshot_exception(exc)
        if mapped is exc:
            raise
        raise mapped from exc


async def _disallow_snapshots_within(client: AsyncClient, path: str) -> bool:
    """Make the snapshottable directories at or under ``path`` not snapshottable, so that
    a DELETE of them goes through as in HDFS (which deletes a snapshottable directory that
    has no snapshots; keelfs refuses to delete one while it is marked). False where there
    is none (the refusal was about something else); a directory that has snapshots stays
    marked and its refusal is HDFS's ``SnapshotException``."""
    if path == "/":
        return False  # "/" itself is never deleted: leave every mark as it is
    inside = [
        d for d in await client.snapshottable_directories() if d == path or d.startswith(path + "/")
    ]
    for directory in inside:
        await _snapshot_call(client.disallow_snapshot(directory))
    return bool(inside)


class _ClusterDirectory:
    """The token state's directory in the cluster, read and written as the gateway's own
    user (its TLS certificate's, or the user running it): a user the tokens name cannot
    undo a cancellation."""

    def __init__(self, clients: _Clients, user: str) -> None:
        self._clients = clients
        self._user = user

    async def names(self, path: str, limit: int) -> list[str]:
        async with self._clients.use(self._user) as client:
            try:
                return [e.name for e in await client.list_page(path, None, limit)]
            except NotFound:
                return []

    async def create(self, path: str) -> None:
        async with self._clients.use(self._user) as client:
            try:
                try:
                    await client.write_bytes(path, b"")
                except NotFound:
                    await client.mkdir(posixpath.dirname(path), parents=True, mode=0o700)
                    await client.write_bytes(path, b"")
            except AlreadyExists:
                pass  # created before: a renewal to the same ms, or a second cancel


def _require_file(info: FileInfo) -> None:
    if info.is_dir:
        raise errors.HadoopError(errors.FILE_NOT_FOUND, f"Path is not a file: {info.path}")


async def _check_creatable(client: AsyncClient, path: str, overwrite: bool) -> None:
    """HDFS's checks before a create: not an existing directory, not an existing file unless
    ``overwrite``."""
    try:
        info = await client.stat(path)
    except NotFound:
        return
    if info.is_dir:
        raise AlreadyExists(path, message=f"{path} already exists as a directory")
    if not overwrite:
        raise AlreadyExists(path, message=f"{path} for client already exists")


async def _with_parents(
    client: AsyncClient, directory: str, start: Callable[[], Awaitable[T]]
) -> T:
    """``start()``, after creating the missing directories above it when it finds its
    directory missing: WebHDFS's CREATE makes the parents, as HDFS's ``createParent``."""
    try:
        return await start()
    except NotFound:
        await client.mkdir(directory, parents=True)
        return await start()


async def _read_head(request: web.Request, limit: int) -> bytes:
    """The body's first bytes, up to ``limit`` (fewer: the whole body)."""
    parts: list[bytes] = []
    size = 0
    while size < limit:
        piece = await request.content.read(limit - size)
        if not piece:
            break
        parts.append(piece)
        size += len(piece)
    return b"".join(parts)
