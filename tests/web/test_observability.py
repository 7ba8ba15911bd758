"""Observability of real keelfs processes: the gRPC latency histogram by method and status code,
request ids that follow one operation through client, master and chunk server, JSON logs, and
the committed Grafana dashboard and Prometheus alert rules checked against what the processes
actually export.

One co-hosted cluster (3 processes, config + shard-1 each, at DEBUG so that every call is
logged) with 3 chunk servers (one with ``--log-format json``) is shared by the module.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from keelfs.errors import NotFound
from keelfs.runtime.processes import hard_kill, wait_until
from keelfs.runtime.requests import (
    REQUEST_ID,
    REQUEST_ID_ENV,
    JsonFormatter,
    TextFormatter,
    request_scope,
)
from keelfs.server.chunkservers import LocalChunkServers
from keelfs.server.metacluster import MetaCluster
from keelfs.testing.tiers import starts_processes

pytestmark = [pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "keelfs.json"
ALERTS = ROOT / "deploy" / "prometheus" / "keelfs-alerts.yml"
PROMQL_BUILTINS = {"up"}
Observed = tuple[MetaCluster, tuple[LocalChunkServers, LocalChunkServers]]
"""The cluster, its two chunk servers with text logs and its one with JSON logs."""
"""Series Prometheus makes itself (not exported by keelfs)."""


@pytest.fixture(scope="module")
@starts_processes
def observed(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Observed]:
    cluster = MetaCluster(  # plain HTTP on loopback, also in the TLS tier (scraped so)
        tmp_path_factory.mktemp("obs"),
        shards=("shard-1",),
        node_args=("--log-level", "DEBUG"),
        tls=False,
    )
    cluster.enable_http()
    try:
        cluster.start()
        args = ("--no-fsync-on-close", "--http-listen", "127.0.0.1:0", "--log-level", "DEBUG")
        text = cluster.start_chunk_servers(2, *args)
        json_logs = cluster.start_chunk_servers(1, *args, "--log-format", "json")
        yield cluster, (text, json_logs)
    except BaseException:
        for node_id in sorted(cluster.nodes):
            print(f"----- node {node_id} log (tail) -----\n{cluster.log_tail(node_id, 30)}")
        raise
    finally:
        cluster.stop_all()


def scrape_names(address: str) -> set[str]:
    """Every sample name ``/metrics`` at ``address`` exports (``_bucket``, ``_total``, ...)."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:
        body = reply.read().decode()
    return {s.name for f in text_string_to_metric_families(body) for s in f.samples}


def scrape_samples(address: str) -> list[Any]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:
        body = reply.read().decode()
    return [s for f in text_string_to_metric_families(body) for s in f.samples]


def exported(observed: Observed) -> set[str]:
    """The metric names of a master and a chunk server, after some traffic of every kind."""
    cluster, (text, json_logs) = observed
    fs = cluster.client()
    fs.mkdir("/scrape", parents=True)
    fs.write_bytes("/scrape/f", os.urandom(200_000), overwrite=True)
    assert fs.read_bytes("/scrape/f")
    leader = cluster.leader("shard-1")
    names = scrape_names(cluster.http_addresses[leader])
    for ready in [*text.ready, *json_logs.ready]:
        names |= scrape_names(ready["http"])
    return names


def promql_metrics(expr: str) -> set[str]:
    """The metric names an expression reads: identifiers that are neither functions,
    aggregations, keywords, label names nor strings."""
    text = re.sub(r'"[^"]*"', "", expr)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", text)
    keywords = {"by", "without", "on", "ignoring", "and", "or", "unless", "bool", "offset"}
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        if text[m.end() :].lstrip().startswith("(") or m.group(0) in keywords:
            continue  # a function or aggregation, or a keyword
        names.add(m.group(0))
    return names


def test_promql_metrics_reads_names_only() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, method) "
        '(rate(keelfs_rpc_server_seconds_bucket{code="OK"}[5m])))'
        " / on (node) keelfs_chunk_capacity_bytes"
    )
    assert promql_metrics(expr) == {
        "keelfs_rpc_server_seconds_bucket",
        "keelfs_chunk_capacity_bytes",
    }


def test_rpc_latency_by_method_and_code(observed: Observed) -> None:
    cluster, (text, json_logs) = observed
    fs = cluster.client()
    fs.mkdir("/rpc", parents=True)
    with pytest.raises(NotFound):
        fs.stat("/rpc/absent")
    fs.write_bytes("/rpc/f", os.urandom(300_000), overwrite=True)
    leader = cluster.leader("shard-1")

    def counts(address: str) -> dict[tuple[str, str], float]:
        return {
            (s.labels["method"], s.labels["code"]): s.value
            for s in scrape_samples(address)
            if s.name == "keelfs_rpc_server_seconds_count"
        }

    master: dict[tuple[str, str], float] = {}
    for address in cluster.http_addresses.values():  # a read may be served by any member
        for key, value in counts(address).items():
            master[key] = master.get(key, 0) + value
    assert master[("Namespace/Mkdir", "OK")] >= 1, master
    assert master[("Namespace/GetFileInfo", "NOT_FOUND")] >= 1
    assert master[("Namespace/Create", "OK")] >= 1
    chunk: dict[tuple[str, str], float] = {}
    for ready in [*text.ready, *json_logs.ready]:
        for key, value in counts(ready["http"]).items():
            chunk[key] = chunk.get(key, 0) + value
    assert chunk[("ChunkServer/WriteBlock", "OK")] >= 1
    buckets = [
        s
        for s in scrape_samples(cluster.http_addresses[leader])
        if s.name == "keelfs_rpc_server_seconds_bucket" and s.labels["method"] == "Namespace/Mkdir"
    ]
    assert buckets and all(s.labels["node"] == str(leader) for s in buckets)


def test_request_id_follows_an_operation(
    observed: Observed, caplog: pytest.LogCaptureFixture
) -> None:
    """One id, set around one write on the client, is in the client's log, in a master's and
    in a chunk server's (text and JSON alike)."""
    cluster, (text, json_logs) = observed
    fs = cluster.client()
    fs.mkdir("/traced", parents=True)
    rid = "trace-" + os.urandom(6).hex()
    caplog.set_level(logging.DEBUG, logger="keelfs.client.calls")
    with request_scope(rid):
        fs.write_bytes("/traced/f", os.urandom(150_000), replication=3)
    assert REQUEST_ID.get() is None
    assert fs.read_bytes("/traced/f")
    client_lines = [r for r in caplog.records if r.name == "keelfs.client.calls"]
    assert any("Namespace/Create" in r.getMessage() for r in client_lines)
    assert TextFormatter("client").format(client_lines[0]).endswith(f"[rid={rid}]")

    def lines_with(path: Path, text: str) -> list[str]:
        lines = path.read_text(errors="replace").splitlines()
        return [line for line in lines if rid in line and text in line]

    # each wait is for the very line asserted: lines of the id's other calls may come first
    found = wait_until(
        lambda: (
            [
                x
                for n in cluster.nodes.values()
                for x in lines_with(n.log_path, "Namespace/Create OK")
            ]
            or None
        ),
        10,
        f"Namespace/Create OK under {rid} in a master's log",
    )
    assert any(f"[rid={rid}]" in line for line in found)
    wait_until(
        lambda: (
            [x for s in text.specs for x in lines_with(s.log_path, "ChunkServer/WriteBlock OK")]
            or None
        ),
        10,
        f"ChunkServer/WriteBlock OK under {rid} in a chunk server's log",
    )
    json_chunk = wait_until(
        lambda: lines_with(json_logs.specs[0].log_path, "ChunkServer/WriteBlock OK") or None,
        10,
        f"ChunkServer/WriteBlock OK under {rid} in the JSON log of a chunk server",
    )
    records = [json.loads(line) for line in json_chunk]
    assert any(
        r["request_id"] == rid and r["msg"].startswith("ChunkServer/WriteBlock OK") for r in records
    )
    assert all({"ts", "level", "logger", "process", "msg"} <= set(r) for r in records)


def _master_lines_with(cluster: MetaCluster, *texts: str) -> list[str] | None:
    found = [
        line
        for node in cluster.nodes.values()
        for line in node.log_path.read_text(errors="replace").splitlines()
        if all(text in line for text in texts)
    ]
    return found or None


def test_a_cli_command_runs_under_the_request_id_of_its_environment(observed: Observed) -> None:
    cluster, _ = observed
    rid = "cli-" + os.urandom(6).hex()
    address = ",".join(cluster.config_addresses)
    command = [sys.executable, "-m", "keelfs.cli.main", "mkdir", "--address", address]
    subprocess.run(
        [*command, "-p", "/cli-traced"],
        env={**os.environ, REQUEST_ID_ENV: rid},
        check=True,
        capture_output=True,
        timeout=60,
    )
    wait_until(
        lambda: _master_lines_with(cluster, rid, "Namespace/Mkdir OK"),
        10,
        f"Namespace/Mkdir OK under {rid} in a master's log",
    )


def test_an_s3_request_id_follows_the_request_into_the_cluster(
    observed: Observed, tmp_path: Path
) -> None:
    """The id the gateway answers in ``x-amz-request-id`` is the one its calls carry: in a
    master's log, and in the gateway's own JSON log (``--log-format json``)."""
    from tests.gateways.s3_helpers import Gateway, start_gateway

    cluster, _ = observed
    proc, endpoint, user = start_gateway(
        cluster, tmp_path, "--log-format", "json", "--log-level", "DEBUG"
    )
    try:
        s3 = Gateway(cluster, endpoint, proc, user).client()
        s3.create_bucket(Bucket="traced")
        reply = s3.put_object(Bucket="traced", Key="k", Body=b"x" * 1000)
        rid = reply["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]
        wait_until(
            lambda: _master_lines_with(cluster, rid, "Namespace/", " OK "),
            10,
            f"a Namespace call under {rid} in a master's log",
        )
        gateway_log = [
            json.loads(line)
            for line in (tmp_path / "s3.err").read_text().splitlines()
            if line.startswith("{")
        ]
        assert any(r.get("request_id") == rid for r in gateway_log), gateway_log[-5:]
    finally:
        hard_kill(proc)


def test_json_log_lines_are_json(observed: Observed) -> None:
    _, (_, json_logs) = observed
    lines = [
        line
        for line in json_logs.specs[0].log_path.read_text().splitlines()
        if line.startswith("{")
    ]
    assert lines
    parsed = [json.loads(line) for line in lines]
    assert all(p["process"] == "chunk" for p in parsed)


def test_json_formatter_keeps_tracebacks() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("here",), None)
        import sys

        record.exc_info = sys.exc_info()
    with request_scope("r1"):
        out = json.loads(JsonFormatter("n1").format(record))
    assert out["msg"] == "failed here" and out["request_id"] == "r1"
    assert "RuntimeError: boom" in out["exc"]


def test_request_scope_cleans_what_a_caller_sends() -> None:
    with request_scope('a b"c\n' + "x" * 100) as rid:
        assert rid == "abc" + "x" * 61


def test_dashboard_panels_name_exported_metrics(
    observed: Observed,
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    names = exported(observed)
    assert dashboard["panels"], "no panel"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("leader", "lag", "fsync", "rpc latency", "capacity", "under-replicated"):
        assert topic in titles, topic
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used = promql_metrics(target["expr"])
            assert used, (panel["title"], target["expr"])
            missing = used - names
            assert not missing, f"panel {panel['title']!r} reads {missing}, not exported"


def test_alert_rules_are_valid_and_name_exported_metrics(
    observed: Observed,
) -> None:
    promtool = shutil.which("promtool")
    if promtool is not None:
        out = subprocess.run(
            [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stdout + out.stderr
    doc = yaml.safe_load(ALERTS.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert len(rules) >= 8
    names = exported(observed) | PROMQL_BUILTINS
    for rule in rules:
        assert rule["alert"] and rule["labels"]["severity"] in ("warning", "critical")
        missing = promql_metrics(rule["expr"]) - names
        assert not missing, f"alert {rule['alert']} reads {missing}, not exported"
