"""S3 ACLs onto keelfs's permissions (``keelfs.gateways.s3.acl``), without a cluster: what
each canned ACL, grant header and policy body becomes, what is refused, and the answer."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from keelfs.gateways.s3 import acl
from keelfs.gateways.s3.acl import ALL_USERS, AUTHENTICATED_USERS, PRIVATE, Acl
from keelfs.gateways.s3.errors import S3Error
from keelfs.gateways.s3.xmlio import parse
from keelfs.meta.records import FileInfo

R, W = "READ", "WRITE"


def _request(
    owner: str = "ann", is_bucket: bool = True, body: bytes = b"", **headers: str
) -> Acl | None:
    given = CIMultiDict({k.replace("_", "-"): v for k, v in headers.items()})
    return acl.from_request(
        given, body, owner=owner, is_bucket=is_bucket, bucket_owner="ann", known={"bob"}
    )


def _code(call: object) -> str:
    with pytest.raises(S3Error) as exc:
        call()  # type: ignore[operator]
    return exc.value.code


@pytest.mark.parametrize(
    ("canned", "is_bucket", "others", "anonymous", "mode"),
    [
        ("private", True, set(), set(), 0o711),
        ("public-read", True, {R}, {R}, 0o755),
        ("public-read-write", True, {R, W}, {R, W}, 0o777),
        ("authenticated-read", True, {R}, set(), 0o755),
        ("private", False, set(), set(), 0o600),
        ("public-read", False, {R}, {R}, 0o644),
        ("public-read-write", False, {R}, {R, W}, 0o644),  # WRITE on an object grants nothing
        ("authenticated-read", False, {R}, set(), 0o644),
        ("bucket-owner-full-control", False, set(), set(), 0o600),  # ann owns the bucket
        ("bucket-owner-read", False, set(), set(), 0o600),
    ],
)
def test_canned_acls_become_modes_and_marks(
    canned: str, is_bucket: bool, others: set[str], anonymous: set[str], mode: int
) -> None:
    chosen = _request(is_bucket=is_bucket, x_amz_acl=canned)
    assert chosen == Acl(frozenset(others), frozenset(anonymous))
    assert (acl.dir_mode(chosen) if is_bucket else acl.file_mode(chosen)) == mode


def test_no_acl_given_is_none_and_unknown_canned_is_invalid() -> None:
    assert _request() is None
    assert _code(lambda: _request(x_amz_acl="world-writable")) == "InvalidArgument"


@pytest.mark.parametrize("canned", ["log-delivery-write", "aws-exec-read"])
def test_canned_acls_keelfs_cannot_hold_are_not_implemented(canned: str) -> None:
    assert _code(lambda: _request(x_amz_acl=canned)) == "NotImplemented"


def test_bucket_owner_acls_on_another_users_bucket_grant_the_bucket_owner() -> None:
    full = _request(owner="bob", is_bucket=False, x_amz_acl="bucket-owner-full-control")
    assert full == Acl(users=(("ann", "FULL_CONTROL"),))
    read = _request(owner="bob", is_bucket=False, x_amz_acl="bucket-owner-read")
    assert read == Acl(users=(("ann", R),))


def test_grant_headers() -> None:
    chosen = _request(
        x_amz_grant_full_control='id="ann"',
        x_amz_grant_read=f'uri="{ALL_USERS}", uri={AUTHENTICATED_USERS}',
        x_amz_grant_write=f'uri="{AUTHENTICATED_USERS}"',
    )
    assert chosen == Acl(frozenset({R, W}), frozenset({R}))
    # the owner must keep FULL_CONTROL; a known user may be granted READ/WRITE/FULL_CONTROL
    assert _code(lambda: _request(x_amz_grant_read=f'uri="{ALL_USERS}"')) == "NotImplemented"
    other = _request(x_amz_grant_full_control='id="ann"', x_amz_grant_read='id="bob"')
    assert other == Acl(users=(("bob", R),))
    both = _request(
        x_amz_grant_full_control='id="ann"', x_amz_grant_read="id=bob", x_amz_grant_write="id=bob"
    )
    assert both == Acl(users=(("bob", "FULL_CONTROL"),))  # on a bucket: the same entry
    unknown = lambda: _request(x_amz_grant_full_control='id="ann"', x_amz_grant_read="id=eve")  # noqa: E731
    assert _code(unknown) == "InvalidArgument"
    for header in ("x_amz_grant_read_acp", "x_amz_grant_write_acp"):
        acp_bob = lambda h=header: _request(x_amz_grant_full_control='id="ann"', **{h: "id=bob"})  # noqa: E731
        assert _code(acp_bob) == "NotImplemented", header
    object_write = lambda: _request(  # noqa: E731
        is_bucket=False, x_amz_grant_full_control='id="ann"', x_amz_grant_write="id=bob"
    )
    assert _code(object_write) == "NotImplemented"
    email = lambda: _request(  # noqa: E731
        x_amz_grant_full_control='id="ann"', x_amz_grant_read='emailAddress="x@example.com"'
    )
    assert _code(email) == "UnresolvableGrantByEmailAddress"  # keelfs users have none
    acp = lambda: _request(  # noqa: E731
        x_amz_grant_full_control='id="ann"', x_amz_grant_read_acp=f'uri="{ALL_USERS}"'
    )
    assert _code(acp) == "NotImplemented"
    assert _code(lambda: _request(x_amz_grant_read="nonsense")) == "InvalidArgument"


def test_several_sources_at_once_are_refused() -> None:
    both = lambda: _request(x_amz_acl="private", x_amz_grant_full_control='id="ann"')  # noqa: E731
    assert _code(both) == "InvalidRequest"


def _policy(*grants: tuple[str, str, str], owner: str = "ann") -> bytes:
    xsi = 'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    body = "".join(
        f'<Grant><Grantee {xsi} xsi:type="{kind}"><{field}>{value}</{field}></Grantee>'
        f"<Permission>{permission}</Permission></Grant>"
        for kind, value, permission in grants
        for field in [{"CanonicalUser": "ID", "Group": "URI"}.get(kind, "EmailAddress")]
    )
    return (
        f'<AccessControlPolicy xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Owner>'
        f"<ID>{owner}</ID></Owner><AccessControlList>{body}</AccessControlList>"
        "</AccessControlPolicy>"
    ).encode()


def test_policy_bodies() -> None:
    owner_full = ("CanonicalUser", "ann", "FULL_CONTROL")
    body = _policy(owner_full, ("Group", ALL_USERS, "READ"))
    assert _request(body=body) == Acl(frozenset({R}), frozenset({R}))
    assert _request(body=_policy(owner_full)) == PRIVATE
    bob = _policy(owner_full, ("CanonicalUser", "bob", "WRITE"))
    assert _request(body=bob) == Acl(users=(("bob", W),))
    refused = {
        "another user's READ_ACP": _policy(owner_full, ("CanonicalUser", "bob", "READ_ACP")),
        "no owner grant": _policy(("Group", ALL_USERS, "READ")),
        "owner reads only": _policy(("CanonicalUser", "ann", "READ")),
    }
    for why, body in refused.items():
        assert _code(lambda body=body: _request(body=body)) == "NotImplemented", why
    assert _code(lambda: _request(body=_policy(owner_full, owner="bob"))) == "InvalidArgument"
    malformed = [
        b"<AccessControlPolicy><AccessControlList>",  # not XML
        b"<Other/>",
        _policy(owner_full).replace(b"FULL_CONTROL", b"EVERYTHING"),
        _policy(owner_full).replace(b'xsi:type="CanonicalUser"', b""),
        b'<AccessControlPolicy xmlns="http://s3.amazonaws.com/doc/2006-03-01/"/>',
    ]
    for body in malformed:
        assert _code(lambda body=body: _request(body=body)) in ("MalformedACLError", "MalformedXML")


def _info(kind: str, mode: int) -> FileInfo:
    return FileInfo("/b/k", kind, 0, mode, "ann", "staff", 0, 0, 0, 0)  # type: ignore[arg-type]


def _grants(body: bytes) -> list[tuple[str, str]]:
    root = parse(body)
    found = []
    for grant in root.iter("{http://s3.amazonaws.com/doc/2006-03-01/}Grant"):
        who = [e.text for e in grant.iter() if e.tag.endswith(("}ID", "}URI"))][0]
        permission = [e.text for e in grant.iter() if e.tag.endswith("}Permission")][0]
        found.append((str(who), str(permission)))
    return found


def test_render_shows_what_the_mode_and_mark_grant() -> None:
    names = {"ann": "Ann Example"}
    assert _grants(acl.render(_info("dir", 0o711), frozenset(), names)) == [("ann", "FULL_CONTROL")]
    assert b"<DisplayName>Ann Example</DisplayName>" in acl.render(
        _info("dir", 0o711), frozenset(), names
    )
    assert _grants(acl.render(_info("dir", 0o777), frozenset({R}), names)) == [
        (ALL_USERS, "READ"), (AUTHENTICATED_USERS, "WRITE"), ("ann", "FULL_CONTROL"),
    ]  # fmt: skip
    assert _grants(acl.render(_info("file", 0o644), frozenset(), names)) == [
        (AUTHENTICATED_USERS, "READ"), ("ann", "FULL_CONTROL"),
    ]  # fmt: skip
    # group bits beyond everyone's are shown, not hidden
    assert _grants(acl.render(_info("file", 0o640), frozenset(), names)) == [
        ("urn:keelfs:group:staff", "READ"), ("ann", "FULL_CONTROL"),
    ]  # fmt: skip


def test_hidden_directories_are_writable_only_in_a_bucket_everyone_may_write() -> None:
    assert acl.hidden_mode(0o711) == 0o711
    assert acl.hidden_mode(0o755) == 0o711
    assert acl.hidden_mode(0o777) == 0o1733


def _acl_info(mode: int, *, is_dir: bool, acl_text: str = "", owner: str = "ann") -> FileInfo:
    from keelfs.meta.acls import parse_spec

    kind = "dir" if is_dir else "file"
    return FileInfo("/b", kind, 0, mode, owner, "staff", 0, 0, 0, 0, acl=parse_spec(acl_text))


def test_named_users_become_entries_with_the_mask_in_the_group_bits() -> None:
    chosen = Acl(frozenset({R}), users=(("bob", R), ("carl", W), ("dan", "FULL_CONTROL")))
    spec = acl.dir_acl_spec(chosen, acl.dir_mode(chosen))
    access = [e for e in spec if not e.startswith("default:")]
    assert access == [
        "user::rwx", "user:bob:r-x", "user:carl:-wx", "user:dan:rwx",
        "group::r-x", "mask::rwx", "other::r-x",
    ]  # fmt: skip
    assert [e for e in spec if e.startswith("default:")] == [f"default:{e}" for e in access]
    on_file = acl.file_acl_spec(Acl(users=(("bob", R), ("dan", "FULL_CONTROL"))), 0o600)
    assert on_file == ["user::rw-", "user:bob:r--", "user:dan:r-x", "group::---", "mask::r-x",
                       "other::---"]  # fmt: skip


def test_grants_are_read_back_from_the_entries_masked() -> None:
    bucket = _acl_info(
        0o771,
        is_dir=True,
        acl_text="user:bob:r-x,user:carl:-wx,user:dan:rwx,user:ann:rwx,group::--x,"
        "default:user::rwx,default:user:eve:rwx,default:group::--x,default:mask::rwx,"
        "default:other::--x",
    )
    assert acl.named_grants(bucket) == [("bob", R), ("carl", W), ("dan", "FULL_CONTROL")]
    masked = _acl_info(0o751, is_dir=True, acl_text="user:bob:r-x,user:carl:-wx,group::--x")
    assert acl.named_grants(masked) == [("bob", R)]  # carl's -wx masked to --x: nothing
    obj = _acl_info(0o650, is_dir=False, acl_text="user:bob:r--,user:dan:r-x,group::---")
    assert acl.named_grants(obj) == [("bob", R), ("dan", "FULL_CONTROL")]
    # the canned part still reads right: group:: (not the mask) against the other bits
    text = acl.render(bucket, frozenset(), {"bob": "Bob"}).decode()
    assert "urn:keelfs:group" not in text and "AuthenticatedUsers" not in text
    assert "<DisplayName>Bob</DisplayName>" in text
