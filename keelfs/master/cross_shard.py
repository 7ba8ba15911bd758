"""Namespace operations whose records live on more than one shard, as transactions.

When the records an operation changes live on more than one shard, the leader that received
it (the shard of the path's entry, or of ``src``) coordinates a transaction
(``keelfs.master.transactions``: this module decides *what* each shard does, as steps, that
one *how* the shards agree); the plain command is used whenever one shard holds everything:

- ``Rename`` of a file whose target entry is on another shard; of a directory when any
  directory of its subtree is, or will be under its new name, on another shard than the
  entries (every record of the subtree is read, checked unchanged and moved:
  ``keelfs.master.subtree``, at most ``subtree.MAX_ENTRIES`` records). Files being written
  are not moved across shards (their lease would have to move too): close them first.
- ``Mkdir`` of a directory whose own shard is not its parent's: the entry here, the
  self-record there. (``parents`` creates each missing ancestor through the shard owning it,
  which is the servicer's: a request to a peer, no transaction.)
- ``Delete`` of a directory whose self-record is on another shard (that shard checks it is
  empty), and a recursive delete whose subtree spans shards (every record checked and
  removed, the files' blocks queued); a subtree of more than ``subtree.MAX_ENTRIES`` records
  is first cut down in atomic steps, leaves first (``keelfs.master.tree_delete``).
- ``Concat`` whose sources' entries are on other shards than the target's: the target's
  record replaced by the joined one here, each source removed on its shard.

A retried request (same session and seq) is recognised whichever way its first attempt went:
the transaction's begin record carries the client command's digest, and a plain command that
finds a transaction's reply in the session cache waits for that transaction's outcome
(:func:`txn_outcome`). So nothing stateful is checked before proposing in a way that could
turn a retried success into a failure: a path that is gone is still proposed (its check fails
with NOT_FOUND unless the session remembers the first attempt). Ordinary commands on a path a
transaction has locked are re-proposed until it is released (``MetaNode.propose``); reads of
it wait (``MetaNode.wait_unlocked``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from keelfs.errors import (
    DirectoryNotEmpty,
    InvalidArgument,
    IsADirectory,
    KeelError,
    LeaseConflict,
    NotFound,
    Unavailable,
)
from keelfs.master import subtree
from keelfs.master.member import Member, now_ms
from keelfs.meta import acls, commands, paths
from keelfs.meta.commands import Mkdir, Rename
from keelfs.meta.file_edits import join_files
from keelfs.meta.namespace import MAX_LIST_LIMIT, ShardStateMachine
from keelfs.meta.principals import (
    EXECUTE,
    READ,
    SUPERUSER,
    WRITE,
    Caller,
    Guard,
    allows,
    denied,
    describe,
    guards_below,
)
from keelfs.meta.records import DIRECTORY, Inode
from keelfs.meta.shardmap import ShardMap
from keelfs.meta.transactions import Step, TxnRecord, may_step
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.rpc.wire import session_id_from_pb

if TYPE_CHECKING:
    from keelfs.master.node import MetaNode

__all__ = [
    "concat",
    "delete",
    "mkdir",
    "rename",
    "spans",
    "subtree_changed_error",
    "txn_outcome",
]

_DELETE_COUNTS = ("files", "directories", "blocks")


def txn_outcome(outcome: TxnRecord | dict[str, Any], what: str) -> Any:
    """What a transaction's client is told: its ``result`` when it committed (or the reply of
    a first attempt that needed none), else the error it aborted with."""
    if isinstance(outcome, dict):
        return outcome
    if outcome.state != "committed":
        if outcome.error:
            raise KeelError.from_details(outcome.error)
        raise Unavailable("aborted", message=f"{what} was aborted; retry")
    return outcome.result


def subtree_changed_error(err: KeelError, what: str) -> KeelError:
    """The state machine refuses with NotFound("directory record") when a directory it must
    handle whole has its self-record on another shard: the subtree changed between the
    leader's check (which sends such requests through a transaction) and the apply."""
    if isinstance(err, NotFound) and err.kind == "directory record":
        return InvalidArgument(
            f"{what}: directory {err.name} got children on another shard while the request "
            "ran; try again",
            "path",
        )
    return err


def spans(m: ShardMap, shard: str, src: str, dst: str, sm: ShardStateMachine) -> bool:
    """Whether moving directory ``src`` to ``dst`` touches another shard than ``shard``: a
    directory of its subtree lives elsewhere now, or would under its new name."""
    for d in [src, *_subdirectories(sm, src)]:
        new = dst + d[len(src) :]
        if m.shard_for_directory(d) != shard or m.shard_for_directory(new) != shard:
            return True
    return False


def _subdirectories(sm: ShardStateMachine, top: str) -> Iterator[str]:
    """Every directory below ``top`` reachable through self-records held here."""
    stack = [top]
    while stack:
        current = stack.pop()
        cursor: str | None = None
        while True:
            try:
                page = sm.list_dir(current, start_after=cursor, limit=MAX_LIST_LIMIT)
            except KeelError:
                break  # its children are elsewhere: the state machine refuses the move
            for entry in page.entries:
                if entry.is_dir and entry.path != current:
                    yield entry.path
                    stack.append(entry.path)
            if page.cursor is None:
                break
            cursor = page.cursor


def _may(
    caller: Caller | None,
    directory: str,
    access: int,
    child: str = "",
    guards: tuple[Guard, ...] | None = None,
    inherited: tuple[acls.AclEntry, ...] | None = None,
) -> list[Step]:
    """The ``may`` step that checks, in the transaction, that ``caller`` may pass into
    ``directory`` with ``access`` on it (and the sticky bit for ``child``; ``guards``: that
    the guards a new child directory was built with still hold; ``inherited``: that the
    default ACL its ACL was built from still does). A superuser is not checked: its step
    only pins the guards and defaults, when there are some to pin."""
    if guards is None and inherited is None and (caller is None or caller.superuser):
        return []
    who = SUPERUSER if caller is None else caller
    return [may_step(directory, who, access, child, guards, inherited)]


def _seq_applied(sm: ShardStateMachine, header: pb.RequestHeader) -> bool:
    """Whether this shard applied the request's (session, seq) already: the request is a
    retry, answered from the session's reply cache (read after a barrier)."""
    if not header.session_id or not header.seq:
        return False
    session = sm.session(session_id_from_pb(header.session_id))
    return session is not None and session.last_seq >= header.seq


# -- mkdir ------------------------------------------------------------------------------------
async def mkdir(
    node: MetaNode,
    member: Member,
    command: Mkdir,
    header: pb.RequestHeader,
    timeout: float,
    caller: Caller | None = None,
) -> list[str]:
    """Make ``command.path``, whose own shard is not its parent's (``member``'s): the entry
    here, the self-record on the directory's own shard. The directories created.

    The record is built here, as the state machine would: owned by ``caller`` in the
    parent's group (a superuser may name others), with the parent's traverse guards plus the
    parent's own if it needs one; the ``may`` step checks the caller's right and that those
    guards still hold when the transaction prepares."""
    await node.lead(member, timeout)
    path, parent = command.path, paths.parent(command.path)
    owner, group = command.owner, command.group
    guards: tuple[Guard, ...] = ()
    mode, acl = command.mode, tuple[acls.AclEntry, ...]()
    defaults = tuple[acls.AclEntry, ...]()
    raw_parent = member.sm.self_record(parent)
    if raw_parent is not None:
        parent_record = Inode.decode(raw_parent.encode())
        guards = guards_below(
            parent_record.guards,
            parent,
            parent_record.owner,
            parent_record.group,
            parent_record.mode,
            parent_record.acl,
        )
        defaults = acls.default_entries(parent_record.acl)
        mode, acl = acls.inherit(parent_record.acl, command.mode, is_dir=True)
        if caller is not None and not caller.superuser:
            owner, group = caller.user, parent_record.group
    now = now_ms()
    record = Inode(DIRECTORY, mode, owner, group, now, now, guards=guards, acl=acl)
    record_text = record.encode().decode()
    own = [
        *_may(caller, parent, WRITE, "", guards, defaults),
        Step("dir", parent),
        Step("absent", path),
        Step("put_entry", path, record_text),
        Step("touch", parent),
    ]
    target = node.shard_map.shard_for_directory(path)
    theirs = [Step("put_self", path, record_text)]
    outcome = await node.txns.run(
        member,
        "mkdir",
        own,
        {target: theirs},
        header,
        timeout,
        command,
        {"created": [path]},
        caller=caller,
    )
    created: list[str] = txn_outcome(outcome, f"mkdir {path}")["created"]
    return created


# -- delete -----------------------------------------------------------------------------------
async def delete(
    node: MetaNode,
    member: Member,
    cmd: commands.Delete,
    header: pb.RequestHeader,
    timeout: float,
    caller: Caller | None = None,
    cleared: dict[str, int] | None = None,
) -> dict[str, int] | None:
    """Run ``cmd`` as a transaction when its records span shards: a directory whose
    self-record is on another shard, or a recursive delete of a subtree that spans shards.
    The counts it removed; None when one shard holds everything (the plain command does).
    ``cleared``: what earlier steps of this delete removed, counted in its transaction's
    result (so that a retry answered from that transaction gets them too)."""
    path, m, sm = cmd.path, node.shard_map, member.sm
    if m.shard_for_directory(path) == member.group_id and not cmd.recursive:
        return None
    node.require_leader(member)
    await node.read(member, False, timeout)
    await node.wait_unlocked(member, path, timeout)
    record = sm.entry_record(path)
    is_dir = record is not None and sm.stat(path).is_dir
    spanning = is_dir and any(
        m.shard_for_directory(d) != member.group_id for d in [path, *_subdirectories(sm, path)]
    )
    if cmd.recursive and spanning:
        steps, request = node.tree_deletes, (bytes(header.session_id), header.seq)
        deadline = time.monotonic() + timeout
        if cleared is None and steps.started(member.group_id, path, request):
            # a retry of a delete that went on in steps: wait for them, not race them
            cleared = await steps.clear(
                node.internal, member.group_id, path, caller, request, timeout, again=False
            )
            return await delete(node, member, cmd, header, _left(deadline), caller, cleared)
        try:
            return await _delete_tree(
                node, member, cmd, record, header, timeout, caller, cleared or {}
            )
        except subtree.TreeTooLarge:
            # too large for one transaction: leaves first in steps, then the rest (the top
            # entry with it) by this request, as above (``keelfs.master.tree_delete``)
            cleared = await steps.clear(
                node.internal, member.group_id, path, caller, request, timeout, again=True
            )
            return await delete(node, member, cmd, header, _left(deadline), caller, cleared)
    if m.shard_for_directory(path) != member.group_id and (record is None or is_dir):
        return await _rmdir(node, member, cmd, record, header, timeout, caller)
    return None


def _left(deadline: float) -> float:
    return max(0.01, deadline - time.monotonic())


async def _delete_tree(
    node: MetaNode,
    member: Member,
    cmd: commands.Delete,
    record: str | None,
    header: pb.RequestHeader,
    timeout: float,
    caller: Caller | None = None,
    cleared: dict[str, int] | None = None,
) -> dict[str, int]:
    """Recursive delete of a directory whose subtree spans shards: one transaction over
    every record of it (``keelfs.master.subtree``). The caller needs ``w`` on the parent
    and ``rwx`` on every non-empty directory of the subtree (each checked where its
    self-record is). ``cleared``: counts of earlier steps, added to the result."""
    path = cmd.path
    assert record is not None
    try:
        dirs = await subtree.walk(node.internal, path, moving=False)
    except NotFound as gone:
        if gone.details.get("name") in (None, path):
            raise
        # a directory below went while it was read (steps of a delete in steps that a
        # killed or deposed leader sent, finishing): nothing is recorded yet, read again
        raise Unavailable(
            "changed", message=f"{path}: the tree changed while it was read; retry"
        ) from None
    parts, files, subdirs = subtree.delete_parts(node.shard_map, dirs)
    if set(parts) <= {member.group_id}:
        # The tree was judged to span shards from this shard's records, but what the walk
        # read is all here: its directories elsewhere went in between (the steps of a delete
        # in steps, another driver's). A transaction with no other shard is not one (its
        # begin is refused); nothing is proposed, and the client's retry (same session and
        # seq) judges afresh and runs the plain command.
        raise Unavailable("changed", message=f"{path}: the tree changed while it was read; retry")
    for d in dirs:
        if caller is not None and not caller.superuser and d.children:
            at = node.shard_map.shard_for_directory(d.path)
            parts.setdefault(at, [])[:0] = _may(caller, d.path, READ | WRITE | EXECUTE)
    own = parts.pop(member.group_id, [])
    own += [
        *_may(caller, paths.parent(path), WRITE, paths.name(path)),
        Step("entry", path, record),
        Step("del_entry", path),
        Step("touch", paths.parent(path)),
    ]
    blocks = sum(
        len(Inode.decode(rec.encode()).blocks)
        for d in dirs
        for _, rec, is_dir in d.children
        if not is_dir
    )
    result = {"files": files, "directories": subdirs + 1, "blocks": blocks}
    for k, n in (cleared or {}).items():
        result[k] += n
    outcome = await node.txns.run(
        member, "delete", own, parts, header, timeout, cmd, result, caller=caller
    )
    value: dict[str, int] = txn_outcome(outcome, f"delete {path}")
    return {k: int(value[k]) for k in _DELETE_COUNTS}


async def _rmdir(
    node: MetaNode,
    member: Member,
    cmd: commands.Delete,
    record: str | None,
    header: pb.RequestHeader,
    timeout: float,
    caller: Caller | None = None,
) -> dict[str, int]:
    """Delete a directory whose entry is here and whose self-record (and children) are on
    its own shard: a transaction; that shard checks it is empty and drops the record."""
    path = cmd.path
    target = node.shard_map.shard_for_directory(path)
    may = _may(caller, paths.parent(path), WRITE, paths.name(path))
    if record is None:  # gone: proposed anyway, so that a retry gets its first reply
        missing = [Step("present", path)]
        missing = [*may, *missing]
        outcome = await node.txns.run(
            member, "delete", missing, {target: missing}, header, timeout, cmd, caller=caller
        )
    else:
        own = [
            *may,
            Step("entry", path, record),
            Step("del_entry", path),
            Step("touch", paths.parent(path)),
        ]
        theirs = [Step("empty", path), Step("del_self", path)]
        result = {"files": 0, "directories": 1, "blocks": 0}
        outcome = await node.txns.run(
            member, "delete", own, {target: theirs}, header, timeout, cmd, result, caller=caller
        )
    try:
        value: dict[str, int] = txn_outcome(outcome, f"delete {path}")
    except DirectoryNotEmpty:
        if cmd.recursive:
            raise InvalidArgument(
                f"cross-shard recursive delete not supported yet: the children of {path} "
                "live on another shard than its entry; delete them first",
                "path",
            ) from None
        raise
    return {k: int(value[k]) for k in _DELETE_COUNTS}


# -- rename -----------------------------------------------------------------------------------
async def rename(
    node: MetaNode,
    member: Member,
    request: Rename,
    header: pb.RequestHeader,
    timeout: float,
    caller: Caller | None = None,
) -> None:
    """Rename ``src`` to a path another shard holds, or a directory whose subtree spans shards
    (:func:`spans`): a transaction coordinated here (the source's shard), the target's shard
    participating (and checking ``expect``, the version of the file replaced, there)."""
    src, dst, overwrite = request.src, request.dst, request.overwrite
    await node.read(member, False, timeout)
    await node.wait_unlocked(member, src, timeout)  # a transaction may be moving it
    sm: ShardStateMachine = member.sm
    target = node.shard_map.shard_for_path(dst)
    src_may = _may(caller, paths.parent(src), WRITE, paths.name(src))
    dst_may = _may(caller, paths.parent(dst), WRITE, paths.name(dst))
    record = sm.entry_record(src)
    if record is None or _seq_applied(sm, header):
        # Not here (any more): still proposed, since a retry of a rename that committed
        # must get its recorded success; anything else fails the check with NOT_FOUND.
        # Likewise a retry whose (session, seq) was applied while ``src`` is here again
        # (created anew since by someone else): only the recorded reply may answer it,
        # never a fresh look at the new file (it may be open: LEASE_CONFLICT).
        missing = [Step("present", src)]
        outcome = await node.txns.run(
            member,
            "rename",
            [*src_may, *missing],
            {target: missing},
            header,
            timeout,
            request,
            caller=caller,
        )
        txn_outcome(outcome, f"rename {src} -> {dst}")
        return
    info = sm.stat(src)
    if info.is_dir:
        await _move_tree(node, member, request, record, header, timeout, caller)
        return
    if info.under_construction:
        raise LeaseConflict(
            src, info.lease_user, message=f"{src} is open for writing: close it first"
        )
    dst_dir = paths.parent(dst)
    own = [
        *src_may,
        Step("entry", src, record),
        Step("del_entry", src),
        Step("touch", paths.parent(src)),
    ]
    theirs = [*dst_may, Step("dir", dst_dir)]
    if request.expect:
        theirs.append(Step("version", dst, request.expect))
    if overwrite:
        theirs += [Step("replaceable", dst), Step("replace", dst)]
    else:
        theirs.append(Step("absent", dst))
    theirs += [Step("put_entry", dst, record), Step("touch", dst_dir)]
    sm.check_incoming(src, dst, [record])
    outcome = await node.txns.run(
        member, "rename", own, {target: theirs}, header, timeout, request, caller=caller
    )
    txn_outcome(outcome, f"rename {src} -> {dst}")


async def _move_tree(
    node: MetaNode,
    member: Member,
    request: commands.Rename,
    record: str,
    header: pb.RequestHeader,
    timeout: float,
    caller: Caller | None = None,
) -> None:
    """Move a directory whose subtree spans shards (or will, under its new name): one
    transaction over every record of it. The target must not exist (an empty directory
    is not replaced across shards, unlike a same-shard rename with ``overwrite``)."""
    src, dst = request.src, request.dst
    if paths.is_ancestor(src, dst) or src == dst:
        raise InvalidArgument(f"cannot move {src} into itself ({dst})", "dst")
    m = node.shard_map
    dst_dir = paths.parent(dst)
    # the guards of the new place, pinned by the ``may`` step on dst's parent (a chmod
    # above it meanwhile makes that shard refuse the part)
    raw = await node.internal.dir_record(dst_dir, deadline=timeout)
    parent = Inode.decode(raw.encode()) if raw else None
    dst_guards: tuple[Guard, ...] = ()
    if parent is not None:
        dst_guards = guards_below(
            parent.guards, dst_dir, parent.owner, parent.group, parent.mode, parent.acl
        )
    moved_top = subtree.regarded(record, src, dst, dst_guards)
    src_steps = [
        *_may(caller, paths.parent(src), WRITE, paths.name(src)),
        Step("entry", src, record),
        Step("del_entry", src),
        Step("touch", paths.parent(src)),
    ]
    dst_steps = [
        *_may(caller, dst_dir, WRITE, paths.name(dst), dst_guards),
        Step("dir", dst_dir),
        Step("absent", dst),
        Step("put_entry", dst, moved_top),
        Step("touch", dst_dir),
    ]
    try:
        dirs = await subtree.walk(node.internal, src, moving=True)
    except NotFound:
        # a directory went while it was read: this request's own move in steps, begun by an
        # earlier attempt, switched meanwhile (its retry is answered from that transaction),
        # or someone else's change; nothing is recorded yet: read again
        raise Unavailable(
            "changed", message=f"{src}: the tree changed while it was read; retry"
        ) from None
    except subtree.TreeTooLarge:
        # too large for one transaction: moved in steps (``keelfs.master.tree_move``)
        await node.tree_moves.move(
            member, request, header, timeout, caller, dst_guards, (src_steps, dst_steps)
        )
        return
    parts = subtree.move_parts(m, dirs, src, dst, dst_guards)
    parts.setdefault(m.shard_for_path(src), []).extend(src_steps)
    parts.setdefault(m.shard_for_path(dst), []).extend(dst_steps)
    puts = [s.record for part in parts.values() for s in part if s.kind == "put_entry"]
    member.sm.check_incoming(src, dst, puts)
    own = parts.pop(member.group_id)
    outcome = await node.txns.run(
        member, "rename", own, parts, header, timeout, request, caller=caller
    )
    txn_outcome(outcome, f"rename {src} -> {dst}")


# -- concat -----------------------------------------------------------------------------------
async def concat(
    node: MetaNode,
    member: Member,
    request: commands.Concat,
    header: pb.RequestHeader,
    timeout: float,
    caller: Caller | None = None,
) -> Any:
    """Concat whose sources' entries are (some of them) on other shards than the target's:
    a transaction coordinated here (the target's shard). Each record is pinned (``entry``
    steps: any change meanwhile aborts it), the rights are checked on the pinned records
    here and the sources' directories by ``may`` steps on their shards; the target gets its
    joined record (``put_entry``), each source's shard removes the source. Returns the
    target's info as the client gets it."""
    await node.read(member, False, timeout)
    target = request.target
    await node.wait_unlocked(member, target, timeout)
    sm: ShardStateMachine = member.sm
    m = node.shard_map
    record = sm.entry_record(target)
    if record is None or _seq_applied(sm, header):
        # as for a rename: proposed all the same, so that a retry of a concat that
        # committed gets its recorded reply; anything else fails with NOT_FOUND
        missing = [Step("present", target)]
        others = {m.shard_for_path(s) for s in request.sources} - {member.group_id}
        if not others:  # the map changed meanwhile: every source is here now
            raise Unavailable("map changed", message="the shard map changed; retry")
        outcome = await node.txns.run(
            member,
            "concat",
            missing,
            {shard: [Step("present", target)] for shard in sorted(others)},
            header,
            timeout,
            request,
            caller=caller,
        )
        return txn_outcome(outcome, f"concat into {target}")
    who = SUPERUSER if caller is None else caller
    head = _closed_file(target, record, who, WRITE)
    sources: list[tuple[str, Inode, str]] = []
    for src in request.sources:
        shard = m.shard_for_path(src)
        if shard == member.group_id:
            raw = sm.entry_record(src) or ""
        else:
            raw = await node.internal.entry_record(src, deadline=timeout)
        if not raw:
            raise NotFound(src, "path")
        sources.append((src, _closed_file(src, raw, who, READ), raw))
    joined = join_files(head, [(s, f) for s, f, _ in sources], now_ms())
    parts: dict[str, list[Step]] = {}
    own = parts.setdefault(member.group_id, [])
    own += [
        *_may(caller, paths.parent(target), 0),
        Step("entry", target, record),
        Step("put_entry", target, joined.encode().decode()),
    ]
    for src, _, raw in sources:
        parts.setdefault(m.shard_for_path(src), []).extend(
            [
                *_may(caller, paths.parent(src), WRITE, paths.name(src)),
                Step("entry", src, raw),
                Step("del_entry", src),
                Step("touch", paths.parent(src)),
            ]
        )
    own = parts.pop(member.group_id)
    result = joined.info(target).to_dict()
    outcome = await node.txns.run(
        member, "concat", own, parts, header, timeout, request, result, caller=caller
    )
    return txn_outcome(outcome, f"concat into {target}")


def _closed_file(path: str, raw: str, caller: Caller, access: int) -> Inode:
    """The file of stored record ``raw`` at ``path``, closed, on which ``caller`` has
    ``access`` (the ``entry`` step pins the record the rights were checked on)."""
    inode = Inode.decode(raw.encode())
    if inode.is_dir:
        raise IsADirectory(path)
    if not allows(caller, inode.owner, inode.group, inode.mode, access, inode.acl):
        raise denied(caller, path, inode.owner, inode.group, inode.mode, describe(access))
    if inode.under_construction:
        raise LeaseConflict(path, inode.lease_user, message=f"{path} is being written")
    return inode
