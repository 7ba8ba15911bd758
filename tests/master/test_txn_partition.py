"""A network partition between shard leaders in the middle of a cross-shard rename (real
processes, each master in its own network namespace: root only, skipped otherwise).

3 config servers and 3 masters per shard, one role per process, every one in its own network
namespace on a bridge (``NetnsNetwork``); masters reach each other (Raft, and the transaction
RPCs: prepare, decision, status) on the bridge, and the test process reaches every node through
a gateway port, so it keeps observing every side of a partition. A failpoint stalls one leader
right after a protocol step for less than an election timeout; while it is frozen the test cuts
the network, so the partition lands exactly there:

- between the coordinator's leader and the participant's leader, after the participant
  prepared and before the decision reached it (the coordinator stalls at ``txn.prepare_sent``),
  or after the participant prepared and before its answer got out (the participant stalls at
  ``txn.prepared_recorded``): nobody may decide alone, the file stays under one name;
- between the participant's leader and every other master of both shards, after it prepared:
  it loses its leadership, and the new leader finds the prepared record in its log and
  finishes the transaction while the old leader is still cut off.

What a user would check: during the partition the two names are never both visible nor both
gone (``stat``); the rename completes or fails with a retryable error; once healed, within a
bounded wait, the file is there exactly once (under the new name if the rename was
acknowledged) with its attributes, no transaction record is left open on any member of either
shard, and renaming it back works.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import dirs_on_two_shards

from keelfs.client import Client, OutcomeUnknown
from keelfs.errors import KeelError
from keelfs.runtime.netns import NetnsNetwork, free_subnet
from keelfs.server.metacluster import MetaCluster
from keelfs.testing.environment import cannot_run
from keelfs.testing.tiers import starts_processes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

STALL_S = 0.8
"""How long a failpoint freezes a leader: time enough to cut the network meanwhile, well below
the election timeout (``ELECTION_TICK`` ticks of 15 ms: 1.2 s or more)."""
ELECTION_TICK = 80
PREPARE_TIMEOUT_MS = 3000
PARTITION_S = 5.0
"""How long a leader-to-leader partition lasts: longer than one transaction RPC's deadline
(3 s), so the decision's first delivery (or the prepare's answer) is lost to it."""
SETTLE_S = 30.0
"""The bound on recovery once the network is whole again (TCP retransmissions backed off
during the partition are part of it)."""


@pytest.fixture(scope="module")
@starts_processes
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetaCluster]:
    ok, why = NetnsNetwork.available(gateway=True)
    if not ok:
        cannot_run(f"needs network namespaces: {why}")
    with (
        pytest.MonkeyPatch.context() as mp,
        NetnsNetwork([], free_subnet(), gateway=True) as net,
    ):
        mp.setenv("KEELFS_FAILPOINTS", "")
        c = MetaCluster(
            tmp_path_factory.mktemp("txnnet"),
            layout="separate",
            network=net,
            election_tick=ELECTION_TICK,
            node_args=("--txn-prepare-timeout-ms", str(PREPARE_TIMEOUT_MS)),
        )
        try:
            c.start()
            yield c
        finally:
            c.stop_all()  # before the namespaces go


@pytest.fixture(autouse=True)
def healed(cluster: MetaCluster, request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts and ends with a whole network; a failed one prints the logs."""
    cluster.heal()
    yield
    cluster.heal()
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        for node_id in sorted(cluster.nodes):
            print(f"----- node {node_id} log (tail) -----")
            print(cluster.log_tail(node_id, 40))


# -- what a user sees -----------------------------------------------------------------------------
def _file(fs: Client, path: str) -> Any:
    fs.create(path, replication=2, mode=0o600)
    fs.complete(path)
    fs.chown(path, owner="alice", group="staff")
    return fs.stat(path)


def _attrs(info: Any) -> tuple[Any, ...]:
    """Everything stat shows of a file but its path."""
    return (info.kind, info.length, info.mode, info.owner, info.group, info.mtime,
            info.replication, info.block_size, info.blocks, info.under_construction,
            info.lease_holder)  # fmt: skip


def _seen(fs: Client, path: str) -> str:
    """``present``, ``absent``, or ``unknown`` (the read could not be answered in time: a
    path locked by an undecided transaction makes reads wait)."""
    try:
        return "present" if fs.exists(path) else "absent"
    except KeelError:
        return "unknown"


class Watch(threading.Thread):
    """Samples both names from a client of its own until stopped, in both orders, and records
    anything a user must never see.

    Reading ``src`` then ``dst``, both absent would mean the file was gone for a while: the
    source goes when the coordinator decides, which comes after the participant locked the
    target (reads of it wait) -- so a later read of ``dst`` cannot find it absent. Reading
    ``dst`` then ``src``, both present would mean two copies: ``dst`` appears only after the
    decision removed ``src``.
    """

    def __init__(self, cluster: MetaCluster, src: str, dst: str) -> None:
        super().__init__(daemon=True)
        self.fs = cluster.client(deadline=1.0, attempt_timeout=0.5)
        self.src, self.dst = src, dst
        self.samples: list[tuple[float, str, str]] = []
        self.violations: list[str] = []
        self._halt = threading.Event()
        self._t0 = time.monotonic()

    def sample(self) -> None:
        forward = len(self.samples) % 2 == 0
        if forward:
            s = _seen(self.fs, self.src)
            d = _seen(self.fs, self.dst)
        else:
            d = _seen(self.fs, self.dst)
            s = _seen(self.fs, self.src)
        self.samples.append((time.monotonic() - self._t0, s, d))
        if forward and s == d == "absent":
            self.violations.append(f"both names absent at {self.samples[-1]}")
        if not forward and s == d == "present":
            self.violations.append(f"both names present at {self.samples[-1]}")

    def run(self) -> None:
        while not self._halt.wait(0.02):
            self.sample()

    def stop_and_check(self) -> None:
        self._halt.set()
        self.join(10)
        assert not self.violations, f"{self.violations}; samples: {self.summary()}"
        assert self.samples, "nothing was observed"

    def summary(self) -> str:
        """Runs of equal samples: ``src/dst xN [first..last s]``."""
        runs: list[list[Any]] = []
        for t, s, d in self.samples:
            if runs and runs[-1][0] == (s, d):
                runs[-1][1] += 1
                runs[-1][3] = t
            else:
                runs.append([(s, d), 1, t, t])
        return ", ".join(f"{s}/{d} x{n} [{a:.1f}..{b:.1f}s]" for (s, d), n, a, b in runs)


class Rename(threading.Thread):
    """``fs.rename(src, dst)`` in the background; ``ok`` or ``error`` once done."""

    def __init__(self, fs: Client, src: str, dst: str) -> None:
        super().__init__(daemon=True)
        self.fs, self.src, self.dst = fs, src, dst
        self.ok = False
        self.error: KeelError | None = None
        self.took = 0.0

    def run(self) -> None:
        t = time.monotonic()
        try:
            self.fs.rename(self.src, self.dst)
            self.ok = True
        except KeelError as exc:
            self.error = exc
        self.took = time.monotonic() - t

    def outcome(self, timeout: float) -> str:
        """``renamed``, ``refused`` (a definite failure: the file must not have moved) or
        ``unknown`` (the client gave up not knowing); every failure must be retryable."""
        self.join(timeout)
        assert not self.is_alive(), f"rename {self.src} -> {self.dst} still running"
        if self.ok:
            return "renamed"
        assert self.error is not None
        assert self.error.retryable, f"rename failed with a non-retryable error: {self.error!r}"
        return "unknown" if isinstance(self.error, OutcomeUnknown) else "refused"


def _settled(cluster: MetaCluster, fs: Client, src: str, dst: str, outcome: str) -> str:
    """Wait (bounded) until both names answer and exactly one holds the file; which one."""

    def probe() -> str | None:
        s, d = _seen(fs, src), _seen(fs, dst)
        if "unknown" in (s, d):
            return None
        assert (s, d) != ("present", "present"), f"{src} and {dst} both exist"
        assert (s, d) != ("absent", "absent"), f"neither {src} nor {dst} exists"
        return src if s == "present" else dst

    where = cluster.wait_for(probe, SETTLE_S, f"{src} / {dst} did not settle")
    if outcome == "renamed":
        assert where == dst, "the rename was acknowledged, yet the file is at its old name"
    elif outcome == "refused":
        assert where == src, "the rename failed, yet the file moved"
    return where


def _open_records(cluster: MetaCluster, nodes: list[int], shards: tuple[str, ...]) -> list[str]:
    out = []
    for shard in shards:
        for i in cluster.members(shard):
            if i in nodes:
                out += [f"n{i} {shard}: {r}" for r in cluster.open_transactions(i, shard)]
    return out


def _no_open_records(
    cluster: MetaCluster, shards: tuple[str, ...], nodes: list[int] | None = None
) -> None:
    """Wait (bounded) until no member (of ``nodes``) of ``shards`` holds an open record."""
    nodes = sorted(cluster.nodes) if nodes is None else nodes
    try:
        cluster.wait_for(
            lambda: not _open_records(cluster, nodes, shards), SETTLE_S, "records still open"
        )
    except Exception:
        raise AssertionError(
            "transaction records still open:\n" + "\n".join(_open_records(cluster, nodes, shards))
        ) from None


def _rename_back_works(
    cluster: MetaCluster, fs: Client, where: str, other: str, before: Any, shards: tuple[str, ...]
) -> None:
    fs.rename(where, other)
    assert _settled(cluster, fs, where, other, "renamed") == other
    assert _attrs(fs.stat(other)) == _attrs(before)
    # every lock is gone on both shards: new names take files at once
    for d in {p.rsplit("/", 1)[0] for p in (where, other)}:
        fs.create(d + "/after")
        fs.complete(d + "/after")
    _no_open_records(cluster, shards)


def _failpoint_hits(cluster: MetaCluster, node_id: int, name: str) -> int:
    path: Path = cluster.nodes[node_id].log_path
    return path.read_text(errors="replace").count(f"failpoint {name}:")


def _when_stalled(cluster: MetaCluster, node_id: int, name: str, seen: int) -> None:
    """Wait until ``node_id`` hit failpoint ``name`` (it logs before it freezes)."""
    deadline = time.monotonic() + 20
    while _failpoint_hits(cluster, node_id, name) <= seen:
        assert time.monotonic() < deadline, f"node {node_id} never reached {name}"
        time.sleep(0.005)


def _start_stalled_rename(
    cluster: MetaCluster, victim: int, step: str, src: str, dst: str
) -> Rename:
    """Arm ``step`` (a stall) on ``victim``, start renaming, return once ``victim`` froze."""
    seen = _failpoint_hits(cluster, victim, step)
    cluster.set_failpoint(victim, step, f"stall:{STALL_S}")
    rename = Rename(cluster.client(deadline=45.0), src, dst)
    rename.start()
    _when_stalled(cluster, victim, step, seen)
    return rename


# -- the tests ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("stalled", "step"),
    [("coordinator", "txn.prepare_sent"), ("participant", "txn.prepared_recorded")],
)
def test_partition_between_the_two_leaders_mid_rename(
    cluster: MetaCluster, stalled: str, step: str
) -> None:
    fs = cluster.client(deadline=20.0)
    a, b, sa, sb = dirs_on_two_shards(fs, "/p")
    src, dst = a + "/f", b + "/f"
    before = _file(fs, src)
    la, lb = cluster.leader(sa), cluster.leader(sb)

    rename = _start_stalled_rename(cluster, la if stalled == "coordinator" else lb, step, src, dst)
    t_cut = time.monotonic()
    cluster.cut(la, lb)
    cut_after = time.monotonic() - t_cut
    watch = Watch(cluster, src, dst)
    watch.start()
    time.sleep(max(0.0, t_cut + PARTITION_S - time.monotonic()))
    # the partition was between these two: neither lost its leadership to it (the stall is
    # shorter than an election timeout)
    assert (cluster.leader(sa), cluster.leader(sb)) == (la, lb), "a leader changed"
    during = "renamed" if rename.ok else "failed" if rename.error else "pending"
    cluster.heal()

    outcome = rename.outcome(60)
    where = _settled(cluster, fs, src, dst, outcome)
    watch.stop_and_check()
    assert _attrs(fs.stat(where)) == _attrs(before)
    _no_open_records(cluster, (sa, sb))
    print(
        f"{stalled} stalled at {step}; leaders {la}|{lb} cut ({cut_after:.2f}s) for "
        f"{PARTITION_S}s: rename {outcome} ({rename.error!r}) after {rename.took:.1f}s (at "
        f"heal: {during}); file at {where}; seen: {watch.summary()}"
    )
    _rename_back_works(cluster, fs, where, src if where == dst else dst, before, (sa, sb))


@pytest.mark.parametrize(
    ("stalled", "step"),
    [("participant", "txn.prepared_recorded"), ("coordinator", "txn.prepare_sent")],
)
def test_participant_leader_cut_off_after_prepare_its_successor_finishes(
    cluster: MetaCluster, stalled: str, step: str
) -> None:
    """The participant's leader is cut from every other master of both shards once it has
    prepared (the config group still reaches it): it loses its leadership, and the shard's
    new leader, which holds the prepared record from the log, completes the transaction with
    the coordinator while the old leader is still cut off."""
    fs = cluster.client(deadline=20.0)
    a, b, sa, sb = dirs_on_two_shards(fs, "/q")
    src, dst = a + "/f", b + "/f"
    before = _file(fs, src)
    la, lb = cluster.leader(sa), cluster.leader(sb)
    masters = cluster.members(sa) + cluster.members(sb)

    rename = _start_stalled_rename(cluster, la if stalled == "coordinator" else lb, step, src, dst)
    cluster.isolate(lb, masters)
    watch = Watch(cluster, src, dst)
    watch.start()

    # while the old leader is still cut off: a new leader, and the transaction is finished
    new = cluster.leader(sb, timeout=20, exclude=(lb,))
    assert new != lb
    outcome = rename.outcome(45)
    where = _settled(cluster, fs, src, dst, outcome)
    others = [i for i in masters if i != lb]
    _no_open_records(cluster, (sa, sb), others)
    old = cluster.status(lb).groups[sb]
    assert old.state != "leader" or old.term < cluster.status(new).groups[sb].term
    still_open = _open_records(cluster, [lb], (sb,))
    assert cluster.network is not None and cluster.network.cuts(), "healed too early"

    cluster.heal()
    time.sleep(0.5)
    watch.stop_and_check()
    assert _settled(cluster, fs, src, dst, outcome) == where
    assert _attrs(fs.stat(where)) == _attrs(before)
    _no_open_records(cluster, (sa, sb))  # the old leader applied the outcome from the log too
    print(
        f"{stalled} stalled at {step}; shard {sb} leader {lb} cut from {others}, new leader "
        f"{new}: rename {outcome} ({rename.error!r}) after {rename.took:.1f}s; file at "
        f"{where}; records open on the old leader while cut off: {len(still_open)}; seen: "
        f"{watch.summary()}"
    )
    _rename_back_works(cluster, fs, where, src if where == dst else dst, before, (sa, sb))


def test_coordinator_gives_up_on_an_unreachable_participant_after_the_prepare_timeout(
    cluster: MetaCluster,
) -> None:
    """Cut before the rename: no participant can have prepared, so the coordinator must abort
    once ``--txn-prepare-timeout-ms`` passed (docs/transactions.md) and its source be readable
    again while the partition lasts."""
    fs = cluster.client(deadline=20.0)
    a, b, sa, sb = dirs_on_two_shards(fs, "/u")
    src, dst = a + "/f", b + "/f"
    before = _file(fs, src)
    la, lb = cluster.leader(sa), cluster.leader(sb)
    cluster.cut(la, lb)
    try:
        t0 = time.monotonic()
        with pytest.raises(KeelError) as failed:
            cluster.client(deadline=2.0).rename(src, dst)
        assert failed.value.retryable
        reader = cluster.client(deadline=1.0, attempt_timeout=0.5)
        # the prepare timeout, one prepare RPC's deadline (3 s), and some slack
        bound = PREPARE_TIMEOUT_MS / 1000 + 3.0 + 4.0

        def given_up() -> bool:
            pending = [r for r in cluster.open_transactions(la, sa) if r.state == "pending"]
            return not pending and _seen(reader, src) == "present"

        cluster.wait_for(
            given_up,
            bound - (time.monotonic() - t0),
            f"the coordinator (node {la}) still holds a pending transaction, and {src} is "
            f"locked, {bound:.0f} s into the partition (prepare timeout "
            f"{PREPARE_TIMEOUT_MS} ms)",
        )
        cluster.heal()
        assert _settled(cluster, fs, src, dst, "refused") == src
        assert _attrs(fs.stat(src)) == _attrs(before)
    finally:
        cluster.heal()
        _no_open_records(cluster, (sa, sb))  # the next test starts with nothing in flight
