"""``keelfs admin``: look after a running cluster (HDFS ``dfsadmin``/``haadmin``/``fsck``).

Every command but ``format`` talks to the cluster through ``--address``, as the file commands
do: the client address of ANY metadata node, config server or master, or several separated by
commas (the first that answers is used); without it ``$KEELFS_ADDRESS``, else the running
``keelfs local-cluster``, else ``127.0.0.1:7001`` (``keelfs.client.connect``). Talking to the
cluster is ``keelfs.client.admin_client`` (registry, ShardMap, leader RPCs) and
``keelfs.client.cluster_view`` (every node's ``Node.Status`` folded into groups, members, lag
and chunk servers, as the dashboard shows them too); this module is the commands and their
rendering.

Output: rich tables for people, or with ``--json`` one JSON object on stdout. Exit status: 0 done
(``fsck``: healthy), 1 the operation failed or the namespace has missing blocks, 2 bad input
(an unknown group, node or shard, a data directory that must not be erased). Errors are one
line on stderr naming what is wrong.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

from keelfs.errors import KeelError

if TYPE_CHECKING:
    from keelfs.client.admin_client import AdminClient
    from keelfs.client.cluster_view import ChunkServerView, GroupView, MemberView

__all__ = ["AdminError", "BadInput", "address_option", "admin", "open_cluster"]


class AdminError(click.ClickException):
    """The operation failed: one line on stderr, exit status 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"keelfs admin: {self.format_message()}", err=True)


class BadInput(AdminError):
    """An unknown group, node or shard, or a directory that must not be erased: status 2."""

    exit_code = 2


def _bad(message: str) -> NoReturn:
    raise BadInput(message)


def _fail(message: str) -> NoReturn:
    raise AdminError(message)


# ---------------------------------------------------------------------------------------------
# talking to the cluster (keelfs.client.admin_client; imported when a command runs, so that
# `keelfs` starts without loading the client library)


def open_cluster(address: str | None) -> AdminClient:
    """``keelfs.client.admin_client.open_cluster`` with the command's TLS flags
    (:func:`tls_options`): the file commands connect here too."""
    from keelfs.client.admin_client import Unreachable
    from keelfs.client.admin_client import open_cluster as connect
    from keelfs.client.connect import client_tls

    ctx = click.get_current_context(silent=True)
    given = dict(ctx.meta.get(_TLS_META, {})) if ctx is not None else {}
    try:
        tls = client_tls(**given)
    except ValueError as exc:
        raise Unreachable(str(exc)) from None
    with _user_named(given.get("user")):
        return connect(address, tls)


@contextmanager
def _user_named(user: str | None) -> Iterator[None]:
    """``--user`` is also who the clients made meanwhile say they are without TLS (they read
    ``$KEELFS_USER`` when made: ``keelfs.client.identity``); the variable as it was after."""
    if not user:
        yield
        return
    before = os.environ.get("KEELFS_USER")
    os.environ["KEELFS_USER"] = user
    try:
        yield
    finally:
        if before is None:
            del os.environ["KEELFS_USER"]
        else:
            os.environ["KEELFS_USER"] = before


def _connect(address: str | None) -> AdminClient:
    from keelfs.client.admin_client import Unreachable

    try:
        return open_cluster(address)
    except Unreachable as exc:
        _fail(str(exc))


def _run(address: str | None, body: Callable[[AdminClient], None]) -> None:
    from keelfs.client.admin_client import AdminClientError, UnknownGroup

    cluster = _connect(address)
    try:
        body(cluster)
    except UnknownGroup as exc:
        _bad(str(exc))
    except (AdminClientError, KeelError) as exc:
        _fail(str(exc))
    finally:
        cluster.close()


def _emit(as_json: bool, obj: dict[str, Any], human: str | Callable[[Console], None]) -> None:
    """``obj`` as one JSON line, or for people ``human``: a line, or a function printing."""
    if as_json:
        click.echo(json.dumps(obj, sort_keys=True))
    elif isinstance(human, str):
        Console().print(human, highlight=False)
    else:
        human(Console())


_TLS_META = "keelfs.tls"
_TLS_FLAGS = (
    (
        "--tls-dir",
        "tls_dir",
        "A `keelfs certs` directory: present user-USER.crt, verify by peer-ca.crt",
    ),
    (
        "--user",
        "user",
        "The user whose certificate (in --tls-dir) to present; without TLS, who to act as",
    ),
    ("--tls-cert", "cert", "Your client certificate (instead of --tls-dir/--user)"),
    ("--tls-key", "key", "Its private key"),
    ("--tls-ca", "ca", "The cluster's peer CA certificate (verifies the servers)"),
)


def tls_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The client TLS flags (``keelfs.client.connect.client_tls``; each also read from its
    ``KEELFS_TLS_*``/``KEELFS_USER`` variable), kept in the click context for
    :func:`open_cluster` rather than passed to every command."""

    def remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None:
            ctx.meta.setdefault(_TLS_META, {})[param.name] = value

    for flag, name, text in reversed(_TLS_FLAGS):
        f = click.option(
            flag, name, default=None, expose_value=False, callback=remember, help=text + "."
        )(f)
    return f


def address_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--address`` and the TLS flags, the same on every command that talks to the
    cluster."""
    f = tls_options(f)
    return click.option(
        "--address",
        default=None,
        help="Client address of any config server or master, or several separated by commas "
        "(the first that answers is used). Without it: $KEELFS_ADDRESS, else the running "
        "`keelfs local-cluster`, else 127.0.0.1:7001.",
    )(f)


def common(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")(f)
    return address_option(f)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


# ---------------------------------------------------------------------------------------------
# commands


@click.group("admin")
def admin() -> None:
    """Administer a running cluster: groups, leaders, members, shards, data directories."""


@admin.command("status")
@common
def status_cmd(address: str | None, as_json: bool) -> None:
    """Every group (config and each shard): members, leader, term, commit/applied, lag; and
    the chunk servers as the masters see them."""

    def body(c: AdminClient) -> None:
        c.load()
        groups = c.groups
        servers = _chunk_servers(c)
        obj = {
            "map_version": c.shard_map.version,
            "resharding": c.shard_map.resharding,
            "groups": {gid: _group_json(g) for gid, g in groups.items()},
            "chunk_servers": servers,
            "unreachable": {str(k): v for k, v in c.view.unreachable().items()},
        }

        def human(con: Console) -> None:
            t = Table(title=f"keelfs groups (ShardMap version {c.shard_map.version})")
            for col in ("group", "node", "role", "term", "commit", "applied", "lag", "raft"):
                t.add_column(
                    col, justify="right" if col in ("term", "commit", "applied") else "left"
                )
            for gid, g in groups.items():
                first = True
                for m in g.members.values():
                    style = (
                        "bold green" if m.role == "leader" else "red" if m.role == "down" else ""
                    )
                    t.add_row(
                        gid if first else "",
                        str(m.node),
                        m.role,
                        str(m.term) if m.role != "down" else "-",
                        str(m.commit) if m.role != "down" else "-",
                        str(m.applied) if m.role != "down" else "-",
                        "-" if m.lag is None else str(m.lag),
                        m.raft_address,
                        style=style,
                    )
                    first = False
                if not g.leader:
                    t.add_row(gid, "-", "NO LEADER", "", "", "", "", "", style="bold red")
            con.print(t)
            if c.shard_map.resharding:
                con.print("[yellow]resharding under way[/yellow]")
            _print_servers(con, servers)
            for node_id, why in c.view.unreachable().items():
                con.print(f"[red]node {node_id} unreachable ({why})[/red]")

        _emit(as_json, obj, human)

    _run(address, body)


def _member_json(m: MemberView) -> dict[str, Any]:
    return {
        "node": m.node,
        "role": m.role,
        "term": m.term,
        "commit": m.commit,
        "applied": m.applied,
        "lag": m.lag,
        "raft_address": m.raft_address,
    }


def _group_json(g: GroupView) -> dict[str, Any]:
    return {
        "leader": g.leader,
        "term": g.term,
        "voters": g.voters,
        "learners": g.learners,
        "members": {str(i): _member_json(m) for i, m in sorted(g.members.items())},
    }


def _server_json(cs: ChunkServerView) -> dict[str, Any]:
    return {
        "address": cs.address,
        "rack": cs.rack,
        "live": cs.live,
        "reported": cs.reported,
        "capacity": cs.capacity,
        "used": cs.used,
        "seen_by": cs.seen_by,
    }


def _chunk_servers(c: AdminClient) -> dict[str, dict[str, Any]]:
    """Every chunk server some master knows, merged over the nodes hosting shards: live if
    any of them heard from it lately."""
    return {sid: _server_json(cs) for sid, cs in c.view.chunk_servers.items()}


def _print_servers(con: Console, servers: dict[str, dict[str, Any]]) -> None:
    t = Table(title="chunk servers (as the masters see them)")
    for col in ("server", "address", "rack", "state", "capacity", "used", "reported"):
        t.add_column(col, justify="right" if col in ("capacity", "used") else "left")
    for sid, s in sorted(servers.items()):
        t.add_row(
            sid,
            s["address"],
            s["rack"],
            "live" if s["live"] else "DEAD",
            _size(s["capacity"]),
            _size(s["used"]),
            "yes" if s["reported"] else "no",
            style="" if s["live"] else "red",
        )
    if not servers:
        t.caption = "no chunk server has reported"
    con.print(t)


def _transfer(address: str | None, group: str, to: int | None, as_json: bool) -> None:
    from keelfs.rpc.pb import meta_pb2 as pb

    def body(c: AdminClient) -> None:
        g = c.load().group(group)
        if to is not None and to not in g.voters:
            voters = ", ".join(map(str, g.voters))
            _bad(f"node {to} is not a voter of {group} (voters: {voters})")
        if to is None and len(g.voters) < 2:
            _bad(f"{group} has no other voter to hand leadership to")
        old = c.wait_leader(group, 10.0).leader
        if to == old:
            new, term = old, g.term
        else:
            reply = c.call_leader(
                group, "TransferLeader", pb.TransferLeaderRequest(group=group, target=to or 0), 10
            )
            old = reply.previous or old
            want = int(reply.leader)
            new = c.wait_leader(group, 10.0, lambda lead: lead == want).leader
            term = c.group(group).term
        obj = {"group": group, "previous": old, "leader": new, "term": term}
        msg = (
            f"{group}: node {new} already leads (term {term})"
            if new == old
            else f"{group}: leadership moved from node {old} to node {new} (term {term})"
        )
        _emit(as_json, obj, msg)

    _run(address, body)


@admin.command("transfer-leader")
@click.argument("group")
@click.option("--to", "to", type=int, default=None, help="Node id of the voter to lead next.")
@common
def transfer_leader_cmd(group: str, to: int | None, address: str | None, as_json: bool) -> None:
    """Make a node the leader of GROUP (default: the most up-to-date other voter); ≈ haadmin
    -transitionToActive."""
    if to is not None and to <= 0:
        _bad(f"node ids are positive, not {to}")
    _transfer(address, group, to, as_json)


@admin.command("step-down")
@click.argument("group")
@common
def step_down_cmd(group: str, address: str | None, as_json: bool) -> None:
    """Make the leader of GROUP hand over to the most up-to-date other voter; ≈ haadmin
    -transitionToBackup."""
    _transfer(address, group, None, as_json)


def _membership(c: AdminClient, group: str, method: str, request: Any, as_json: bool) -> None:
    reply = c.call_leader(group, method, request, 60.0)
    voters, learners = sorted(reply.voters), sorted(reply.learners)
    version = None
    if group in c.shard_map.shards:
        try:
            version = c.set_shard_members(group, voters)
        except KeelError as exc:
            _fail(
                f"{group}'s Raft members are now {voters}, but the ShardMap was not updated: {exc}"
            )
    obj = {"group": group, "voters": voters, "learners": learners, "map_version": version}
    msg = f"{group}: voters {', '.join(map(str, voters))}" + (
        f"; learners {', '.join(map(str, learners))}" if learners else ""
    )
    if version is not None:
        msg += f" (ShardMap version {version})"
    _emit(as_json, obj, msg)


@admin.command("add-member")
@click.argument("group")
@click.argument("node", type=int)
@click.argument("raft_address", metavar="ADDRESS")
@common
def add_member_cmd(
    group: str, node: int, raft_address: str, address: str | None, as_json: bool
) -> None:
    """Add NODE (its Raft transport at ADDRESS) to GROUP: a learner first, promoted to voter
    once caught up. The node must already run and host a member of GROUP."""
    from keelfs.rpc.pb import meta_pb2 as pb

    if node <= 0:
        _bad(f"node ids are positive, not {node}")
    host, _, port = raft_address.rpartition(":")
    if not host or not port.isdigit():
        _bad(f"{raft_address!r} is not a HOST:PORT Raft address")

    def body(c: AdminClient) -> None:
        g = c.load().group(group)
        if node in g.voters:
            obj = {"group": group, "voters": g.voters, "learners": g.learners}
            _emit(as_json, obj, f"{group}: node {node} is already a voter")
            return
        req = pb.AddMemberRequest(group=group, node_id=node, raft_address=raft_address)
        _membership(c, group, "AddMember", req, as_json)

    _run(address, body)


@admin.command("remove-member")
@click.argument("group")
@click.argument("node", type=int)
@common
def remove_member_cmd(group: str, node: int, address: str | None, as_json: bool) -> None:
    """Remove NODE (voter or learner) from GROUP; a leader removing itself hands over first."""
    from keelfs.rpc.pb import meta_pb2 as pb

    def body(c: AdminClient) -> None:
        g = c.load().group(group)
        members = sorted({*g.voters, *g.learners})
        if node not in members:
            _bad(
                f"node {node} is not a member of {group} (members: {', '.join(map(str, members))})"
            )
        if members == [node]:
            _bad(f"node {node} is the last member of {group}")
        req = pb.RemoveMemberRequest(group=group, node_id=node)
        _membership(c, group, "RemoveMember", req, as_json)

    _run(address, body)


def _parse_members(text: str) -> list[int]:
    try:
        ids = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        _bad(f"--members {text!r}: expected node ids like 1,2,3")
    if not ids or any(i <= 0 for i in ids):
        _bad(f"--members {text!r}: expected positive node ids like 1,2,3")
    return ids


def _wait_resharding(c: AdminClient, what: str, timeout: float, as_json: bool) -> dict[str, Any]:
    """Poll the map until no resharding is under way, with a spinner showing the config
    leader's progress."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    deadline = time.monotonic() + timeout
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=as_json,
        transient=True,
    )
    state: dict[str, Any] = {}
    with progress:
        task = progress.add_task(what)
        while True:
            m = c.client.shard_map()
            if not m.resharding:
                return {"map_version": m.version, **state}
            if time.monotonic() >= deadline:
                _fail(f"{what}: still resharding after {timeout:g} s (map version {m.version})")
            leader = c.config_leader_status()
            if leader is not None:
                r = leader.resharding
                state = {
                    "moves_done": r.moves_done,
                    "records_moved": r.records_moved,
                    "longest_freeze_s": r.longest_freeze_s,
                    "last_error": r.last_error,
                }
                progress.update(
                    task,
                    description=f"{what}: {state.get('moves_done', 0)} moves, "
                    f"{state.get('records_moved', 0)} records moved",
                )
            time.sleep(0.2)


@admin.command("add-shard")
@click.argument("shard")
@click.option("--members", required=True, help="Node ids of its masters, e.g. 11,12,13.")
@click.option("--no-wait", is_flag=True, help="Return once the map names it (data moves later).")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for moves.")
@common
def add_shard_cmd(
    shard: str, members: str, no_wait: bool, timeout: float, address: str | None, as_json: bool
) -> None:
    """Add SHARD (its masters already running and registered) and move its directories to
    it online."""
    ids = _parse_members(members)

    def body(c: AdminClient) -> None:
        c.load()
        if shard in c.shard_map.shards:
            _bad(f"shard {shard} already exists")
        missing = [i for i in ids if i not in c.registry]
        if missing:
            _bad(
                f"node {missing[0]} is not registered with the config group "
                f"(registered: {', '.join(map(str, sorted(c.registry)))})"
            )
        version = c.client.add_shard(shard, ids)
        obj: dict[str, Any] = {"shard": shard, "members": ids, "map_version": version}
        if not no_wait:
            obj.update(_wait_resharding(c, f"adding {shard}", timeout, as_json))
        listed = ", ".join(map(str, ids))
        _emit(as_json, obj, f"{shard} added (members {listed}); map version {obj['map_version']}")

    _run(address, body)


@admin.command("remove-shard")
@click.argument("shard")
@click.option("--no-wait", is_flag=True, help="Return once removal has begun.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for moves.")
@common
def remove_shard_cmd(
    shard: str, no_wait: bool, timeout: float, address: str | None, as_json: bool
) -> None:
    """Move SHARD's directories to the other shards online, then drop it from the map."""

    def body(c: AdminClient) -> None:
        c.load()
        if shard not in c.shard_map.shards:
            _bad(f"unknown shard {shard!r} (shards: {', '.join(sorted(c.shard_map.shards))})")
        version = c.client.remove_shard(shard)
        obj: dict[str, Any] = {"shard": shard, "map_version": version}
        if not no_wait:
            obj.update(_wait_resharding(c, f"removing {shard}", timeout, as_json))
        _emit(as_json, obj, f"{shard} removed; ShardMap version {obj['map_version']}")

    _run(address, body)


# -- data directories ---------------------------------------------------------------------------
_STATE_DIRS = ("raft", "shards")
"""What a metadata node keeps in its data directory: the Raft engine (every group's log,
hard state and snapshots) and each shard's state machine."""


def _locked_inodes() -> set[tuple[int, int, int]]:
    """(major, minor, inode) of every file some process holds a lock on (Linux)."""
    out: set[tuple[int, int, int]] = set()
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        for part in line.split():
            bits = part.split(":")
            if len(bits) == 3 and all(bits):
                try:
                    out.add((int(bits[0], 16), int(bits[1], 16), int(bits[2])))
                except ValueError:
                    continue
    return out


def _in_use(directory: Path) -> bool:
    """Whether a running process holds the lock of a RocksDB database in ``directory`` (the
    Raft engine's ``raft/db``, each shard's ``shards/<id>``)."""
    locks = [p for p in directory.rglob("LOCK") if p.is_file()]
    if not locks:
        return False
    held = _locked_inodes()
    for lock in locks:
        st = lock.stat()
        if (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) in held:
            return True
        with open(lock, "rb+") as f:
            try:
                fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.lockf(f, fcntl.LOCK_UN)
    return False


@admin.command("format")
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Erase whatever DATA_DIR holds (Raft state included).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
def format_cmd(data_dir: Path, force: bool, as_json: bool) -> None:
    """Prepare DATA_DIR for a node's first start (with --peers); ≈ namenode -formatHA. Refuses
    to erase existing data without --force, and a directory a running node uses always."""
    if data_dir.exists() and not data_dir.is_dir():
        _bad(f"{data_dir} exists and is not a directory")
    erased: list[str] = []
    if data_dir.exists():
        entries = sorted(p.name for p in data_dir.iterdir())
        if entries:
            state = [e for e in entries if e in _STATE_DIRS]
            if _in_use(data_dir):
                _bad(f"{data_dir} is in use by a running node; stop it first")
            if not force:
                what = (
                    f"holds Raft state ({', '.join(state)})"
                    if state
                    else f"is not empty ({len(entries)} entries)"
                )
                _bad(f"{data_dir} {what}; pass --force to erase it")
            for name in entries:
                p = data_dir / name
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
            erased = entries
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / ".keelfs-format-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        _fail(f"{data_dir} cannot be used: {exc.strerror or exc}")
    obj = {"data_dir": str(data_dir.resolve()), "erased": erased}
    msg = f"{data_dir} is ready for a first start with --peers" + (
        f" (erased {len(erased)} entries)" if erased else ""
    )
    _emit(as_json, obj, msg)


@admin.command("backup")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--timeout", default=600.0, show_default=True, help="Seconds per group's image.")
@common
def backup_cmd(dest: Path, timeout: float, address: str | None, as_json: bool) -> None:
    """Write a backup of the metadata to DEST (absent or empty): every shard's and the config
    group's state, each at one committed index, and a manifest with indexes and checksums
    (docs/operations.md). DEST holds the block-token keys: keep it private."""
    from keelfs.server.backup import BackupError, take_backup

    def body(c: AdminClient) -> None:
        try:
            manifest = take_backup(c, dest, timeout=timeout)
        except BackupError as exc:
            _fail(str(exc))
        groups = {
            g: {"index": i.index, "term": i.term, "bytes": i.size, "sha256": i.sha256}
            for g, i in manifest.groups.items()
        }
        obj = {"dest": str(dest.resolve()), "groups": groups, "map_version": manifest.map_version}
        lines = [f"backup of {len(groups)} groups in {dest}:"] + [
            f"  {g:<12} index {i.index:<10} {_size(i.size)}" for g, i in manifest.groups.items()
        ]
        _emit(as_json, obj, "\n".join(lines))

    _run(address, body)


@admin.command("restore")
@click.argument("src", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="The new node's data directory (absent or empty).",
)
@click.option("--id", "node_id", required=True, type=int, help="The new node's id.")
@click.option(
    "--peers",
    required=True,
    help="ID=HOST:PORT,... the Raft addresses of every member of the groups restored "
    "here (this node's too): the same on every member.",
)
@click.option(
    "--group",
    "groups",
    multiple=True,
    help="A group this node hosts (`config` or a shard id; repeatable). Default: "
    "every group of the backup (a co-hosted layout).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
def restore_cmd(
    src: Path,
    data_dir: Path,
    node_id: int,
    peers: str,
    groups: tuple[str, ...],
    as_json: bool,
) -> None:
    """Build the data directory of one metadata node of a NEW cluster from the backup in SRC
    (run once per node, then start each with the same --id and no --peers). Offline: no
    cluster is contacted."""
    from keelfs.runtime.server import parse_peers
    from keelfs.server.backup import BackupError, restore_node

    try:
        members = parse_peers(peers)
    except ValueError as exc:
        _bad(str(exc))
    try:
        done = restore_node(src, data_dir, node_id, members, list(groups) or None)
    except BackupError as exc:
        _bad(str(exc))
    obj = {"data_dir": str(data_dir.resolve()), "id": node_id, "groups": done}
    _emit(as_json, obj, f"{data_dir}: node {node_id} restored with {', '.join(done)}")


@admin.command("format-namespace")
@common
def format_namespace_cmd(address: str | None, as_json: bool) -> None:
    """Create the root directory of the namespace if the cluster has none (idempotent)."""

    def body(c: AdminClient) -> None:
        created = c.client.format()
        msg = "namespace formatted: / created" if created else "namespace already formatted"
        _emit(as_json, {"created": created}, msg)

    _run(address, body)


# -- health -------------------------------------------------------------------------------------
@admin.command("report")
@common
def report_cmd(address: str | None, as_json: bool) -> None:
    """Capacity, live and dead chunk servers, under-replicated and missing blocks (as of each
    shard leader's last walk) and corrupt replicas, and replication work (per file:
    ``keelfs admin fsck``)."""

    def body(c: AdminClient) -> None:
        from keelfs.rpc.wire import CONFIG_GROUP  # loaded by a command, not by `keelfs` start-up

        c.load()
        servers = _chunk_servers(c)
        live = [s for s in servers.values() if s["live"]]
        capacity = sum(s["capacity"] for s in live)
        used = sum(s["used"] for s in live)
        leaders = sorted(
            {g.leader for gid, g in c.groups.items() if gid != CONFIG_GROUP and g.leader}
        )
        statuses = c.view.statuses()
        replication: dict[str, int] = {}
        health = {"under_replicated": 0, "missing": 0, "corrupt_replicas": 0}
        blocks = 0
        for node_id in leaders:
            st = statuses.get(node_id)
            if st is None:
                continue
            blocks = max(blocks, st.blocks)  # each master sees every replica
            for k, v in st.replication.items():
                replication[k] = replication.get(k, 0) + v
            for shard_health in st.block_health.values():
                health["under_replicated"] += shard_health.under_replicated
                health["missing"] += shard_health.missing
                health["corrupt_replicas"] = max(
                    health["corrupt_replicas"], shard_health.corrupt_replicas
                )
        obj = {
            "capacity": capacity,
            "used": used,
            "remaining": max(0, capacity - used),
            "live": sorted(s for s, v in servers.items() if v["live"]),
            "dead": sorted(s for s, v in servers.items() if not v["live"]),
            "blocks_with_replicas": blocks,
            **health,
            "replication": replication,
            "chunk_servers": servers,
            "shard_leaders": leaders,
        }

        def human(con: Console) -> None:
            t = Table(title="keelfs report", show_header=False)
            t.add_column("what")
            t.add_column("value", justify="right")
            pct = f" ({100 * used / capacity:.1f}%)" if capacity else ""
            t.add_row("configured capacity (live)", _size(capacity))
            t.add_row("used", _size(used) + pct)
            t.add_row("remaining", _size(max(0, capacity - used)))
            t.add_row("live chunk servers", str(len(obj["live"])))
            t.add_row(
                "dead chunk servers", str(len(obj["dead"])), style="red" if obj["dead"] else ""
            )
            t.add_row("blocks with known replicas", str(blocks))
            for k in ("under_replicated", "missing", "corrupt_replicas"):
                n = health[k]
                t.add_row(k.replace("_", " "), str(n), style="red" if n else "")
            for k, v in sorted(replication.items()):
                t.add_row(f"replication: {k}", str(v))
            con.print(t)
            _print_servers(con, servers)

        _emit(as_json, obj, human)

    _run(address, body)


@dataclass
class FsckResult:
    files: int = 0
    dirs: int = 0
    blocks: int = 0
    missing: int = 0
    under_replicated: int = 0
    open_files: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)


def _fsck(c: AdminClient, root: str) -> FsckResult:
    res = FsckResult()
    pending = [root]
    first = True
    while pending:
        path = pending.pop()
        if first:
            info = c.client.stat(path)
            first = False
            if not info.is_dir:
                _check_file(c, path, res)
                continue
        res.dirs += 1
        for entry in c.client.ls(path):
            if entry.is_dir:
                pending.append(entry.path)
            else:
                _check_file(c, entry.path, res)
    return res


def _check_file(c: AdminClient, path: str, res: FsckResult) -> None:
    info = c.file_info_with_locations(path)
    res.files += 1
    if info.under_construction:
        res.open_files += 1
    missing = under = 0
    for i, block in enumerate(info.blocks):
        res.blocks += 1
        n = len(block.locations)
        if info.under_construction and i == len(info.blocks) - 1:
            continue  # the block being written: its replicas are reported as it fills
        if n == 0:
            missing += 1
        elif n < info.replication:
            under += 1
    res.missing += missing
    res.under_replicated += under
    if missing or under:
        res.problems.append(
            {
                "path": path,
                "blocks": len(info.blocks),
                "missing": missing,
                "under_replicated": under,
                "replication": info.replication,
            }
        )


@admin.command("fsck")
@click.argument("path", default="/")
@common
def fsck_cmd(path: str, address: str | None, as_json: bool) -> None:
    """Check every file under PATH: blocks with no replica (missing) or fewer than the file's
    replication (under-replicated). Exit status 1 if any block is missing."""

    def body(c: AdminClient) -> None:
        res = _fsck(c, path)
        healthy = res.missing == 0
        obj = {**res.__dict__, "path": path, "healthy": healthy}

        def human(con: Console) -> None:
            if res.problems:
                t = Table(title=f"fsck {path}: files with block problems")
                for col in ("path", "blocks", "missing", "under-replicated", "replication"):
                    t.add_column(col, justify="left" if col == "path" else "right")
                for p in res.problems:
                    t.add_row(
                        p["path"],
                        str(p["blocks"]),
                        str(p["missing"]),
                        str(p["under_replicated"]),
                        str(p["replication"]),
                        style="red" if p["missing"] else "yellow",
                    )
                con.print(t)
            verdict = "[green]HEALTHY[/green]" if healthy else "[red]CORRUPT[/red]"
            con.print(
                f"{path}: {res.dirs} directories, {res.files} files ({res.open_files} open), "
                f"{res.blocks} blocks: {res.missing} missing, {res.under_replicated} "
                f"under-replicated; {verdict}"
            )

        _emit(as_json, obj, human)
        if not healthy:
            raise SystemExit(1)

    _run(address, body)
