"""Raft transport: moves ``keelfs.raft.messages.Message`` values between master processes.

- :mod:`keelfs.transport.base` — the :class:`Transport` protocol the Raft runtime codes against.
- :mod:`keelfs.transport.grpc_transport` — the real one: one gRPC stream per direction per pair
  of processes, batching the messages of all Raft groups the two share.
- :mod:`keelfs.transport.local` — an in-process network with fault injection, for tests.
- :mod:`keelfs.transport.codec` — Message <-> protobuf.
"""
