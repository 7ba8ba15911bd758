"""The RPC layer every networked part shares: below ``master``, ``chunk`` and ``client``.

- ``pb``: the generated protobuf and gRPC modules of ``proto/meta.proto`` and
  ``proto/chunk.proto`` (``python -m keelfs.codegen`` writes them);
- ``grpc_errors``: the one table between ``keelfs.errors`` and gRPC status codes, for both
  sides of every call;
- ``wire``: conversions between the metadata records (``keelfs.meta``) and their messages;
- ``access``: the access class of every RPC method (client, admin, peer, metadata) and the
  server interceptor that refuses what a caller's identity (``keelfs.tls``) does not admit.

Nothing here knows a node or a client: it is what both ends of a call agree on.
"""
