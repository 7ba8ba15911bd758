"""The committed protobuf/gRPC code matches every .proto (regenerate: python -m keelfs.codegen)."""

from __future__ import annotations

import pytest

from keelfs import codegen


@pytest.mark.parametrize("spec", codegen.PROTOS, ids=lambda s: s.name)
def test_generated_code_matches_the_proto(spec: codegen.ProtoSpec) -> None:
    pytest.importorskip("grpc_tools")
    assert codegen.is_up_to_date(spec), "run: python -m keelfs.codegen"
