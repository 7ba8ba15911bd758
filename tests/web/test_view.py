"""``keelfs.web`` without processes: the ``--http-listen`` flag and the dashboard's fold."""

from __future__ import annotations

from typing import Any

import pytest

from keelfs.server.roles import config_from_args
from keelfs.web.dashboard import fold
from keelfs.web.listen import parse_http_listen


def test_http_listen_is_loopback_only() -> None:
    assert parse_http_listen("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert parse_http_listen("localhost:0") == ("localhost", 0)
    assert parse_http_listen("[::1]:80") == ("::1", 80)
    for bad in ("0.0.0.0:9100", "10.0.0.1:80", "example.com:80", "127.0.0.1", ":80", "1:x"):
        with pytest.raises(ValueError):
            parse_http_listen(bad)
    base = ["--id", "1", "--listen", "127.0.0.1:7000", "--data", "/tmp/x"]
    with pytest.raises(SystemExit, match="loopback"):
        config_from_args("config", [*base, "--http-listen", "0.0.0.0:9100"])
    config_from_args("config", [*base, "--http-listen", "127.0.0.1:9100"])


def _group(state: str, term: int, commit: int, applied: int, leader: int) -> dict[str, Any]:
    return {
        "state": state,
        "term": term,
        "commit": commit,
        "applied": applied,
        "leader": leader,
        "voters": [1, 2, 3],
    }


def _chunk(age: float, used: int) -> dict[str, Any]:
    return {"address": "a", "rack": "r", "live": True, "capacity": 100, "used": used,
            "reported": True, "last_heartbeat_s_ago": age}  # fmt: skip


def test_fold_names_leaders_lag_and_unreachable_members() -> None:
    statuses: dict[int, dict[str, Any] | None] = {
        1: {
            "groups": {"config": _group("leader", 3, 10, 10, 1)},
            "shards": [],
            "chunk_servers": {"cs0": _chunk(0.9, 1)},
        },
        2: {
            "groups": {"config": _group("follower", 3, 9, 7, 1)},
            "shards": ["shard-1"],
            "blocks": 4,
            "replication": {"replications": 1},
            "chunk_servers": {"cs0": _chunk(0.2, 2)},
        },
        3: None,
    }
    view = fold(statuses, {1: "h:1", 2: "h:2", 3: "h:3"})
    [config] = view["groups"]
    assert (config["id"], config["leader"], config["term"], config["commit"]) == (
        "config",
        1,
        3,
        10,
    )
    rows = {m["id"]: m for m in config["members"]}
    assert rows[1]["lag"] == 0 and rows[2]["lag"] == 3
    assert rows[3] == {
        "id": 3,
        "up": False,
        "state": "unreachable",
        "term": None,
        "commit": None,
        "applied": None,
        "lag": None,
    }
    assert [n["up"] for n in view["nodes"]] == [True, True, False]
    assert view["chunk_servers"] == [{"id": "cs0", **_chunk(0.2, 2)}]  # the freshest view
    assert view["blocks"] == [
        {
            "node": 2,
            "shards": ["shard-1"],
            "blocks": 4,
            "replication": {"replications": 1},
            "health": {},
        }
    ]


def test_fold_without_a_leader() -> None:
    view = fold({1: {"groups": {"s": _group("candidate", 5, 4, 4, 0)}}}, {1: "h:1"})
    assert view["groups"][0]["leader"] is None and view["groups"][0]["term"] == 5
