"""``WebServer``: the HTTP side of a keelfs process, on the process's own asyncio loop.

Every process started with ``--http-listen HOST:PORT`` (port 0: any free port) serves:

=================  ==================================================================
``/health``        200 and ``{"status": "ok", ...}`` while the node serves, else 503
``/metrics``       Prometheus text (``keelfs.web.metrics``; a registry per process)
``/raft/state``    JSON: every Raft group on this node (``RaftGroup.status()``)
``/``              the dashboard (masters and config servers only)
``/api/cluster``   the dashboard's JSON: the whole cluster (``keelfs.web.dashboard``)
``/api/node``      JSON: this node's own status (a master's: its ``Node.Status``)
=================  ==================================================================

``start()`` binds (raising ``OSError`` if it cannot) and ``stop()`` closes it; ``address``
is the bound ``HOST:PORT`` and ``url`` the base URL (``http://`` or ``https://``).

Where it may listen and who may call it (plain HTTP on loopback; HTTPS with authentication
elsewhere) is ``keelfs.web.listen``. Browsers are the hostile clients here: a web page the
operator visits can make their browser send requests to the server. So a request whose
``Host`` is not a loopback name, the listen address or a name of the node's certificate is
refused with 421 — a DNS-rebinding page reaches the server under its own host name, which
the browser then sends — and every answer carries ``X-Content-Type-Options: nosniff``, a
Content-Security-Policy allowing this origin's own files only, and no framing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from google.protobuf import json_format

from keelfs.web.access import HttpSettings
from keelfs.web.dashboard import cluster_json
from keelfs.web.listen import OPEN_PATHS, is_loopback_host, parse_http_listen
from keelfs.web.metrics import CONTENT_TYPE, ChunkMetrics, MetaMetrics, Metrics

if TYPE_CHECKING:
    from keelfs.chunk.node import ChunkNode
    from keelfs.chunk.reporting import Reporter
    from keelfs.master.node import MetaNode

__all__ = ["STATIC", "WebServer", "chunk_web_server", "meta_web_server"]

STATIC = Path(__file__).resolve().parent / "static"


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, sort_keys=True, default=str),
        status=status,
        content_type="application/json",
    )


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _host_of(header: str) -> str:
    """The host name of a ``Host`` header (``name``, ``name:port``, ``[v6]:port``)."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else ""
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def _guard(access: HttpSettings) -> Middleware:
    """The middleware: refuse a request to a host name this server does not go by (421) or,
    from another host, without credentials (401); add the security headers."""
    names = access.server_names()

    def deny(exc: type[web.HTTPException], text: str, **headers: str) -> web.HTTPException:
        return exc(text=text + "\n", headers={**SECURITY_HEADERS, **headers})

    @web.middleware
    async def guard(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        host = _host_of(request.headers.get("Host", ""))
        if not (is_loopback_host(host) or host.lower() in names):
            raise deny(
                web.HTTPMisdirectedRequest,
                f"this server does not answer to the host name {host!r}",
            )
        if not _authenticated(request, access):
            raise deny(
                web.HTTPUnauthorized,
                "a client certificate of this cluster or a bearer token is needed",
                **{"WWW-Authenticate": 'Bearer realm="keelfs"'},
            )
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(SECURITY_HEADERS)
            raise
        response.headers.update(SECURITY_HEADERS)
        return response

    return guard


def _authenticated(request: web.Request, access: HttpSettings) -> bool:
    """From this host (what plain HTTP allows at all), to an open path, with a certificate
    the handshake verified, or with the bearer token."""
    if request.path in OPEN_PATHS or is_loopback_host(request.remote or ""):
        return True
    transport = request.transport
    if transport is not None and transport.get_extra_info("peercert"):
        return True
    return access.token_matches(request.headers.get("Authorization", ""))


class WebServer:
    """An aiohttp application on ``listen`` (see the module docstring)."""

    def __init__(
        self,
        http: HttpSettings,
        *,
        metrics: Metrics,
        health: Callable[[], dict[str, Any] | None],
        raft_state: Callable[[], dict[str, Any]],
        node_status: Callable[[], dict[str, Any]],
        cluster: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        self.access = http
        self.host, self.port = parse_http_listen(http.listen, tls=http.tls is not None)
        self.metrics = metrics
        self._health = health
        self._raft_state = raft_state
        self._node_status = node_status
        self._cluster = cluster
        self._runner: web.AppRunner | None = None
        self.address = ""

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_guard(self.access)])
        app.router.add_get("/health", self._get_health)
        app.router.add_get("/metrics", self._get_metrics)
        app.router.add_get("/raft/state", self._get_raft_state)
        app.router.add_get("/api/node", self._get_node)
        if self._cluster is not None:
            app.router.add_get("/", self._get_index)
            app.router.add_get("/api/cluster", self._get_cluster)
            app.router.add_static("/static/", STATIC)
        return app

    async def start(self) -> None:
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(
            runner,
            self.host,
            self.port,
            reuse_address=True,
            ssl_context=self.access.ssl_context(),
        )
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = runner.addresses  # the port actually bound, when asked for port 0
        port = int(bound[0][1]) if bound else self.port
        self.address = f"{self.host}:{port}"

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` or, with TLS, ``https://HOST:PORT``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "http" if self.access.tls is None else "https"
        return f"{scheme}://{host}:{self.address.rpartition(':')[2]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- handlers -------------------------------------------------------------------------------
    async def _get_health(self, request: web.Request) -> web.Response:
        info = self._health()
        if info is None:
            return _json({"status": "stopped"}, status=503)
        return _json({"status": "ok", **info})

    async def _get_metrics(self, request: web.Request) -> web.Response:
        body = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _get_raft_state(self, request: web.Request) -> web.Response:
        return _json(self._raft_state())

    async def _get_node(self, request: web.Request) -> web.Response:
        return _json(self._node_status())

    async def _get_cluster(self, request: web.Request) -> web.Response:
        assert self._cluster is not None
        return _json(await self._cluster())

    async def _get_index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")


def _status_json(node: MetaNode) -> dict[str, Any]:
    """``Node.Status`` in protobuf's JSON mapping (64-bit numbers as strings), every field."""
    out: dict[str, Any] = json_format.MessageToDict(
        node.status(),
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    return out


def meta_web_server(node: MetaNode, http: HttpSettings) -> WebServer:
    """The HTTP side of a started master or config server."""
    metrics = MetaMetrics(node)
    metrics.instrument()

    def health() -> dict[str, Any] | None:
        host = node.host
        if host is None:
            return None
        return {
            "role": metrics.role,
            "id": node.node_id,
            "client": node.client_address,
            "registered": node.registered,
            "groups": {
                gid: {"leader": g.is_leader, "term": g.node.raft.term}
                for gid, g in sorted(host.groups.items())
            },
        }

    def raft_state() -> dict[str, Any]:
        host = node.host
        groups = {} if host is None else host.groups
        return {
            "id": node.node_id,
            "groups": {gid: g.status().as_dict() for gid, g in groups.items()},
        }

    return WebServer(
        http,
        metrics=metrics,
        health=health,
        raft_state=raft_state,
        node_status=lambda: _status_json(node),
        cluster=lambda: cluster_json(node),
    )


def chunk_web_server(
    node: ChunkNode, http: HttpSettings, reporter: Reporter | None = None
) -> WebServer:
    """The HTTP side of a started chunk server (no Raft groups: ``/raft/state`` is empty)."""
    metrics = ChunkMetrics(node, reporter)
    metrics.instrument()

    def status() -> dict[str, Any]:
        st = node.status()
        out: dict[str, Any] = {
            "server_id": st.server_id,
            "address": st.address,
            "rack": st.rack,
            "capacity_bytes": st.capacity_bytes,
            "available_bytes": st.available_bytes,
            "used_bytes": st.used_bytes,
            "finalized": st.finalized,
            "being_written": st.being_written,
            "corrupt": st.corrupt,
        }
        if reporter is not None:
            out["registered"] = reporter.registered
            out["reporter"] = dict(reporter.stats)
        return out

    def health() -> dict[str, Any] | None:
        return {"role": "chunk", "id": node.server_id, "address": node.address}

    return WebServer(
        http,
        metrics=metrics,
        health=health,
        raft_state=lambda: {"id": node.server_id, "groups": {}},
        node_status=status,
    )
