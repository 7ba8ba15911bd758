"""The HTTP side refuses DNS-rebinding requests (a non-loopback ``Host``) and sends the
security headers on every answer, errors included. A real aiohttp server on a free port,
reached over a real socket; only its data sources are stand-ins."""

from __future__ import annotations

import asyncio
import http.client
import threading
from collections.abc import Iterator

import pytest

from keelfs.web.access import HttpSettings
from keelfs.web.app import SECURITY_HEADERS, WebServer
from keelfs.web.metrics import Metrics


class _Loop:
    """A WebServer running on its own event loop thread, answered with ``http.client``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def server() -> Iterator[WebServer]:
    runner = _Loop()

    async def cluster() -> dict[str, object]:
        return {"groups": {}}

    web = WebServer(
        HttpSettings("127.0.0.1:0"),
        metrics=Metrics("test"),
        health=lambda: {"role": "test"},
        raft_state=lambda: {"groups": {}},
        node_status=lambda: {"id": 1},
        cluster=cluster,
    )
    runner.run(web.start())
    try:
        yield web
    finally:
        runner.run(web.stop())
        runner.close()


def get(web: WebServer, path: str, host: str | None = None) -> http.client.HTTPResponse:
    name, port = web.address.rsplit(":", 1)
    conn = http.client.HTTPConnection(name, int(port), timeout=10)
    headers = {} if host is None else {"Host": host}
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:80", "10.0.0.1", "[::2]:1"])
def test_a_request_for_a_foreign_host_name_is_refused(server: WebServer, host: str) -> None:
    response = get(server, "/api/node", host=host)
    assert response.status == 421
    assert response.getheader("X-Content-Type-Options") == "nosniff"


@pytest.mark.parametrize("host", [None, "localhost:9100", "127.0.0.1", "[::1]:9100", "LOCALHOST"])
def test_loopback_host_names_are_served_with_the_security_headers(
    server: WebServer, host: str | None
) -> None:
    for path, status in (("/api/node", 200), ("/health", 200), ("/no-such-page", 404)):
        response = get(server, path, host=host)
        assert response.status == status, path
        for name, value in SECURITY_HEADERS.items():
            assert response.getheader(name) == value, (path, name)
