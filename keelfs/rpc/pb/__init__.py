"""Generated protobuf and gRPC code for ``proto/meta.proto`` (package ``keelfs.meta.v1``) and
``proto/chunk.proto`` (package ``keelfs.chunk.v1``).

Do not edit the ``*_pb2*`` files by hand. Regenerate them after changing a .proto with::

    python -m keelfs.codegen

(``--check`` verifies that the committed files match the .proto.) Each ``*_pb2_grpc.py``
imports its ``*_pb2`` by absolute path (``keelfs.rpc.pb.meta_pb2``). The generated files carry
``# mypy: ignore-errors``; ruff skips them (``pyproject.toml``).
"""
