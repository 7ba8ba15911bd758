"""``keelfs bench compare seaweedfs`` without SeaweedFS: the table and its JSON, the report of
``weed benchmark``, the cluster's cleanup (a stand-in ``weed`` that only sleeps), the installer's
reuse and its error, and the command's arguments. None needs the network or the real binary; the
one test that does is marked ``peer`` and left out of the default run (pyproject ``addopts``)."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from keelfs.bench.peers import seaweedfs as sw
from keelfs.bench.peers.compare import CompareResult, CpuMeter, Figures, rows
from keelfs.cli.main import cli
from keelfs.runtime.processes import ClusterError
from keelfs.testing.environment import cannot_run


def _result() -> CompareResult:
    r = CompareResult(
        large_mib=256, chunk_mib=4, streams=4, small_kib=4, small_count=2000, go_count=10_000,
        concurrency=16, seaweedfs_fsync=False,
        load={"cpus": 2, "loadavg_1m_at_start": 3.5, "foreign_cpu_cores_at_start": 1.2},
    )  # fmt: skip
    r.keelfs = Figures(98.0, 284.0, 74.0, 677.0, foreign_cpu_cores=0.4)
    r.seaweed_py = Figures(126.0, 563.0, 699.0, 1690.0, foreign_cpu_cores=0.5)
    r.seaweed_go = Figures(60.0, 666.0, 2044.0, 16639.0, failed=2, foreign_cpu_cores=0.6)
    r.keelfs.write_cpu_us = {"client": 150.0, "shard leader": 560.0, "other masters": 690.0,
                             "chunk servers": 75.0}  # fmt: skip
    r.seaweed_py.write_cpu_us = {"client": 300.0, "masters": 10.0, "volume servers": 400.0}
    return r


def test_rows_give_figures_and_both_ratios() -> None:
    table = rows(_result())
    assert [row.workload for row in table] == [
        "write 256 MiB (MB/s)",
        "read 256 MiB (MB/s)",
        "4 KiB files written/s, 16 in flight",
        "4 KiB files read/s, 16 in flight",
        "CPU per 4 KiB write, µs: servers + client",
        "CPU per 4 KiB read, µs: servers + client",
        "failures (lost or wrong data)",
    ]
    write, _, small_writes, small_reads, write_cpu, read_cpu, failures = table
    assert (write_cpu.keelfs, write_cpu.seaweed_py, write_cpu.seaweed_go) == (
        "1,325 + 150",
        "410 + 300",
        "-",
    )
    assert write_cpu.ratio == "3.23 · -"  # servers' CPU, keelfs / SeaweedFS
    assert (read_cpu.keelfs, read_cpu.ratio) == ("-", "- · -")  # not measured
    assert (write.keelfs, write.seaweed_py, write.seaweed_go) == ("98.0", "126.0", "60.0")
    assert write.ratio == "0.78 · 1.63"
    assert small_writes.ratio == "0.11 · 0.04"
    assert small_reads.seaweed_go == "16,639"
    assert (failures.keelfs, failures.seaweed_go) == ("0", "2")


def test_a_side_not_measured_shows_a_dash() -> None:
    r = _result()
    r.seaweed_go.large_read_mb_s = math.nan
    r.keelfs.intact = False
    read, failures = rows(r)[1], rows(r)[-1]
    assert read.seaweed_go == "-"
    assert read.ratio == "0.50 · -"
    assert failures.keelfs == "0, large file CORRUPT"
    assert r.as_json()["ratios"]["large_read_mb_s"] == {"vs_python": 0.5, "vs_go": None}


def test_json_holds_every_column_and_the_load() -> None:
    out = _result().as_json()
    assert out["bench"] == "compare" and out["peer"] == "seaweedfs"
    assert out["load"]["foreign_cpu_cores_at_start"] == 1.2
    assert out["keelfs"]["small_writes_s"] == 74.0
    assert out["seaweedfs_python"]["small_write_cpu_us"]["volume servers"] == 400.0
    assert out["seaweedfs_go"]["failed"] == 2
    assert out["ratios"]["small_reads_s"] == {"vs_python": 0.4, "vs_go": 0.04}
    json.dumps(out)  # all of it is JSON


def test_cpu_meter_counts_no_negative_foreign_load() -> None:
    meter = CpuMeter().start()
    sum(range(200_000))  # our own CPU is not foreign
    assert meter.stop() >= 0


REPORT = """This is SeaweedFS version 8000GB 4.48 pypi linux amd64

------------ Writing Benchmark ----------

Concurrency Level:      4
Time taken for tests:   0.158 seconds
Completed requests:      100
Failed requests:        0
Total transferred:      105905 bytes
Requests per second:    632.09 [#/sec]
Transfer rate:          653.73 [Kbytes/sec]

------------ Randomly Reading Benchmark ----------

Concurrency Level:      4
Time taken for tests:   0.022 seconds
Completed requests:      100
Failed requests:        1
Total transferred:      105841 bytes
Requests per second:    4594.21 [#/sec]
Transfer rate:          4748.60 [Kbytes/sec]
"""


def test_weed_benchmark_report_is_read() -> None:
    write, read = sw.parse_weed_benchmark(REPORT)
    assert write.requests_per_second == 632.09
    assert write.completed == 100 and write.failed == 0
    assert read.requests_per_second == 4594.21 and read.failed == 1
    assert read.mb_per_second == pytest.approx(4748.60 * 1024 / 1e6)


def test_a_report_without_both_phases_is_an_error() -> None:
    with pytest.raises(ValueError, match="write and read"):
        sw.parse_weed_benchmark(REPORT.split("------------ Randomly")[0])


# -- the cluster's processes, with a stand-in weed --------------------------------------------
@pytest.fixture
def sleeping_weed(tmp_path: Path) -> Path:
    """A ``weed`` that starts and never serves: every process of the cluster just sleeps."""
    weed = tmp_path / "weed"
    weed.write_text("#!/bin/sh\nexec sleep 300\n")
    weed.chmod(0o755)
    return weed


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def test_a_cluster_that_never_serves_is_stopped(sleeping_weed: Path, tmp_path: Path) -> None:
    cluster = sw.WeedCluster(sleeping_weed, tmp_path / "run", start_timeout=1.0)
    started: list[int] = []
    original = cluster._healthy

    def healthy() -> bool:
        started[:] = cluster.pids()
        return original()

    cluster._healthy = healthy  # type: ignore[method-assign]
    with pytest.raises(ClusterError, match="no leader master with 3 volume servers"), cluster:
        pass
    assert len(started) == 6
    assert not [pid for pid in started if _alive(pid)]
    assert cluster.procs == {}


def test_ctrl_c_in_the_block_stops_every_process(sleeping_weed: Path, tmp_path: Path) -> None:
    cluster = sw.WeedCluster(sleeping_weed, tmp_path / "run")
    cluster._healthy = lambda: True  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt), cluster:
        pids = cluster.pids()
        assert len(pids) == 6 and all(_alive(pid) for pid in pids)
        raise KeyboardInterrupt
    assert not [pid for pid in pids if _alive(pid)]


def test_a_process_that_exits_at_start_is_named(tmp_path: Path) -> None:
    weed = tmp_path / "weed"
    weed.write_text("#!/bin/sh\necho 'bad flag' >&2\nexit 3\n")
    weed.chmod(0o755)
    cluster = sw.WeedCluster(weed, tmp_path / "run", start_timeout=30.0)
    with pytest.raises(ClusterError, match="(?s)did not start.*exited: master1.*bad flag"), cluster:
        pass


def test_commands_put_every_process_on_loopback(tmp_path: Path) -> None:
    cluster = sw.WeedCluster(tmp_path / "weed", tmp_path)
    master, volume = cluster.master_command(0), cluster.volume_command(2)
    for cmd in (master, volume):
        assert "-ip=127.0.0.1" in cmd and "-ip.bind=127.0.0.1" in cmd
    assert "-telemetry=false" in master and "-defaultReplication=002" in master
    assert f"-peers={cluster.masters}" in master and f"-master={cluster.masters}" in volume
    assert len(set(cluster.master_ports + cluster.volume_ports)) == 6


# -- the installer ------------------------------------------------------------------------------
def test_an_installed_binary_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weed = tmp_path / "venv" / "bin" / "weed"
    weed.parent.mkdir(parents=True)
    weed.touch()
    (tmp_path / "installed").write_text(sw.PACKAGE + "\n")

    def no_install(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"installed again: {args}")

    monkeypatch.setattr(sw.subprocess, "run", no_install)
    assert sw.install(tmp_path) == weed


def test_a_failed_install_says_how_to_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(cmd: list[str], **kwargs: object) -> None:
        raise subprocess.CalledProcessError(1, cmd)

    monkeypatch.setattr(sw.subprocess, "run", fail)
    with pytest.raises(ClusterError, match="--weed PATH"):
        sw.install(tmp_path)


def test_the_cache_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert sw.cache_dir() == tmp_path / "keelfs" / "peers" / "seaweedfs"


# -- the command ----------------------------------------------------------------------------------
def test_command_prints_the_table_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    import keelfs.bench.peers.compare as compare

    seen: dict[str, object] = {}

    def fake_run(**kwargs: object) -> CompareResult:
        seen.update(kwargs)
        return _result()

    monkeypatch.setattr(compare, "run", fake_run)
    result = CliRunner().invoke(
        cli, ["bench", "compare", "seaweedfs", "--small-count", "10", "--json"],
        catch_exceptions=False, env={"COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "SeaweedFS (Python)" in result.output and "0.11 · 0.04" in result.output
    assert json.loads(result.output.strip().splitlines()[-1])["peer"] == "seaweedfs"
    assert seen["small_count"] == 10 and seen["weed"] is None
    assert seen["seaweedfs_fsync"] is False


@pytest.mark.parametrize(
    "args, message",
    [
        (["nosuch"], "'nosuch' is not"),
        (["seaweedfs", "--weed", "/no/such/weed"], "does not exist"),
        (["seaweedfs", "--concurrency", "0"], "at least 1"),
        (["seaweedfs", "--large-mib", "2", "--chunk-mib", "4"], "must not exceed"),
    ],
)
def test_bad_arguments_are_refused(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["bench", "compare", *args])
    assert result.exit_code == 2
    assert message in result.output


# -- the real thing (pytest -m peer) --------------------------------------------------------------
def _weed() -> Path:
    given = os.environ.get("KEELFS_WEED")
    weed = Path(given) if given else sw.cache_dir() / "venv" / "bin" / "weed"
    if not weed.exists():
        cannot_run(f"no weed binary at {weed} (run keelfs bench compare seaweedfs once)")
    return weed


@pytest.mark.peer
@pytest.mark.process
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_compare_runs_against_real_seaweedfs() -> None:
    result = CliRunner().invoke(
        cli,
        ["bench", "compare", "seaweedfs", "--weed", str(_weed()), "--large-mib", "8",
         "--small-count", "50", "--go-count", "100", "--json"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    for side in ("keelfs", "seaweedfs_python", "seaweedfs_go"):
        assert out[side]["failed"] == 0 and out[side]["intact"], side
        assert out[side]["small_writes_s"] > 0 and out[side]["large_read_mb_s"] > 0, side
