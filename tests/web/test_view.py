"""``keelfs.web`` without processes: the ``--http-listen`` flag and the cluster view's fold."""

from __future__ import annotations

import pytest

from keelfs.cli.admin import _group_json
from keelfs.client.cluster_view import NodeView, fold
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.runtime.status import lag
from keelfs.server.roles import config_from_args
from keelfs.web.dashboard import dashboard_json
from keelfs.web.listen import parse_http_listen


def test_http_listen_is_loopback_only_without_tls() -> None:
    assert parse_http_listen("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert parse_http_listen("localhost:0") == ("localhost", 0)
    assert parse_http_listen("[::1]:80") == ("::1", 80)
    for bad in ("0.0.0.0:9100", "10.0.0.1:80", "example.com:80", "127.0.0.1", ":80", "1:x"):
        with pytest.raises(ValueError):
            parse_http_listen(bad)
    assert parse_http_listen("0.0.0.0:9100", tls=True) == ("0.0.0.0", 9100)
    base = ["--id", "1", "--listen", "127.0.0.1:7000", "--data", "/tmp/x"]
    with pytest.raises(SystemExit, match="loopback"):
        config_from_args("config", [*base, "--http-listen", "0.0.0.0:9100"])
    config_from_args("config", [*base, "--http-listen", "127.0.0.1:9100"])


def _group(
    state: str, commit: int, applied: int, last: int, progress: dict[int, int] | None = None
) -> pb.GroupStatus:
    """A member of a 3-voter group in term 3 led by node 1; ``progress``: node -> match."""
    return pb.GroupStatus(
        state=state,
        term=3 if state != "candidate" else 5,
        leader=1 if state != "candidate" else 0,
        commit=commit,
        applied=applied,
        last_index=last,
        voters=[1, 2, 3],
        members={1: "r:1", 2: "r:2", 3: "r:3"},
        progress={
            i: pb.MemberProgress(state="replicate", match=m, next=m + 1, lag=lag(last, m))
            for i, m in (progress or {}).items()
        },
    )


def _chunk(age: float, used: int) -> pb.ChunkServerStatus:
    return pb.ChunkServerStatus(address="a", rack="r", live=True, capacity=100, used=used,
                                reported=True, last_heartbeat_s_ago=age)  # fmt: skip


def _nodes(statuses: dict[int, pb.StatusReply | None]) -> dict[int, NodeView]:
    return {i: NodeView(i, f"h:{i}", st, "" if st else f"h:{i}: UNAVAILABLE") for i, st in
            statuses.items()}  # fmt: skip


def _three_nodes() -> dict[int, NodeView]:
    leader = _group("leader", 10, 10, 12, {1: 12, 2: 10, 3: 12})
    return _nodes(
        {
            1: pb.StatusReply(groups={"config": leader}, chunk_servers={"cs0": _chunk(0.9, 1)}),
            2: pb.StatusReply(
                groups={"config": _group("follower", 9, 7, 10)},
                shards=["shard-1"],
                blocks=4,
                replication={"replications": 1},
                chunk_servers={"cs0": _chunk(0.2, 2)},
            ),
            3: None,
        }
    )


def test_lag_is_the_leaders_one_figure_in_admin_and_dashboard_alike() -> None:
    """The leader's last index minus the member's match, as the leader reports it: never the
    commit index of one node minus the applied index of another (the dashboard's old figure,
    3 here, where ``keelfs admin status`` said 2)."""
    view = fold(_three_nodes())
    config = view.groups["config"]
    assert {i: m.lag for i, m in config.members.items()} == {1: 0, 2: 2, 3: None}
    assert _group_json(config)["members"]["2"]["lag"] == 2  # keelfs admin status --json
    rows = {m["id"]: m for m in dashboard_json(view)["groups"][0]["members"]}
    assert {i: r["lag"] for i, r in rows.items()} == {1: 0, 2: 2, 3: None}


def test_fold_names_leaders_and_unreachable_members() -> None:
    view = dashboard_json(fold(_three_nodes()))
    [config] = view["groups"]
    assert (config["id"], config["leader"], config["term"], config["commit"]) == (
        "config",
        1,
        3,
        10,
    )
    rows = {m["id"]: m for m in config["members"]}
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
    assert view["chunk_servers"] == [  # as the masters (nodes hosting shards) see it
        {"id": "cs0", "address": "a", "rack": "r", "live": True, "reported": True,
         "capacity": 100, "used": 2, "last_heartbeat_s_ago": 0.2}
    ]  # fmt: skip
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
    view = fold(_nodes({1: pb.StatusReply(groups={"s": _group("candidate", 4, 4, 4)})}))
    g = view.groups["s"]
    assert g.leader == 0 and g.term == 5 and g.members[1].lag is None
    assert dashboard_json(view)["groups"][0]["leader"] is None
