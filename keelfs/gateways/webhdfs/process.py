"""``keelfs webhdfs``: the gateway as a process, under the one lifecycle of every keelfs
process (``keelfs.runtime.lifecycle``: a ``READY {json}`` line with ``url``, graceful stop on
SIGTERM/SIGINT, exit status 1 with one line on stderr when it cannot start)."""

from __future__ import annotations

import os

from keelfs.gateways.webhdfs.app import GatewaySettings, WebHdfsGateway
from keelfs.runtime.lifecycle import announce_ready, run_process, stop_on_signals

__all__ = ["run"]


async def serve(settings: GatewaySettings) -> None:
    stop = stop_on_signals()
    gateway = WebHdfsGateway(settings)
    await gateway.start()
    try:
        print(
            f"keelfs webhdfs: serving {gateway.url}/webhdfs/v1/ "
            f"for the cluster at {','.join(settings.cluster)}",
            flush=True,
        )
        announce_ready({"pid": os.getpid(), "webhdfs": gateway.address, "url": gateway.url})
        await stop.wait()
    finally:
        await gateway.stop()


def run(settings: GatewaySettings) -> int:
    """Serve until SIGTERM/SIGINT; the exit status."""
    return run_process("webhdfs", lambda: serve(settings))
