"""Namespace records as stored, and the views reads return.

``Inode`` is what one key of the namespace holds: a file or a directory's attributes, and for
a file its block list, under-construction flag and lease holder, or (an *inline* file) its
content itself. It is stored as a compact JSON array whose first element is a format version,
so fields can be added later without rewriting a shard.

Inline files: a small file written whole (``CreateInline``) keeps its bytes in its record
(base64 in the JSON, at most :data:`MAX_INLINE_BYTES`) instead of in blocks, so writing it is
one Raft entry, fsynced on a majority of the shard's masters before the reply (the durability
of every metadata write), and reading it needs no chunk server. Such a file has no blocks, is
never under construction, and its length is the length of its data.

``FileInfo`` (stat), ``Listing`` (a page of a directory) and ``ContentSummary`` (du) are the
read views; each has ``to_dict``/``from_dict`` for command results and the RPC layer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import msgspec

from keelfs.errors import AlreadyExists, NotFound
from keelfs.meta import acls, jsonbytes
from keelfs.meta.acls import AclEntry
from keelfs.meta.frozen import fast_init
from keelfs.meta.principals import Guard

__all__ = [
    "MAX_INLINE_BYTES",
    "BlockInfo",
    "ContentSummary",
    "FileHead",
    "FileInfo",
    "Inode",
    "Listing",
    "decode_cached",
    "decode_foreign",
    "file_head",
    "maintained_file",
]

FILE: Literal["file"] = "file"
DIRECTORY: Literal["dir"] = "dir"
_KIND_CODE = {FILE: "f", DIRECTORY: "d"}
_CODE_KIND: dict[str, Literal["file", "dir"]] = {"f": FILE, "d": DIRECTORY}
_RECORD_VERSION = 1
_MAX_U63 = 2**63 - 1
MAX_INLINE_BYTES = 64 * 1024
"""The largest file kept inline in its record. Why 64 KiB: such a file's entry is about
88 KB (base64 in JSON), well under the 1 MiB command and request limits
(``keelfs.meta.commands.MAX_COMMAND_BYTES``, ``keelfs.rpc.wire.MAX_REQUEST_BYTES``) and the
Raft append size (1 MiB per message), with room for the envelope and a cross-shard rename's
two copies of the record; it is one checksum chunk of a block (DESIGN §2.9), past which a
block's streaming pays off; and a shard of many such files still fits its RocksDB and its
snapshots (every inline byte is kept on each master of the shard)."""


class FileHead(msgspec.Struct, array_like=True, frozen=True):
    """The leading fields of an inode record (``Inode.encode``), read without the rest: what
    block maintenance needs of a file without blocks (``file_head``)."""

    version: int
    kind: str
    mode: int
    owner: str
    group: str
    mtime: int
    atime: int
    replication: int
    block_size: int
    blocks: list[Any]
    under_construction: int
    lease_holder: int

    @property
    def maintained(self) -> bool:
        """Whether block maintenance has anything to do with this record's file: one with
        blocks, or one being written (its lease)."""
        return self.kind == _KIND_CODE[FILE] and (
            bool(self.blocks) or bool(self.under_construction)
        )


_HEAD = msgspec.json.Decoder(FileHead)


def file_head(raw: bytes) -> FileHead | None:
    """The head of an encoded record (``FileHead``), or None where it does not read as
    expected (then only a full decode can say what is wrong with it)."""
    try:
        head = _HEAD.decode(raw)
    except msgspec.DecodeError:
        return None
    return head if head.version == _RECORD_VERSION else None


def maintained_file(raw: bytes) -> bool:
    """Whether an encoded record is a file block maintenance has anything to do with: one
    with blocks, or one being written (its lease). Read from the record's head alone: an
    inline file's record is mostly its data, which a full decode base64-decodes for nothing
    (~29 µs against ~1.6 µs for a 4 KiB file), and the leader's walk looks at every file of
    its shard every few seconds. A record whose head does not read as expected counts as
    maintained (its full decode then says what is wrong with it)."""
    head = file_head(raw)
    return head is None or head.maintained


@fast_init
@dataclass(frozen=True, slots=True)
class BlockInfo:
    block_id: int
    gen_stamp: int
    length: int

    def to_list(self) -> list[int]:
        return [self.block_id, self.gen_stamp, self.length]


@fast_init
@dataclass(frozen=True, slots=True)
class Inode:
    """One file or directory. Times are milliseconds since the epoch, from the log clock."""

    kind: Literal["file", "dir"]
    mode: int
    owner: str
    group: str
    mtime: int
    atime: int
    replication: int = 0
    block_size: int = 0
    blocks: tuple[BlockInfo, ...] = ()
    under_construction: bool = False
    lease_holder: int = 0
    """The session holding the writer lease (0: none). A file can stay under construction
    with no holder after its lease expired, until a writer takes it over or it is recovered."""
    lease_user: str = ""
    """The user whose session holds the writer lease (what stat shows instead of the
    session's id, which would let anyone write with it); meaningful only with a holder."""
    guards: tuple[Guard, ...] = ()
    """A directory's traverse guards: the ancestors that refuse someone ``x``
    (``keelfs.meta.principals``). Encoded only when there are some, so a record without
    any is byte for byte what it was before guards existed."""
    data: bytes | None = None
    """An inline file's content (see the module docstring); None: its content is its blocks.
    Encoded only when there is some, so other records are unchanged. An inline file being
    appended keeps it while under construction, until its first block is recorded finalized
    (``keelfs.meta.namespace``, ``Append``): readers see the old content meanwhile."""
    truncating: tuple[int, int] | None = None
    """A truncate inside a block in progress (``keelfs.meta.namespace``, ``Truncate``): the
    new length and how many blocks the file had when it began (the copy of the cut block's
    kept bytes is written as a block after those). Encoded only when set."""
    sealed_blocks: int = 0
    """While a file reopened by ``Append`` or ``Truncate`` is under construction: how many of
    its first blocks were committed before (their lengths and stamps never change during it;
    lease recovery never drops or cuts them). Encoded only when not 0."""
    acl: tuple[AclEntry, ...] = ()
    """The ACL entries beyond the mode (``keelfs.meta.acls``: with them the mode's group bits
    are the mask), sorted, access ones first. Encoded only when there are some, so a record
    without an ACL is byte for byte what it was before ACLs."""

    @property
    def is_dir(self) -> bool:
        return self.kind == DIRECTORY

    @property
    def length(self) -> int:
        if self.data is not None:
            return len(self.data)
        return sum(b.length for b in self.blocks)

    @property
    def version(self) -> str:
        """``content_version`` of this file."""
        return content_version(self.mtime, self.blocks, self.data)

    def evolve(self, **changes: Any) -> Inode:
        """``dataclasses.replace(self, **changes)``, at a fraction of its cost: a directory's
        mtime changes with every create in it."""
        values = {name: getattr(self, name) for name in _INODE_FIELDS}
        for name in changes:
            if name not in values:
                raise TypeError(f"Inode has no field {name!r}")
        values.update(changes)
        return Inode(**values)

    def encode(self, data_text: str | None = None) -> bytes:
        """The record's bytes. ``data_text``: ``base64.b64encode(self.data)`` when the caller
        has it already (an inline command's validated text), not encoded again."""
        body = [
            _RECORD_VERSION,
            _KIND_CODE[self.kind],
            self.mode,
            self.owner,
            self.group,
            self.mtime,
            self.atime,
            self.replication,
            self.block_size,
            [b.to_list() for b in self.blocks],
            int(self.under_construction),
            self.lease_holder,
        ]
        # the optional fields, each written only when it or one after it is set
        acl = bool(self.acl)
        sealed = self.sealed_blocks != 0 or acl
        truncating = self.truncating is not None or sealed
        tail = self.data is not None or truncating
        if self.guards or (self.lease_holder and self.lease_user) or tail:
            body.append([g.to_list() for g in self.guards])
        if (self.lease_holder and self.lease_user) or tail:
            body.append(self.lease_user if self.lease_holder else "")
        if tail:
            if self.data is None:
                body.append(None)
            else:
                body.append(data_text or base64.b64encode(self.data).decode("ascii"))
        if truncating:
            body.append(None if self.truncating is None else list(self.truncating))
        if sealed:
            body.append(self.sealed_blocks)
        if acl:
            body.append([e.to_text() for e in self.acl])
        return jsonbytes.dumps(body)

    @classmethod
    def decode(cls, raw: bytes) -> Inode:
        body = jsonbytes.loads(raw)
        if body[0] != _RECORD_VERSION:
            raise ValueError(f"unknown inode record version {body[0]!r}")
        return cls(
            kind=_CODE_KIND[body[1]],
            mode=body[2],
            owner=body[3],
            group=body[4],
            mtime=body[5],
            atime=body[6],
            replication=body[7],
            block_size=body[8],
            blocks=tuple(BlockInfo(*b) for b in body[9]),
            under_construction=bool(body[10]),
            lease_holder=body[11],
            guards=tuple(Guard.from_list(g) for g in body[12]) if len(body) > 12 else (),
            lease_user=body[13] if len(body) > 13 else "",
            data=(_b64decode(body[14]) if len(body) > 14 and body[14] is not None else None),
            truncating=(
                (int(body[15][0]), int(body[15][1]))
                if len(body) > 15 and body[15] is not None
                else None
            ),
            sealed_blocks=body[16] if len(body) > 16 else 0,
            acl=_decode_acl(body[17]) if len(body) > 17 else (),
        )

    def info(self, path: str, *, with_data: bool = False) -> FileInfo:
        """What stat shows of it at ``path``; an inline file's content only ``with_data``
        (a reader's request: never in listings or command results)."""
        return FileInfo(
            path=path,
            kind=self.kind,
            length=self.length,
            mode=self.mode,
            owner=self.owner,
            group=self.group,
            mtime=self.mtime,
            atime=self.atime,
            replication=self.replication,
            block_size=self.block_size,
            blocks=self.blocks,
            under_construction=self.under_construction,
            lease_holder=self.lease_holder,
            lease_user=self.lease_user if self.lease_holder else "",
            data=self.data if with_data else None,
            acl=self.acl,
        )

    def info_dict(self, path: str) -> dict[str, Any]:
        """``self.info(path).to_dict()`` (a command's result) without the ``FileInfo``
        between: every create, complete and attribute change answers with one."""
        body = {
            "path": path,
            "kind": self.kind,
            "length": self.length,
            "mode": self.mode,
            "owner": self.owner,
            "group": self.group,
            "mtime": self.mtime,
            "atime": self.atime,
            "replication": self.replication,
            "block_size": self.block_size,
            "blocks": [b.to_list() for b in self.blocks],
            "under_construction": self.under_construction,
            "lease_holder": self.lease_holder,
            "lease_user": self.lease_user if self.lease_holder else "",
        }
        if self.acl:
            body["acl"] = [e.to_text() for e in self.acl]
        return body


_INODE_FIELDS = tuple(f.name for f in fields(Inode))


def _decode_acl(raw: Any) -> tuple[AclEntry, ...]:
    """A record's ACL entries: ``ValueError`` unless they are valid and sorted, none twice
    (what ``Inode.encode`` writes)."""
    if not isinstance(raw, list) or not raw:
        raise ValueError("an inode record's ACL is a non-empty list")
    entries = acls.parse_spec(raw)
    keys = [e.key for e in entries]
    if len(entries) != len(raw) or keys != sorted(set(keys)):
        raise ValueError("an inode record's ACL entries are sorted, each once")
    return entries


def _b64decode(text: str) -> bytes:
    """Strict base64 (only the alphabet, padding only at the end): what
    ``base64.b64decode(validate=True)`` accepts of what ``b64encode`` writes, checked in C
    (``validate=True`` runs a regular expression over the text first: 10x the cost, and an
    inline file's read decodes its record)."""
    return binascii.a2b_base64(text, strict_mode=True)


_SESSION_IDS = 1 << 128
"""Session ids are 128 random bits (``keelfs.meta.sessions``)."""


_DECODED: dict[bytes, Inode] = {}
DECODED_ENTRIES = 4096
"""Records whose decoded ``Inode`` ``decode_cached`` keeps (the memo empties when full)."""
_DECODED_MAX_BYTES = 1024
"""Larger records (a file of many blocks) are decoded each time rather than kept."""


_DECODED_LARGE: dict[bytes, Inode] = {}
DECODED_LARGE_ENTRIES = 64
"""Larger records (an inline file's, a file of many blocks) kept at once: only the last few,
for the several lookups of one request (a reader's ``GetFileInfo`` looks its file up for the
stat, the permission check and the content); at most 64 records of at most 128 KiB."""
_DECODED_LARGE_MAX_BYTES = 128 << 10


def decode_cached(raw: bytes) -> Inode:
    """``Inode.decode(raw)``, remembered by the record's bytes: an ``Inode`` is immutable and
    a pure function of them, and the same few records (the directories every create and
    permission check reads, a file being written) are decoded again and again; a
    record's JSON costs several times the lookup."""
    memo = _DECODED if len(raw) <= _DECODED_MAX_BYTES else _DECODED_LARGE
    inode = memo.get(raw)
    if inode is None:
        inode = Inode.decode(raw)
        if len(raw) > _DECODED_LARGE_MAX_BYTES:
            return inode
        limit = DECODED_ENTRIES if memo is _DECODED else DECODED_LARGE_ENTRIES
        if len(memo) >= limit:
            memo.clear()
        memo[bytes(raw)] = inode
    return inode


def decode_foreign(raw: bytes) -> Inode:
    """``Inode.decode`` for a record that comes from outside this shard's own writes (a
    transaction step's): ``ValueError`` unless ``raw`` is exactly what ``Inode.encode``
    writes for an inode whose every field has its type and a non-negative 64-bit value.
    What a step writes must be a record every later read and command can decode and use:
    one that cannot would stop each replica of the shard on the entry that reads it."""
    try:
        inode = Inode.decode(raw)
    except (ValueError, TypeError, KeyError, IndexError, RecursionError, binascii.Error) as e:
        raise ValueError(f"not an inode record ({type(e).__name__})") from None
    numbers = [inode.mode, inode.mtime, inode.atime, inode.replication, inode.block_size]
    numbers.append(inode.sealed_blocks)
    numbers.extend(n for b in inode.blocks for n in (b.block_id, b.gen_stamp, b.length))
    if not all(type(n) is int and 0 <= n <= _MAX_U63 for n in numbers):
        raise ValueError("an inode record's numbers are integers in 0..2^63-1")
    if type(inode.lease_holder) is not int or not 0 <= inode.lease_holder < _SESSION_IDS:
        raise ValueError("an inode record's lease holder is a session id (128 bits)")
    if any(type(name) is not str for name in (inode.owner, inode.group, inode.lease_user)):
        raise ValueError("an inode record's owner, group and writer are strings")
    if inode.truncating is not None and not all(
        type(n) is int and 0 <= n <= _MAX_U63 for n in inode.truncating
    ):
        raise ValueError("an inode record's truncate target is two integers")
    if inode.data is not None:
        _check_inline(inode)
    acls.check_stored(inode.is_dir, inode.mode, inode.acl)
    if inode.encode() != raw:
        raise ValueError("not an inode record as this version writes it")
    return inode


def _check_inline(inode: Inode) -> None:
    """An inline record is a complete file with no blocks and at most the inline limit, or
    such a file being appended (under construction, maybe with the first block being
    written)."""
    assert inode.data is not None
    if inode.is_dir or (not inode.under_construction and (inode.blocks or inode.lease_holder)):
        raise ValueError("inline data belongs to a complete file without blocks")
    if len(inode.data) > MAX_INLINE_BYTES:
        raise ValueError(f"an inline file holds at most {MAX_INLINE_BYTES} bytes")


@fast_init
@dataclass(frozen=True, slots=True)
class FileInfo:
    """What stat shows. Directories have length, replication and block size 0."""

    path: str
    kind: Literal["file", "dir"]
    length: int
    mode: int
    owner: str
    group: str
    mtime: int
    atime: int
    replication: int
    block_size: int
    blocks: tuple[BlockInfo, ...] = ()
    under_construction: bool = False
    lease_holder: int = 0
    """The holder's session id: servers only (the wire shows it to that session alone)."""
    lease_user: str = ""
    data: bytes | None = None
    """An inline file's content, where the request asked for it (a reader's ``GetFileInfo``);
    never in ``to_dict`` (command results are kept in the sessions' reply caches)."""
    acl: tuple[AclEntry, ...] = ()
    """The ACL entries beyond the mode (``Inode.acl``): what HDFS's ``getAclStatus`` lists;
    any makes the ``+`` of ``ls -l`` (HDFS's ``aclBit``)."""

    @property
    def is_dir(self) -> bool:
        return self.kind == DIRECTORY

    @property
    def has_acl(self) -> bool:
        return bool(self.acl)

    @property
    def version(self) -> str:
        """``content_version`` of the file (from a reader's stat: an inline file's bytes
        are part of it)."""
        return content_version(self.mtime, self.blocks, self.data)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def to_dict(self) -> dict[str, Any]:
        body = {
            "path": self.path,
            "kind": self.kind,
            "length": self.length,
            "mode": self.mode,
            "owner": self.owner,
            "group": self.group,
            "mtime": self.mtime,
            "atime": self.atime,
            "replication": self.replication,
            "block_size": self.block_size,
            "blocks": [b.to_list() for b in self.blocks],
            "under_construction": self.under_construction,
            "lease_holder": self.lease_holder,
            "lease_user": self.lease_user,
        }
        if self.acl:  # only where there is one: other results are as they were
            body["acl"] = [e.to_text() for e in self.acl]
        return body

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FileInfo:
        kind = _CODE_KIND[_KIND_CODE[d["kind"]]]  # validates it, typed as the Literal
        return cls(
            path=d["path"],
            kind=kind,
            length=d["length"],
            mode=d["mode"],
            owner=d["owner"],
            group=d["group"],
            mtime=d["mtime"],
            atime=d["atime"],
            replication=d["replication"],
            block_size=d["block_size"],
            blocks=tuple(BlockInfo(*b) for b in d["blocks"]),
            under_construction=d["under_construction"],
            lease_holder=d["lease_holder"],
            lease_user=d.get("lease_user", ""),
            acl=acls.parse_spec(d.get("acl", ())),
        )


@dataclass(frozen=True, slots=True)
class Listing:
    """One page of a directory, sorted by name (UTF-8 byte order). ``cursor`` is the name to
    pass as ``start_after`` for the next page, ``None`` when this is the last page."""

    entries: tuple[FileInfo, ...] = field(default_factory=tuple)
    cursor: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"entries": [e.to_dict() for e in self.entries], "cursor": self.cursor}


@dataclass(frozen=True, slots=True)
class ContentSummary:
    """du: totals over what this shard holds under a path (the path itself included)."""

    length: int = 0
    file_count: int = 0
    directory_count: int = 0
    space_consumed: int = 0
    """Sum of length x replication."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "length": self.length,
            "file_count": self.file_count,
            "directory_count": self.directory_count,
            "space_consumed": self.space_consumed,
        }


def content_version(mtime: int, blocks: tuple[BlockInfo, ...], data: bytes | None) -> str:
    """What tells one content of a file from another, for a rename that replaces only the
    version its caller saw (``Rename.expect``): its modification time, its blocks (ids,
    generation stamps, lengths) and an inline file's bytes. A client computes it from a
    reader's ``stat`` (``FileInfo.version``: an inline file's bytes come only to a reader)."""
    digest = hashlib.sha256(jsonbytes.dumps_sorted([mtime, [b.to_list() for b in blocks]]))
    if data is not None:
        digest.update(b"\0" + data)
    return digest.hexdigest()[:32]


def is_version(text: str) -> bool:
    """Whether ``text`` has the shape of a ``content_version``."""
    return len(text) == 32 and not text.strip("0123456789abcdef")


def check_version(path: str, target: Inode | None, expected: str) -> None:
    """A rename's ``expect``: ``path`` must be the file of that content version."""
    if target is None:
        raise NotFound(path)
    if target.is_dir or target.version != expected:
        raise AlreadyExists(path, message=f"{path} is not the version expected: it changed")
