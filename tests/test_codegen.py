"""The committed protobuf/gRPC code matches every .proto (regenerate: python -m keelfs.codegen)."""

from __future__ import annotations

import pytest

from keelfs import codegen
from keelfs.testing.environment import cannot_run


@pytest.mark.parametrize("spec", codegen.PROTOS, ids=lambda s: s.name)
def test_generated_code_matches_the_proto(spec: codegen.ProtoSpec) -> None:
    try:
        import grpc_tools  # noqa: F401
    except ImportError:
        cannot_run("needs grpcio-tools (the dev extra)")
    assert codegen.is_up_to_date(spec), "run: python -m keelfs.codegen"
