"""Generated protobuf and gRPC code for ``proto/raft.proto`` (package ``keelfs.raft.v1``).

Do not edit the ``raft_pb2*`` files by hand. Regenerate them after changing the .proto with::

    python -m keelfs.codegen

(``--check`` verifies that the committed files match the .proto.) ``raft_pb2_grpc.py`` imports
``keelfs.transport.pb.raft_pb2`` by its absolute path; codegen rewrites protoc's bare
``import raft_pb2`` for that. Linters skip this package (see ``pyproject.toml``).
"""
