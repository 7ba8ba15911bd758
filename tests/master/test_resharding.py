"""Online resharding with real processes: shards added and removed under a write workload.

What a user checks: every file whose create was acknowledged is there afterwards, exactly once,
on the shard the final ShardMap names; clients kept working (they followed REDIRECTs); a crash
of the config group's leader (the driver) at any step of a move changes none of that."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from keelfs.client import Client
from keelfs.client._core import Call, Op, Plan
from keelfs.errors import KeelError, LeaseConflict, OutcomeUnknown
from keelfs.meta.shardmap import ShardMap
from keelfs.server.metacluster import MetaCluster

pytestmark = [pytest.mark.slow, pytest.mark.process, pytest.mark.timeout(300)]

DIRS = 24


class Workload:
    """Creates files in ``DIRS`` directories from one client until stopped; remembers which
    creates were acknowledged (and which had an unknown outcome)."""

    def __init__(self, cluster: MetaCluster) -> None:
        self.fs = cluster.client(deadline=20.0)
        self.acked: list[str] = []
        self.unknown: list[str] = []
        self.failed: list[str] = []
        self.lease_lost: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Workload:
        for d in range(DIRS):
            self.fs.mkdir(f"/w/d{d}", parents=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            path = f"/w/d{n % DIRS}/f{n}"
            n += 1
            try:
                self.fs.create(path)
            except OutcomeUnknown:
                self.unknown.append(path)
                continue
            except KeelError as exc:
                self.failed.append(f"{path}: {exc}")
                continue
            self.acked.append(path)
            try:
                self.fs.complete(path)
            except LeaseConflict:
                # its directory moved between the two calls: a file being written moves
                # without its writer's lease (docs/transactions.md); it is there, unclosed
                self.lease_lost.append(path)
            except KeelError as exc:
                self.failed.append(f"complete {path}: {exc}")

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


def assert_each_file_once(cluster: MetaCluster, load: Workload) -> None:
    fs = cluster.client()
    m = fs.shard_map()
    assert not m.resharding
    held: dict[str, list[str]] = {}
    for shard in m.shards:
        leader = cluster.leader(shard)
        for path in cluster.entry_paths(leader, shard):
            held.setdefault(path, []).append(shard)
    for path in load.acked:
        assert held.get(path) == [m.shard_for_path(path)], (path, held.get(path))
        assert fs.stat(path).path == path
    for path in load.unknown:
        assert len(held.get(path, [])) <= 1
    assert all(len(shards) == 1 for shards in held.values())


def test_adding_and_removing_a_shard_under_writes(tmp_path: Path) -> None:
    with MetaCluster(tmp_path, shards=("shard-1",)) as cluster:
        with Workload(cluster) as load:
            admin = cluster.admin()
            before = len(load.acked)
            new = cluster.start_shard("shard-2")
            admin.add_shard("shard-2", new)
            assert admin.shard_map().resharding
            cluster.wait_resharded()
            m = admin.shard_map()
            assert sorted(m.ring.shards) == ["shard-1", "shard-2"]
            owners = {m.shard_for_directory(f"/w/d{d}") for d in range(DIRS)}
            assert owners == {"shard-1", "shard-2"}  # some directories did move
            mid = len(load.acked)
            admin.remove_shard("shard-1")  # everything, the root included, moves to shard-2
            cluster.wait_resharded()
            m = admin.shard_map()
            assert list(m.shards) == ["shard-2"]
            while len(load.acked) < mid + 20:
                pass
        assert load.failed == []
        assert mid > before and len(load.acked) > mid  # writes went on throughout
        assert load.fs.stats["redirects"] > 0  # the client followed the moves
        assert_each_file_once(cluster, load)
        fs = cluster.client()
        assert sorted(e.name for e in fs.ls("/w")) == sorted(f"d{d}" for d in range(DIRS))
        statuses = [cluster.status(i).resharding for i in cluster.members("config")]
        assert sum(s.moves_done for s in statuses) > 0


STEPS = ["reshard.frozen", "reshard.copied", "reshard.switched", "reshard.source_settled"]


def _fired_step(cluster: MetaCluster, node: int) -> str:
    lines = [ln for ln in cluster.log_tail(node, 200).splitlines() if "failpoint reshard." in ln]
    assert lines, cluster.log_tail(node)
    return lines[-1].split("failpoint ")[1].split(":")[0]


def test_a_driver_crash_at_each_step_resumes_or_rolls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The config group's leader drives the moves. Every config server is armed to crash
    after the first step not yet seen; whoever leads crashes there, a new leader resumes (or
    rolls the move back), the crashed one comes back, and all are armed with the next step,
    until every step has crashed a driver."""
    monkeypatch.setenv("KEELFS_FAILPOINTS", "")  # processes accept Node.SetFailpoint
    cluster = MetaCluster(
        tmp_path, layout="separate", shards=("shard-1",), node_args=("--vnodes", "256")
    )
    with cluster:
        with Workload(cluster) as load:
            admin = cluster.admin()
            new = cluster.start_shard("shard-2")
            config = cluster.members("config")

            def arm(step: str, action: str = "crash") -> None:
                for node in config:
                    if cluster._procs[node].poll() is None:
                        with contextlib.suppress(grpc.RpcError):  # it just crashed: the
                            cluster.set_failpoint(node, step, action)  # loop restarts it

            arm(STEPS[0])
            admin.add_shard("shard-2", new)
            fired: set[str] = set()
            deadline = time.monotonic() + 120
            while len(fired) < len(STEPS) and time.monotonic() < deadline:
                for node in config:
                    code = cluster._procs[node].poll()
                    if code is None:
                        continue
                    assert code == 137, cluster.log_tail(node)
                    fired.add(_fired_step(cluster, node))
                    cluster.restart(node)
                    left = [s for s in STEPS if s not in fired]
                    if left:
                        arm(left[0])
                time.sleep(0.05)
            assert fired == set(STEPS)
            for step in STEPS:
                arm(step, "off")
            for node in config:  # one may have crashed again before it was disarmed
                if cluster._procs[node].poll() is not None:
                    cluster.restart(node)
            cluster.wait_resharded()
        assert load.failed == []
        assert_each_file_once(cluster, load)


class _ReplyLost(grpc.RpcError):
    """What a client sees when a reply never came back: its deadline passed."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.DEADLINE_EXCEEDED

    def details(self) -> str:
        return "Deadline Exceeded"

    def trailing_metadata(self) -> tuple[()]:
        return ()


class LosesOneReply(Client):
    """A client whose first ``method`` call is applied but its reply lost (with ``sent``
    False: the request itself is lost, never sent): ``meanwhile`` runs before the client sees
    the loss (and then retries as it always does)."""

    def __init__(
        self, cluster: MetaCluster, method: str, meanwhile: Callable[[], None], sent: bool = True
    ) -> None:
        super().__init__(cluster.config_addresses, deadline=90.0)
        self.method, self.meanwhile, self.sent, self.lost = method, meanwhile, sent, False

    def _run(self, op: Op, deadline: float | None) -> Any:
        return self._drive(self._losing(self._core.plan(op, deadline)))

    def _losing(self, plan: Plan) -> Plan:
        action = next(plan)
        while True:
            if isinstance(action, Call) and action.method == self.method and not self.lost:
                self.lost = True
                if self.sent:
                    result = yield action
                    assert not isinstance(result, grpc.RpcError), result
                self.meanwhile()
                result = _ReplyLost()
            else:
                result = yield action
            try:
                action = plan.send(result)
            except StopIteration as stop:
                return stop.value


def test_a_retry_after_a_lost_reply_and_a_move_is_not_applied_again(tmp_path: Path) -> None:
    """An overwriting create, a delete and an overwriting rename are applied on the source
    shard, their replies are lost, the directory moves to a new shard, where another client
    creates the names again; the retries (same session and seq) must get the first outcome,
    not apply once more on the new shard (replacing, deleting, renaming the other client's
    new files)."""
    moving = next(
        f"/w/d{i}"
        for i in range(64)
        if ShardMap(0, {"shard-1": {}, "shard-2": {}}).shard_for_directory(f"/w/d{i}") == "shard-2"
    )
    with MetaCluster(tmp_path, shards=("shard-1",)) as cluster:
        admin = cluster.admin()
        admin.mkdir(moving, parents=True)
        for name in ("victim", "src", "dst", "gone"):
            admin.create(f"{moving}/{name}")
        other = cluster.client()

        def reshard() -> None:
            admin.add_shard("shard-2", cluster.start_shard("shard-2"))
            cluster.wait_resharded()
            assert admin.shard_map().shard_for_path(f"{moving}/victim") == "shard-2"
            # someone else's new files, on the new shard
            other.create(f"{moving}/new", overwrite=True, owner="other")
            other.complete(f"{moving}/new")
            other.create(f"{moving}/victim")
            other.create(f"{moving}/src")

        renamer = LosesOneReply(cluster, "Rename", reshard)
        deleter = LosesOneReply(
            cluster,
            "Delete",
            lambda: renamer.rename(f"{moving}/src", f"{moving}/dst", overwrite=True),
        )
        creator = LosesOneReply(cluster, "Create", lambda: deleter.delete(f"{moving}/victim"))
        # and a delete that never reached the source: the source says so, the new shard does it

        def create_over() -> None:
            info = creator.create(f"{moving}/new", overwrite=True, owner="first")
            assert info.owner == "first"  # the first outcome

        unsent = LosesOneReply(cluster, "Delete", create_over, sent=False)
        try:
            assert unsent.delete(f"{moving}/gone").files == 1
            assert unsent.lost and creator.lost and deleter.lost and renamer.lost
            names = sorted(e.name for e in other.ls(moving))
            assert names == ["dst", "new", "src", "victim"]  # the other client's files survived
            assert other.stat(f"{moving}/new").owner == "other"
        finally:
            for c in (unsent, creator, deleter, renamer):
                c.close()
