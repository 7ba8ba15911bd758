"""Generated protobuf and gRPC code for ``proto/meta.proto`` (package ``keelfs.meta.v1``).

Do not edit the ``meta_pb2*`` files by hand. Regenerate them after changing the .proto with::

    python -m keelfs.codegen

(``--check`` verifies that the committed files match the .proto.) ``meta_pb2_grpc.py`` imports
``keelfs.meta.pb.meta_pb2`` by its absolute path. The generated files carry
``# mypy: ignore-errors``; ruff skips them (``pyproject.toml``).
"""
