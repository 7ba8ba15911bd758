"""Named failpoints: fault injection at protocol steps, for tests with real processes.

A process reads ``KEELFS_FAILPOINTS`` once, at import: a comma-separated list of
``name=action`` (more can be armed later through ``Node.SetFailpoint``). Actions:

- ``crash``: the process ends at once with status 137, as after ``kill -9`` (no cleanup, no
  flush: what was not yet durable is lost, exactly the case the protocol must survive);
- ``stall:SECONDS``: the whole process freezes that long (the event loop blocks: timers,
  heartbeats and RPCs stop, as under ``SIGSTOP``), then goes on;
- ``raise``: the step raises ``RuntimeError``, as a bug there would (what a background loop
  does with an error nobody foresaw: ``keelfs.runtime.lifecycle.keep_running``);
- ``off`` (through ``arm`` only): disarm it.

Each failpoint fires once per process. Code marks a step with ``hit("txn.begin_recorded")``;
with no ``KEELFS_FAILPOINTS`` set this is one dictionary lookup. The names in use are listed
in :data:`KNOWN` so that a misspelt one in a test is an error, not a silent no-op.
"""

from __future__ import annotations

import logging
import os
import sys
import time

__all__ = ["ENABLED", "KNOWN", "arm", "hit", "parse"]

log = logging.getLogger("keelfs.failpoints")

KNOWN = frozenset(
    {
        # coordinator (the source shard's leader)
        "txn.begin_recorded",
        "txn.prepare_sent",
        "txn.decision_recorded",
        "txn.decision_sent",
        # participant (another shard's leader)
        "txn.prepared_recorded",
        "txn.decision_applied",
        # resharding driver (the config group's leader)
        "reshard.frozen",
        "reshard.copied",
        "reshard.switched",
        "reshard.source_settled",
        # a recursive delete in steps (keelfs.master.tree_delete), after each step
        "tree_delete.unit_deleted",
        # a snapshot create (keelfs.master.snapshot_service), after each shard's part
        "snapshot.part_taken",
        "snapshot.part_renamed",
        # a tree moved across shards in steps (keelfs.master.tree_move), on its coordinator
        "tree_move.fenced",
        "tree_move.copied",
        "tree_move.switched",
        # a round of the trash emptier (keelfs.master.trash_emptier), at its start
        "trash.round",
    }
)


def parse(spec: str) -> dict[str, str]:
    """``"a=crash,b=stall:2"`` -> ``{"a": "crash", "b": "stall:2"}``; ValueError if bad."""
    out: dict[str, str] = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        name, sep, action = item.partition("=")
        if not sep or name not in KNOWN:
            raise ValueError(f"unknown failpoint {name!r} (known: {', '.join(sorted(KNOWN))})")
        if action not in ("crash", "raise", "off") and not (
            action.startswith("stall:") and action[6:].replace(".", "", 1).isdigit()
        ):
            raise ValueError(f"failpoint {name}: action must be crash, raise, stall:SECONDS or off")
        out[name] = action
    return out


ENABLED = "KEELFS_FAILPOINTS" in os.environ
"""Only a process started with ``KEELFS_FAILPOINTS`` set (even to nothing) accepts
:func:`arm` (the ``Node.SetFailpoint`` RPC): a production process cannot be told to crash."""
_ARMED = parse(os.environ.get("KEELFS_FAILPOINTS", ""))


def arm(name: str, action: str) -> None:
    """Arm failpoint ``name`` with ``action`` from now on (ValueError if not allowed)."""
    if not ENABLED:
        raise ValueError("failpoints are disabled (start the process with KEELFS_FAILPOINTS set)")
    for key, value in parse(f"{name}={action}").items():
        if value == "off":
            _ARMED.pop(key, None)
        else:
            _ARMED[key] = value


def hit(name: str) -> None:
    """Fire failpoint ``name`` if this process armed it (once)."""
    if not _ARMED:
        return
    assert name in KNOWN, name
    action = _ARMED.pop(name, None)
    if action is None:
        return
    log.warning("failpoint %s: %s", name, action)
    sys.stderr.flush()
    if action == "crash":
        os._exit(137)
    if action == "raise":
        raise RuntimeError(f"failpoint {name}")
    time.sleep(float(action[6:]))
