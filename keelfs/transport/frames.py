"""Framed streams: the Raft transport's messages over a plain (or TLS) socket instead of gRPC.

Why
---
Through gRPC in Python a message on an open stream costs 65–95 µs of CPU a side, whatever it
carries; length-prefixed frames on an asyncio stream cost 6–13 µs, mutual TLS included
(``keelfs bench rpc``). Every Raft round is several such messages on every master, so this is
the per-message cost that bounds creates, stats and small files.

How a link moves here
---------------------
The gRPC stream stays the way in, which keeps rolling upgrades simple: a node that listens for
framed streams names the port in its ``RaftAck.stream_port`` when a gRPC stream opens; a sender
that speaks them too dials that port on the host it dialled, and after this module's handshake
moves the link there and closes the gRPC stream. A node of an earlier release names no port,
and its peers go on talking gRPC to it; an old sender never learns the port. Should the framed
connection fail (a firewall that lets only the gRPC port through), the link stays on the gRPC
stream already open: never worse than before.

Wire format
-----------
The dialling side writes :data:`MAGIC` (so anything else that connects is refused at once),
then every frame is a 5-byte header — the payload's length (big-endian uint32) and its
kind — and the payload:

- ``HELLO`` (dialler → listener): a ``RaftBatch`` without envelopes naming the sender
  (``from_node``, ``from_address``);
- ``ACK`` (listener → dialler): a ``RaftAck``, as on the gRPC stream: who the listener is and
  what its runtime reads;
- ``BATCH`` (dialler → listener): a ``RaftBatch``, exactly what a gRPC write carries;
- ``PING`` / ``PONG``: empty; the dialler pings every keepalive interval and takes a silence of
  ``keepalive + timeout`` for a dead or frozen peer (what gRPC's keepalive did: quiesced groups
  learn of a vanished leader node from the link alone).

Messages flow one way per connection, as on the gRPC streams: each node dials its own link to
each peer. A frame longer than the receiver's limit ends the connection before it is read.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from enum import IntEnum

__all__ = [
    "FRAME_HEADER",
    "MAGIC",
    "PING_FRAME",
    "PONG_FRAME",
    "FrameError",
    "Kind",
    "frame",
    "read_frame",
    "set_keepalive",
    "listening_socket",
    "split_host",
]

MAGIC = b"KEELRAFT\x00\x01"
"""The first bytes a dialler writes: the protocol's name and version 1."""

FRAME_HEADER = struct.Struct(">IB")
"""Payload length, kind."""

MAX_HELLO_BYTES = 64 * 1024
"""A greeting carries a node id and an address: anything longer is not one (and is refused
before it is read, whatever the batch limit)."""

MAX_UNREAD_PONGS_BYTES = 64 * 1024
"""Pongs a dialler may leave unread before its connection is closed: one that pings without
reading would otherwise grow the listener's write buffer without bound."""


class Kind(IntEnum):
    HELLO = 1
    ACK = 2
    BATCH = 3
    PING = 4
    PONG = 5


class FrameError(Exception):
    """The other end broke the protocol: a frame too long, of an unknown or unexpected kind, a
    payload that does not parse, or the wrong greeting. The connection is closed."""


def frame(kind: Kind, payload: bytes = b"") -> bytes:
    """One frame, ready to write."""
    return FRAME_HEADER.pack(len(payload), kind) + payload


PING_FRAME = frame(Kind.PING)
PONG_FRAME = frame(Kind.PONG)


async def read_frame(reader: asyncio.StreamReader, limit: int) -> tuple[Kind, bytes]:
    """The next frame; ``FrameError`` for one over ``limit`` bytes or of an unknown kind (not
    read), ``asyncio.IncompleteReadError`` when the connection ends."""
    size, kind = FRAME_HEADER.unpack(await reader.readexactly(FRAME_HEADER.size))
    if size > limit:
        raise FrameError(f"a frame of {size} bytes, over the limit of {limit}")
    try:
        known = Kind(kind)
    except ValueError:
        raise FrameError(f"a frame of unknown kind {kind}") from None
    return known, (await reader.readexactly(size) if size else b"")


def set_keepalive(writer: asyncio.StreamWriter, idle_s: int = 10, interval_s: int = 5) -> None:
    """TCP keepalive on the connection: the listening side sends nothing of its own (no
    pings), so a connection whose dialler's host vanished is found dead by the kernel and
    closed, instead of holding a task and a socket for good."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; elsewhere the system's defaults
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket for ``host`` (as :func:`split_host` gives it) and ``port``
    (0: any free one): one socket, so one port to tell peers. A wildcard IPv6 host (``::``)
    takes IPv4 too, as gRPC's listener on the same address does (asyncio's own would be IPv6
    only); an empty host is IPv4's wildcard; a name is resolved to its first address."""
    if not host:
        host = "0.0.0.0"
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        sockaddr: tuple[object, ...] = (host, port)
    except ValueError:  # a name
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        family, sockaddr = info[0], info[4]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(sockaddr)
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def split_host(address: str) -> str:
    """The host of ``host:port`` as ``asyncio`` dials or binds it (no IPv6 brackets)."""
    host = address.rpartition(":")[0]
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host
