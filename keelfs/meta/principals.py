"""Who a namespace command acts for, and the POSIX permission rules the shards apply.

A ``Caller`` is a user, the groups it belongs to and whether it is a superuser. The master
decides all three from the authenticated identity (a certificate or a signed token; the
superuser is an admin identity or a member of the configured superuser group), never from the
request, and carries the caller in the command's envelope (``Envelope.caller``); ``apply``
only reads it. An envelope without one acts as ``SUPERUSER``: log entries written before
permissions existed, and the internal commands a master proposes for itself, keep today's
behaviour.

The checks are HDFS's (``FSPermissionChecker``): the owner class, else the group class, else
the others' bits decide, and a superuser passes every check. A directory's *traverse* right
(``x``) is needed on every ancestor of a path. Namespace records are placed by their parent
directory (DESIGN §2.5), so the ancestors above the parent usually live on other shards; each
directory record therefore carries its **traverse guards** (``Guard``): the owner, group and
mode of every ancestor that does not grant ``x`` to all three classes (typically few: a home
directory at 0700). A check needs only the parent's self-record, which is on the shard of the
entries it holds: its guards for the ancestors, its own bits for the parent.

Guards are recorded by depth (``/`` is 0, ``/a`` 1), not by path, so that a moved subtree
keeps the guards of its own directories by shifting them (``rebase``).

ACLs (``keelfs.meta.acls``): an inode's extended entries take part in every check
(``allows``), and a directory whose ACL refuses someone ``x`` (a named user's or a group's
entry without it, masked) is a guard as a mode that refuses it is: its guard carries its
access entries, so the check of a path below it, on whatever shard, is the whole HDFS rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from keelfs.errors import InvalidArgument, KeelError, PermissionDenied
from keelfs.meta import acls
from keelfs.meta.acls import AclEntry
from keelfs.meta.frozen import fast_init

__all__ = [
    "DEFAULT_GROUP",
    "DEFAULT_OWNER",
    "EXECUTE",
    "READ",
    "STICKY",
    "SUPERUSER",
    "WRITE",
    "Caller",
    "Guard",
    "allows",
    "check_principal",
    "denied",
    "depth",
    "describe",
    "guard_of",
    "guards_below",
    "needs_guard",
    "rebase",
    "with_guard",
]

READ = 4
WRITE = 2
EXECUTE = 1
STICKY = 0o1000
_ALL_EXECUTE = 0o111
MAX_PRINCIPAL_BYTES = 256
MAX_GROUPS = 256
DEFAULT_OWNER = "keelfs"
DEFAULT_GROUP = "keelfs"
_ACCESS_NAMES = {READ: "READ", WRITE: "WRITE", EXECUTE: "EXECUTE"}


_GOOD_NAMES: set[str] = set()
"""Names ``check_principal`` accepted (at most ``_GOOD_NAMES_KEPT``): a create checks its
owner, group and caller's names on every replica, and they are the same few names."""
_GOOD_NAMES_KEPT = 4096


def check_principal(value: str, argument: str) -> str:
    """An owner or group name: non-empty, no control characters, no ':' or '/'."""
    if type(value) is str and value in _GOOD_NAMES:
        return value
    _check_name(value, argument)
    if type(value) is str:
        if len(_GOOD_NAMES) >= _GOOD_NAMES_KEPT:
            _GOOD_NAMES.clear()
        _GOOD_NAMES.add(value)
    return value


def _check_name(value: str, argument: str) -> None:
    if value == "" or ":" in value or "/" in value or not value.isprintable():
        raise InvalidArgument(f"{argument} {value!r} is not a valid name", argument)
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgument(f"{argument} is not valid UTF-8", argument) from None
    if size > MAX_PRINCIPAL_BYTES:
        raise InvalidArgument(f"{argument} longer than {MAX_PRINCIPAL_BYTES} bytes", argument)


@fast_init
@dataclass(frozen=True, slots=True)
class Caller:
    """The identity a command acts for (module doc)."""

    user: str
    groups: tuple[str, ...] = ()
    superuser: bool = False

    def encode(self) -> list[Any]:
        """The envelope's compact form: ``[user, [groups]]``, plus ``1`` for a superuser."""
        body: list[Any] = [self.user, list(self.groups)]
        if self.superuser:
            body.append(1)
        return body

    @classmethod
    def decode(cls, raw: Any) -> Caller:
        """The caller of an envelope's ``who``; ``InvalidArgument`` if it is malformed."""
        if not isinstance(raw, list) or len(raw) not in (2, 3):
            raise InvalidArgument("who must be [user, [groups]] or [user, [groups], 1]", "who")
        user, groups = raw[0], raw[1]
        if not isinstance(user, str) or not isinstance(groups, list):
            raise InvalidArgument("who must be [user, [groups]]", "who")
        if len(groups) > MAX_GROUPS or not all(isinstance(g, str) for g in groups):
            raise InvalidArgument(f"who names at most {MAX_GROUPS} groups, as strings", "who")
        if len(raw) == 3 and (type(raw[2]) is not int or raw[2] != 1):
            raise InvalidArgument("who's superuser flag must be 1", "who")
        check_principal(user, "who")
        for group in groups:
            check_principal(group, "who")
        return cls(user, tuple(groups), len(raw) == 3)

    def in_group(self, group: str) -> bool:
        return group in self.groups


SUPERUSER = Caller(DEFAULT_OWNER, (DEFAULT_GROUP,), True)
"""The caller of an envelope that names none (module doc)."""


@dataclass(frozen=True, slots=True)
class Guard:
    """An ancestor that does not let everyone through: its depth and its owner, group, mode
    and access ACL entries (only what a traverse check reads; ``()``: no ACL)."""

    depth: int
    owner: str
    group: str
    mode: int
    acl: tuple[AclEntry, ...] = ()

    def to_list(self) -> list[Any]:
        """The record's form; the entries only where there are some (a guard without an ACL
        is as it was before ACLs)."""
        body: list[Any] = [self.depth, self.mode, self.owner, self.group]
        if self.acl:
            body.append([e.to_text() for e in self.acl])
        return body

    @classmethod
    def from_list(cls, raw: Sequence[Any]) -> Guard:
        acl = _guard_acl(raw[4], "guards") if len(raw) > 4 else ()
        return cls(int(raw[0]), str(raw[2]), str(raw[3]), int(raw[1]), acl)

    def to_text(self) -> str:
        """The form a command carries (``MkdirSelf.guards``, ``may`` steps):
        ``depth:mode:owner:group``, then ``/`` and the ACL's entries comma-separated where it
        has some (names hold neither ``/`` nor, in an ACL, ``,``)."""
        text = f"{self.depth}:{self.mode:o}:{self.owner}:{self.group}"
        if self.acl:
            text += "/" + ",".join(e.to_text() for e in self.acl)
        return text

    @classmethod
    def from_text(cls, text: str) -> Guard:
        head, slash, tail = text.partition("/")
        parts = head.split(":")
        try:
            if len(parts) != 4:
                raise ValueError(text)
            guard = cls(int(parts[0]), parts[2], parts[3], int(parts[1], 8))
        except ValueError:
            message = f"guard {text!r} is not depth:mode:owner:group[/acl]"
            raise InvalidArgument(message, "guards") from None
        if guard.depth < 0 or not 0 <= guard.mode <= 0o7777:
            raise InvalidArgument(f"guard {text!r} is out of range", "guards")
        check_principal(guard.owner, "guards")
        check_principal(guard.group, "guards")
        if slash:
            guard = replace(guard, acl=_guard_acl(tail.split(","), "guards"))
        return guard


def _guard_acl(raw: Any, argument: str) -> tuple[AclEntry, ...]:
    """A guard's entries: access entries of the group class, sorted, none twice."""
    if not isinstance(raw, list) or not raw:
        raise InvalidArgument("a guard's ACL is a non-empty list of entries", argument)
    try:
        entries = acls.parse_spec(raw)
    except KeelError as e:
        raise InvalidArgument(f"a guard's ACL: {e}", argument) from None
    keys = [e.key for e in entries]
    if (
        not entries
        or any(e.default or e.kind not in ("user", "group") for e in entries)
        or any(e.kind == "user" and not e.named for e in entries)
        or keys != sorted(set(keys))
        or len(entries) > acls.MAX_ENTRIES
    ):
        raise InvalidArgument(
            "a guard's ACL holds sorted access entries of users and groups", argument
        )
    return entries


def depth(path: str) -> int:
    """How deep a normalized path is: ``/`` 0, ``/a`` 1, ``/a/b`` 2."""
    return 0 if path == "/" else path.count("/")


def class_bits(caller: Caller, owner: str, group: str, mode: int) -> int:
    """The rwx bits of the class ``caller`` falls in for an inode with these attributes."""
    if caller.user == owner:
        return (mode >> 6) & 7
    if caller.in_group(group):
        return (mode >> 3) & 7
    return mode & 7


def allows(
    caller: Caller,
    owner: str,
    group: str,
    mode: int,
    access: int,
    acl: Sequence[AclEntry] = (),
) -> bool:
    """Whether ``caller`` has every bit of ``access`` (READ|WRITE|EXECUTE) on such an inode
    (``acl``: its stored ACL entries, ``keelfs.meta.acls``)."""
    if caller.superuser:
        return True
    if not acl:
        return class_bits(caller, owner, group, mode) & access == access
    return acls.allows(caller.user, caller.groups, owner, group, mode, acl, access)


def needs_guard(mode: int, acl: Sequence[AclEntry] = ()) -> bool:
    """A directory with this mode (and ACL) refuses traverse to someone: some class lacks
    ``x``, or an ACL entry of the group class does (``acls.refuses_execute``)."""
    if not acl:
        return mode & _ALL_EXECUTE != _ALL_EXECUTE
    return acls.refuses_execute(mode, acl)


def guard_of(
    path: str, owner: str, group: str, mode: int, acl: Sequence[AclEntry] = ()
) -> Guard | None:
    """Directory ``path``'s guard (None: it lets everyone through): its attributes and its
    access entries (the default ones play no part in a check)."""
    if not needs_guard(mode, acl):
        return None
    return Guard(depth(path), owner, group, mode, acls.access_entries(acl))


def guards_below(
    guards: tuple[Guard, ...],
    path: str,
    owner: str,
    group: str,
    mode: int,
    acl: Sequence[AclEntry] = (),
) -> tuple[Guard, ...]:
    """The guards of a child of directory ``path`` (whose own guards and attributes are
    given): the directory's, plus the directory itself if it needs one."""
    guard = guard_of(path, owner, group, mode, acl)
    return guards if guard is None else (*guards, guard)


def with_guard(guards: tuple[Guard, ...], at: int, guard: Guard | None) -> tuple[Guard, ...]:
    """``guards`` with the one at depth ``at`` replaced by ``guard`` (``None``: removed)."""
    kept = [g for g in guards if g.depth != at]
    if guard is not None:
        kept.append(guard)
    return tuple(sorted(kept, key=lambda g: g.depth))


def rebase(
    guards: Iterable[Guard], src_depth: int, dst_depth: int, dst_guards: tuple[Guard, ...]
) -> tuple[Guard, ...]:
    """The guards of a directory of a subtree moved from depth ``src_depth`` to ``dst_depth``
    (its top's new guards: ``dst_guards``): those above the old top are replaced by the new
    top's, those of the subtree itself (the top included) shift with it."""
    shift = dst_depth - src_depth
    inside = tuple(replace(g, depth=g.depth + shift) for g in guards if g.depth >= src_depth)
    return (*dst_guards, *inside)


def describe(access: int) -> str:
    return "_".join(
        name for bit, name in sorted(_ACCESS_NAMES.items(), reverse=True) if access & bit
    )


def denied(
    caller: Caller, path: str, owner: str, group: str, mode: int, what: str
) -> PermissionDenied:
    """The error HDFS would give: who, what was needed, and the inode that refused it."""
    return PermissionDenied(
        path,
        caller.user,
        message=(
            f"permission denied: user={caller.user}, access={what}, "
            f'inode="{path}":{owner}:{group}:{mode:04o}'
        ),
    )
