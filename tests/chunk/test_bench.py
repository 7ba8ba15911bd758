"""Smoke test of ``python -m keelfs.bench.chunk`` with a tiny block: one JSON object with the
expected keys as its last line. No figure is checked (timings on a shared machine are not test
material)."""

from __future__ import annotations

import json

import pytest

from keelfs.bench import chunk


@pytest.mark.process  # three chunk server processes
def test_chunk_bench_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert chunk.main(["--block-mib", "3", "--no-fsync", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["bench"] == "chunk" and out["replicas"] == 3 and out["fsync"] is False
    for phase in ("write", "read"):
        assert out[phase]["bytes"] == 3 << 20
        assert out[phase]["mb_per_second"] > 0
        assert set(out[phase]["cpu_percent"]) == {"client", "cs0", "cs1", "cs2"}
