"""S3 ACLs over keelfs's permissions (``docs/s3.md``, "ACLs").

keelfs keeps an owner, a group and POSIX mode bits on every path, not lists of grants. The
gateway maps onto them the part of S3's ACLs they can hold honestly, and refuses the rest
with ``NotImplemented`` (never accepting a grant it would not enforce):

- the **owner's FULL_CONTROL**: the path's keelfs owner (who alone may chmod it); every ACL
  keeps it;
- **AuthenticatedUsers** ``READ`` (and ``WRITE`` on a bucket): the group and other mode bits,
  that is every keelfs user. A bucket (and every directory of its keys) is ``0711`` (others
  may pass through to an object they may read, not list), ``0755`` with ``READ`` (list),
  ``0777`` with ``WRITE`` too (create, overwrite, delete any object); an object is ``0600``,
  ``0644`` with ``READ``;
- **AllUsers** ``READ``/``WRITE``: the same bits, plus the **anonymous mark**, which the
  gateway checks before it serves an unsigned request (acting as its configured anonymous
  keelfs user, whose reads the cluster checks against the same bits). A bucket's mark is
  the file ``.s3/acl``, an object's is in its sidecar; a mark counts only when its file is
  owned by the owner of the bucket or object, so no one else can open a path to anonymous
  users. ``WRITE`` on an object grants nothing, in S3 as here; it is only shown back.

- **a named user** (canonical id = keelfs user name, one the credentials file knows): a
  named-user ACL entry (``keelfs.meta.acls``). On a bucket ``READ`` is ``user:ID:r-x`` (list),
  ``WRITE`` ``user:ID:-wx`` (create, overwrite, delete keys), ``FULL_CONTROL`` (or both)
  ``user:ID:rwx``, on its directory, on every directory of its keys and its hidden ones, and
  as default entries there so the directories made later (by anyone) inherit them; an
  object's ``READ`` is ``user:ID:r--`` on its file and sidecar, its ``FULL_CONTROL``
  ``user:ID:r-x`` (what keelfs enforces of it is ``READ``: a file's ``x`` grants nothing,
  it only tells the two apart). ``bucket-owner-*`` on an object in another user's bucket
  grants the bucket's owner so. With named entries the mode's group bits are the mask.

What cannot be held: grants to e-mail addresses, ``READ_ACP``/``WRITE_ACP`` to anyone but the
owner (keelfs lets only the owner read through the gateway and change ACLs), ``WRITE`` on an
object to a named user, an ACL without the owner's ``FULL_CONTROL``, ``log-delivery-write``,
``aws-exec-read``.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from xml.etree.ElementTree import Element

from keelfs.client.aio import AsyncClient
from keelfs.client.files import write_inline
from keelfs.errors import IsADirectory, KeelError, NotADirectory, NotFound
from keelfs.gateways.s3.errors import S3Error, from_keel
from keelfs.gateways.s3.xmlio import children, document, parse, sub, tag
from keelfs.meta.acls import AclEntry, perm_text
from keelfs.meta.records import FileInfo

__all__ = [
    "ALL_USERS",
    "AUTHENTICATED_USERS",
    "PRIVATE",
    "Acl",
    "dir_acl_spec",
    "dir_mode",
    "file_acl_spec",
    "file_mode",
    "named_grants",
    "from_grants",
    "from_request",
    "hidden_mode",
    "read_bucket_acl",
    "render",
]

READ, WRITE, READ_ACP, WRITE_ACP, FULL_CONTROL = (
    "READ", "WRITE", "READ_ACP", "WRITE_ACP", "FULL_CONTROL"
)  # fmt: skip
PERMISSIONS = (READ, WRITE, READ_ACP, WRITE_ACP, FULL_CONTROL)
ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
KEELFS_GROUP = "urn:keelfs:group:"
"""The grantee URI shown for a keelfs group whose mode bits give more than every user has."""
XSI = "http://www.w3.org/2001/XMLSchema-instance"
BUCKET_MARK = "acl"
"""The bucket's anonymous mark, in its hidden directory."""
_GRANT_HEADERS = {
    "x-amz-grant-read": READ,
    "x-amz-grant-write": WRITE,
    "x-amz-grant-read-acp": READ_ACP,
    "x-amz-grant-write-acp": WRITE_ACP,
    "x-amz-grant-full-control": FULL_CONTROL,
}
_GRANTEE_PAIR = re.compile(r'\s*(id|uri|emailAddress)\s*=\s*("([^"]*)"|[^,\s]+)\s*(,|$)')


@dataclass(frozen=True)
class Acl:
    """What keelfs holds of an S3 ACL: ``others``, what every keelfs user is granted
    (``READ``/``WRITE``, the mode bits); ``anonymous``, what unsigned requests are (the
    mark); ``users``, the named users' grants (user, ``READ``/``WRITE``/``FULL_CONTROL``),
    sorted: named-user ACL entries."""

    others: frozenset[str] = frozenset()
    anonymous: frozenset[str] = frozenset()
    users: tuple[tuple[str, str], ...] = ()


PRIVATE = Acl()
_R, _RW = frozenset({READ}), frozenset({READ, WRITE})


def dir_mode(acl: Acl) -> int:
    """The mode of a bucket's directory, and of its keys' directories (module doc)."""
    mode = 0o711
    if READ in acl.others:
        mode |= 0o044
    if WRITE in acl.others:
        mode |= 0o022
    return mode


def file_mode(acl: Acl) -> int:
    return 0o644 if READ in acl.others else 0o600


def hidden_mode(bucket_mode: int, *, extended: bool = False) -> int:
    """The gateway's hidden directories of a bucket of mode ``bucket_mode``: passable (a
    reader reads the sidecar of an object it may read); writable by everyone, sticky, where
    everyone may write objects (their uploads go there first). ``extended``: the bucket has
    named users, who may write there too: sticky, and group bits that do not narrow the mask
    a new hidden directory inherits from the bucket's default entries."""
    mode = 0o1733 if bucket_mode & 0o002 else 0o711
    return mode | 0o1070 if extended else mode


_DIR_BITS = {READ: 0o5, WRITE: 0o3, FULL_CONTROL: 0o7}
_FILE_BITS = {READ: 0o4, FULL_CONTROL: 0o5}


def _spec(mode: int, named: list[tuple[str, int]], *, defaults: bool) -> list[str]:
    """The whole ACL of a path whose owner, group and others have ``mode``'s bits, with
    these named users (the mask: the union of the group class)."""
    group = (mode >> 3) & 7
    mask = group
    for _, bits in named:
        mask |= bits
    access = [
        f"user::{perm_text(mode >> 6)}",
        *(f"user:{user}:{perm_text(bits)}" for user, bits in named),
        f"group::{perm_text(group)}",
        f"mask::{perm_text(mask)}",
        f"other::{perm_text(mode)}",
    ]
    return access + [f"default:{entry}" for entry in access] if defaults else access


def dir_acl_spec(acl: Acl, mode: int) -> list[str]:
    """The ACL of a bucket's directory (or one below it) of ``mode`` holding ``acl``'s named
    users: access entries, and the same as defaults for what is made below it later."""
    return _spec(mode, [(user, _DIR_BITS[perm]) for user, perm in acl.users], defaults=True)


def file_acl_spec(acl: Acl, mode: int) -> list[str]:
    """The ACL of an object (and its sidecar) of ``mode`` holding ``acl``'s named users."""
    return _spec(mode, [(user, _FILE_BITS[perm]) for user, perm in acl.users], defaults=False)


def named_grants(info: FileInfo) -> list[tuple[str, str]]:
    """What the named-user entries of ``info`` grant (masked), in S3's words (module doc)."""
    mask = (info.mode >> 3) & 7
    found: list[tuple[str, str]] = []
    for entry in info.acl:
        if entry.default or entry.kind != "user" or not entry.named or entry.name == info.owner:
            continue
        bits = entry.perm & mask
        if info.is_dir:
            if bits == 0o7:
                found.append((entry.name, FULL_CONTROL))
            elif bits & 0o5 == 0o5:
                found.append((entry.name, READ))
            elif bits & 0o3 == 0o3:
                found.append((entry.name, WRITE))
        elif bits & 0o5 == 0o5:
            found.append((entry.name, FULL_CONTROL))
        elif bits & 0o4:
            found.append((entry.name, READ))
    return found


def others_of(info: FileInfo) -> frozenset[str]:
    """What the "other" mode bits give every keelfs user, in S3's words."""
    mode = info.mode
    granted = set()
    if info.is_dir:
        if mode & 0o005 == 0o005:
            granted.add(READ)
        if mode & 0o003 == 0o003:
            granted.add(WRITE)
    elif mode & 0o004:
        granted.add(READ)
    return frozenset(granted)


def _group_extra(info: FileInfo) -> frozenset[str]:
    """What the group bits give the path's group beyond every user."""
    group = (info.mode >> 3) & 0o7  # with named entries: the mask, and group:: is stored
    for entry in _access(info.acl):
        if entry.kind == "group" and not entry.named:
            group = entry.perm & group
    as_other = FileInfo(info.path, info.kind, 0, group, "", "", 0, 0, 0, 0)
    return others_of(as_other) - others_of(info)


def _access(acl: Sequence[AclEntry]) -> list[AclEntry]:
    return [entry for entry in acl if not entry.default]


# -- what a request asks for -------------------------------------------------------------------
Grant = tuple[str, str, str]
"""(grantee kind: ``id``/``uri``/``emailAddress``, its value, permission)."""


def from_request(
    headers: object,
    body: bytes,
    *,
    owner: str,
    is_bucket: bool,
    bucket_owner: str = "",
    known: Collection[str] = (),
) -> Acl | None:
    """The ACL a request asks for: ``x-amz-acl``, ``x-amz-grant-*`` headers or (PutAcl) an
    ``AccessControlPolicy`` body; None when it gives none. Raises, before anything changes,
    for one keelfs cannot hold (``NotImplemented``), one malformed (``MalformedACLError``,
    ``InvalidArgument``), or more than one of the three."""
    get = headers.get  # type: ignore[attr-defined]
    canned = get("x-amz-acl")
    grants = [(name, get(name)) for name in _GRANT_HEADERS if get(name) is not None]
    given = [canned is not None, bool(grants), bool(body.strip())]
    if sum(given) > 1:
        raise S3Error(
            "InvalidRequest", "Specify a canned ACL, grant headers or an ACL body, not several"
        )
    if canned is not None:
        return from_canned(
            canned.strip(), owner=owner, is_bucket=is_bucket, bucket_owner=bucket_owner
        )
    if grants:
        parsed = [
            (kind, value, _GRANT_HEADERS[name])
            for name, text in grants
            for kind, value in _grantees(text)
        ]
        return from_grants(parsed, owner=owner, is_bucket=is_bucket, known=known)
    if given[2]:
        policy = _policy_grants(parse(body), owner)
        return from_grants(policy, owner=owner, is_bucket=is_bucket, known=known)
    return None


def from_canned(name: str, *, owner: str, is_bucket: bool, bucket_owner: str = "") -> Acl:
    if name == "private":
        return PRIVATE
    if name == "public-read":
        return Acl(_R, _R)
    if name == "public-read-write":
        return Acl(_RW, _RW) if is_bucket else Acl(_R, _RW)
    if name == "authenticated-read":
        return Acl(_R)
    if name in ("bucket-owner-read", "bucket-owner-full-control") and not is_bucket:
        if bucket_owner == owner or not bucket_owner:
            return PRIVATE  # the owner of both: the owner's FULL_CONTROL, nothing more
        granted = READ if name == "bucket-owner-read" else FULL_CONTROL
        return Acl(users=((bucket_owner, granted),))
    if name in ("log-delivery-write", "aws-exec-read", "bucket-owner-read",
                "bucket-owner-full-control"):  # fmt: skip
        raise _cannot(f"the canned ACL {name} cannot be held by keelfs's permissions")
    raise S3Error("InvalidArgument", f"unknown canned ACL {name!r}", ArgumentName="x-amz-acl")


def _cannot(what: str) -> S3Error:
    return S3Error("NotImplemented", f"{what} (docs/s3.md, ACLs)")


def _grantees(text: str) -> list[tuple[str, str]]:
    """``id="..", uri=..`` of an ``x-amz-grant-*`` header."""
    found: list[tuple[str, str]] = []
    rest = text.strip()
    while rest:
        match = _GRANTEE_PAIR.match(rest)
        if match is None:
            raise S3Error("InvalidArgument", f"cannot read the grantee list {text!r}")
        value = match.group(3) if match.group(3) is not None else match.group(2)
        found.append((match.group(1), value))
        rest = rest[match.end() :].strip()
    return found


def _policy_grants(root: Element, owner: str) -> list[Grant]:
    if tag(root) != "AccessControlPolicy":
        raise _malformed()
    for element in children(root, "Owner"):
        named = _text(element, "ID")
        if named is not None and named != owner:
            raise S3Error(
                "InvalidArgument",
                f"the ACL names owner {named!r}, the owner is {owner!r}: keelfs changes owners "
                "with chown, not ACLs",
            )
    lists = children(root, "AccessControlList")
    if len(lists) != 1:
        raise _malformed()
    grants: list[Grant] = []
    for grant in lists[0]:
        if tag(grant) != "Grant":
            raise _malformed()
        grantees = children(grant, "Grantee")
        permission = _text(grant, "Permission")
        if len(grantees) != 1 or permission not in PERMISSIONS:
            raise _malformed()
        grants.append((*_grantee(grantees[0]), permission))
    return grants


def _grantee(element: Element) -> tuple[str, str]:
    kind = element.get(f"{{{XSI}}}type", "")
    field = {"CanonicalUser": "ID", "Group": "URI", "AmazonCustomerByEmail": "EmailAddress"}
    name = field.get(kind)
    value = _text(element, name) if name is not None else None
    if name is None or not value:
        raise _malformed()
    return {"ID": "id", "URI": "uri", "EmailAddress": "emailAddress"}[name], value


def _text(element: Element, name: str) -> str | None:
    for child in children(element, name):
        return (child.text or "").strip()
    return None


def _malformed() -> S3Error:
    return S3Error(
        "MalformedACLError",
        "The XML you provided was not well-formed or did not validate against our published schema",
    )


def from_grants(
    grants: list[Grant], *, owner: str, is_bucket: bool, known: Collection[str] = ()
) -> Acl:
    """The ACL of explicit grants, if keelfs can hold it (module doc)."""
    everyone: set[str] = set()
    users: set[str] = set()
    named: dict[str, set[str]] = {}
    owner_full = False
    for kind, value, permission in grants:
        if kind == "id" and value == owner:
            owner_full = owner_full or permission == FULL_CONTROL
            continue
        if kind == "uri" and value in (ALL_USERS, AUTHENTICATED_USERS):
            allowed = (READ, WRITE) if is_bucket or value == ALL_USERS else (READ,)
            if permission not in allowed:
                raise _cannot(f"keelfs cannot grant {permission} to {value}")
            (everyone if value == ALL_USERS else users).add(permission)
            continue
        if kind == "emailAddress":
            raise S3Error(
                "UnresolvableGrantByEmailAddress",
                f"keelfs users have no e-mail addresses: {value} names nobody",
            )
        if kind == "id":
            named.setdefault(value, set()).add(_named_permission(value, permission, is_bucket))
            continue
        raise _cannot(f"keelfs cannot grant {permission} to {kind}={value}")
    if not owner_full:
        raise _cannot(f"the owner ({owner}) always holds FULL_CONTROL in keelfs")
    unknown = sorted(set(named) - set(known))
    if unknown:
        raise S3Error("InvalidArgument", f"no such user: {unknown[0]}", ArgumentName="Grantee")
    others = users | everyone
    if not is_bucket:
        others.discard(WRITE)
    return Acl(frozenset(others), frozenset(everyone), _named_users(named))


def _named_permission(user: str, permission: str, is_bucket: bool) -> str:
    """A grant to a named user keelfs can enforce (module doc), or ``NotImplemented``."""
    if permission in (READ_ACP, WRITE_ACP):
        raise _cannot(
            f"keelfs cannot grant {permission} to {user}: only the owner reads an ACL through "
            "the gateway and changes it"
        )
    if permission == WRITE and not is_bucket:
        raise _cannot(f"keelfs cannot hold WRITE on an object for {user} (it grants nothing)")
    return permission


def _named_users(named: dict[str, set[str]]) -> tuple[tuple[str, str], ...]:
    """One permission per user: ``FULL_CONTROL`` where it is given or ``READ`` and ``WRITE``
    both are (on a bucket they are the same entry)."""
    users = []
    for user, permissions in sorted(named.items()):
        full = FULL_CONTROL in permissions or {READ, WRITE} <= permissions
        users.append((user, FULL_CONTROL if full else next(iter(permissions))))
    return tuple(users)


# -- answers ------------------------------------------------------------------------------------
def render(info: FileInfo, anonymous: frozenset[str], names: dict[str, str]) -> bytes:
    """``AccessControlPolicy`` of a path (its owner, mode bits and anonymous mark)."""
    from keelfs.gateways.s3.xmlio import render as render_xml

    root = document("AccessControlPolicy")
    _person(sub(root, "Owner"), info.owner, names)
    grants = sub(root, "AccessControlList")
    others = others_of(info)
    for permission in (READ, WRITE):  # the groups first, the owner last: RGW's order
        if permission in anonymous:
            _grant(grants, "Group", ALL_USERS, permission, names)
        elif permission in others:
            _grant(grants, "Group", AUTHENTICATED_USERS, permission, names)
    for permission in sorted(_group_extra(info)):
        _grant(grants, "Group", KEELFS_GROUP + info.group, permission, names)
    for user, permission in named_grants(info):
        _grant(grants, "CanonicalUser", user, permission, names)
    _grant(grants, "CanonicalUser", info.owner, FULL_CONTROL, names)
    return render_xml(root)


def _person(element: Element, user: str, names: dict[str, str]) -> None:
    sub(element, "ID", user)
    sub(element, "DisplayName", names.get(user, user))


def _grant(parent: Element, kind: str, who: str, permission: str, names: dict[str, str]) -> None:
    grant = sub(parent, "Grant")
    grantee = sub(grant, "Grantee")
    grantee.set("xmlns:xsi", XSI)
    grantee.set("xsi:type", kind)
    if kind == "CanonicalUser":
        _person(grantee, who, names)
    else:
        sub(grantee, "URI", who)
    sub(grant, "Permission", permission)


# -- the bucket's mark ----------------------------------------------------------------------------
def _mark_path(bucket: str) -> str:
    return f"/{bucket}/.s3/{BUCKET_MARK}"


async def read_bucket_acl(fs: AsyncClient, bucket: str) -> tuple[FileInfo, frozenset[str]]:
    """The bucket's directory and what its mark grants unsigned requests."""
    from keelfs.gateways.s3.store import require_bucket

    info = await require_bucket(fs, bucket)
    return info, await _bucket_mark(fs, bucket, info.owner)


async def _bucket_mark(fs: AsyncClient, bucket: str, owner: str) -> frozenset[str]:
    try:
        mark = await fs.stat(_mark_path(bucket))
        if mark.owner != owner or mark.is_dir:
            return frozenset()
        body = json.loads(await fs.read_bytes(_mark_path(bucket)))
    except (NotFound, NotADirectory, IsADirectory, ValueError):
        return frozenset()
    except KeelError as exc:
        raise from_keel(exc, missing="NoSuchBucket", BucketName=bucket) from None
    granted = body.get("anonymous", []) if isinstance(body, dict) else []
    return frozenset(p for p in granted if p in (READ, WRITE))


async def write_bucket_mark(fs: AsyncClient, bucket: str, anonymous: frozenset[str]) -> None:
    """The bucket's mark, or none (``anonymous`` empty); its hidden directory made if
    needed."""
    from keelfs.gateways.s3.store import make_hidden_dir

    path = _mark_path(bucket)
    if not anonymous:
        with contextlib.suppress(NotFound, NotADirectory):
            await fs.delete(path)
        return
    data = json.dumps({"anonymous": sorted(anonymous)}).encode()
    try:
        await write_inline(fs, path, data, overwrite=True, mode=0o644)
    except NotFound:
        await make_hidden_dir(fs, bucket, f"/{bucket}/.s3")
        await write_inline(fs, path, data, overwrite=True, mode=0o644)
