"""``keelfs s3``: run the gateway in this process until SIGTERM/SIGINT (``READY {json}`` once
it listens, as every keelfs process)."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keelfs.gateways.s3.app import S3Gateway
from keelfs.gateways.s3.credentials import AccessKey
from keelfs.gateways.s3.settings_cache import DEFAULT_TTL
from keelfs.runtime.lifecycle import (
    announce_ready,
    configure_logging,
    run_process,
    serve_until_stopped,
    stop_on_signals,
)

__all__ = ["GatewayConfig", "check_listen", "run", "serve"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatewayConfig:
    listen: str
    cluster: list[str]
    keys: dict[str, AccessKey]
    tls_dir: Path | None = None
    log_level: str = "INFO"
    log_format: str = "text"
    settings_ttl: float = DEFAULT_TTL
    """Seconds a bucket's settings are kept (``settings_cache``); 0: read for every request."""


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(listen: str, insecure: bool) -> tuple[str, int]:
    """``(host, port)`` of ``HOST:PORT``; ``ValueError`` for a malformed value, or one off the
    loopback without ``insecure`` (the gateway speaks plain HTTP: its requests are signed,
    but the data travels in the clear)."""
    host, sep, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"expected HOST:PORT, got {listen!r}")
    if not is_loopback_host(host) and not insecure:
        raise ValueError(
            f"the S3 gateway speaks plain HTTP: it listens off the loopback ({host}) only with "
            "--insecure (put a TLS-terminating proxy in front of it)"
        )
    return host, int(port_text)


async def serve(
    config: GatewayConfig, on_ready: Callable[[dict[str, Any]], None] | None = None
) -> None:
    stop = stop_on_signals()
    host, port = check_listen(config.listen, insecure=True)
    gateway = S3Gateway(
        config.cluster,
        config.keys,
        host=host,
        port=port,
        tls_dir=config.tls_dir,
        settings_ttl=config.settings_ttl,
    )
    await gateway.start()
    try:
        info = {"s3": gateway.address, "s3_url": gateway.url, "cluster": config.cluster}
        (on_ready or _print_ready)(info)
        log.info("keelfs s3 serving: %s", info)
        await serve_until_stopped(stop, [])
    finally:
        await gateway.stop()


def _print_ready(info: dict[str, Any]) -> None:
    print(f"keelfs s3: S3 gateway at {info['s3_url']} for {','.join(info['cluster'])}", flush=True)
    announce_ready(info)


def run(config: GatewayConfig) -> int:
    configure_logging(config.log_level, "s3", config.log_format)
    return run_process("s3", lambda: serve(config))
