"""The commands of the metadata state machines, their wire form, and their results.

A command is a small frozen dataclass; what goes into the Raft log is an ``Envelope``: the
command plus the proposer's clock (``now_ms``, the leader's wall clock in milliseconds, which is
the ONLY source of time inside ``apply``) and optionally the client session ``(session_id,
seq)`` that makes it exactly-once. The encoding is compact JSON, versioned::

    {"a": {<the command's fields>}, "now": 1700000000000, "op": "create", "seq": 7,
     "sid": 42, "v": 1, "who": ["alice", ["staff"]]}

(``who``, the caller, only when the proposer names one: ``Envelope.caller``.)

JSON was chosen over a binary layout because commands are small and rare next to the data they
describe, and a readable log is worth more when debugging a replica than the bytes saved; keys
are sorted so one command always encodes to the same bytes.

Decoding (``decode_envelope``) checks everything: the version, the op, each field's type (from
the dataclass annotations), unknown or missing fields, and then the command's own ``validate()``
(ranges, path syntax). Any problem is an ``InvalidArgument``/``InvalidPath``, which the state
machine turns into an error result without touching its state. Clients can call
``validate()`` before proposing to fail fast; the state machine validates anyway, since the log
may carry anything a buggy or hostile proposer wrote.

``Result`` is what ``apply`` returns: a JSON-safe ``value`` or an error (as
``KeelError.to_details()``), encodable so that session reply caches can store it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import types
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

from keelfs.errors import InvalidArgument, InvalidPath, KeelError
from keelfs.meta import acls, jsonbytes, paths
from keelfs.meta.frozen import fast_init
from keelfs.meta.principals import (
    DEFAULT_GROUP,
    DEFAULT_OWNER,
    SUPERUSER,
    Caller,
    Guard,
    check_principal,
)
from keelfs.meta.records import MAX_INLINE_BYTES, is_version

__all__ = [
    "CONFIG_COMMANDS",
    "SERVER_ADMIN_STATES",
    "SESSION_COMMANDS",
    "SHARD_COMMANDS",
    "AddBlock",
    "AddBlockKey",
    "AclChange",
    "AddShard",
    "Append",
    "BeginMove",
    "CloseSession",
    "Command",
    "CompleteFile",
    "CompleteInline",
    "Concat",
    "Create",
    "CreateInline",
    "Delete",
    "DequeueBlockDeletes",
    "Envelope",
    "FinishMove",
    "IssueTxIds",
    "KeepAlive",
    "Mkdir",
    "MkdirSelf",
    "ModifyAclEntries",
    "MoveDrop",
    "MoveTreeAbort",
    "MoveTreeDrop",
    "MoveTreeFence",
    "MoveTreeStage",
    "MoveFreeze",
    "MoveIngest",
    "MoveSettle",
    "QuotaReport",
    "RegisterChunkServer",
    "RegisterMaster",
    "RegisterSession",
    "RemoveAcl",
    "RemoveAclEntries",
    "RemoveDefaultAcl",
    "RemoveShard",
    "Rename",
    "RecoverLease",
    "RenewLease",
    "Result",
    "SealRing",
    "SetAcl",
    "SetOwner",
    "SetPermission",
    "SetQuota",
    "SetReplication",
    "SetServerAdminState",
    "SetShardMembers",
    "SetTimes",
    "SetTraverseGuard",
    "SwitchMove",
    "Tick",
    "Truncate",
    "TxnAcked",
    "TxnBegin",
    "TxnDecide",
    "TxnFinish",
    "TxnPrepare",
    "UnregisterChunkServer",
    "UpdateBlock",
    "decode_command",
    "decode_envelope",
]

ENCODING_VERSION = 1
MAX_COMMAND_BYTES = 1 << 20
MAX_INT = 2**63 - 1
MAX_SESSION_ID = 2**128 - 1
"""Session ids are 128 random bits (``keelfs.meta.sessions``)."""
MAX_REPLICATION = 512
MIN_BLOCK_SIZE = 64 * 1024
MAX_BLOCK_SIZE = 4 * 1024**3
BLOCK_SIZE_MULTIPLE = 64 * 1024
"""Block sizes are multiples of the 64 KiB checksum chunk (DESIGN §2.9)."""
DEFAULT_BLOCK_SIZE = 64 * 1024**2
DEFAULT_REPLICATION = 3
MAX_BATCH_IDS = 10_000
_ADDRESS = re.compile(r"^[A-Za-z0-9_.:\[\]%-]{1,255}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


# -- argument checks (shared by the commands and the state machines) -------------------------
def check_path(value: str, argument: str = "path", *, read: bool = False) -> str:
    """``value`` normalised; unless ``read``, refused under a snapshot (a change's path)."""
    try:
        path = paths.normalize(value)
    except KeelError as e:
        e.details["argument"] = argument
        raise
    if not read and paths.snapshot_path(path) is not None:
        raise InvalidPath(
            path,
            f"'{paths.SNAPSHOT_DIR}' is reserved: snapshots are read-only, and no entry may "
            f"be named {paths.SNAPSHOT_DIR}",
        )
    return path


def check_range(value: int, lo: int, hi: int, argument: str) -> int:
    if not lo <= value <= hi:
        raise InvalidArgument(f"{argument} must be in {lo}..{hi}, not {value}", argument)
    return value


def check_mode(mode: int) -> int:
    if not 0 <= mode <= 0o7777:
        raise InvalidArgument(f"mode must be in 0..0o7777, not {mode:#o}", "mode")
    return mode


def check_block_size(block_size: int) -> int:
    if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE or block_size % BLOCK_SIZE_MULTIPLE:
        raise InvalidArgument(
            f"block_size must be a multiple of {BLOCK_SIZE_MULTIPLE} in "
            f"{MIN_BLOCK_SIZE}..{MAX_BLOCK_SIZE}, not {block_size}",
            "block_size",
        )
    return block_size


def check_id(value: str, argument: str) -> str:
    """A shard or chunk-server id: 1-64 of ``[A-Za-z0-9._-]``, starting alphanumeric."""
    if not _ID.match(value):
        raise InvalidArgument(f"{argument} {value!r} is not a valid id", argument)
    return value


def check_address(value: str, argument: str = "address") -> str:
    """``host:port`` (or any 1-255 characters of host-name, IPv6 and port syntax)."""
    if not _ADDRESS.match(value):
        raise InvalidArgument(f"{argument} {value!r} is not a valid address", argument)
    return value


def check_node_ids(members: tuple[int, ...], argument: str = "members") -> tuple[int, ...]:
    if not members:
        raise InvalidArgument("a shard needs at least one member", argument)
    if len(set(members)) != len(members):
        raise InvalidArgument("duplicate node id in members", argument)
    for node_id in members:
        check_range(node_id, 1, MAX_INT, argument)
    return members


# -- commands -----------------------------------------------------------------------------------
def _fingerprint(body: str) -> str:
    return hashlib.blake2b(body.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
_DEFAULTS: dict[tuple[type, str], Any] = {}
"""The default of each ``added_fields`` field, by class (filled at a class's first ``args``)."""


@dataclass(frozen=True, slots=True)
class Command:
    """Base of every command. ``op`` names it on the wire; ``needs_session``: it must carry a
    client session (it acts for that session, e.g. as the holder of a writer lease)."""

    op: ClassVar[str] = ""
    needs_session: ClassVar[bool] = False
    servers_only: ClassVar[bool] = False
    """Proposed by masters for themselves (transactions, moves, the block layer, the config
    group), never for a client: refused for a caller that is not a superuser."""
    chosen_by_proposer: ClassVar[tuple[str, ...]] = ()
    """Fields the proposer fills in afresh for each attempt of one client request (a new
    block id, the next generation stamp), not from the request: left out of ``digest()``,
    so that a retry of the request (same session and seq) after a lost reply is recognised
    as the same command and gets the first attempt's reply."""

    added_fields: ClassVar[frozenset[str]] = frozenset()
    """Fields added after a release: left out of ``args()`` (so of the log entry and of
    ``digest()``) while they hold their default. A command that does not use what such a
    field adds is encoded byte for byte as the release before it encoded it, which that
    release's replicas (during a rolling upgrade) decode and apply the same way, and a
    retry's fingerprint does not depend on the version of the master that proposed it."""

    def validate(self) -> None:
        """Raise ``InvalidArgument``/``InvalidPath`` if an argument is out of its domain."""

    def args(self) -> dict[str, Any]:
        names = _FIELD_NAMES.get(type(self))
        if names is None:
            names = _FIELD_NAMES[type(self)] = tuple(f.name for f in fields(self))
            for f in fields(self):
                if f.name in self.added_fields:
                    _DEFAULTS[(type(self), f.name)] = f.default
        out = {name: getattr(self, name) for name in names}
        for name in self.added_fields:
            if out[name] == _DEFAULTS[(type(self), name)]:
                del out[name]
        return out

    def digest(self) -> str:
        """A short fingerprint of the op and its arguments: a session's reply cache keeps it
        to tell a genuine retry from a different command that reuses a ``seq`` by mistake.
        (``_fingerprint(self.digest_body())``, hashing the encoded body as it is: ASCII.)"""
        return hashlib.blake2b(self._digest_bytes(), digest_size=8).hexdigest()

    def digest_body(self) -> str:
        return self._digest_bytes().decode("ascii")

    def _digest_bytes(self) -> bytes:
        args = self.args()
        for name in self.chosen_by_proposer:
            del args[name]
        return jsonbytes.dumps_sorted([self.op, args])


# session management and time (both state machines)
@dataclass(frozen=True, slots=True)
class RegisterSession(Command):
    """Open a client session owned by the envelope's caller. ``session_id``: its id, 128
    random bits in hex drawn by the proposer (``fresh``; ``keelfs.meta.sessions``); empty in
    entries from before random ids, whose id is the entry's log index. Not itself
    exactly-once: a retried registration opens a second session, and the unused one expires."""

    op: ClassVar[str] = "register_session"
    session_id: str = ""

    @classmethod
    def fresh(cls) -> RegisterSession:
        return cls(f"{secrets.randbits(128) or 1:032x}")

    def validate(self) -> None:
        if self.session_id and (
            len(self.session_id) != 32
            or not all(c in "0123456789abcdef" for c in self.session_id)
            or int(self.session_id, 16) == 0
        ):
            raise InvalidArgument("session_id must be 32 lower-case hex digits", "session_id")


@dataclass(frozen=True, slots=True)
class KeepAlive(Command):
    """Keep the envelope's session alive (any command carrying it does the same)."""

    op: ClassVar[str] = "keep_alive"
    needs_session: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class CloseSession(Command):
    """End the envelope's session; its writer leases are released. Its reply is not kept (the
    session is gone), so a retry of it gets ``SessionExpired``, which for a close is success."""

    op: ClassVar[str] = "close_session"
    needs_session: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Tick(Command):
    """Carries only the leader's clock: lets sessions and leases expire when nothing else is
    proposed."""

    op: ClassVar[str] = "tick"


# namespace (data shards)
@dataclass(frozen=True, slots=True)
class Mkdir(Command):
    """Create directory ``path``: its entry (in its parent's directory, whose self-record must
    be here) and, with ``self_record``, its self-record too (the proposer sets it when the
    directory itself also maps to this shard). With ``parents``, missing ancestors are
    created as well (each with both records: all must be local), and an existing directory at
    ``path`` is success."""

    op: ClassVar[str] = "mkdir"
    path: str
    mode: int = 0o755
    owner: str = DEFAULT_OWNER
    group: str = DEFAULT_GROUP
    parents: bool = False
    self_record: bool = True

    def validate(self) -> None:
        check_path(self.path)
        check_mode(self.mode)
        check_principal(self.owner, "owner")
        check_principal(self.group, "group")


@dataclass(frozen=True, slots=True)
class MkdirSelf(Command):
    """Create only the self-record of directory ``path`` on this shard: for the root when a
    namespace is formatted, and for the shard that owns a directory created by another shard
    (cross-shard mkdir)."""

    op: ClassVar[str] = "mkdir_self"
    servers_only: ClassVar[bool] = True
    path: str
    mode: int = 0o755
    owner: str = DEFAULT_OWNER
    group: str = DEFAULT_GROUP
    guards: tuple[str, ...] = ()
    """The directory's traverse guards (``Guard.to_text``), from its parent's self-record."""

    def validate(self) -> None:
        check_path(self.path)
        check_mode(self.mode)
        check_principal(self.owner, "owner")
        check_principal(self.group, "group")
        for text in self.guards:
            Guard.from_text(text)


@dataclass(frozen=True, slots=True)
class Create(Command):
    """Create file ``path`` under construction, with the writer lease held by the envelope's
    session. Exclusive unless ``overwrite``; never over a file another live session writes."""

    op: ClassVar[str] = "create"
    needs_session: ClassVar[bool] = True
    path: str
    mode: int = 0o644
    owner: str = DEFAULT_OWNER
    group: str = DEFAULT_GROUP
    replication: int = DEFAULT_REPLICATION
    block_size: int = DEFAULT_BLOCK_SIZE
    overwrite: bool = False

    def validate(self) -> None:
        if check_path(self.path) == paths.ROOT:
            raise InvalidArgument("cannot create a file at /", "path")
        check_mode(self.mode)
        check_principal(self.owner, "owner")
        check_principal(self.group, "group")
        check_range(self.replication, 1, MAX_REPLICATION, "replication")
        check_block_size(self.block_size)


@dataclass(frozen=True, slots=True)
class CreateInline(Command):
    """Create file ``path`` complete, holding ``data`` (base64, at most
    ``records.MAX_INLINE_BYTES`` bytes) in its record: ``Create``, the data and ``Complete``
    in one entry, for a small file written whole (``keelfs.meta.records`` on inline files).
    The same rules as ``Create`` (rights, ``overwrite``, never over a file another live
    session writes); no lease is left behind. It needs a session like ``Create``: its
    exactly-once reply is what tells a retry after a lost reply from an existing file."""

    op: ClassVar[str] = "create_inline"
    needs_session: ClassVar[bool] = True
    path: str
    data: str = ""
    mode: int = 0o644
    owner: str = DEFAULT_OWNER
    group: str = DEFAULT_GROUP
    replication: int = DEFAULT_REPLICATION
    block_size: int = DEFAULT_BLOCK_SIZE
    overwrite: bool = False

    @classmethod
    def of(cls, path: str, content: bytes, **attributes: Any) -> CreateInline:
        return cls(path, _encoded_content(content), **attributes)

    @property
    def content(self) -> bytes:
        """The file's bytes (``validate`` checked that ``data`` decodes)."""
        return inline_content(self.data)

    def validate(self) -> None:
        Create(
            self.path, self.mode, self.owner, self.group, self.replication, self.block_size
        ).validate()
        _check_inline_data(self.data)


@dataclass(frozen=True, slots=True)
class AddBlock(Command):
    """Append block ``block_id`` (generation stamp ``gen_stamp``, length 0) to a file whose
    lease the session holds; ``previous_length`` is the final length of the block before it.
    Block ids are chosen by the proposer (allocation and placement are the block layer's):
    each attempt of an ``AllocateBlock`` takes a new one, so the id and the stamp are not
    part of the digest, and a retry gets the block the first attempt added."""

    op: ClassVar[str] = "add_block"
    needs_session: ClassVar[bool] = True
    chosen_by_proposer: ClassVar[tuple[str, ...]] = ("block_id", "gen_stamp")
    path: str
    block_id: int
    gen_stamp: int
    previous_length: int | None = None

    def validate(self) -> None:
        check_path(self.path)
        check_range(self.block_id, 1, MAX_INT, "block_id")
        check_range(self.gen_stamp, 0, MAX_INT, "gen_stamp")
        if self.previous_length is not None:
            check_range(self.previous_length, 0, MAX_BLOCK_SIZE, "previous_length")


@dataclass(frozen=True, slots=True)
class CompleteFile(Command):
    """Close a file the session writes: sets the last block's length, clears the
    under-construction flag and releases the lease."""

    op: ClassVar[str] = "complete"
    needs_session: ClassVar[bool] = True
    path: str
    last_length: int | None = None

    def validate(self) -> None:
        check_path(self.path)
        if self.last_length is not None:
            check_range(self.last_length, 0, MAX_BLOCK_SIZE, "last_length")


@dataclass(frozen=True, slots=True)
class CompleteInline(Command):
    """Close a file the session writes that has no block, with ``data`` (base64, at most
    ``records.MAX_INLINE_BYTES`` bytes) kept in its record: a writer opened with ``Create``
    that closed before writing past the inline limit (``keelfs.client.files``)."""

    op: ClassVar[str] = "complete_inline"
    needs_session: ClassVar[bool] = True
    path: str
    data: str = ""

    @classmethod
    def of(cls, path: str, content: bytes) -> CompleteInline:
        return cls(path, _encoded_content(content))

    @property
    def content(self) -> bytes:
        """The file's bytes (``validate`` checked that ``data`` decodes)."""
        return inline_content(self.data)

    def validate(self) -> None:
        check_path(self.path)
        _check_inline_data(self.data)


def _check_inline_data(data: str) -> None:
    """``data`` is base64 as ``base64.b64encode`` writes it, of at most the inline limit."""
    if len(data) > 4 * ((MAX_INLINE_BYTES + 2) // 3):
        raise InvalidArgument(f"inline data is at most {MAX_INLINE_BYTES} bytes", "data")
    content = _remembered(data)
    if content is None:
        try:
            content = base64.b64decode(data, validate=True)
        except (ValueError, binascii.Error):
            raise InvalidArgument("data is not base64", "data") from None
        if not _canonical_base64(data, content):
            raise InvalidArgument("data is not base64 as the encoder writes it", "data")
    if len(content) > MAX_INLINE_BYTES:
        raise InvalidArgument(f"inline data is at most {MAX_INLINE_BYTES} bytes", "data")
    _remember_content(data, content)


def _canonical_base64(text: str, content: bytes) -> bool:
    """``base64.b64encode(content) == text``, for a ``text`` that strict base64 decoding
    (alphabet only, padding right) turned into ``content``: then every 4-character group
    but the last encodes its 3 bytes one way only, and only the last one's unused bits or
    the length can differ, so only they are compared (a full re-encode of 64 KiB is not)."""
    if len(text) != 4 * ((len(content) + 2) // 3):
        return False
    if not content:
        return True
    tail = content[-(len(content) % 3 or 3) :]
    return binascii.b2a_base64(tail, newline=False).decode("ascii") == text[-4:]


_CONTENTS: dict[int, tuple[str, bytes]] = {}
_CONTENTS_MAX = 64
"""The bytes of the inline data texts encoded or validated last, by the text object's id
(the object kept alive by the entry and checked by identity, so an id reused by another
object misses). Every such text is base64 as the encoder writes it: ``of`` encoded it, or
``validate`` checked it. A replica validates an inline command's data and reads its content
in the same apply, and a leader makes the command from the request's bytes and validates it
before proposing; each base64 decode of 4 KiB costs about as much as the rest of the
create's apply."""


def _remember_content(text: str, content: bytes) -> None:
    if len(_CONTENTS) >= _CONTENTS_MAX:
        _CONTENTS.clear()
    _CONTENTS[id(text)] = (text, content)


def _remembered(text: str) -> bytes | None:
    known = _CONTENTS.get(id(text))
    return known[1] if known is not None and known[0] is text else None


def _encoded_content(content: bytes) -> str:
    text = base64.b64encode(content).decode("ascii")
    _remember_content(text, content)
    return text


def inline_content(text: str) -> bytes:
    """The bytes of the base64 ``text`` of a validated ``CreateInline``/``CompleteInline``
    (``ValueError`` if not base64; ``validate`` refuses any text but the encoder's)."""
    known = _remembered(text)
    return base64.b64decode(text, validate=True) if known is None else known


@dataclass(frozen=True, slots=True)
class UpdateBlock(Command):
    """Pipeline recovery: the last block ``block_id`` of a file the session writes gets a new
    generation stamp (replicas with an older one are stale from now on). The proposer sets
    ``gen_stamp`` to the current one + 1 at each attempt of a ``RecoverPipeline``, so it is not
    part of the digest: a retry after the first attempt applied gets that attempt's stamp."""

    op: ClassVar[str] = "update_block"
    needs_session: ClassVar[bool] = True
    chosen_by_proposer: ClassVar[tuple[str, ...]] = ("gen_stamp",)
    path: str
    block_id: int
    gen_stamp: int

    def validate(self) -> None:
        check_path(self.path)
        check_range(self.block_id, 1, MAX_INT, "block_id")
        check_range(self.gen_stamp, 1, MAX_INT, "gen_stamp")


@dataclass(frozen=True, slots=True)
class RecoverLease(Command):
    """Lease recovery (the leader, for a file under construction whose writer is gone): close
    it with its last block at ``last_length`` (settled from the replicas), or without that
    block (``drop_last``: no replica of it holds data)."""

    op: ClassVar[str] = "recover_lease"
    servers_only: ClassVar[bool] = True
    path: str
    last_length: int = 0
    drop_last: bool = False

    def validate(self) -> None:
        check_path(self.path)
        check_range(self.last_length, 0, MAX_BLOCK_SIZE, "last_length")


@dataclass(frozen=True, slots=True)
class RenewLease(Command):
    """Extend every writer lease the envelope's session holds."""

    op: ClassVar[str] = "renew_lease"
    needs_session: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Delete(Command):
    """Delete a file, an empty directory, or (``recursive``) a directory and everything under
    it that this shard holds. Deleted files' blocks are queued for deletion."""

    op: ClassVar[str] = "delete"
    path: str
    recursive: bool = False

    def validate(self) -> None:
        if check_path(self.path) == paths.ROOT:
            raise InvalidArgument("cannot delete /", "path")


@dataclass(frozen=True, slots=True)
class Rename(Command):
    """Move ``src`` to ``dst`` atomically within this shard (HDFS ``rename2``): refuses an
    existing ``dst`` unless ``overwrite``, and then only a file by a file or an empty
    directory by a directory. ``expect`` (with ``overwrite``): replace ``dst`` only if it is
    the file of that ``content_version`` (``NotFound`` if there is none, ``AlreadyExists``
    if it is another): a compare-and-replace in one command, S3's ``If-Match`` write."""

    op: ClassVar[str] = "rename"
    added_fields: ClassVar[frozenset[str]] = frozenset({"expect"})
    src: str
    dst: str
    overwrite: bool = False
    expect: str = ""

    def validate(self) -> None:
        if check_path(self.src, "src") == paths.ROOT:
            raise InvalidArgument("cannot rename /", "src")
        check_path(self.dst, "dst")
        if self.expect and (not self.overwrite or not is_version(self.expect)):
            raise InvalidArgument("expect is a content version, with overwrite", "expect")


@dataclass(frozen=True, slots=True)
class SetReplication(Command):
    op: ClassVar[str] = "set_replication"
    path: str
    replication: int

    def validate(self) -> None:
        check_path(self.path)
        check_range(self.replication, 1, MAX_REPLICATION, "replication")


@dataclass(frozen=True, slots=True)
class SetTimes(Command):
    """Set modification and/or access time (milliseconds since the epoch); ``None`` keeps."""

    op: ClassVar[str] = "set_times"
    path: str
    mtime: int | None = None
    atime: int | None = None

    def validate(self) -> None:
        check_path(self.path)
        if self.mtime is None and self.atime is None:
            raise InvalidArgument("set_times needs mtime or atime", "mtime")
        for name in ("mtime", "atime"):
            value = getattr(self, name)
            if value is not None:
                check_range(value, 0, MAX_INT, name)


@dataclass(frozen=True, slots=True)
class SetPermission(Command):
    op: ClassVar[str] = "set_permission"
    path: str
    mode: int

    def validate(self) -> None:
        check_path(self.path)
        check_mode(self.mode)


@dataclass(frozen=True, slots=True)
class SetOwner(Command):
    """Set owner and/or group; ``None`` keeps."""

    op: ClassVar[str] = "set_owner"
    path: str
    owner: str | None = None
    group: str | None = None

    def validate(self) -> None:
        check_path(self.path)
        if self.owner is None and self.group is None:
            raise InvalidArgument("set_owner needs owner or group", "owner")
        if self.owner is not None:
            check_principal(self.owner, "owner")
        if self.group is not None:
            check_principal(self.group, "group")


@dataclass(frozen=True, slots=True)
class SetTraverseGuard(Command):
    """Directory ``path`` now has ``owner``, ``group`` and ``mode``: its self-record here
    takes them, and every directory record below it here gets its traverse guard for
    ``path`` set (or dropped, when ``mode`` lets everyone through).

    A chmod or chown of a directory changes its records on the shard of its entry (its
    self-record too if it is there, and the guards of the directories below it there); the
    master sends this to every shard before it answers, also when no guard changes, since the
    directory's self-record elsewhere holds the bits its children are checked against. Until
    all have applied it a tightening is not in force everywhere; a loosening partly applied
    only refuses more, never lets more through.

    A shard answers "locked" while a transaction locks something below ``path`` there or a
    move of hash ranges is under way there: the master retries it. After every shard applied
    it, the master sends it to every shard once more: a transaction that began before the
    change may have written records with the old guards on a shard the first pass had
    already visited, and it has finished (or holds a lock there, "locked") by the second.
    Transactions that begin later are refused if they carry the old guards (``may`` steps
    with ``child_guards``). The master must not run two of one directory at once: the last
    one applied wins on each shard."""

    op: ClassVar[str] = "set_traverse_guard"
    servers_only: ClassVar[bool] = True
    added_fields: ClassVar[frozenset[str]] = frozenset({"acl"})
    path: str
    owner: str
    group: str
    mode: int
    acl: tuple[str, ...] = ()
    """The directory's ACL entries beyond the mode (``Inode.acl``, its default ones too: its
    self-record takes them, and its children inherit from it)."""

    def validate(self) -> None:
        check_path(self.path)
        check_principal(self.owner, "owner")
        check_principal(self.group, "group")
        check_mode(self.mode)
        try:
            acls.check_stored(True, self.mode, acls.parse_spec(self.acl))
        except ValueError as e:
            raise InvalidArgument(str(e), "acl") from None


@dataclass(frozen=True, slots=True)
class AclChange(Command):
    """A change of ``path``'s ACL (``keelfs.meta.acls``; HDFS's ``setAcl``,
    ``modifyAclEntries``, ``removeAclEntries``, ``removeDefaultAcl``, ``removeAcl``), by its
    owner or a superuser. ``entries``: the ACL spec, one entry each (``user:bob:r-x``;
    without a permission for ``RemoveAclEntries``). A directory whose guard changes is
    spread like a chmod (``SetTraverseGuard``)."""

    path: str
    entries: tuple[str, ...] = ()
    with_perm: ClassVar[bool] = True
    takes_entries: ClassVar[bool] = True

    def validate(self) -> None:
        check_path(self.path)
        if not self.takes_entries:
            if self.entries:
                raise InvalidArgument(f"{self.op} takes no ACL entries", "entries")
            return
        if not self.entries:
            raise InvalidArgument(f"{self.op} needs ACL entries", "entries")
        if len(self.entries) > acls.MAX_ENTRIES * 2:
            raise InvalidArgument(
                f"an ACL spec has at most {acls.MAX_ENTRIES * 2} entries", "entries"
            )
        self.spec()

    def spec(self) -> tuple[acls.AclEntry, ...]:
        return acls.parse_spec(self.entries, with_perm=self.with_perm)


@dataclass(frozen=True, slots=True)
class SetAcl(AclChange):
    """Replace the ACL's scopes (access, default) that ``entries`` names; the others stay."""

    op: ClassVar[str] = "set_acl"


@dataclass(frozen=True, slots=True)
class ModifyAclEntries(AclChange):
    """Add ``entries``, or change the permissions of those the ACL has."""

    op: ClassVar[str] = "modify_acl_entries"


@dataclass(frozen=True, slots=True)
class RemoveAclEntries(AclChange):
    """Remove the entries ``entries`` names (scope, kind and name; no permission)."""

    op: ClassVar[str] = "remove_acl_entries"
    with_perm: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class RemoveDefaultAcl(AclChange):
    """Remove every default entry."""

    op: ClassVar[str] = "remove_default_acl"
    takes_entries: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class RemoveAcl(AclChange):
    """Remove every entry beyond the mode (the group bits become ``group::`` again)."""

    op: ClassVar[str] = "remove_acl"
    takes_entries: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class Append(Command):
    """Reopen closed file ``path`` for appending (HDFS ``append`` with ``NEW_BLOCK``): it is
    under construction again with the writer lease held by the envelope's session, as after
    ``Create``; its blocks stay as they are, and what is appended goes into new blocks
    (``AddBlock``). The caller needs ``w`` on the file (and ``r`` too for an inline file:
    the writer rewrites its bytes). ``LeaseConflict`` while anyone writes it or it awaits
    lease recovery."""

    op: ClassVar[str] = "append"
    needs_session: ClassVar[bool] = True
    path: str

    def validate(self) -> None:
        if check_path(self.path) == paths.ROOT:
            raise InvalidArgument("cannot append to /", "path")


@dataclass(frozen=True, slots=True)
class Truncate(Command):
    """Cut closed file ``path`` to ``length`` bytes (at most its length; HDFS refuses to grow
    a file). At a block boundary (or for an inline file) it is done at once: the blocks past
    it are queued for deletion. Inside a block the file is put under construction with the
    writer lease held by the envelope's session and ``Inode.truncating`` set; the writer
    copies the cut block's kept bytes into a new block and ``CompleteFile`` splices it in
    place of the cut block and those after it (``keelfs.meta.namespace``)."""

    op: ClassVar[str] = "truncate"
    needs_session: ClassVar[bool] = True
    path: str
    length: int

    def validate(self) -> None:
        if check_path(self.path) == paths.ROOT:
            raise InvalidArgument("cannot truncate /", "path")
        check_range(self.length, 0, MAX_INT, "length")


MAX_CONCAT_SOURCES = 1000


@dataclass(frozen=True, slots=True)
class Concat(Command):
    """Move the blocks of ``sources`` (in order) to the end of ``target`` and remove the
    sources, in one entry (HDFS ``concat``): every file here, closed, with the target's block
    size; the caller needs ``w`` on the target, ``r`` on each source and ``w`` on each
    source's directory (as for a delete)."""

    op: ClassVar[str] = "concat"
    target: str
    sources: tuple[str, ...]

    def validate(self) -> None:
        target = check_path(self.target, "target")
        check_range(len(self.sources), 1, MAX_CONCAT_SOURCES, "sources")
        seen: set[str] = set()
        for source in self.sources:
            normal = check_path(source, "sources")
            if normal == target:
                raise InvalidArgument(f"{normal} is the target of the concat", "sources")
            if normal in seen:
                raise InvalidArgument(f"{normal} is named twice in sources", "sources")
            seen.add(normal)


@dataclass(frozen=True, slots=True)
class DequeueBlockDeletes(Command):
    """Forget queued block deletions that chunk servers have carried out."""

    op: ClassVar[str] = "dequeue_block_deletes"
    servers_only: ClassVar[bool] = True
    block_ids: tuple[int, ...]

    def validate(self) -> None:
        check_range(len(self.block_ids), 1, MAX_BATCH_IDS, "block_ids")
        for block_id in self.block_ids:
            check_range(block_id, 1, MAX_INT, "block_ids")


MAX_QUOTA_ROOTS_PER_REPORT = 10_000


def _check_reported_limits(text: str) -> None:
    try:
        body = json.loads(text)
    except ValueError:
        raise InvalidArgument("limits is not JSON", "limits") from None
    if not isinstance(body, dict) or len(body) > MAX_QUOTA_ROOTS_PER_REPORT:
        raise InvalidArgument("limits must be an object of at most 10,000 paths", "limits")
    for path, value in body.items():
        check_path(path, "limits")
        ok = isinstance(value, list) and len(value) == 3
        if ok:
            names, space, version = value
            ok = (
                (names is None or (type(names) is int and 1 <= names <= MAX_INT))
                and (space is None or (type(space) is int and 0 <= space <= MAX_INT))
                and type(version) is int
                and 0 <= version <= MAX_INT
            )
        if not ok:
            raise InvalidArgument(f"limits of {path} must be [names, space, version]", "limits")


@dataclass(frozen=True, slots=True)
class SetQuota(Command):
    """Set the name and space quota of directory ``path`` on this shard (both None: clear
    it). Every shard holds every quota's limits (``keelfs.meta.quotas``); the master that
    serves a superuser's request proposes this on each. ``version`` (the master's clock then,
    the same on every shard) orders sets: an older one arriving late changes nothing."""

    op: ClassVar[str] = "set_quota"
    servers_only: ClassVar[bool] = True
    path: str
    names: int | None = None
    space: int | None = None
    version: int = 0

    def validate(self) -> None:
        if check_path(self.path) == paths.ROOT:
            raise InvalidArgument("a quota on / is not supported: set it on a directory", "path")
        if self.names is not None:
            check_range(self.names, 1, MAX_INT, "names")
        if self.space is not None:
            check_range(self.space, 0, MAX_INT, "space")
        check_range(self.version, 0, MAX_INT, "version")


@dataclass(frozen=True, slots=True)
class QuotaReport(Command):
    """What shard ``shard`` holds under each quota directory, ``usage`` a JSON object
    ``{path: [names, space]}``: kept for this shard's quota checks (``keelfs.meta.quotas``)."""

    op: ClassVar[str] = "quota_report"
    servers_only: ClassVar[bool] = True
    shard: str
    usage: str
    limits: str = "{}"
    """The reporter's quotas, cleared ones included: ``{path: [names, space, version]}``
    (a shard added after a quota was set learns it so; the newest version wins)."""

    def validate(self) -> None:
        check_id(self.shard, "shard")
        _check_reported_limits(self.limits)
        try:
            body = json.loads(self.usage)
        except ValueError:
            raise InvalidArgument("usage is not JSON", "usage") from None
        if not isinstance(body, dict) or len(body) > MAX_QUOTA_ROOTS_PER_REPORT:
            raise InvalidArgument("usage must be an object of at most 10,000 paths", "usage")
        for path, counts in body.items():
            check_path(path, "usage")
            ok = isinstance(counts, list) and len(counts) == 2
            if not ok or not all(type(c) is int and 0 <= c <= MAX_INT for c in counts):
                raise InvalidArgument(f"usage of {path} must be [names, space]", "usage")


MAX_SNAPSHOT_NAME_BYTES = 255


def _check_snapshot_name(name: str) -> None:
    paths.validate_name(name)
    if name == paths.SNAPSHOT_DIR:
        raise InvalidArgument(f"a snapshot may not be named {paths.SNAPSHOT_DIR}", "name")


@dataclass(frozen=True, slots=True)
class SnapshotAllow(Command):
    """Make directory ``path`` snapshottable (``allow``) or not any more, on this shard
    (every shard holds the list: ``keelfs.meta.snapshots``)."""

    op: ClassVar[str] = "snapshot_allow"
    servers_only: ClassVar[bool] = True
    path: str
    allow: bool = True

    def validate(self) -> None:
        check_path(self.path)


@dataclass(frozen=True, slots=True)
class SnapshotTake(Command):
    """This shard's part of snapshot ``name`` of ``path``: copy its records under ``path``
    as they are now (``created``: the master's clock, the same on every shard)."""

    op: ClassVar[str] = "snapshot_take"
    servers_only: ClassVar[bool] = True
    path: str
    name: str
    created: int = 0

    def validate(self) -> None:
        check_path(self.path)
        _check_snapshot_name(self.name)
        check_range(self.created, 0, MAX_INT, "created")


@dataclass(frozen=True, slots=True)
class SnapshotDrop(Command):
    """Drop this shard's part of snapshot ``name`` of ``path`` (absent: nothing to do)."""

    op: ClassVar[str] = "snapshot_drop"
    servers_only: ClassVar[bool] = True
    path: str
    name: str

    def validate(self) -> None:
        check_path(self.path)
        _check_snapshot_name(self.name)


@dataclass(frozen=True, slots=True)
class SnapshotRename(Command):
    """Rename this shard's part of snapshot ``name`` of ``path`` to ``new_name`` (a part
    already renamed, or absent: nothing to do)."""

    op: ClassVar[str] = "snapshot_rename"
    servers_only: ClassVar[bool] = True
    path: str
    name: str
    new_name: str

    def validate(self) -> None:
        check_path(self.path)
        _check_snapshot_name(self.name)
        _check_snapshot_name(self.new_name)
        if self.name == self.new_name:
            raise InvalidArgument("a snapshot cannot be renamed to its own name", "new_name")


# config group
@dataclass(frozen=True, slots=True)
class RegisterMaster(Command):
    """Record (or update) master ``node_id``'s client address."""

    op: ClassVar[str] = "register_master"
    servers_only: ClassVar[bool] = True
    node_id: int
    address: str

    def validate(self) -> None:
        check_range(self.node_id, 1, MAX_INT, "node_id")
        check_address(self.address)


@dataclass(frozen=True, slots=True)
class AddShard(Command):
    """Add shard ``shard_id`` served by registered masters ``members`` to the map and ring."""

    op: ClassVar[str] = "add_shard"
    servers_only: ClassVar[bool] = True
    shard_id: str
    members: tuple[int, ...]

    def validate(self) -> None:
        check_id(self.shard_id, "shard_id")
        check_node_ids(self.members)


@dataclass(frozen=True, slots=True)
class RemoveShard(Command):
    """Remove a shard from the map and ring (moving its data is the resharding layer's)."""

    op: ClassVar[str] = "remove_shard"
    servers_only: ClassVar[bool] = True
    shard_id: str

    def validate(self) -> None:
        check_id(self.shard_id, "shard_id")


@dataclass(frozen=True, slots=True)
class SetShardMembers(Command):
    """Replace the member list of a shard (after a Raft membership change)."""

    op: ClassVar[str] = "set_shard_members"
    servers_only: ClassVar[bool] = True
    shard_id: str
    members: tuple[int, ...]

    def validate(self) -> None:
        check_id(self.shard_id, "shard_id")
        check_node_ids(self.members)


@dataclass(frozen=True, slots=True)
class RegisterChunkServer(Command):
    op: ClassVar[str] = "register_chunk_server"
    servers_only: ClassVar[bool] = True
    server_id: str
    address: str
    rack: str = "/default-rack"

    def validate(self) -> None:
        check_id(self.server_id, "server_id")
        check_address(self.address)
        if not self.rack.startswith("/") or not self.rack.isprintable() or len(self.rack) > 255:
            raise InvalidArgument(f"rack {self.rack!r} is not a valid rack path", "rack")


@dataclass(frozen=True, slots=True)
class UnregisterChunkServer(Command):
    op: ClassVar[str] = "unregister_chunk_server"
    servers_only: ClassVar[bool] = True
    server_id: str

    def validate(self) -> None:
        check_id(self.server_id, "server_id")


SERVER_ADMIN_STATES = ("in_service", "decommissioning", "maintenance")
"""A chunk server's administrative states (``keelfs.master.blocks``): ``in_service`` is the
default (no record kept)."""


@dataclass(frozen=True, slots=True)
class SetServerAdminState(Command):
    """Put registered chunk server ``server_id`` in ``state`` (``keelfs admin decommission``,
    ``recommission``, ``maintenance``); ``until_ms`` (wall-clock ms) ends a maintenance."""

    op: ClassVar[str] = "set_server_admin_state"
    servers_only: ClassVar[bool] = True
    server_id: str
    state: str
    until_ms: int = 0

    def validate(self) -> None:
        check_id(self.server_id, "server_id")
        if self.state not in SERVER_ADMIN_STATES:
            raise InvalidArgument(
                f"state {self.state!r} is not one of {', '.join(SERVER_ADMIN_STATES)}", "state"
            )
        if not 0 <= self.until_ms <= MAX_INT:
            raise InvalidArgument("until_ms out of range", "until_ms")
        if (self.state == "maintenance") != (self.until_ms > 0):
            raise InvalidArgument("a maintenance, and only a maintenance, has an end", "until_ms")


@dataclass(frozen=True, slots=True)
class IssueTxIds(Command):
    """Reserve ``count`` consecutive cluster-wide transaction ids."""

    op: ClassVar[str] = "issue_tx_ids"
    servers_only: ClassVar[bool] = True
    count: int = 1

    def validate(self) -> None:
        check_range(self.count, 1, MAX_BATCH_IDS, "count")


@dataclass(frozen=True, slots=True)
class AddBlockKey(Command):
    """A new block-token key (``keelfs.meta.shardmap.BlockKey``): ``secret`` (hex, 32 random
    bytes chosen by the proposing leader) signs from ``active_ms`` and is accepted until
    ``expires_ms`` (wall-clock ms)."""

    op: ClassVar[str] = "add_block_key"
    secret: str
    active_ms: int
    expires_ms: int

    def validate(self) -> None:
        try:
            raw = bytes.fromhex(self.secret)
        except ValueError:
            raise InvalidArgument("a block key's secret is hex", "secret") from None
        if not 16 <= len(raw) <= 64:
            raise InvalidArgument("a block key's secret is 16..64 bytes", "secret")
        check_range(self.active_ms, 0, MAX_INT, "active_ms")
        check_range(self.expires_ms, self.active_ms, MAX_INT, "expires_ms")


@dataclass(frozen=True, slots=True)
class SealRing(Command):
    """The namespace exists: from now on shards join or leave the ring only by moving their
    directories (``AddShard``/``RemoveShard`` start a resharding plan)."""

    op: ClassVar[str] = "seal_ring"
    servers_only: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class BeginMove(Command):
    """Resharding: move ``index`` of the plan is attempted as transaction ``txn_id`` (any
    earlier attempt of it is aborted)."""

    op: ClassVar[str] = "begin_move"
    servers_only: ClassVar[bool] = True
    index: int
    txn_id: int

    def validate(self) -> None:
        check_range(self.index, 0, MAX_INT, "index")
        check_range(self.txn_id, 1, MAX_INT, "txn_id")


@dataclass(frozen=True, slots=True)
class SwitchMove(Command):
    """Resharding's decision: move ``index`` (attempt ``txn_id``) has copied everything; its
    ranges now belong to the target (a new ShardMap version)."""

    op: ClassVar[str] = "switch_move"
    servers_only: ClassVar[bool] = True
    index: int
    txn_id: int

    def validate(self) -> None:
        check_range(self.index, 0, MAX_INT, "index")
        check_range(self.txn_id, 1, MAX_INT, "txn_id")


@dataclass(frozen=True, slots=True)
class FinishMove(Command):
    """Both shards applied move ``index``'s switch and the source dropped its copies; after
    the last move the new ring replaces the old one."""

    op: ClassVar[str] = "finish_move"
    servers_only: ClassVar[bool] = True
    index: int
    txn_id: int

    def validate(self) -> None:
        check_range(self.index, 0, MAX_INT, "index")
        check_range(self.txn_id, 1, MAX_INT, "txn_id")


# resharding, in the data shards (keelfs.meta.ranges explains the range states)
def _check_ranges(flat: tuple[str, ...]) -> None:
    from keelfs.meta.ranges import pairs

    pairs(flat)


@dataclass(frozen=True, slots=True)
class MoveFreeze(Command):
    """Source side of move ``txn_id``: ``ranges`` ("first:last" hashes) stop changing here
    while they are copied to ``peer``."""

    op: ClassVar[str] = "move_freeze"
    servers_only: ClassVar[bool] = True
    txn_id: int
    ranges: tuple[str, ...]
    peer: str

    def validate(self) -> None:
        check_range(self.txn_id, 1, MAX_INT, "txn_id")
        _check_ranges(self.ranges)
        check_id(self.peer, "peer")


@dataclass(frozen=True, slots=True)
class MoveIngest(Command):
    """Target side of move ``txn_id``: take in copied records (base64 keys and values) of
    ``ranges`` from ``peer``; the ranges stay invisible here until the move commits."""

    op: ClassVar[str] = "move_ingest"
    servers_only: ClassVar[bool] = True
    txn_id: int
    ranges: tuple[str, ...]
    peer: str
    keys: tuple[str, ...] = ()
    values: tuple[str, ...] = ()

    def validate(self) -> None:
        check_range(self.txn_id, 1, MAX_INT, "txn_id")
        _check_ranges(self.ranges)
        check_id(self.peer, "peer")
        if len(self.keys) != len(self.values):
            raise InvalidArgument("keys and values must pair up", "values")


@dataclass(frozen=True, slots=True)
class MoveSettle(Command):
    """The outcome of move ``txn_id`` reaches this shard: ``commit`` (ShardMap ``version``
    gave the ranges to the target) or abort. ``source`` says which side this shard is."""

    op: ClassVar[str] = "move_settle"
    servers_only: ClassVar[bool] = True
    txn_id: int
    ranges: tuple[str, ...]
    peer: str
    source: bool
    commit: bool
    version: int = 0

    def validate(self) -> None:
        check_range(self.txn_id, 1, MAX_INT, "txn_id")
        _check_ranges(self.ranges)
        check_id(self.peer, "peer")
        check_range(self.version, 0, MAX_INT, "version")


@dataclass(frozen=True, slots=True)
class MoveDrop(Command):
    """Delete leftover records (base64 keys) of move ``txn_id``'s ranges: the source's copies
    after a commit, the target's after an abort (``final``: the last batch, after which the
    target's ranges stop being invisible)."""

    op: ClassVar[str] = "move_drop"
    servers_only: ClassVar[bool] = True
    txn_id: int
    keys: tuple[str, ...]
    final: bool = False

    def validate(self) -> None:
        check_range(self.txn_id, 1, MAX_INT, "txn_id")
        check_range(len(self.keys), 0 if self.final else 1, MAX_BATCH_IDS, "keys")


# directory trees moved across shards in steps (keelfs.meta.tree_fences explains them)
@dataclass(frozen=True, slots=True)
class MoveTreeFence(Command):
    """Fence the trees ``src`` and ``dst`` here for move ``move_id`` (coordinated by shard
    ``coordinator``; ``shards``: every shard fenced, on the coordinator's record)."""

    op: ClassVar[str] = "move_tree_fence"
    servers_only: ClassVar[bool] = True
    move_id: int
    src: str
    dst: str
    coordinator: str
    shards: tuple[str, ...] = ()

    def validate(self) -> None:
        check_range(self.move_id, 1, MAX_INT, "move_id")
        check_path(self.src, "src")
        check_path(self.dst, "dst")
        check_id(self.coordinator, "coordinator")
        for shard in self.shards:
            check_id(shard, "shards")


@dataclass(frozen=True, slots=True)
class MoveTreeStage(Command):
    """Records of move ``move_id`` written here under their new names (``put_entry`` and
    ``put_self`` steps, encoded as a transaction part), hidden until the switch."""

    op: ClassVar[str] = "move_tree_stage"
    servers_only: ClassVar[bool] = True
    move_id: int
    part: str

    def validate(self) -> None:
        check_range(self.move_id, 1, MAX_INT, "move_id")
        _check_part(self.part)


@dataclass(frozen=True, slots=True)
class MoveTreeAbort(Command):
    """Move ``move_id`` will not switch: its copies here are dropped, the source stays."""

    op: ClassVar[str] = "move_tree_abort"
    servers_only: ClassVar[bool] = True
    move_id: int

    def validate(self) -> None:
        check_range(self.move_id, 1, MAX_INT, "move_id")


@dataclass(frozen=True, slots=True)
class MoveTreeDrop(Command):
    """Delete up to ``limit`` records that move ``move_id`` left behind here; once none is
    left, the fence goes."""

    op: ClassVar[str] = "move_tree_drop"
    servers_only: ClassVar[bool] = True
    move_id: int
    limit: int = 2_000

    def validate(self) -> None:
        check_range(self.move_id, 1, MAX_INT, "move_id")
        check_range(self.limit, 1, MAX_BATCH_IDS, "limit")


# cross-shard transactions (keelfs.meta.transactions explains them)
def _check_part(part: str) -> None:
    from keelfs.meta.transactions import decode_part  # the step codec lives with the records

    if not decode_part(part):
        raise InvalidArgument("a transaction part needs at least one step", "part")


def _json_text(text: str, argument: str) -> Any:
    """The value of a field that holds JSON text; ``InvalidArgument`` if it is not JSON,
    nested deeper than the parser goes included."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidArgument(f"{argument} is not JSON", argument) from None


def _check_participants(text: str) -> dict[str, str]:
    parts = _json_text(text, "participants")
    if not isinstance(parts, dict) or not all(isinstance(v, str) for v in parts.values()):
        raise InvalidArgument("participants maps shard ids to parts", "participants")
    for shard, part in parts.items():
        check_id(shard, "participants")
        _check_part(part)
    return parts


@dataclass(frozen=True, slots=True)
class TxnBegin(Command):
    """Coordinator: check and lock this shard's ``part``, record the transaction as pending
    with the other shards' parts. ``result`` (JSON) is what the client gets if it commits."""

    op: ClassVar[str] = "txn_begin"
    # Not servers_only: only a coordinator master builds one (no RPC carries it), and it does
    # so in the client's session on the client's behalf — a session is used by its owner only
    # (keelfs.meta.sessions), so the envelope names the client; the client's rights are
    # checked by the part's ``may`` steps.
    txn_id: int
    part: str
    participants: str
    kind: str = ""
    result: str = "null"
    request: str = ""
    """``digest_body()`` of the client's command this transaction carries out. The digest
    is that command's, so a retry of the request (same session and seq) is recognised
    whether the first attempt was this transaction or the plain command: a retry builds a
    new transaction id and maybe new parts, and must get the first attempt's outcome."""

    def digest(self) -> str:
        return _fingerprint(self.request) if self.request else Command.digest(self)

    def validate(self) -> None:
        check_range(self.txn_id, 1, MAX_INT, "txn_id")
        _check_part(self.part)
        if not _check_participants(self.participants):
            raise InvalidArgument("a transaction needs at least one participant", "participants")
        _json_text(self.result, "result")


@dataclass(frozen=True, slots=True)
class TxnPrepare(Command):
    """Participant: check and lock ``part`` for ``coordinator``'s transaction ``txn_id``."""

    op: ClassVar[str] = "txn_prepare"
    servers_only: ClassVar[bool] = True
    txn_id: int
    coordinator: str
    part: str

    def validate(self) -> None:
        check_range(self.txn_id, 1, MAX_INT, "txn_id")
        check_id(self.coordinator, "coordinator")
        _check_part(self.part)


@dataclass(frozen=True, slots=True)
class TxnDecide(Command):
    """Coordinator: the decision (the first one recorded wins). ``error``: why it aborts."""

    op: ClassVar[str] = "txn_decide"
    servers_only: ClassVar[bool] = True
    txn_id: int
    commit: bool
    error: str = ""
    """The abort's error as JSON (``KeelError.to_details()``); empty for none."""

    def validate(self) -> None:
        check_range(self.txn_id, 1, MAX_INT, "txn_id")
        if self.error:
            error = _json_text(self.error, "error")
            if not isinstance(error, dict) or not isinstance(error.get("code"), str):
                raise InvalidArgument("error must be an error's details (a code)", "error")


@dataclass(frozen=True, slots=True)
class TxnFinish(Command):
    """Participant: apply the coordinator's decision to its prepared part."""

    op: ClassVar[str] = "txn_finish"
    servers_only: ClassVar[bool] = True
    txn_id: int
    commit: bool

    def validate(self) -> None:
        check_range(self.txn_id, 1, MAX_INT, "txn_id")


@dataclass(frozen=True, slots=True)
class TxnAcked(Command):
    """Coordinator: ``shard`` applied the decision."""

    op: ClassVar[str] = "txn_acked"
    servers_only: ClassVar[bool] = True
    txn_id: int
    shard: str

    def validate(self) -> None:
        check_range(self.txn_id, 1, MAX_INT, "txn_id")
        check_id(self.shard, "shard")


def _registry(*classes: type[Command]) -> dict[str, type[Command]]:
    """op -> class of ``classes``, each given the faster ``__init__`` of ``frozen.fast_init``
    (every replica builds one command per entry it applies)."""
    return {cls.op: fast_init(cls) for cls in classes}


SESSION_COMMANDS = _registry(RegisterSession, KeepAlive, CloseSession, Tick)
SHARD_COMMANDS = SESSION_COMMANDS | _registry(
    Mkdir,
    MkdirSelf,
    Create,
    CreateInline,
    AddBlock,
    CompleteFile,
    CompleteInline,
    UpdateBlock,
    RecoverLease,
    RenewLease,
    Delete,
    Rename,
    SetReplication,
    SetTimes,
    SetPermission,
    SetOwner,
    SetTraverseGuard,
    DequeueBlockDeletes,
    Append,
    Truncate,
    Concat,
    SetQuota,
    QuotaReport,
    SnapshotAllow,
    SnapshotTake,
    SnapshotDrop,
    SnapshotRename,
    TxnBegin,
    TxnPrepare,
    TxnDecide,
    TxnFinish,
    TxnAcked,
    MoveFreeze,
    MoveIngest,
    MoveSettle,
    MoveDrop,
    MoveTreeFence,
    MoveTreeStage,
    MoveTreeAbort,
    MoveTreeDrop,
    SetAcl,
    ModifyAclEntries,
    RemoveAclEntries,
    RemoveDefaultAcl,
    RemoveAcl,
)
CONFIG_COMMANDS = SESSION_COMMANDS | _registry(
    RegisterMaster,
    AddShard,
    RemoveShard,
    SetShardMembers,
    RegisterChunkServer,
    UnregisterChunkServer,
    IssueTxIds,
    SealRing,
    SetServerAdminState,
    AddBlockKey,
    BeginMove,
    SwitchMove,
    FinishMove,
)


# -- envelope -------------------------------------------------------------------------------------
@fast_init
@dataclass(frozen=True, slots=True)
class Envelope:
    """What one Raft entry carries. ``now_ms`` is set by the proposing leader from its clock;
    ``session_id``/``seq`` (both 0 for none) make the command exactly-once: a command with the
    session's last ``seq`` again gets the recorded reply instead of being applied again.
    ``seq`` 0 with a session id only keeps the session alive (no reply is recorded).

    ``replay``: answer only from the reply cache; a ``seq`` the session has not answered is
    not applied but answered (and recorded) as ``REDIRECT``, so that it never applies here
    later either. A client sends this for a write of unknown outcome whose path has moved to
    another shard since (``keelfs.client._core``): only this shard can tell whether the first
    attempt applied, and the write may go to the new owner only once this one said no."""

    command: Command
    now_ms: int
    session_id: int = 0
    seq: int = 0
    replay: bool = False
    caller: Caller | None = None
    """Who the command acts for (``keelfs.meta.principals``), set by the master from the
    authenticated identity; ``None`` (absent on the wire): ``SUPERUSER``."""

    def encode(self) -> bytes:
        body = {
            "v": ENCODING_VERSION,
            "op": self.command.op,
            "now": self.now_ms,
            "sid": self.session_id,
            "seq": self.seq,
            "a": self.command.args(),
        }
        if self.replay:  # absent otherwise: every other entry encodes as before
            body["replay"] = True
        if self.caller is not None:  # likewise
            body["who"] = self.caller.encode()
        return jsonbytes.dumps_sorted(body)

    @property
    def acting_for(self) -> Caller:
        return SUPERUSER if self.caller is None else self.caller


_Coercer = Callable[[Any], Any]


def _compile(tp: Any, name: str) -> _Coercer:
    """A function that checks and converts one decoded JSON value to the field type ``tp``."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        (inner_tp,) = [t for t in options if t is not type(None)]
        inner = _compile(inner_tp, name)
        if type(None) not in options:
            return inner
        return lambda value: None if value is None else inner(value)
    if origin is tuple:
        item = _compile(get_args(tp)[0], name)

        def as_tuple(value: Any) -> Any:
            if not isinstance(value, list | tuple):
                raise InvalidArgument(f"{name} must be a list", name)
            return tuple(item(v) for v in value)

        return as_tuple
    if tp is bool:

        def as_bool(value: Any) -> Any:
            if not isinstance(value, bool):
                raise InvalidArgument(f"{name} must be true or false", name)
            return value

        return as_bool
    if tp is int:

        def as_int(value: Any) -> Any:
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidArgument(f"{name} must be an integer", name)
            if not -MAX_INT - 1 <= value <= MAX_INT:
                raise InvalidArgument(f"{name} out of the 64-bit range", name)
            return value

        return as_int
    if tp is str:

        def as_str(value: Any) -> Any:
            if not isinstance(value, str):
                raise InvalidArgument(f"{name} must be a string", name)
            return value

        return as_str
    raise TypeError(f"unsupported field type {tp!r}")  # a bug in a command definition


_DECODERS: dict[type[Command], tuple[tuple[str, _Coercer, bool], ...]] = {}


def _decoder(cls: type[Command]) -> tuple[tuple[str, _Coercer, bool], ...]:
    """Per field of ``cls``: its name, its coercer, whether it is required (compiled once per
    class: decoding runs for every applied entry)."""
    decoder = _DECODERS.get(cls)
    if decoder is None:
        hints = get_type_hints(cls)
        decoder = _DECODERS[cls] = tuple(
            (f.name, _compile(hints[f.name], f.name), f.default is MISSING) for f in fields(cls)
        )
    return decoder


def _int_field(
    body: Mapping[str, Any], key: str, default: int | None = None, limit: int = MAX_INT
) -> int:
    value = body.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        raise InvalidArgument(f"envelope field {key!r} must be an integer in 0..{limit}", key)
    return value


def decode_envelope(data: bytes, registry: Mapping[str, type[Command]]) -> Envelope:
    """Parse and validate one log entry; ``InvalidArgument`` (never anything else) if bad."""
    if len(data) > MAX_COMMAND_BYTES:
        raise InvalidArgument(f"command of {len(data)} bytes (at most {MAX_COMMAND_BYTES})")
    try:
        body = jsonbytes.loads(data)
    except (ValueError, RecursionError):
        raise InvalidArgument("command is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidArgument("command is not a JSON object")
    if type(body.get("v")) is not int or body["v"] != ENCODING_VERSION:
        raise InvalidArgument(f"unsupported command encoding version {body.get('v')!r}", "v")
    op = body.get("op")
    cls = registry.get(op) if isinstance(op, str) else None
    if cls is None:
        raise InvalidArgument(f"unknown command {op!r}", "op")
    now = _int_field(body, "now")
    sid = _int_field(body, "sid", 0, MAX_SESSION_ID)
    seq = _int_field(body, "seq", 0)
    if seq and not sid:
        raise InvalidArgument("seq without a session id", "seq")
    replay = body.get("replay", False)
    if replay is not False and (replay is not True or not seq):
        raise InvalidArgument("replay must be true, and only with a session's seq", "replay")
    raw_args = body.get("a", {})
    if not isinstance(raw_args, dict):
        raise InvalidArgument("command arguments are not an object", "a")
    decoder = _decoder(cls)
    kwargs: dict[str, Any] = {}
    for name, coerce, required in decoder:
        if name in raw_args:
            kwargs[name] = coerce(raw_args[name])
        elif required:
            raise InvalidArgument(f"missing argument {name!r} for {op}", name)
    if len(kwargs) != len(raw_args):
        unknown = sorted(set(raw_args) - {name for name, _, _ in decoder})
        raise InvalidArgument(f"unknown argument {unknown[0]!r} for {op}", unknown[0])
    command = cls(**kwargs)
    command.validate()
    caller = Caller.decode(body["who"]) if "who" in body else None
    return Envelope(command, now, sid, seq, replay, caller)


def decode_command(op: str, args: str, registry: Mapping[str, type[Command]]) -> Command:
    """A command from its op and JSON arguments (an internal RPC's), checked like a log
    entry's; ``InvalidArgument`` if bad."""
    try:
        parsed = json.loads(args or "{}")
    except (ValueError, RecursionError):
        raise InvalidArgument("arguments are not valid JSON", "args") from None
    body = {"v": ENCODING_VERSION, "op": op, "now": 0, "a": parsed}
    return decode_envelope(json.dumps(body).encode(), registry).command


# -- results --------------------------------------------------------------------------------------
@fast_init
@dataclass(frozen=True, slots=True)
class Result:
    """The outcome of one command: ``value`` (JSON-safe) on success, else ``error`` (the
    error's ``to_details()``)."""

    value: Any = None
    error: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def success(cls, value: Any = None) -> Result:
        return cls(value, None)

    @classmethod
    def failure(cls, error: KeelError) -> Result:
        return cls(None, error.to_details())

    def exception(self) -> KeelError | None:
        return None if self.error is None else KeelError.from_details(self.error)

    @property
    def code(self) -> str | None:
        return None if self.error is None else str(self.error["code"])

    def unwrap(self) -> Any:
        """The value, or raise the error."""
        if self.error is not None:
            raise KeelError.from_details(self.error)
        return self.value

    def to_json(self) -> dict[str, Any]:
        return {"e": self.error} if self.error is not None else {"v": self.value}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Result:
        """The inverse of ``to_json``; ``InvalidArgument`` for anything it does not write."""
        if not isinstance(obj, Mapping):
            raise InvalidArgument("a result is a JSON object")
        if "e" not in obj:
            return cls(obj.get("v"), None)
        error = obj["e"]
        if not isinstance(error, Mapping) or not isinstance(error.get("code"), str):
            raise InvalidArgument("a result's error is an object with a code")
        return cls(None, dict(error))
