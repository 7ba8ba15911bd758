"""gRPC channel options of every client of the metadata services (applications, chunk servers,
masters calling their peers): reconnect quickly after a leader moves, and accept the largest
replies a listing sends."""

from __future__ import annotations

__all__ = ["METADATA_CHANNEL_OPTIONS", "MIN_CONNECT_TIMEOUT_MS"]

MIN_CONNECT_TIMEOUT_MS = 2000
"""The least time gRPC gives one connection attempt (TCP, TLS handshake, the server's HTTP/2
SETTINGS). gRPC takes it from the option ``grpc.min_reconnect_backoff_ms``, whatever the
name says: set to 50 ms alongside the 50 ms back-off, every attempt to a server busy for
50 ms (a loaded machine, a TLS handshake) timed out, and a call failed UNAVAILABLE before it
was sent. The back-off between attempts stays short (``initial_reconnect_backoff_ms``); a dead
address fails at once (connection refused), not after this."""

METADATA_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", MIN_CONNECT_TIMEOUT_MS),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_metadata_size", 64 << 10),
    ("grpc.use_local_subchannel_pool", 1),
]
