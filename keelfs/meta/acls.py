"""POSIX ACLs on files and directories, as HDFS has them.

An inode with only its mode has the *minimal* ACL ``user::``, ``group::``, ``other::`` (the
owner's, the group's and the others' bits). An *extended* ACL adds named entries
(``user:NAME:rwx``, ``group:NAME:rwx``), a ``mask::`` bounding every entry of the group class
(the named users, the owning group, the named groups), and on a directory *default* entries
(``default:user::``, ``default:user:NAME:``, ``default:group::``, ``default:mask::``, ...),
which a new file or directory below inherits.

Stored as HDFS stores it (``AclStorage``): the mode keeps ``user::`` and ``other::`` and, with
an extended ACL, **the mask in its group bits**; the inode's ``acl`` (``Inode.acl``) holds the
rest, HDFS's *ACL feature*: the access entries other than ``user::``, ``mask::`` and
``other::`` (so ``group::`` and the named ones), then every default entry. An inode without
an extended ACL and without default entries has none (``()``). So a chmod changes the mask
(the group bits) and nothing else, as in HDFS, and every record without an ACL is as it was.

The changes are HDFS's ``AclTransformation`` (``replace``, ``merge``, ``filter_by_spec``,
``filter_default``), each over the *logical* ACL (the base entries from the mode plus the
stored ones: ``logical``) and stored back with ``store`` (which moves ``user::``, the mask or
``group::`` and ``other::`` into the mode). The check is ``FSPermissionChecker``'s
(``allows``): the owner's bits; else a named user's entry, masked; else every entry of the
owning group and the named groups the caller is in: one that grants (masked) is enough, and
a caller in one of them whom none grants is refused even where the others' bits would
allow; else the others' bits.

Names are those a user or group may have (``principals.check_principal``) without ``,``
(the separator of an ACL spec). At most :data:`MAX_ENTRIES` access and as many default
entries, as HDFS.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from keelfs.errors import InvalidArgument

__all__ = [
    "MAX_ENTRIES",
    "AclEntry",
    "access_entries",
    "allows",
    "check_stored",
    "default_entries",
    "filter_by_spec",
    "filter_default",
    "inherit",
    "logical",
    "merge",
    "parse_entry",
    "parse_spec",
    "perm_text",
    "refuses_execute",
    "remove_all",
    "replace",
    "store",
]

MAX_ENTRIES = 32
"""Entries per scope (HDFS's ``AclTransformation.MAX_ENTRIES``)."""
MAX_NAME_BYTES = 256
Kind = Literal["user", "group", "mask", "other"]
_KINDS: tuple[Kind, ...] = ("user", "group", "mask", "other")
_KIND_ORDER = {kind: i for i, kind in enumerate(_KINDS)}
_PERMS = {"---": 0, "--x": 1, "-w-": 2, "-wx": 3, "r--": 4, "r-x": 5, "rw-": 6, "rwx": 7}
_PERM_TEXT = {value: text for text, value in _PERMS.items()}
_EXECUTE = 1


def perm_text(perm: int) -> str:
    """``rwx``, ``r-x``...: the permission of an entry as ACL specs write it."""
    return _PERM_TEXT[perm & 7]


def _invalid(message: str) -> InvalidArgument:
    return InvalidArgument(message, "acl")


@dataclass(frozen=True, slots=True)
class AclEntry:
    """One ACL entry: its scope (``default``), kind, name (``""``: the owner's, the owning
    group's, the mask, the others') and permission bits (0..7)."""

    default: bool
    kind: Kind
    name: str = ""
    perm: int = 0

    @property
    def key(self) -> tuple[bool, int, bool, str]:
        """HDFS's order and identity (``ACL_ENTRY_COMPARATOR``): scope, kind, unnamed first,
        name; the permission is not part of it."""
        return (self.default, _KIND_ORDER[self.kind], self.name != "", self.name)

    @property
    def named(self) -> bool:
        return self.name != ""

    def with_perm(self, perm: int) -> AclEntry:
        return AclEntry(self.default, self.kind, self.name, perm)

    def access(self) -> AclEntry:
        return AclEntry(False, self.kind, self.name, self.perm)

    def to_text(self, *, with_perm: bool = True) -> str:
        """HDFS's form: ``[default:]kind:name:rwx`` (``user::rwx``, ``mask::r-x``)."""
        scope = "default:" if self.default else ""
        body = f"{scope}{self.kind}:{self.name}"
        return f"{body}:{perm_text(self.perm)}" if with_perm else body

    def __str__(self) -> str:
        return self.to_text()


def _check_name(name: str, text: str) -> str:
    if (
        any(ch in name for ch in ":/,")
        or not name.isprintable()
        or len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES
    ):
        raise _invalid(f"Invalid ACL entry {text!r}: {name!r} is not a user or group name")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid(f"Invalid ACL entry {text!r}: the name is not valid UTF-8") from None
    return name


def parse_entry(text: str, *, with_perm: bool = True) -> AclEntry:
    """One entry of an ACL spec (HDFS's ``AclEntry.parseAclEntry``): ``[default:]kind:name:perm``
    with ``perm`` as ``rwx``/``r-x``/...; ``with_perm=False`` (what to remove): no ``perm``
    (``user:bob``, ``user:bob:``). ``InvalidArgument`` if it is not one."""
    if not isinstance(text, str):
        raise _invalid("an ACL entry is a string")
    split = text.split(":")
    while split and split[-1] == "":  # as Java's String.split: trailing empty parts dropped
        split.pop()
    index = 0
    default = bool(split) and split[0] == "default"
    if default:
        index += 1
    if len(split) <= index:
        raise _invalid(f"Invalid <aclSpec> : {text}")
    kind = split[index].lower()
    if kind not in _KIND_ORDER:
        raise _invalid(f"Invalid type of acl in <aclSpec> :{text}")
    index += 1
    name = ""
    if len(split) > index:
        name = _check_name(split[index], text)
        index += 1
    perm = 0
    if with_perm:
        if len(split) <= index:
            raise _invalid(f"Invalid <aclSpec> : {text}")
        if split[index] not in _PERMS:
            raise _invalid(f"Invalid permission in <aclSpec> : {text}")
        perm = _PERMS[split[index]]
        index += 1
    if len(split) > index:
        raise _invalid(f"Invalid <aclSpec> : {text}")
    entry = AclEntry(default, kind, name, perm)
    if entry.named and entry.kind in ("mask", "other"):
        raise _invalid(f"Invalid ACL: this entry type must not have a name: {text}.")
    return entry


def parse_spec(spec: str | Iterable[str], *, with_perm: bool = True) -> tuple[AclEntry, ...]:
    """An ACL spec: a comma-separated string or the entries one by one; empty parts skipped
    (as HDFS's ``parseAclSpec``)."""
    texts = spec.split(",") if isinstance(spec, str) else list(spec)
    return tuple(parse_entry(t.strip(), with_perm=with_perm) for t in texts if t.strip())


def _validated_spec(spec: Sequence[AclEntry]) -> dict[tuple[bool, int, bool, str], AclEntry]:
    """HDFS's ``ValidatedAclSpec``: at most :data:`MAX_ENTRIES`, no key twice."""
    if len(spec) > MAX_ENTRIES:
        raise _invalid(
            f"Invalid ACL: ACL spec has {len(spec)} entries, which exceeds maximum of "
            f"{MAX_ENTRIES}."
        )
    by_key: dict[tuple[bool, int, bool, str], AclEntry] = {}
    for entry in spec:
        if entry.key in by_key:
            raise _invalid("Invalid ACL: multiple entries with same scope, type and name.")
        by_key[entry.key] = entry
    return by_key


# -- the stored form and the logical one ---------------------------------------------------------
def access_entries(acl: Sequence[AclEntry]) -> tuple[AclEntry, ...]:
    return tuple(e for e in acl if not e.default)


def default_entries(acl: Sequence[AclEntry]) -> tuple[AclEntry, ...]:
    return tuple(e for e in acl if e.default)


def _minimal(mode: int) -> list[AclEntry]:
    return [
        AclEntry(False, "user", "", (mode >> 6) & 7),
        AclEntry(False, "group", "", (mode >> 3) & 7),
        AclEntry(False, "other", "", mode & 7),
    ]


def logical(mode: int, acl: Sequence[AclEntry]) -> list[AclEntry]:
    """The whole ACL of an inode with ``mode`` and stored entries ``acl`` (HDFS's
    ``readINodeLogicalAcl``), sorted."""
    access = access_entries(acl)
    if not access:
        out = _minimal(mode)
    else:
        out = [
            AclEntry(False, "user", "", (mode >> 6) & 7),
            *access,
            AclEntry(False, "mask", "", (mode >> 3) & 7),
            AclEntry(False, "other", "", mode & 7),
        ]
    out += default_entries(acl)
    return sorted(out, key=lambda e: e.key)


def store(is_dir: bool, mode: int, entries: Sequence[AclEntry]) -> tuple[int, tuple[AclEntry, ...]]:
    """The mode and stored entries of an inode whose logical ACL is now ``entries`` (valid,
    sorted: what the transformations return), HDFS's ``updateINodeAcl``; the sticky bit and
    the others of ``mode`` above the rwx bits are kept."""
    access = [e for e in entries if not e.default]
    defaults = [e for e in entries if e.default]
    if defaults and not is_dir:
        raise _invalid("Invalid ACL: only directories may have a default ACL.")
    high = mode & ~0o777
    user, other = access[0].perm, access[-1].perm
    group_class = access[-2].perm  # the mask of an extended ACL, group:: of a minimal one
    new_mode = high | user << 6 | group_class << 3 | other
    if len(access) == 3 and not defaults:
        return new_mode, ()
    # an extended access ACL stores group:: and the named entries; a minimal one beside
    # defaults stores nothing of it
    kept = access[1:-2] if len(access) > 3 else []
    return new_mode, tuple(sorted([*kept, *defaults], key=lambda e: e.key))


def check_stored(is_dir: bool, mode: int, acl: Sequence[AclEntry]) -> None:
    """``ValueError`` unless ``acl`` is what ``store`` writes for some valid ACL of an inode
    with ``mode`` (a record from outside this shard's own writes: ``decode_foreign``)."""
    if not acl:
        return
    try:
        entries = _build_and_validate(logical(mode, acl))
        stored = store(is_dir, mode, entries)
    except InvalidArgument as e:
        raise ValueError(f"an inode record's ACL is not valid: {e}") from None
    if stored != (mode, tuple(acl)):
        raise ValueError("an inode record's ACL is not as this version stores it")


# -- the transformations (HDFS's AclTransformation) --------------------------------------------
def replace(existing: Sequence[AclEntry], spec: Sequence[AclEntry]) -> list[AclEntry]:
    """``setAcl``: the scopes ``spec`` names are replaced by it, the others kept."""
    by_key = _validated_spec(spec)
    builder: list[AclEntry] = []
    provided: dict[bool, AclEntry] = {}
    mask_dirty: set[bool] = set()
    scope_dirty: set[bool] = set()
    for entry in by_key.values():
        scope_dirty.add(entry.default)
        if entry.kind == "mask":
            provided[entry.default] = entry
            mask_dirty.add(entry.default)
        else:
            builder.append(entry)
    for entry in existing:
        if entry.default not in scope_dirty:
            if entry.kind == "mask":
                provided[entry.default] = entry
            else:
                builder.append(entry)
    return _finish(builder, provided, mask_dirty, scope_dirty)


def merge(existing: Sequence[AclEntry], spec: Sequence[AclEntry]) -> list[AclEntry]:
    """``modifyAclEntries``: each entry of ``spec`` replaces the one of its key or is added."""
    by_key = _validated_spec(spec)
    builder: list[AclEntry] = []
    found: set[tuple[bool, int, bool, str]] = set()
    provided: dict[bool, AclEntry] = {}
    mask_dirty: set[bool] = set()
    scope_dirty: set[bool] = set()

    def take(entry: AclEntry, *, new: bool) -> None:
        if new:
            scope_dirty.add(entry.default)
        if entry.kind == "mask":
            provided[entry.default] = entry
            if new:
                mask_dirty.add(entry.default)
        else:
            builder.append(entry)

    for entry in existing:
        replacement = by_key.get(entry.key)
        if replacement is not None:
            found.add(entry.key)
            take(replacement, new=True)
        else:
            take(entry, new=False)
    for key, entry in by_key.items():
        if key not in found:
            take(entry, new=True)
    return _finish(builder, provided, mask_dirty, scope_dirty)


def filter_by_spec(existing: Sequence[AclEntry], spec: Sequence[AclEntry]) -> list[AclEntry]:
    """``removeAclEntries``: the entries of the keys in ``spec`` removed (permissions in
    ``spec`` are not looked at); the mask recomputed."""
    by_key = _validated_spec(spec)
    builder: list[AclEntry] = []
    provided: dict[bool, AclEntry] = {}
    mask_dirty: set[bool] = set()
    scope_dirty: set[bool] = set()
    for entry in existing:
        if entry.key in by_key:
            scope_dirty.add(entry.default)
            if entry.kind == "mask":
                mask_dirty.add(entry.default)
        elif entry.kind == "mask":
            provided[entry.default] = entry
        else:
            builder.append(entry)
    return _finish(builder, provided, mask_dirty, scope_dirty)


def filter_default(existing: Sequence[AclEntry]) -> list[AclEntry]:
    """``removeDefaultAcl``: the access entries alone."""
    return _build_and_validate([e for e in existing if not e.default])


def remove_all(mode: int, acl: Sequence[AclEntry]) -> tuple[int, tuple[AclEntry, ...]]:
    """``removeAcl``: no stored entries; the group bits go back from the mask to ``group::``
    (HDFS's ``removeINodeAcl``)."""
    for entry in acl:
        if not entry.default and entry.kind == "group" and not entry.named:
            return (mode & ~0o070) | entry.perm << 3, ()
    return mode, ()


def _finish(
    builder: list[AclEntry],
    provided: dict[bool, AclEntry],
    mask_dirty: set[bool],
    scope_dirty: set[bool],
) -> list[AclEntry]:
    builder = _copy_defaults_if_needed(builder)
    _calculate_masks(builder, provided, mask_dirty, scope_dirty)
    return _build_and_validate(builder)


def _copy_defaults_if_needed(builder: list[AclEntry]) -> list[AclEntry]:
    """A default ACL missing ``default:user::``, ``default:group::`` or ``default:other::``
    gets the access entry's permission (HDFS's ``copyDefaultsIfNeeded``)."""
    builder = sorted(builder, key=lambda e: e.key)
    if not any(e.default for e in builder):
        return builder
    keys = {e.key for e in builder}
    copied = []
    for kind in ("user", "group", "other"):
        if (True, _KIND_ORDER[kind], False, "") in keys:
            continue
        for e in builder:
            if not e.default and e.kind == kind and not e.named:
                copied.append(AclEntry(True, e.kind, "", e.perm))
    return builder + copied


def _calculate_masks(
    builder: list[AclEntry],
    provided: dict[bool, AclEntry],
    mask_dirty: set[bool],
    scope_dirty: set[bool],
) -> None:
    """HDFS's ``calculateMasks``: a scope whose entries need a mask (it has named ones) gets
    the one given, its old one if nothing of it changed, else the union of its group class."""
    found: set[bool] = set()
    union: dict[bool, int] = {}
    needed: set[bool] = set()
    for e in builder:
        found.add(e.default)
        if e.kind == "group" or e.named:
            union[e.default] = union.get(e.default, 0) | e.perm
        if e.named:
            needed.add(e.default)
    for scope in sorted(found):
        if scope not in provided and scope in needed and scope in mask_dirty:
            raise _invalid("Invalid ACL: mask is required and cannot be deleted.")
        if scope in provided and (scope not in scope_dirty or scope in mask_dirty):
            builder.append(provided[scope])
        elif scope in needed or scope in provided:
            builder.append(AclEntry(scope, "mask", "", union.get(scope, 0)))


def _build_and_validate(builder: list[AclEntry]) -> list[AclEntry]:
    entries = sorted(builder, key=lambda e: e.key)
    for before, after in zip(entries, entries[1:], strict=False):
        if before.key == after.key:
            raise _invalid("Invalid ACL: multiple entries with same scope, type and name.")
    for entry in entries:
        if entry.named and entry.kind in ("mask", "other"):
            raise _invalid(f"Invalid ACL: this entry type must not have a name: {entry}.")
    access, defaults = access_entries(entries), default_entries(entries)
    for scope, scoped in (("access", access), ("default", defaults)):
        if len(scoped) > MAX_ENTRIES:
            raise _invalid(
                f"Invalid ACL: ACL has {len(scoped)} {scope} entries, which exceeds maximum "
                f"of {MAX_ENTRIES}."
            )
    for scoped in (access, defaults):  # (what calculate_masks ensures; a foreign record too)
        if any(e.named for e in scoped) and not any(e.kind == "mask" for e in scoped):
            raise _invalid("Invalid ACL: named entries need a mask.")
    for kind in ("user", "group", "other"):
        if not any(e.kind == kind and not e.named for e in access):
            raise _invalid("Invalid ACL: the user, group and other entries are required.")
        if defaults and not any(e.kind == kind and not e.named for e in defaults):
            raise _invalid("Invalid default ACL: the user, group and other entries are required.")
    return entries


# -- inheritance ---------------------------------------------------------------------------------
def inherit(
    parent_acl: Sequence[AclEntry], mode: int, is_dir: bool
) -> tuple[int, tuple[AclEntry, ...]]:
    """The mode and stored entries of a new file or directory created with ``mode`` in a
    directory whose stored entries are ``parent_acl`` (HDFS's ``copyINodeDefaultAcl``): with
    no default ACL there, ``mode`` and none; else its access ACL is the parent's default one,
    with ``user::``, ``mask::`` (or ``group::`` of a minimal one) and ``other::`` filtered by
    ``mode``, and a directory keeps the defaults as its own."""
    defaults = default_entries(parent_acl)
    if not defaults:
        return mode, ()
    minimal = len(defaults) == 3
    access: list[AclEntry] = []
    for entry in defaults:
        perm = entry.perm
        if entry.kind == "user" and not entry.named:
            perm &= (mode >> 6) & 7
        elif entry.kind == "group" and minimal or entry.kind == "mask":
            perm &= (mode >> 3) & 7
        elif entry.kind == "other":
            perm &= mode & 7
        access.append(AclEntry(False, entry.kind, entry.name, perm))
    access.sort(key=lambda e: e.key)
    return store(is_dir, mode, [*access, *(defaults if is_dir else ())])


# -- the check -----------------------------------------------------------------------------------
def allows(
    user: str,
    groups: Iterable[str],
    owner: str,
    group: str,
    mode: int,
    acl: Sequence[AclEntry],
    access: int,
) -> bool:
    """Whether ``user`` (in ``groups``) has every bit of ``access`` on an inode with these
    attributes and stored entries (HDFS's ``FSPermissionChecker.checkAccessAcl``); the
    superuser is the caller's to skip. Without access entries: the mode bits alone."""
    if user == owner:
        return (mode >> 6) & access == access
    entries = access_entries(acl)
    if not entries:
        in_group = group in groups
        bits = (mode >> 3) & 7 if in_group else mode & 7
        return bits & access == access
    mask = (mode >> 3) & 7
    for entry in entries:
        if entry.kind == "user" and entry.named and entry.name == user:
            return entry.perm & mask & access == access
    member_of = set(groups)
    matched = False
    for entry in entries:
        if entry.kind != "group":
            continue
        if (entry.name or group) in member_of:
            matched = True
            if entry.perm & mask & access == access:
                return True
    if matched:
        return False
    return mode & 7 & access == access


def refuses_execute(mode: int, acl: Sequence[AclEntry]) -> bool:
    """A directory with this mode and these entries refuses ``x`` to someone: a class of the
    mode lacks it, or (with an ACL) an entry of the group class does, masked (a user named
    there, or in that group and no other of its entries, is refused)."""
    if mode & 0o111 != 0o111:
        return True
    return any(not e.perm & _EXECUTE for e in access_entries(acl) if e.kind in ("user", "group"))
