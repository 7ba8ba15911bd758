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
is not a loopback name or its listen address (DNS rebinding).

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
from typing import Any, TypeVar

from aiohttp import web
from multidict import MultiDict

from keelfs.client import AsyncClient
from keelfs.errors import AlreadyExists, InvalidArgument, KeelError, NotADirectory, NotFound
from keelfs.gateways.site import HttpSite
from keelfs.gateways.webhdfs import errors, shapes
from keelfs.gateways.webhdfs.https import HttpsSettings, certificate_user
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
SNAPSHOT_OPS = frozenset(
    {
        "ALLOWSNAPSHOT",
        "DISALLOWSNAPSHOT",
        "CREATESNAPSHOT",
        "DELETESNAPSHOT",
        "RENAMESNAPSHOT",
        "GETSNAPSHOTDIFF",
        "GETSNAPSHOTDIFFLISTING",
        "GETSNAPSHOTTABLEDIRECTORYLIST",
        "GETSNAPSHOTLIST",
    }
)
ACL_SPEC_OPS: dict[str, Callable[[AsyncClient, str, str], Awaitable[Any]]] = {
    "SETACL": AsyncClient.set_acl,
    "MODIFYACLENTRIES": AsyncClient.modify_acl_entries,
    "REMOVEACLENTRIES": AsyncClient.remove_acl_entries,
}
ACL_OPS = frozenset({*ACL_SPEC_OPS, "REMOVEDEFAULTACL", "REMOVEACL"})
TOKEN_OPS = frozenset({"GETDELEGATIONTOKEN", "RENEWDELEGATIONTOKEN", "CANCELDELEGATIONTOKEN"})
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
            user = self._acting_user(params, request)
            async with self._clients.use(user) as client:
                return await handler(self, _Call(request, path, params, user, client))
        except (KeelError, errors.HadoopError) as exc:
            return errors.remote_exception(exc, path)
        except (ConnectionError, asyncio.CancelledError):
            raise  # the client went away: nobody to answer
        except Exception as exc:  # noqa: BLE001  # a Hadoop client expects a RemoteException
            log.exception("%s %s failed", request.method, request.path_qs)
            return errors.remote_exception(exc, path)

    def _acting_user(self, params: _Params, request: web.Request | None = None) -> str:
        user = params.text("user.name") or ANONYMOUS_USER
        if self.settings.authenticates_callers:
            user = self._certificate_user(params, request)
        doas = params.text("doas")
        if doas and doas != user:
            if user not in self.settings.proxy_users:
                raise errors.access_denied(f"User: {user} is not allowed to impersonate {doas}")
            user = doas
        only = self.settings.tls_user
        if only and user != only and not self._may_proxy(user):
            raise errors.access_denied(
                f"User: {user}: this gateway acts for {only} alone (its TLS certificate's user)"
            )
        return user

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
        return _json({"ContentSummary": shapes.content_summary(summary)})

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
        return _boolean(True)

    async def _unsupported(self, call: _Call) -> web.StreamResponse:
        op = (call.params.text("op") or "").upper()
        if op in TOKEN_OPS:
            raise errors.unsupported(f"{op}: delegation tokens are not supported by keelfs")
        if op in UNBUILT_OPS:
            raise errors.unsupported(f"{op}: keelfs has no {UNBUILT_OPS[op]}")
        raise errors.unsupported(f"{op}: snapshots are not supported by keelfs's WebHDFS")


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
}
for _op in SNAPSHOT_OPS | TOKEN_OPS | set(UNBUILT_OPS):
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
