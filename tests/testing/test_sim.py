"""The simulator: a CI-sized sweep, exact replay, and proof that its checker catches bugs.

The "catches" tests break the core on purpose (monkeypatching one rule) and require the
simulator to report the resulting violation: a checker that passes a broken core is useless.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import pytest

from keelfs.raft import core, sim
from keelfs.raft.core import Raft, ReadOnlyOption
from keelfs.raft.messages import Message

LEASE_BASED = ReadOnlyOption.LEASE_BASED
CI_SEEDS = int(os.environ.get("KEELFS_SIM_SEEDS", "800"))


@pytest.mark.slow
def test_sweep_finds_no_violation() -> None:
    """Safety and liveness across a few hundred seeds of every fault kind (about 2 minutes)."""
    lines: list[str] = []
    failures = sim.sweep(range(CI_SEEDS), steps=2000, jobs=os.cpu_count() or 2, out=lines.append)
    assert failures == [], "\n".join(lines)
    summary = lines[-1]
    # The sweep must really have exercised the faults it claims to.
    kinds = ("crashes", "partitions", "installs", "conf_changes", "transfers", "reads_served")
    kinds = (*kinds, "lease_reads_served")
    for kind in (*kinds, "forgeries"):
        count = int(summary.split(f"{kind}=")[1].split(",")[0])
        assert count > 0, f"no {kind} in the sweep: {summary}"


def test_replay_is_exact() -> None:
    first: list[str] = []
    second: list[str] = []
    assert sim.Simulator(4242, trace=first.append).run(800) == sim.Simulator(
        4242, trace=second.append
    ).run(800)
    assert first == second
    assert any("became leader" in line for line in first)


def _failures(seeds: Iterable[int], steps: int = 2000) -> list[str]:
    return [err for _, err, _ in (sim.run_seed(s, steps) for s in seeds) if err]


def test_catches_votes_for_stale_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Break the election restriction (§5.4.1): the checker must see a lost committed entry."""
    monkeypatch.setattr(core.RaftLog, "is_up_to_date", lambda self, i, t: True)
    errs = _failures(range(60, 100))
    assert any("leader completeness" in e or "committed entry" in e for e in errs), errs


def test_catches_stale_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serve ReadIndex without waiting for a quorum round: reads must be caught going stale."""

    def read_at_once(self: Raft, m: Message) -> None:
        self._respond_read(m.frm, self.log.committed, m.context)

    monkeypatch.setattr(Raft, "_handle_read_index", read_at_once)
    errs = _failures(range(0, 60))
    assert any("was acknowledged before the read" in e for e in errs), errs


def test_catches_stale_lease_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lease that never lapses, held by a leader that never notices it lost its majority:
    the seeds that read from the lease must catch a deposed leader's reads going stale."""
    monkeypatch.setattr(Raft, "_lease_valid", lambda self: True)
    monkeypatch.setattr(Raft, "_quorum_active", lambda self: True)
    lease_seeds = [s for s in range(30, 45) if sim.Simulator(s).read_only_option is LEASE_BASED]
    errs = _failures(lease_seeds)
    assert any("was acknowledged before the read" in e for e in errs), errs


def test_catches_a_group_that_never_elects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Raft, "_campaign", lambda self, pre, transfer=False: None)
    errs = _failures(range(3), steps=200)
    assert errs and all("liveness" in e for e in errs), errs


def test_cli_replays_a_seed(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim.main(["--seed", "7", "--steps", "300"]) == 0
    assert "seed 7: ok" in capsys.readouterr().out


def test_catches_forged_messages_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """Take messages from any sender (no membership, no one-leader-per-term rule): the
    simulator's forgeries must be reported as accepted."""
    monkeypatch.setattr(Raft, "_accepts_sender", lambda self, m: True)
    errs = _failures(range(0, 20))
    assert any("forged message accepted" in e for e in errs), errs


def test_catches_out_of_range_integers_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """Take integers of any size (the reported term 2**64-1): reported as accepted."""
    monkeypatch.setattr(core, "_in_range", lambda m: True)
    errs = _failures(range(0, 20))
    assert any("forged message accepted" in e for e in errs), errs


def test_forgeries_change_nothing_in_a_run() -> None:
    """A seed that forges replays the same run as one that does not: every forgery is
    dropped without a trace beyond ``Raft.ignored``."""
    seed = next(s for s in range(100) if sim.Simulator(s).forge_rate)
    with_forgeries = sim.Simulator(seed)
    without = sim.Simulator(seed)
    without.forge_rate = 0.0
    stats = with_forgeries.run(800)
    assert stats.pop("forgeries") > 0
    other = without.run(800)
    assert other.pop("forgeries") == 0
    assert stats == other
