"""Raft transport: moves ``keelfs.raft.messages.Message`` values between master processes.

- :mod:`keelfs.transport.base` — the :class:`Transport` protocol the Raft runtime codes against.
- :mod:`keelfs.transport.grpc_transport` — the real one: one stream per direction per pair
  of processes, batching the messages of all Raft groups the two share; opened as gRPC, moved
  to a framed stream where both ends speak it.
- :mod:`keelfs.transport.frames` — the framed streams' wire format (a tenth of gRPC's CPU per
  message in Python).
- :mod:`keelfs.transport.local` — an in-process network with fault injection, for tests.
- :mod:`keelfs.transport.codec` — Message <-> protobuf.
"""
