"""One aiohttp application listening on ``HOST:PORT``: what every gateway starts and stops."""

from __future__ import annotations

import ssl

from aiohttp import web

__all__ = ["HttpSite"]


class HttpSite:
    """``host``/``port`` as configured (port 0: any free port); ``address`` is the bound
    ``HOST:PORT`` once started, empty before."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.address = ""
        self.secure = False
        self._runner: web.AppRunner | None = None

    async def start(
        self,
        app: web.Application,
        *,
        auto_decompress: bool = True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> str:
        """Serve ``app``; returns the bound address (``OSError`` if it cannot listen).
        ``auto_decompress``: aiohttp inflates request bodies sent with a Content-Encoding;
        ``ssl_context``: serve HTTPS with it."""
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, auto_decompress=auto_decompress
        )
        await runner.setup()
        site = web.TCPSite(
            runner, self.host, self.port, reuse_address=True, ssl_context=ssl_context
        )
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.secure = ssl_context is not None
        bound = runner.addresses
        port = int(bound[0][1]) if bound else self.port
        self.address = f"{self.host}:{port}"
        return self.address

    @property
    def url(self) -> str:
        """``http(s)://HOST:PORT`` of the bound address (an IPv6 host in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.secure else "http"
        return f"{scheme}://{host}:{self.address.rpartition(':')[2]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
