"""``keelfs admin decommission|recommission|maintenance|servers|balance``: the chunk servers of
a fleet (``keelfs.client.fleet``; docs/operations.md).

Exit status as for the other admin commands: 0 done, 1 the operation failed (or ``--wait``
ran out of time), 2 bad input (an unknown server, a bad duration or time) with nothing changed.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from keelfs.cli.admin import _bad, _emit, _fail, _run, _size, common
from keelfs.errors import NotFound

if TYPE_CHECKING:
    from keelfs.client.admin_client import AdminClient
    from keelfs.client.fleet import ServerRow

__all__ = ["FLEET_COMMANDS", "parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``2h``, ``1d`` -> seconds (positive)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if m is None or float(m.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration (like 90s, 30m, 2h, 1d)")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def _parse_until(text: str) -> int:
    """An ISO 8601 time (UTC unless it says otherwise) -> wall-clock ms."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time (like 2026-12-07T18:00)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _row_json(r: ServerRow) -> dict[str, Any]:
    return {
        "address": r.address,
        "rack": r.rack,
        "live": r.live,
        "state": r.state,
        "until_ms": r.until_ms,
        "capacity": r.capacity,
        "used": r.used,
        "utilisation": round(r.utilisation, 4),
        "blocks_left": r.blocks_left,
        "shards_done": r.shards_done,
    }


def _state_text(r: ServerRow) -> str:
    if r.state == "maintenance":
        until = datetime.fromtimestamp(r.until_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        return f"maintenance until {until} UTC"
    if r.state == "decommissioning":
        left = "?" if r.blocks_left is None else str(r.blocks_left)
        return f"decommissioning ({left} blocks left)"
    return r.state.replace("_", " ")


def _set(address: str | None, server: str, state: str, until_ms: int, as_json: bool) -> None:
    from keelfs.client.fleet import set_state

    def body(c: AdminClient) -> None:
        try:
            version = set_state(c, server, state, until_ms)
        except NotFound:
            _bad(f"unknown chunk server {server!r} (keelfs admin servers lists them)")
        obj = {"server": server, "state": state, "until_ms": until_ms, "map_version": version}
        _emit(as_json, obj, f"{server}: {state.replace('_', ' ')}")

    _run(address, body)


@click.command("decommission")
@click.argument("server")
@click.option("--wait", is_flag=True, help="Wait until it shows decommissioned.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds --wait waits.")
@common
def decommission_cmd(
    server: str, wait: bool, timeout: float, address: str | None, as_json: bool
) -> None:
    """Take chunk server SERVER out of service: no new blocks go to it, and every block it
    holds gets its full replication elsewhere (it still serves reads and is copied from).
    Once every shard reports its blocks safe it shows "decommissioned" (`keelfs admin
    servers`) and can be stopped."""
    _set(address, server, "decommissioning", 0, as_json and not wait)
    if wait:
        _wait_decommissioned(address, server, timeout, as_json)


def _wait_decommissioned(address: str | None, server: str, timeout: float, as_json: bool) -> None:
    from keelfs.client.fleet import server_rows

    def body(c: AdminClient) -> None:
        deadline = time.monotonic() + timeout
        while True:
            row = server_rows(c.load()).get(server)
            if row is not None and row.state == "decommissioned":
                _emit(as_json, {"server": server, **_row_json(row)}, f"{server}: decommissioned")
                return
            if row is None or row.state not in ("decommissioning", "decommissioned"):
                _fail(f"{server} is no longer being decommissioned")
            if time.monotonic() >= deadline:
                left = "?" if row.blocks_left is None else row.blocks_left
                _fail(f"{server} is still decommissioning after {timeout:g} s ({left} blocks left)")
            time.sleep(1.0)

    _run(address, body)


@click.command("recommission")
@click.argument("server")
@common
def recommission_cmd(server: str, address: str | None, as_json: bool) -> None:
    """Put SERVER back in service (undoes decommission and maintenance): it takes new blocks
    again, and the copies made meanwhile are trimmed as any excess is."""
    _set(address, server, "in_service", 0, as_json)


@click.command("maintenance")
@click.argument("server")
@click.option("--for", "duration", help="How long: 90s, 30m, 2h, 1d.")
@click.option("--until", "until", help="Until when: an ISO 8601 time, UTC unless it says.")
@common
def maintenance_cmd(
    server: str, duration: str | None, until: str | None, address: str | None, as_json: bool
) -> None:
    """Put SERVER in maintenance until a deadline: it takes no new blocks and may be down
    meanwhile without its blocks being re-replicated (a block whose only live replicas are
    in maintenance still is). After the deadline a server still down counts as dead."""
    if (duration is None) == (until is None):
        _bad("give exactly one of --for and --until")
    try:
        if duration is not None:
            until_ms = int((time.time() + parse_duration(duration)) * 1000)
        else:
            until_ms = _parse_until(str(until))
    except ValueError as exc:
        _bad(str(exc))
    if until_ms <= time.time() * 1000:
        _bad("the maintenance would already be over")
    _set(address, server, "maintenance", until_ms, as_json)


@click.command("servers")
@common
def servers_cmd(address: str | None, as_json: bool) -> None:
    """Every chunk server: address, rack, live or down, administrative state (in service,
    decommissioning with the blocks left, decommissioned, maintenance until when), use."""
    from keelfs.client.fleet import server_rows

    def body(c: AdminClient) -> None:
        rows = server_rows(c.load())
        obj = {"servers": {sid: _row_json(r) for sid, r in rows.items()}}

        def human(con: Console) -> None:
            t = Table(title="chunk servers")
            for col in ("server", "address", "rack", "live", "state", "used", "use %"):
                t.add_column(col, justify="right" if col in ("used", "use %") else "left")
            for sid, r in rows.items():
                t.add_row(
                    sid,
                    r.address,
                    r.rack,
                    "live" if r.live else "DOWN",
                    _state_text(r),
                    _size(r.used),
                    f"{r.utilisation:.2f}",
                    style="" if r.live or r.state == "maintenance" else "red",
                )
            con.print(t)

        _emit(as_json, obj, human)

    _run(address, body)


@click.command("balance")
@click.option(
    "--threshold",
    default=10.0,
    show_default=True,
    help="Percentage points above the mean utilisation that make a server a source.",
)
@click.option("--rate", default=10.0, show_default=True, help="MB/s to move, at most.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds to run at most.")
@click.option(
    "--min-block-size",
    default=1 << 20,
    show_default=True,
    help="Blocks smaller than this many bytes are not moved.",
)
@common
def balance_cmd(
    threshold: float,
    rate: float,
    timeout: float,
    min_block_size: int,
    address: str | None,
    as_json: bool,
) -> None:
    """Move replicas from servers above the mean utilisation + THRESHOLD to those below the
    mean, at most RATE MB/s, until balanced: a copy to the target first, the source's replica
    deleted only once the copy is recorded; blocks being written are never moved, racks kept."""
    from keelfs.client.fleet import BalanceRound, balance

    if threshold < 0 or rate <= 0 or timeout <= 0 or min_block_size < 0:
        _bad("--threshold and --min-block-size must be >= 0, --rate and --timeout > 0")

    def body(c: AdminClient) -> None:
        moved: list[dict[str, Any]] = []
        con = Console(stderr=True)

        def on_round(r: BalanceRound) -> None:
            for m in r.moves:
                moved.append(
                    {"block": m.block_id, "from": m.source, "to": m.target, "bytes": m.bytes}
                )
            if not as_json:
                con.print(
                    f"mean {r.plan.mean:.3f}%: sources {', '.join(r.plan.sources) or '-'}, "
                    f"targets {', '.join(r.plan.targets) or '-'}; {len(r.moves)} moves begun, "
                    f"{r.in_flight} in flight",
                    highlight=False,
                )

        why = balance(
            c,
            threshold=threshold,
            rate_bytes=int(rate * 1_000_000),
            timeout=timeout,
            min_block_bytes=min_block_size,
            on_round=on_round,
        )
        total = sum(m["bytes"] for m in moved)
        obj = {"moves": moved, "bytes": total, "result": why}
        _emit(as_json, obj, f"{len(moved)} replicas moved ({_size(total)}); {why}")

    _run(address, body)


FLEET_COMMANDS = [
    decommission_cmd,
    recommission_cmd,
    maintenance_cmd,
    servers_cmd,
    balance_cmd,
]
