"""The committed KV service code (keelfs/runtime/pb) matches proto/kv.proto."""

from __future__ import annotations

import pytest


def test_generated_kv_code_is_up_to_date() -> None:
    pytest.importorskip("grpc_tools")
    from keelfs.runtime import codegen

    assert codegen.is_up_to_date(), "run: python -m keelfs.runtime.codegen"
