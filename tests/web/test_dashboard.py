"""The HTTP side of real keelfs processes (``keelfs.web``): ``/health``, ``/metrics``,
``/raft/state`` on masters and chunk servers, and the dashboard in headless Chromium following
a kill -9 of the config group's leader.

One co-hosted cluster (3 processes, each a config member and a member of shard-1) with 3 chunk
servers is shared by the module; each test leaves every node running again, so they do not
depend on their order. The browser test is skipped when Chromium or its driver is missing
(``apt-get install chromium chromium-driver``; ``.ci/run`` installs them as root).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from keelfs.chunk.keys import wait_for_keys
from keelfs.datapath.client import ChunkClient
from keelfs.datapath.tokens import TokenSigner
from keelfs.server.chunkservers import LocalChunkServers
from keelfs.server.metacluster import MetaCluster
from keelfs.testing.environment import cannot_run
from keelfs.testing.tiers import starts_processes

pytestmark = [pytest.mark.timeout(120)]

T = TypeVar("T")

CHROMIUM = os.environ.get("KEELFS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("KEELFS_CHROMEDRIVER", "/usr/bin/chromedriver")


@pytest.fixture(scope="module")
@starts_processes
def web_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[MetaCluster, LocalChunkServers]]:
    cluster = MetaCluster(tmp_path_factory.mktemp("web"), shards=("shard-1",))
    cluster.enable_http()
    try:
        cluster.start()
        servers = cluster.start_chunk_servers(
            3, "--no-fsync-on-close", "--http-listen", "127.0.0.1:0"
        )
        yield cluster, servers
    except BaseException:
        for node_id in sorted(cluster.nodes):
            print(f"----- node {node_id} log (tail) -----\n{cluster.log_tail(node_id, 30)}")
        raise
    finally:
        cluster.stop_all()


def get(address: str, path: str, timeout: float = 3.0) -> tuple[int, str, bytes]:
    """(status, content type, body) of ``GET http://address/path``."""
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=timeout) as reply:
            return reply.status, reply.headers.get("Content-Type", ""), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def get_json(address: str, path: str) -> Any:
    status, ctype, body = get(address, path)
    assert status == 200, (path, status, body[:200])
    assert ctype.startswith("application/json")
    return json.loads(body)


def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``, parsed: (name, sorted labels) -> value."""
    status, ctype, body = get(address, "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def wait_for(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(0.05)


def test_master_endpoints(web_cluster: tuple[MetaCluster, LocalChunkServers]) -> None:
    cluster, _ = web_cluster
    http = cluster.http_addresses
    for node_id in cluster.running():
        health = get_json(http[node_id], "/health")
        assert health["status"] == "ok" and health["id"] == node_id
        assert set(health["groups"]) == {"config", "shard-1"}
        state = get_json(http[node_id], "/raft/state")
        assert state["id"] == node_id
        assert set(state["groups"]) == {"config", "shard-1"}
        for g in state["groups"].values():
            assert {"term", "commit", "applied", "leader", "voters", "state"} <= set(g)
        node = get_json(http[node_id], "/api/node")  # Node.Status in protobuf's JSON mapping
        assert node["id"] == str(node_id) and set(node["groups"]) == {"config", "shard-1"}
        assert get(http[node_id], "/nowhere")[0] == 404

    lead = cluster.leader("shard-1")
    watcher = next(i for i in cluster.running() if i != lead)
    before = scrape(http[watcher])
    assert sample(before, "keelfs_process_role", node=str(watcher), role="config+master") == 1
    for name in ("keelfs_raft_term", "keelfs_raft_commit_index", "keelfs_raft_applied_index"):
        for group in ("config", "shard-1"):
            assert sample(before, name, node=str(watcher), group=group) >= 1
    assert sample(before, "keelfs_raft_is_leader", node=str(watcher), group="shard-1") == 0
    assert sample(scrape(http[lead]), "keelfs_raft_is_leader", node=str(lead), group="shard-1")

    fs = cluster.client()
    for k in range(5):
        fs.mkdir(f"/web-metrics-{time.monotonic_ns()}-{k}")
    commit0 = sample(before, "keelfs_raft_commit_index", node=str(watcher), group="shard-1")
    wait_for(
        lambda: (
            sample(
                scrape(http[watcher]),
                "keelfs_raft_applied_index",
                node=str(watcher),
                group="shard-1",
            )
            >= commit0 + 5
        ),
        10,
        "the follower's applied index did not move with the writes",
    )
    lead_samples = scrape(http[lead])
    proposals = sample(
        lead_samples, "keelfs_raft_proposal_seconds_count", node=str(lead), group="shard-1"
    )
    assert proposals >= 5
    assert sample(lead_samples, "keelfs_raft_log_fsync_seconds_count", node=str(lead)) > 0
    assert ("keelfs_master_chunk_capacity_bytes", ()) not in lead_samples  # labelled per server
    assert any(name == "keelfs_master_chunk_capacity_bytes" for name, _ in lead_samples)

    # the term moves (and an election is counted) when the shard's leader dies
    term0 = sample(scrape(http[watcher]), "keelfs_raft_term", node=str(watcher), group="shard-1")
    cluster.kill9(lead)
    try:
        wait_for(
            lambda: (
                sample(
                    scrape(http[watcher]), "keelfs_raft_term", node=str(watcher), group="shard-1"
                )
                > term0
            ),
            15,
            "the term did not move after the leader died",
        )
        after = scrape(http[watcher])
        assert sample(after, "keelfs_raft_elections_total", node=str(watcher), group="shard-1") >= 1
        cluster.leader("shard-1")
    finally:
        cluster.restart(lead)
    assert get_json(http[lead], "/health")["status"] == "ok"


def test_chunk_server_endpoints(web_cluster: tuple[MetaCluster, LocalChunkServers]) -> None:
    _, servers = web_cluster
    addr = servers.ready[0]["http"]
    health = get_json(addr, "/health")
    assert health == {"status": "ok", "role": "chunk", "id": "cs0", "address": servers.addresses[0]}
    assert get_json(addr, "/raft/state") == {"id": "cs0", "groups": {}}
    node = get_json(addr, "/api/node")
    assert node["capacity_bytes"] > 0 and node["registered"] is True
    assert get(addr, "/")[0] == 404  # the dashboard lives on the metadata nodes

    before = scrape(addr)
    assert sample(before, "keelfs_chunk_capacity_bytes", node="cs0") > 0
    written0 = sample(before, "keelfs_chunk_bytes_written_total", node="cs0")
    read0 = sample(before, "keelfs_chunk_bytes_read_total", node="cs0")
    data = os.urandom(100_000)
    block_id = 7_000_000_000 + time.monotonic_ns() % 1_000_000
    # the chunk server runs with masters: a block of the test's own needs a token signed with
    # the keys it learned from them
    chunks = ChunkClient(signer=TokenSigner(wait_for_keys(servers.data_dir(0))))
    try:
        chunks.write_block([servers.addresses[0]], block_id, 1, data, "web-test", 1)
        assert chunks.read_block(servers.addresses[0], block_id, 1) == data
    finally:
        chunks.close()
    after = scrape(addr)
    assert sample(after, "keelfs_chunk_bytes_written_total", node="cs0") == written0 + len(data)
    assert sample(after, "keelfs_chunk_bytes_read_total", node="cs0") >= read0 + len(data)
    assert sample(after, "keelfs_chunk_replicas", node="cs0", state="finalized") >= 1


def _browser() -> Any:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        cannot_run(
            f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)"
        )
    try:
        from selenium import webdriver
    except ImportError:
        cannot_run("needs selenium (the dev extra)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--window-size=1280,900",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def test_dashboard_follows_a_new_leader(
    web_cluster: tuple[MetaCluster, LocalChunkServers],
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    cluster, servers = web_cluster
    browser = _browser()
    try:
        old = cluster.leader("config")
        viewer = next(i for i in cluster.running() if i != old)
        browser.get(f"http://{cluster.http_addresses[viewer]}/")

        def shown_leader() -> str | None:
            try:
                found = browser.find_elements(By.ID, "config-leader")
                return found[0].get_attribute("data-leader") if found else None
            except StaleElementReferenceException:  # redrawn meanwhile
                return None

        assert wait_for(shown_leader, 10, "no config leader shown") == str(old)
        text = browser.find_element(By.TAG_NAME, "body").text
        assert "shard-1" in text
        chunk_rows = browser.find_elements(By.CSS_SELECTOR, "#chunk-servers tbody tr")
        assert {r.text.split()[0] for r in chunk_rows} == {"cs0", "cs1", "cs2"}
        assert browser.find_elements(By.CSS_SELECTOR, "#chunk-servers .bar")

        cluster.kill9(old)
        try:
            # the page must come to show the leader the members agree on (on a loaded
            # machine the first new leader may lose its term too: the page follows that)
            def shows_the_new_leader() -> bool:
                shown = shown_leader()
                if shown in (None, "", str(old)):
                    return False
                return shown == str(cluster.leader("config", exclude=(old,)))

            wait_for(shows_the_new_leader, 20, "the page did not show the new config leader")
            row = f"#group-config tr[data-node='{old}']"

            def shown_down() -> bool:
                rows = browser.find_elements(By.CSS_SELECTOR, row)
                try:
                    return bool(rows) and "unreachable" in rows[0].text
                except StaleElementReferenceException:  # redrawn meanwhile
                    return False

            wait_for(shown_down, 5, "the dead member not shown as unreachable")
        finally:
            cluster.restart(old)
    finally:
        browser.quit()
