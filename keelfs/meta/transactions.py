"""Cross-shard transactions as records in each shard's state (DESIGN §2.6): the data.

A transaction changes records on several shards atomically. It is written as *steps*, each
a check or a change of one record on one shard (see :class:`Step`); the steps of one shard are
its *part*. The source shard **coordinates**: its own part and the parts of the others
(**participants**) travel in its log, and its decision is final.

States and what each shard's log holds::

    coordinator   TxnBegin    -> pending      (checks its part, locks it)
    participant   TxnPrepare  -> prepared     (checks its part, locks it)  | refused -> aborted
    coordinator   TxnDecide   -> committed (applies its part) | aborted;   locks released
    participant   TxnFinish   -> committed (applies its part) | aborted;   locks released
    coordinator   TxnAcked    -> records which participants applied the decision

Rules that make it safe (the seed's timer-abort corrected):

- A participant that answered *prepared* never decides by itself: its locks stay until the
  coordinator's decision reaches it, and a participant leader that finds a prepared record asks
  the coordinator (``TxnStatus``). No record at the coordinator means *aborted* (presumed
  abort: a coordinator forgets a transaction only after every participant acknowledged it).
- The first decision in the coordinator's log wins; later ones change nothing.
- A coordinator record still *pending* after ``prepare_timeout_ms`` (log time) may be aborted:
  no participant can have been told to commit.
- Finished records are deleted ``retention_ms`` after they stopped being needed (coordinator:
  every participant acknowledged; participant: the decision applied), by log time.

Locks: every path a part changes is locked exclusively, every directory it only requires
(``dir``) or checks the rights on (``may``) is locked shared, from prepare (or begin) until
the decision is applied. Ordinary commands on a locked path are refused with ``Unavailable``
(reason ``locked``), which is not kept as a session's reply: the command can be sent again
with the same sequence number once the lock is gone (the master waits for that); reads of a
locked path wait the same way, so nobody sees a half-made transaction.

Keys::

    T <u64 txn id>                   the record (JSON, below)
    K <path>                         lock: {"x": txn id or 0, "s": [txn ids sharing it]}
    G <u64 delete after ms> <u64 id> retention index (empty)
    O <u64 txn id>                   open: the record still needs work here (empty)
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from keelfs.errors import InvalidArgument, Unavailable
from keelfs.meta import acls, paths
from keelfs.meta.acls import AclEntry
from keelfs.meta.kvstore import Txn, prefix_end
from keelfs.meta.principals import Caller, Guard
from keelfs.meta.records import decode_foreign, is_version

__all__ = [
    "CHANGES",
    "CHECKS",
    "Step",
    "TxnRecord",
    "decode_part",
    "encode_part",
    "home_dirs",
    "lock",
    "lock_conflict",
    "locked_by",
    "may_step",
    "record_digest",
    "reach_dirs",
    "unlock",
]

_U64 = struct.Struct(">Q")
TXN = b"T"
LOCK = b"K"
GC = b"G"
OPEN = b"O"

CHECKS = frozenset(
    {
        "absent",
        "present",
        "entry",
        "entry_digest",
        "self",
        "dir",
        "empty",
        "replaceable",
        "may",
        "version",
    }
)
"""Step kinds that only check (evaluated at begin/prepare, under the part's locks):

- ``absent``: no entry at ``path``; ``present``: there is one (else ``NotFound``);
- ``entry`` / ``self``: the entry / self-record of ``path`` is exactly ``record`` (its
  encoding): nothing changed it since the coordinator read it;
- ``entry_digest``: the same check against ``record_digest`` of the entry (``record`` is the
  digest): a step that removes an entry, or moves it with its record written elsewhere, need
  not carry it twice (an inline file's record holds up to 64 KiB of data, and a transaction is
  one log entry);
- ``dir``: the self-record of directory ``path`` is here (a child may be put in it);
- ``empty``: directory ``path`` has no children here;
- ``replaceable``: no entry at ``path``, or a file nobody is writing (an overwrite target);
- ``version``: the entry at ``path`` is the file of content version ``record``
  (``records.content_version``; ``NotFound``/``AlreadyExists`` otherwise): a rename's
  ``expect`` across shards;
- ``may``: the caller ``record`` names (``may_step``) reaches directory ``path`` and has the
  access it names on it, and may remove the entry it names there (the sticky bit): the
  permission checks of a cross-shard operation, made where the directory's self-record is,
  under the part's locks (a chmod of a locked directory waits), like an ordinary command's.
"""
CHANGES = frozenset(
    {"put_entry", "del_entry", "put_self", "del_self", "touch", "replace", "tree_switch"}
)
"""Step kinds that change (applied when the transaction commits):

- ``put_entry`` / ``put_self``: write ``record`` as ``path``'s entry / self-record;
- ``del_entry`` / ``del_self``: delete it;
- ``touch``: set directory ``path``'s mtime to the commit's log time (if its records are here);
- ``replace``: delete the file entry at ``path`` if there is one, queueing its blocks;
- ``tree_switch``: the fence of tree move ``record`` (its id), moving ``path``, turns from
  copying to switched here (``keelfs.meta.tree_fences``): checked at prepare (the fence is
  here, copying), and it exempts this part's other steps from that fence.
"""
_SHARED = frozenset({"dir", "may"})
_UNLOCKED = frozenset({"touch"})
_SELF_STEPS = frozenset({"self", "dir", "empty", "put_self", "del_self", "may"})
"""Steps about a directory's self-record (or its children, ``empty``): placed by the
directory's own hash. Every other step but ``touch`` is about an entry, placed by its
parent's hash."""


@dataclass(frozen=True, slots=True)
class Step:
    kind: str
    path: str
    record: str = ""
    """An encoded ``Inode`` (its JSON text) for ``entry``/``self``/``put_*``."""

    def validate(self) -> None:
        if self.kind not in CHECKS | CHANGES:
            raise InvalidArgument(f"unknown transaction step {self.kind!r}", "part")
        paths.validate(self.path)
        needs_record = self.kind in (
            "version",
            "entry",
            "entry_digest",
            "self",
            "put_entry",
            "put_self",
            "may",
            "tree_switch",
        )
        if needs_record != bool(self.record):
            raise InvalidArgument(f"step {self.kind} {self.path}: record mismatch", "part")
        if self.kind == "version":
            if not is_version(self.record):
                raise InvalidArgument(f"step {self.kind} {self.path}: not a version", "part")
        elif self.kind == "entry_digest":
            if len(self.record) != 64 or self.record.strip("0123456789abcdef"):
                raise InvalidArgument(f"step {self.kind} {self.path}: not a digest", "part")
        elif self.kind == "may":
            decode_may(self.record)
        elif self.kind == "tree_switch":
            if not self.record.isdigit() or len(self.record) > 19:
                raise InvalidArgument(f"step {self.kind} {self.path}: not a move id", "part")
        elif needs_record:
            try:
                decode_foreign(self.record.encode("utf-8", "surrogatepass"))
            except ValueError as e:
                raise InvalidArgument(f"step {self.kind} {self.path}: {e}", "part") from None


def record_digest(record: str | bytes) -> str:
    """The digest an ``entry_digest`` step names: SHA-256 of the stored record, in hex."""
    raw = record.encode() if isinstance(record, str) else record
    return hashlib.sha256(raw).hexdigest()


def may_step(
    directory: str,
    caller: Caller,
    access: int,
    child: str = "",
    child_guards: tuple[Guard, ...] | None = None,
    inherited: tuple[AclEntry, ...] | None = None,
) -> Step:
    """The ``may`` step checking that ``caller`` has ``access`` (``principals.READ``...,
    ``EXECUTE`` implied) on ``directory`` and, with ``child`` (a name), may remove or replace
    that entry of it if the directory is sticky.

    ``child_guards``: the traverse guards the coordinator wrote into the records of a new or
    moved directory in ``directory`` (``principals.guards_below`` of what it read): the
    step also checks that ``directory`` still gives its children exactly these, else
    ``Unavailable`` "changed" (a chmod of an ancestor came first; the retry reads anew)."""
    body: list[Any] = [caller.encode(), access, child]
    if child_guards is not None or inherited is not None:
        body.append(None if child_guards is None else [g.to_text() for g in child_guards])
    if inherited is not None:
        body.append([e.to_text() for e in inherited])
    return Step("may", directory, json.dumps(body, separators=(",", ":")))


def decode_may(record: str) -> tuple[Caller, int, str, tuple[Guard, ...] | None]:
    """A ``may`` step's caller, access bits, child name and child guards (None: not
    checked); ``InvalidArgument`` if bad (its inherited entries too: ``may_inherited``)."""
    try:
        body = json.loads(record)
        if not isinstance(body, list) or len(body) not in (3, 4, 5):
            raise ValueError(record)
        who, access, child = body[:3]
        guards = body[3] if len(body) >= 4 else None
    except ValueError:
        raise InvalidArgument(
            "a may step is [who, access, child, guards?, inherited?]", "part"
        ) from None
    if len(body) == 5:
        _inherited(body[4])
    if type(access) is not int or not 0 <= access <= 7 or not isinstance(child, str):
        raise InvalidArgument("a may step's access is 0..7 and its child a name", "part")
    if child:
        paths.validate_name(child)
    if guards is not None and (
        not isinstance(guards, list) or not all(isinstance(g, str) for g in guards)
    ):
        raise InvalidArgument("a may step's guards are a list of guards", "part")
    parsed = None if guards is None else tuple(Guard.from_text(g) for g in guards)
    return Caller.decode(who), access, child, parsed


def may_inherited(record: str) -> tuple[AclEntry, ...] | None:
    """The default ACL entries a ``may`` step pins on its directory (None: not checked): what
    the coordinator built a new directory's inherited ACL from (``keelfs.meta.acls.inherit``);
    the step refuses ("changed") when the directory's default ACL is not these any more."""
    body = json.loads(record)
    return _inherited(body[4]) if len(body) == 5 else None


def _inherited(raw: Any) -> tuple[AclEntry, ...]:
    if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
        raise InvalidArgument("a may step's inherited entries are a list of entries", "part")
    entries = acls.parse_spec(raw)
    if len(entries) != len(raw) or not all(e.default for e in entries):
        raise InvalidArgument("a may step's inherited entries are default entries", "part")
    return entries


def encode_part(steps: Iterable[Step]) -> str:
    return json.dumps([[s.kind, s.path, s.record] for s in steps], separators=(",", ":"))


def decode_part(text: str) -> tuple[Step, ...]:
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidArgument("transaction part is not JSON", "part") from None
    if not isinstance(raw, list):
        raise InvalidArgument("transaction part must be a list of steps", "part")
    steps: list[Step] = []
    for item in raw:
        if (
            not isinstance(item, list)
            or len(item) != 3
            or not all(isinstance(x, str) for x in item)
        ):
            raise InvalidArgument("a transaction step is [kind, path, record]", "part")
        step = Step(item[0], item[1], item[2])
        step.validate()
        steps.append(step)
    return tuple(steps)


def home_dirs(steps: Iterable[Step]) -> frozenset[str]:
    """The directories whose records ``steps`` need on this shard (what a guarded stage
    treats as the transaction's homes, ``keelfs.meta.moves``): a self-record step's own
    directory, an entry step's parent. A ``touch`` adds none: it changes its directory's
    records only where they are here, like the mtime update of an ordinary command."""
    homes: set[str] = set()
    for s in steps:
        if s.kind in _SELF_STEPS:
            homes.add(s.path)
        elif s.kind not in _UNLOCKED and s.path != paths.ROOT:
            homes.add(paths.parent(s.path))
    return frozenset(homes)


def reach_dirs(steps: Iterable[Step]) -> frozenset[str]:
    """Every directory whose hash range holds a record ``steps`` may read, lock or change:
    each step's path and its parent (a ``touch`` of a directory changes its entry, which
    lives in the range of *its* parent, the grandparent of the entry that was renamed).
    A superset, on purpose: while a part is undecided none of these ranges may start to
    move, and none that is moving may be locked by a new part."""
    reach: set[str] = set()
    for s in steps:
        reach.add(s.path)
        if s.path != paths.ROOT:
            reach.add(paths.parent(s.path))
    return frozenset(reach)


# -- records --------------------------------------------------------------------------------------
@dataclass
class TxnRecord:
    """One transaction as a shard keeps it. ``role``: "coordinator" or "participant"."""

    txn_id: int
    role: str
    state: str
    """coordinator: pending, committed, aborted; participant: prepared, committed, aborted."""
    coordinator: str
    part: str
    """This shard's own steps (encoded)."""
    started_ms: int
    participants: dict[str, str] = field(default_factory=dict)
    """coordinator only: shard id -> its part (encoded)."""
    acked: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None
    """Why it aborted (an error's details), for the client."""
    result: Any = None
    """What the client is told when it commits."""
    kind: str = ""
    """What the transaction does ("rename", ...), for people."""
    session: int = 0
    seq: int = 0
    """coordinator: the client request it carries out (its reply is that request's, in the
    session's reply cache, unless it aborts for a reason worth retrying)."""

    @property
    def decided(self) -> bool:
        return self.state in ("committed", "aborted")

    @property
    def unacked(self) -> list[str]:
        return sorted(set(self.participants) - set(self.acked))

    def encode(self) -> bytes:
        body = {
            "id": self.txn_id,
            "role": self.role,
            "state": self.state,
            "coord": self.coordinator,
            "part": self.part,
            "t0": self.started_ms,
            "parts": self.participants,
            "acked": self.acked,
            "error": self.error,
            "result": self.result,
            "kind": self.kind,
            "sid": self.session,
            "seq": self.seq,
        }
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> TxnRecord:
        b = json.loads(raw)
        return cls(
            int(b["id"]),
            str(b["role"]),
            str(b["state"]),
            str(b["coord"]),
            str(b["part"]),
            int(b["t0"]),
            dict(b["parts"]),
            list(b["acked"]),
            b["error"],
            b["result"],
            str(b["kind"]),
            int(b.get("sid", 0)),
            int(b.get("seq", 0)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "txn_id": self.txn_id,
            "role": self.role,
            "state": self.state,
            "coordinator": self.coordinator,
            "participants": sorted(self.participants),
            "acked": sorted(self.acked),
            "error": self.error,
            "result": self.result,
            "kind": self.kind,
            "started_ms": self.started_ms,
        }


def txn_key(txn_id: int) -> bytes:
    return TXN + _U64.pack(txn_id)


def load(kv: Any, txn_id: int) -> TxnRecord | None:
    raw = kv.get(txn_key(txn_id))
    return None if raw is None else TxnRecord.decode(raw)


def save(txn: Txn, record: TxnRecord) -> None:
    txn.put(txn_key(record.txn_id), record.encode())


def set_open(txn: Txn, txn_id: int, is_open: bool) -> None:
    """Mark a record as needing work here (coordinator: undecided or unacknowledged;
    participant: prepared): what recovery looks at, without reading every kept record."""
    if is_open:
        txn.put(OPEN + _U64.pack(txn_id), b"")
    else:
        txn.delete(OPEN + _U64.pack(txn_id))


def count_open(kv: Any, limit: int) -> int:
    """How many records are open here, counting no further than ``limit``."""
    held = 0
    for _ in kv.scan(OPEN, prefix_end(OPEN)):
        held += 1
        if held >= limit:
            break
    return held


def open_records(kv: Any) -> list[TxnRecord]:
    out = []
    for key, _ in kv.scan(OPEN, prefix_end(OPEN)):
        record = load(kv, _U64.unpack_from(key, 1)[0])
        if record is not None:
            out.append(record)
    return out


def records(kv: Any) -> list[TxnRecord]:
    """Every transaction record this shard holds, by id."""
    return [TxnRecord.decode(raw) for _, raw in kv.scan(TXN, prefix_end(TXN))]


def schedule_forget(txn: Txn, record: TxnRecord, at_ms: int) -> None:
    txn.put(GC + _U64.pack(at_ms) + _U64.pack(record.txn_id), b"")


def due_for_forgetting(txn: Txn, floor: int, now: int) -> list[tuple[bytes, int]]:
    """Retention-index keys due by ``now`` (scanned from ``floor``) with their txn ids."""
    start, end = GC + _U64.pack(max(floor, 0)), GC + _U64.pack(now)
    return [(key, _U64.unpack_from(key, 1 + 8)[0]) for key, _ in list(txn.scan(start, end))]


# -- locks ----------------------------------------------------------------------------------------
def _lock_key(path: str) -> bytes:
    return LOCK + path.encode("utf-8")


def _read_lock(kv: Any, path: str) -> tuple[int, list[int]]:
    raw = kv.get(_lock_key(path))
    if raw is None:
        return 0, []
    body = json.loads(raw)
    return int(body["x"]), [int(t) for t in body["s"]]


def _write_lock(txn: Txn, path: str, exclusive: int, shared: list[int]) -> None:
    if not exclusive and not shared:
        txn.delete(_lock_key(path))
    else:
        body = {"x": exclusive, "s": sorted(shared)}
        txn.put(_lock_key(path), json.dumps(body, separators=(",", ":")).encode())


def lock_modes(steps: Iterable[Step]) -> dict[str, bool]:
    """path -> exclusive? for every path the steps lock (exclusive wins over shared)."""
    modes: dict[str, bool] = {}
    for s in steps:
        if s.kind in _UNLOCKED:
            continue
        modes[s.path] = modes.get(s.path, False) or s.kind not in _SHARED
    return modes


def lock_conflict(kv: Any, steps: Iterable[Step], txn_id: int) -> Unavailable | None:
    """The error if another transaction holds a lock these steps need, else None."""
    for path, exclusive in lock_modes(steps).items():
        x, shared = _read_lock(kv, path)
        others = [t for t in shared if t != txn_id]
        if (x and x != txn_id) or (exclusive and others):
            return locked_error(path, x or others[0])
    return None


def lock(txn: Txn, steps: Iterable[Step], txn_id: int) -> None:
    for path, exclusive in lock_modes(steps).items():
        x, shared = _read_lock(txn, path)
        if exclusive:
            x = txn_id
        elif txn_id not in shared:
            shared.append(txn_id)
        _write_lock(txn, path, x, shared)


def unlock(txn: Txn, steps: Iterable[Step], txn_id: int) -> None:
    for path in lock_modes(steps):
        x, shared = _read_lock(txn, path)
        _write_lock(txn, path, 0 if x == txn_id else x, [t for t in shared if t != txn_id])


def locked_by(kv: Any, path: str, *, shared_too: bool = True) -> int:
    """The transaction locking ``path`` (0: none). ``shared_too=False``: only an exclusive
    lock counts (what a create in a directory must respect)."""
    x, shared = _read_lock(kv, path)
    if x:
        return x
    return shared[0] if shared_too and shared else 0


def locked_below(kv: Any, directory: str) -> int:
    """A transaction locking anything strictly below ``directory`` (0: none)."""
    start = LOCK + (b"/" if directory == paths.ROOT else directory.encode("utf-8") + b"/")
    for _, raw in kv.scan(start, prefix_end(start)):
        body = json.loads(raw)
        return int(body["x"]) or int(body["s"][0])
    return 0


def locked_error(path: str, txn_id: int) -> Unavailable:
    return Unavailable(
        "locked", message=f"{path} is locked by cross-shard transaction {txn_id}; retry"
    )
