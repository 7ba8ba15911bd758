"""Channel options against a slow connection: a server whose HTTP/2 greeting arrives 300 ms
late (a loaded machine, a TLS handshake on a busy core) is still reached by the first call.

With ``grpc.min_reconnect_backoff_ms`` at 50 ms (gRPC's minimum connect timeout), every
connection attempt gave up after 50 ms and the call failed ``UNAVAILABLE: ... timed out before
receiving SETTINGS frame``: seen in CI on a loaded machine. A real gRPC server behind a real
TCP relay that holds the bytes back."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from keelfs.datapath.wire import CHANNEL_OPTIONS
from keelfs.rpc.channels import METADATA_CHANNEL_OPTIONS
from keelfs.runtime.client import _CHANNEL_OPTIONS as KV_CHANNEL_OPTIONS

DELAY_S = 0.3


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    return request


@pytest.fixture(scope="module")
def server_port() -> Iterator[int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.unary_unary_rpc_method_handler(_echo)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("t.T", {"Echo": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(None)


class SlowRelay:
    """Accepts connections and relays them to ``port``, the server's bytes held back
    ``DELAY_S`` at first (its SETTINGS frame with them)."""

    def __init__(self, port: int) -> None:
        self._target = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            self._sockets += [client, upstream]
            for src, dst, delay in ((client, upstream, 0.0), (upstream, client, DELAY_S)):
                t = threading.Thread(target=self._pipe, args=(src, dst, delay), daemon=True)
                t.start()
                self._threads.append(t)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, delay: float) -> None:
        time.sleep(delay)
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self._listener.close()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked reading it
        for t in self._threads:
            t.join(5)
        for s in self._sockets:
            s.close()


@pytest.mark.parametrize(
    "options",
    [METADATA_CHANNEL_OPTIONS, CHANNEL_OPTIONS, KV_CHANNEL_OPTIONS],
    ids=["metadata", "datapath", "kv"],
)
def test_a_server_slow_to_greet_is_reached_by_the_first_call(
    server_port: int, options: list[tuple[str, object]]
) -> None:
    relay = SlowRelay(server_port)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{relay.port}", options=options) as channel:
            echo = channel.unary_unary("/t.T/Echo")
            assert echo(b"ping", timeout=10) == b"ping"
    finally:
        relay.close()
