"""gRPC channel options of every client of the metadata services (applications, chunk servers,
masters calling their peers): reconnect quickly after a leader moves, and accept the largest
replies a listing sends."""

from __future__ import annotations

__all__ = ["METADATA_CHANNEL_OPTIONS"]

METADATA_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_metadata_size", 64 << 10),
    ("grpc.use_local_subchannel_pool", 1),
]
