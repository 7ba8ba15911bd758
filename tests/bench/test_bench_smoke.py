"""Smoke tests of the real-process benchmarks: each runs with tiny parameters and must print
one JSON object with the expected keys as its last line. No figure is checked (timings on a
shared machine are not test material)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from keelfs.cli.main import cli

pytestmark = [pytest.mark.slow, pytest.mark.process]


def _run(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["bench", *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    out: dict[str, Any] = json.loads(last)
    return out


def test_bench_raft_smoke() -> None:
    out = _run(
        "raft",
        "--ops", "300",
        "--inflight", "64",
        "--rate-ops", "50",
        "--duration", "1",
        "--grpc-seconds", "1",
    )  # fmt: skip
    assert out["bench"] == "raft"
    for phase in ("in_process", "grpc"):
        assert {"ops", "ops_per_second", "inflight", "seconds", "cpu_percent"} <= set(out[phase])
        assert out[phase]["ops"] > 0
    for phase in ("latency", "in_process_latency"):
        assert {"p50_ms", "p99_ms", "ops"} <= set(out[phase])
        assert out[phase]["ops"] > 0


def test_bench_apply_smoke() -> None:
    out = _run("apply", "--creates", "64", "--pack", "1", "--pack", "16", "--sessions", "4")
    assert out["bench"] == "apply"
    assert out["sessions"] == 4
    assert [(r["pack"], r["creates"], r["entries"]) for r in out["runs"]] == [
        (1, 64, 64),
        (16, 64, 4),
    ]
    assert all(r["cpu_us_per_create"] > 0 for r in out["runs"])


@pytest.mark.parametrize("pack", [True, False])
def test_bench_raft_meta_smoke(pack: bool) -> None:
    out = _run("raft-meta", "--creates", "40", "--writers", "8", *([] if pack else ["--no-pack"]))
    assert out["bench"] == "raft-meta"
    assert (out["packs"], out["writers"], out["creates"]) == (pack, 8, 40)
    assert 1 <= out["entries"] <= 40
    if not pack:
        assert out["entries"] == 40
    assert out["cpu_us_per_create"] > 0


def test_bench_failover_smoke() -> None:
    out = _run("failover", "--trials", "1", "--mode", "both")
    assert out["bench"] == "failover"
    for mode in ("kill", "stop"):
        assert out[mode]["trials"] == 1
        assert {"p50", "p99", "min", "max"} <= set(out[mode]["failover_s"])
        assert out[mode]["failover_s"]["p50"] > 0


def test_bench_idle_smoke() -> None:
    out = _run("idle", "--groups", "3", "--seconds", "1", "--quiesce", "on")
    assert out["bench"] == "idle"
    (run,) = out["runs"]
    assert run["groups_per_process"] == 4
    assert set(run["cpu_percent"]) == {"1", "2", "3"}
    assert sum(run["leaders"].values()) == 4


@pytest.mark.timeout(600)
def test_bench_meta_smoke() -> None:
    out = _run(
        "meta",
        "--seconds", "1",
        "--clients", "2",
        "--concurrency", "8",
        "--list-entries", "50",
        "--fill", "3000",
    )  # fmt: skip
    assert out["bench"] == "meta"
    keys = {"ops", "ops_per_second", "failed", "p50_ms", "p99_ms", "cpu_percent", "clients"}
    for phase in ("creates", "stats", "stats_stale", "two_shards"):
        assert keys <= set(out[phase]), phase
        assert out[phase]["ops"] > 0, phase
        assert any(k.startswith("leader-") for k in out[phase]["cpu_percent"]), phase
    assert out["two_shards"]["shards"] == 2
    assert out["list"]["entries"] == out["list"]["listed"] == 50
    assert len(out["list"]["runs_s"]) == 3
    fill = out["fill"]
    if fill is None:  # the timed creates alone made 3,000 files (a fast machine)
        assert "already held" in out["fill_skipped"]
    else:
        assert out["fill_skipped"] is None
        assert fill["files_after"] == 3000
        assert fill["files_added"] > 0
        assert len(fill["masters"]) == 3
    restart = out["restart"]
    assert restart["files"] >= 3000
    assert restart["sampled"] > 0
    assert restart["verified"] == restart["sampled"]
    assert restart["first_stat_s"] > 0
    assert set(restart["ready_s"]) == {"11", "12", "13"}


@pytest.mark.timeout(600)
def test_bench_txn_smoke() -> None:
    out = _run(
        "txn",
        "--seconds", "1",
        "--concurrency", "4",
        "--clients", "1",
        "--tree-files", "10",
        "--tree-moves", "2",
        "--reshard-files", "200",
        "--reshard-dirs", "10",
    )  # fmt: skip
    assert out["bench"] == "txn"
    assert out["shards"] == 2
    keys = {"ops", "ops_per_second", "failed", "p50_ms", "p99_ms", "max_ms", "cpu_percent"}
    for phase in ("same_shard", "cross_shard"):
        assert keys <= set(out[phase]), phase
        assert out[phase]["ops"] > 0, phase
        assert out[phase]["misplaced"] == 0, phase
        assert any(k.startswith("leader-") for k in out[phase]["cpu_percent"]), phase
    assert len(set(out["same_shard"]["dirs"].values())) == 1
    assert len(set(out["cross_shard"]["dirs"].values())) == 2
    tree = out["tree_move"]
    assert {"moves_per_second", "entries_per_second", "p50_ms", "p99_ms"} <= set(tree)
    assert tree["moves"] == 2
    assert tree["entries"] == 10 + tree["directories"]
    assert tree["listed_files"] == 10
    assert all(len(shards) == 2 for shards in tree["shards"].values())
    reshard = out["resharding"]
    assert reshard["files_after"] == 200 and reshard["records_moved"] > 0
    assert reshard["probe_creates"] > 0 and reshard["probe_failed"] == 0


@pytest.mark.timeout(600)
def test_bench_meta_and_data_run_with_tls() -> None:
    """``--tls``: the same benchmarks on clusters with mutual TLS (how the cost of TLS is
    measured), every operation succeeding."""
    out = _run(
        "meta", "--tls", "--seconds", "1", "--clients", "1", "--concurrency", "4",
        "--list-entries", "20", "--skip-fill", "--skip-two-shards",
    )  # fmt: skip
    assert out["creates"]["ops"] > 0 and out["creates"]["failed"] == 0
    assert out["stats"]["ops"] > 0 and out["stats"]["failed"] == 0
    out = _run(
        "data", "--tls", "--large-mib", "2", "--small-count", "20", "--small-kib", "4",
        "--concurrency", "4", "--trials", "0",
    )  # fmt: skip
    assert out["large_md5_ok"] is True
    assert out["small_failed"] == 0
    for phase in ("small_write_cpu_us", "small_read_cpu_us"):  # where each operation's CPU went
        groups = out[phase]
        assert set(groups) == {"client", "shard leader", "other masters", "chunk servers"}
        assert all(v >= 0 for v in groups.values())
    assert sum(out["small_write_cpu_us"].values()) > 0  # (20 reads may fit in one clock tick)


@pytest.mark.timeout(300)
def test_bench_s3_smoke() -> None:
    """keelfs's side of ``keelfs bench s3`` with tiny sizes: every figure measured, every byte
    read back intact, no peer column."""
    out = _run(
        "s3", "--small-count", "20", "--concurrency", "4", "--large-mib", "5",
        "--part-mib", "5", "--list-runs", "1",
    )  # fmt: skip
    assert out["bench"] == "s3" and out["peer"] is None and "seaweedfs" not in out
    figures = out["keelfs"]
    assert figures["failed"] == 0
    for key in ("small_puts_s", "small_gets_s", "large_put_mb_s", "large_get_mb_s"):
        assert figures[key] > 0, key
    assert figures["list_keys_s"] > 0 and figures["list_pages_s"] > 0
    assert {"loadavg_1m_at_start", "loadavg_1m_at_end", "cpus"} <= set(out["load"])


def test_bench_rpc_smoke() -> None:
    out = _run("rpc", "--exchanges", "300", "--size", "512", "--tls")
    assert out["bench"] == "rpc" and out["tls"] is True and out["size"] == 512
    assert [m["mode"].split(",")[0] for m in out["modes"]] == [
        "gRPC unary",
        "gRPC stream",
        "gRPC stream",
        "asyncio stream",
        "asyncio stream",
    ]
    for m in out["modes"]:
        assert m["exchanges"] == 300 and m["per_second"] > 0, m
        assert m["client_us"] > 0 and m["server_us"] > 0, m  # the server answered its CPU
