"""Generated protobuf and gRPC code for ``proto/chunk.proto`` (package ``keelfs.chunk.v1``).

Do not edit the ``chunk_pb2*`` files by hand. Regenerate them after changing the .proto with::

    python -m keelfs.codegen

(``--check`` verifies that the committed files match the .proto.) ``chunk_pb2_grpc.py`` imports
``keelfs.chunk.pb.chunk_pb2`` by its absolute path. The generated files carry
``# mypy: ignore-errors``; ruff skips them (``pyproject.toml``).
"""
