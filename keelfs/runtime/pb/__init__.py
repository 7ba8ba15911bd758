"""Generated protobuf and gRPC code for ``proto/kv.proto`` (package ``keelfs.kv.v1``).

Do not edit the ``kv_pb2*`` files by hand. Regenerate them after changing the .proto with::

    python -m keelfs.codegen

(``--check`` verifies that the committed files match the .proto.) ``kv_pb2_grpc.py`` imports
``keelfs.runtime.pb.kv_pb2`` by its absolute path. Ruff skips the generated files (the
``ruff.toml`` next to them), and they carry ``# mypy: ignore-errors``.
"""
