"""``keelfs`` starts without loading what no command has asked for yet: the Raft runtime,
RocksDB, the metadata state machines, gRPC, the client library. Every command pays for its own
imports; ``keelfs --help`` and a typo's error message pay for none."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = (
    "keelfs.meta",
    "keelfs.raft",
    "keelfs.runtime.host",
    "keelfs.storage",
    "keelfs.client",
    "keelfs.master",
    "keelfs.chunk",
    "rocksdict",
    "grpc",
    "cryptography",
)


@pytest.mark.process
def test_the_keelfs_command_loads_no_heavy_module_at_start_up() -> None:
    probe = (
        "import json, sys; import keelfs.cli.main; "
        "print(json.dumps(sorted(m for m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    loaded = json.loads(out)
    heavy = sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert heavy == []
