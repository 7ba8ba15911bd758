"""S3 ACLs against the real gateway process (``keelfs s3``) with boto3, s3fs and unsigned
HTTP requests: each ACL verb, what every ACL lets another user and an anonymous caller do,
the keelfs modes behind them, and ACLs refused without changing anything."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from keelfs.errors import PermissionDenied
from tests.gateways.s3_helpers import (
    ACCESS_KEY,
    ANONYMOUS_USER,
    OTHER_KEY,
    OTHER_NAME,
    OTHER_SECRET,
    OTHER_USER,
    SECRET_KEY,
    Gateway,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
_names = itertools.count(1)


def _bucket(s3: Any, stem: str, **create: Any) -> str:
    name = f"acl-{stem}-{next(_names)}"
    s3.create_bucket(Bucket=name, **create)
    return name


def _grants(answer: dict[str, Any]) -> set[tuple[str, str]]:
    found = set()
    for grant in answer["Grants"]:
        grantee = grant["Grantee"]
        found.add((grantee.get("ID") or grantee.get("URI"), grant["Permission"]))
    return found


def _code(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    response = exc.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def _mode(gateway: Gateway, path: str) -> int:
    with gateway.cluster.client() as fs:
        return int(fs.stat(path).mode) & 0o7777


def _owner(gateway: Gateway, path: str) -> str:
    with gateway.cluster.client() as fs:
        return str(fs.stat(path).owner)


def _anonymous(gateway: Gateway, method: str, path: str, data: bytes | None = None) -> Any:
    return requests.request(method, f"{gateway.endpoint}/{path}", data=data, timeout=30)


def _signed(gateway: Gateway, method: str, path: str, body: bytes) -> requests.Response:
    """A request signed for ``ACCESS_KEY`` with any body (boto3 would not send a bad one)."""
    url = f"{gateway.endpoint}/{path}"
    request = AWSRequest(method=method, url=url, data=body)
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(request)
    prepared = request.prepare()
    return requests.request(method, url, data=body, headers=dict(prepared.headers), timeout=30)


def test_new_bucket_and_object_are_private(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = _bucket(s3, "default")
    s3.put_object(Bucket=name, Key="d/k", Body=b"secret")
    owner = {(gateway.user, "FULL_CONTROL")}
    answer = s3.get_bucket_acl(Bucket=name)
    assert _grants(answer) == owner and answer["Owner"]["ID"] == gateway.user
    assert _grants(s3.get_object_acl(Bucket=name, Key="d/k")) == owner
    # the modes behind them: others may pass through, not list or read
    assert _mode(gateway, f"/{name}") == 0o711
    assert _mode(gateway, f"/{name}/d") == 0o711
    assert _mode(gateway, f"/{name}/d/k") == 0o600
    bob = gateway.client(key=OTHER_KEY, secret=OTHER_SECRET)
    for call in (
        lambda: bob.get_object(Bucket=name, Key="d/k"),
        lambda: bob.head_object(Bucket=name, Key="d/k"),
        lambda: bob.list_objects_v2(Bucket=name),
        lambda: bob.get_bucket_acl(Bucket=name),
        lambda: bob.get_object_acl(Bucket=name, Key="d/k"),
        lambda: bob.put_object_acl(Bucket=name, Key="d/k", ACL="public-read"),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert _code(exc)[0] == 403  # AccessDenied (a HEAD's answer has no body)
    assert _anonymous(gateway, "GET", f"{name}/d/k").status_code == 403


def test_list_buckets_lists_the_callers_own(gateway: Gateway) -> None:
    s3 = gateway.client()
    bob = gateway.client(key=OTHER_KEY, secret=OTHER_SECRET)
    mine = _bucket(s3, "mine", ACL="public-read")
    with gateway.cluster.client() as fs:
        fs.mkdir(f"/acl-bobs-{next(_names)}", owner=OTHER_USER)
    bobs = [b["Name"] for b in bob.list_buckets()["Buckets"]]
    assert mine not in bobs and len(bobs) == 1 and bobs[0].startswith("acl-bobs-")
    assert mine in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert bobs[0] not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_canned_bucket_acls_at_create_and_put(gateway: Gateway) -> None:
    s3 = gateway.client()
    me = (gateway.user, "FULL_CONTROL")
    expected = {
        "private": ({me}, 0o711),
        "public-read": ({me, (ALL_USERS, "READ")}, 0o755),
        "public-read-write": ({me, (ALL_USERS, "READ"), (ALL_USERS, "WRITE")}, 0o777),
        "authenticated-read": ({me, (AUTHENTICATED, "READ")}, 0o755),
    }
    for canned, (grants, mode) in expected.items():
        name = _bucket(s3, "canned", ACL=canned)
        assert _grants(s3.get_bucket_acl(Bucket=name)) == grants, canned
        assert _mode(gateway, f"/{name}") == mode, canned
    name = _bucket(s3, "changed")
    s3.put_object(Bucket=name, Key="a/b/c", Body=b"x")
    for canned, (grants, mode) in expected.items():
        s3.put_bucket_acl(Bucket=name, ACL=canned)
        assert _grants(s3.get_bucket_acl(Bucket=name)) == grants, canned
        # the directories of its keys follow the bucket
        assert _mode(gateway, f"/{name}") == _mode(gateway, f"/{name}/a/b") == mode, canned


def test_canned_object_acls_at_put_and_put_object_acl(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = _bucket(s3, "objects")
    me = (gateway.user, "FULL_CONTROL")
    expected = {
        "private": ({me}, 0o600),
        "public-read": ({me, (ALL_USERS, "READ")}, 0o644),
        "public-read-write": ({me, (ALL_USERS, "READ"), (ALL_USERS, "WRITE")}, 0o644),
        "authenticated-read": ({me, (AUTHENTICATED, "READ")}, 0o644),
        "bucket-owner-full-control": ({me}, 0o600),
    }
    for canned, (grants, mode) in expected.items():
        s3.put_object(Bucket=name, Key=canned, Body=b"x", ACL=canned)
        assert _grants(s3.get_object_acl(Bucket=name, Key=canned)) == grants, canned
        assert _mode(gateway, f"/{name}/{canned}") == mode, canned
    s3.put_object(Bucket=name, Key="later", Body=b"later", ContentType="text/x-later")
    for canned, (grants, mode) in expected.items():
        s3.put_object_acl(Bucket=name, Key="later", ACL=canned)
        assert _grants(s3.get_object_acl(Bucket=name, Key="later")) == grants, canned
        assert _mode(gateway, f"/{name}/later") == mode, canned
    # the object and its metadata are untouched by ACL changes
    head = s3.head_object(Bucket=name, Key="later")
    assert head["ContentType"] == "text/x-later" and head["ContentLength"] == 5
    # copies and multipart uploads take the ACL their request gives
    s3.copy_object(Bucket=name, Key="copied", CopySource=f"{name}/later", ACL="public-read")
    assert _grants(s3.get_object_acl(Bucket=name, Key="copied")) == {me, (ALL_USERS, "READ")}
    upload = s3.create_multipart_upload(Bucket=name, Key="multi", ACL="authenticated-read")
    part = s3.upload_part(
        Bucket=name, Key="multi", UploadId=upload["UploadId"], PartNumber=1, Body=b"m"
    )
    s3.complete_multipart_upload(
        Bucket=name,
        Key="multi",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    assert _grants(s3.get_object_acl(Bucket=name, Key="multi")) == {me, (AUTHENTICATED, "READ")}
    assert _mode(gateway, f"/{name}/multi") == 0o644


def test_acls_decide_what_another_user_may_do(gateway: Gateway) -> None:
    s3 = gateway.client()
    bob = gateway.client(key=OTHER_KEY, secret=OTHER_SECRET)
    name = _bucket(s3, "shared")
    s3.put_object(Bucket=name, Key="doc", Body=b"doc")
    with pytest.raises(ClientError):
        bob.get_object(Bucket=name, Key="doc")
    s3.put_object_acl(Bucket=name, Key="doc", ACL="authenticated-read")
    assert bob.get_object(Bucket=name, Key="doc")["Body"].read() == b"doc"
    with pytest.raises(ClientError) as exc:
        bob.list_objects_v2(Bucket=name)  # the object is readable, the bucket not listable
    assert _code(exc) == (403, "AccessDenied")
    s3.put_bucket_acl(Bucket=name, ACL="authenticated-read")
    assert [c["Key"] for c in bob.list_objects_v2(Bucket=name)["Contents"]] == ["doc"]
    with pytest.raises(ClientError):
        bob.put_object(Bucket=name, Key="bobs", Body=b"b")
    s3.put_bucket_acl(Bucket=name, ACL="public-read-write")
    bob.put_object(Bucket=name, Key="sub/bobs", Body=b"b")
    written = bob.get_object_acl(Bucket=name, Key="sub/bobs")
    assert written["Owner"] == {"ID": OTHER_USER, "DisplayName": OTHER_NAME}
    # bob's object in the owner's bucket: bucket-owner-* grant the owner by a named entry
    bob.put_object(Bucket=name, Key="bor", Body=b"bor", ACL="bucket-owner-read")
    assert s3.get_object(Bucket=name, Key="bor")["Body"].read() == b"bor"
    assert _grants(bob.get_object_acl(Bucket=name, Key="bor")) == {
        (OTHER_USER, "FULL_CONTROL"), (gateway.user, "READ"),
    }  # fmt: skip
    bob.put_object(Bucket=name, Key="bof", Body=b"b", ACL="bucket-owner-full-control")
    assert _grants(bob.get_object_acl(Bucket=name, Key="bof")) == {
        (OTHER_USER, "FULL_CONTROL"), (gateway.user, "FULL_CONTROL"),
    }  # fmt: skip
    s3.put_object_acl(Bucket=name, Key="doc", ACL="private")
    with pytest.raises(ClientError) as exc:
        bob.get_object(Bucket=name, Key="doc")
    assert _code(exc) == (403, "AccessDenied")
    # the owner clears and deletes the bucket, bob's objects (and their sidecars) too
    for key in ("doc", "sub/bobs", "bor", "bof"):
        s3.delete_object(Bucket=name, Key=key)
    s3.delete_bucket(Bucket=name)


def test_anonymous_access_only_where_an_acl_grants_it(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = _bucket(s3, "anon")
    s3.put_object(Bucket=name, Key="dir/pub", Body=b"public body", ACL="public-read")
    s3.put_object(Bucket=name, Key="dir/auth", Body=b"a", ACL="authenticated-read")
    s3.put_object(Bucket=name, Key="priv", Body=b"p")
    got = _anonymous(gateway, "GET", f"{name}/dir/pub")
    assert got.status_code == 200 and got.content == b"public body"
    assert _anonymous(gateway, "HEAD", f"{name}/dir/pub").status_code == 200
    for refused in ("dir/auth", "priv", "missing"):  # a private bucket: no "no such key"
        reply = _anonymous(gateway, "GET", f"{name}/{refused}")
        assert reply.status_code == 403 and b"AccessDenied" in reply.content, refused
    assert _anonymous(gateway, "GET", f"{name}?list-type=2").status_code == 403
    assert _anonymous(gateway, "PUT", f"{name}/new", b"n").status_code == 403
    assert _anonymous(gateway, "GET", f"{name}?acl").status_code == 403
    assert _anonymous(gateway, "GET", "").status_code == 403
    s3.put_object_acl(Bucket=name, Key="dir/pub", ACL="authenticated-read")
    assert _anonymous(gateway, "GET", f"{name}/dir/pub").status_code == 403
    # a public-read bucket lists to everyone; a public-read-write one takes their objects
    s3.put_bucket_acl(Bucket=name, ACL="public-read")
    listing = _anonymous(gateway, "GET", f"{name}?list-type=2")
    assert listing.status_code == 200 and b"<Key>priv</Key>" in listing.content
    assert _anonymous(gateway, "GET", f"{name}/missing").status_code == 404
    assert _anonymous(gateway, "PUT", f"{name}/new", b"n").status_code == 403
    s3.put_bucket_acl(Bucket=name, ACL="public-read-write")
    assert _anonymous(gateway, "PUT", f"{name}/new", b"anon wrote").status_code == 200
    assert s3.get_object(Bucket=name, Key="new")["Body"].read() == b"anon wrote"
    assert _anonymous(gateway, "DELETE", f"{name}/new").status_code == 204
    copy = requests.put(
        f"{gateway.endpoint}/{name}/copy",
        headers={"x-amz-copy-source": f"{name}/priv"},
        timeout=30,
    )
    assert copy.status_code == 403
    s3.put_bucket_acl(Bucket=name, ACL="private")
    assert _anonymous(gateway, "PUT", f"{name}/new", b"n").status_code == 403


def test_forged_mark_of_another_user_is_not_honoured(gateway: Gateway) -> None:
    """In a bucket every user may write, another user can leave a file where the bucket's
    anonymous mark goes: only the bucket owner's mark counts."""
    s3 = gateway.client()
    name = _bucket(s3, "forged")
    s3.put_bucket_acl(
        Bucket=name,
        GrantFullControl=f'id="{gateway.user}"',
        GrantRead=f'uri="{AUTHENTICATED}"',
        GrantWrite=f'uri="{AUTHENTICATED}"',
    )
    assert _mode(gateway, f"/{name}") == 0o777
    with gateway.cluster.client(user=OTHER_USER) as bob_fs:
        if not bob_fs.exists(f"/{name}/.s3"):
            bob_fs.mkdir(f"/{name}/.s3")
        bob_fs.write_bytes(f"/{name}/.s3/acl", b'{"anonymous": ["READ", "WRITE"]}')
    assert _anonymous(gateway, "GET", f"{name}?list-type=2").status_code == 403
    assert _anonymous(gateway, "PUT", f"{name}/planted", b"x").status_code == 403
    grants = _grants(s3.get_bucket_acl(Bucket=name))
    assert grants == {
        (gateway.user, "FULL_CONTROL"), (AUTHENTICATED, "READ"), (AUTHENTICATED, "WRITE"),
    }  # fmt: skip


def test_refused_acls_change_nothing(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = _bucket(s3, "refused", ACL="public-read")
    s3.put_object(Bucket=name, Key="k", Body=b"k", ACL="authenticated-read")
    bucket_before = _grants(s3.get_bucket_acl(Bucket=name))
    object_before = _grants(s3.get_object_acl(Bucket=name, Key="k"))
    modes = (_mode(gateway, f"/{name}"), _mode(gateway, f"/{name}/k"))
    for body in (b"<AccessControlPolicy><AccessControlList>", b"<NotAnAcl/>"):
        reply = _signed(gateway, "PUT", f"{name}?acl", body)
        assert reply.status_code == 400, reply.content
        reply = _signed(gateway, "PUT", f"{name}/k?acl", body)
        assert reply.status_code == 400, reply.content
    to_bob = _to_bob(gateway, "READ_ACP")
    for call in (
        lambda: s3.put_bucket_acl(Bucket=name, AccessControlPolicy=to_bob),
        lambda: s3.put_object_acl(Bucket=name, Key="k", AccessControlPolicy=to_bob),
        lambda: s3.put_object_acl(Bucket=name, Key="k", GrantReadACP=f'id="{OTHER_USER}"'),
        lambda: s3.put_bucket_acl(Bucket=name, ACL="log-delivery-write"),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert _code(exc) == (501, "NotImplemented")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=name, Key="new", Body=b"n", GrantWriteACP=f'id="{OTHER_USER}"')
    assert _code(exc) == (501, "NotImplemented")
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=name, Key="new")  # nothing was written
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert _grants(s3.get_bucket_acl(Bucket=name)) == bucket_before
    assert _grants(s3.get_object_acl(Bucket=name, Key="k")) == object_before
    assert (_mode(gateway, f"/{name}"), _mode(gateway, f"/{name}/k")) == modes
    assert _anonymous(gateway, "GET", f"{name}?list-type=2").status_code == 200


def test_policy_bodies_round_trip(gateway: Gateway) -> None:
    """What GetBucketAcl answers, sent back by PutBucketAcl, is accepted and kept."""
    s3 = gateway.client()
    name = _bucket(s3, "roundtrip", ACL="public-read")
    answer = s3.get_bucket_acl(Bucket=name)
    s3.put_bucket_acl(Bucket=name, ACL="private")
    s3.put_bucket_acl(
        Bucket=name, AccessControlPolicy={"Owner": answer["Owner"], "Grants": answer["Grants"]}
    )
    assert _grants(s3.get_bucket_acl(Bucket=name)) == _grants(answer)
    assert _mode(gateway, f"/{name}") == 0o755


def test_s3fs_chmod_sets_canned_acls(gateway: Gateway) -> None:
    s3fs = pytest.importorskip("s3fs")
    fs = s3fs.S3FileSystem(
        key=ACCESS_KEY,
        secret=SECRET_KEY,
        endpoint_url=gateway.endpoint,
        client_kwargs={"region_name": "us-east-1"},
        config_kwargs={"s3": {"addressing_style": "path"}, "signature_version": "s3v4"},
        skip_instance_cache=True,
        use_listings_cache=False,
    )
    name = f"acl-s3fs-{next(_names)}"
    fs.mkdir(name)
    fs.pipe(f"{name}/f", b"via s3fs")
    assert _anonymous(gateway, "GET", f"{name}/f").status_code == 403
    fs.chmod(f"{name}/f", acl="public-read")
    assert _anonymous(gateway, "GET", f"{name}/f").content == b"via s3fs"
    fs.chmod(name, acl="public-read")
    assert _anonymous(gateway, "GET", f"{name}?list-type=2").status_code == 200
    fs.chmod(f"{name}/f", acl="private")
    assert _anonymous(gateway, "GET", f"{name}/f").status_code == 403


def _first_status_line(gateway: Gateway, path: str) -> bytes:
    """What the gateway answers first to an unsigned PUT announcing its body with
    ``Expect: 100-continue`` (the body not sent yet)."""
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(gateway.endpoint)
    with socket.create_connection((where.hostname, where.port), timeout=30) as sock:
        sock.sendall(
            f"PUT /{path} HTTP/1.1\r\nHost: {where.netloc}\r\nContent-Length: 5\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        return sock.recv(4096).split(b"\r\n", 1)[0]


def test_expect_100_continue_is_refused_before_the_body(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = _bucket(s3, "expect")
    assert _first_status_line(gateway, f"{name}/obj").startswith(b"HTTP/1.1 403")
    s3.put_bucket_acl(Bucket=name, ACL="public-read-write")
    assert _first_status_line(gateway, f"{name}/obj") == b"HTTP/1.1 100 Continue"


def test_the_owner_deletes_a_bucket_another_user_wrote_first(gateway: Gateway) -> None:
    """Another user's first write into a bucket everyone may write does not make the
    gateway's hidden directories theirs: the bucket's owner can still clear and delete it."""
    s3 = gateway.client()
    bob = gateway.client(key=OTHER_KEY, secret=OTHER_SECRET)
    name = _bucket(s3, "bobfirst", ACL="public-read-write")
    bob.put_object(Bucket=name, Key="d/bobs", Body=b"b")
    with gateway.cluster.client() as fs:
        assert fs.stat(f"/{name}/.s3/meta").owner == gateway.user
    s3.delete_object(Bucket=name, Key="d/bobs")
    s3.delete_bucket(Bucket=name)


def test_policy_status_follows_the_acl(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = _bucket(s3, "status")
    assert s3.get_bucket_policy_status(Bucket=name)["PolicyStatus"]["IsPublic"] is False
    for canned in ("public-read", "authenticated-read"):
        s3.put_bucket_acl(Bucket=name, ACL=canned)
        assert s3.get_bucket_policy_status(Bucket=name)["PolicyStatus"]["IsPublic"] is True


def test_cors_preflights_are_refused(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = _bucket(s3, "preflight", ACL="public-read")
    assert requests.options(f"{gateway.endpoint}/{name}/k", timeout=30).status_code == 400
    with_origin = requests.options(
        f"{gateway.endpoint}/{name}/k",
        headers={"Origin": "https://example.com", "Access-Control-Request-Method": "GET"},
        timeout=30,
    )
    assert with_origin.status_code == 403 and b"AccessForbidden" in with_origin.content


# -- bucket policies, public access blocks, ownership controls ----------------------------------
def _policy(name: str, *statements: dict[str, Any]) -> str:
    import json

    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _allow(principal: Any, action: Any, resource: Any, **more: Any) -> dict[str, Any]:
    return {
        "Effect": "Allow",
        "Principal": principal,
        "Action": action,
        "Resource": resource,
        **more,
    }


def _denied(call: Any) -> tuple[int, str]:
    with pytest.raises(ClientError) as exc:
        call()
    return _code(exc)


def test_policy_lets_another_user_and_anonymous_in(gateway: Gateway) -> None:
    s3 = gateway.client()
    bob = gateway.client(key=OTHER_KEY, secret=OTHER_SECRET)
    name = _bucket(s3, "policy")
    for key in ("pub/a", "priv/b", "anon/c"):
        s3.put_object(Bucket=name, Key=key, Body=key.encode())
    assert _denied(lambda: bob.get_object(Bucket=name, Key="pub/a"))[0] == 403
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_policy(Bucket=name)
    assert _code(exc) == (404, "NoSuchBucketPolicy")
    policy = _policy(
        name,
        _allow({"AWS": [OTHER_USER]}, "s3:GetObject", f"arn:aws:s3:::{name}/pub/*"),
        _allow("*", "s3:GetObject", f"arn:aws:s3:::{name}/anon/*"),
    )
    s3.put_bucket_policy(Bucket=name, Policy=policy)
    assert s3.get_bucket_policy(Bucket=name)["Policy"] == policy
    assert bob.get_object(Bucket=name, Key="pub/a")["Body"].read() == b"pub/a"
    assert _denied(lambda: bob.get_object(Bucket=name, Key="priv/b"))[0] == 403
    assert _denied(lambda: bob.put_object(Bucket=name, Key="pub/x", Body=b"x"))[0] == 403
    assert _denied(lambda: bob.list_objects_v2(Bucket=name))[0] == 403
    assert _anonymous(gateway, "GET", f"{name}/anon/c").content == b"anon/c"
    assert _anonymous(gateway, "GET", f"{name}/pub/a").status_code == 403
    # the policy is its owner's alone to read and change, and the objects stay private
    assert _denied(lambda: bob.get_bucket_policy(Bucket=name))[0] == 403
    assert _denied(lambda: bob.delete_bucket_policy(Bucket=name))[0] == 403
    assert _mode(gateway, f"/{name}/pub/a") == 0o600
    s3.delete_bucket_policy(Bucket=name)
    assert _denied(lambda: bob.get_object(Bucket=name, Key="pub/a"))[0] == 403
    assert _anonymous(gateway, "GET", f"{name}/anon/c").status_code == 403


def test_policy_deny_wins_over_acls_and_the_owner(gateway: Gateway) -> None:
    s3 = gateway.client()
    bob = gateway.client(key=OTHER_KEY, secret=OTHER_SECRET)
    name = _bucket(s3, "deny", ACL="public-read")
    s3.put_object(Bucket=name, Key="secret/k", Body=b"s", ACL="public-read")
    s3.put_object(Bucket=name, Key="open/k", Body=b"o", ACL="public-read")
    assert bob.get_object(Bucket=name, Key="secret/k")["Body"].read() == b"s"
    deny = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": ["s3:GetObject", "s3:PutBucketAcl"],
        "Resource": [f"arn:aws:s3:::{name}/secret/*", f"arn:aws:s3:::{name}"],
    }
    s3.put_bucket_policy(Bucket=name, Policy=_policy(name, deny))
    assert _denied(lambda: bob.get_object(Bucket=name, Key="secret/k")) == (403, "AccessDenied")
    assert _denied(lambda: s3.get_object(Bucket=name, Key="secret/k"))[0] == 403  # the owner too
    assert _denied(lambda: s3.put_bucket_acl(Bucket=name, ACL="private"))[0] == 403
    assert _anonymous(gateway, "GET", f"{name}/secret/k").status_code == 403
    assert bob.get_object(Bucket=name, Key="open/k")["Body"].read() == b"o"  # the ACL still
    # a Deny never takes the policy itself from its owner
    s3.delete_bucket_policy(Bucket=name)
    assert s3.get_object(Bucket=name, Key="secret/k")["Body"].read() == b"s"


def test_policy_conditions_and_what_a_missing_key_tells(gateway: Gateway) -> None:
    s3 = gateway.client()
    bob = gateway.client(key=OTHER_KEY, secret=OTHER_SECRET)
    name = _bucket(s3, "cond")
    s3.put_object(Bucket=name, Key="public/1", Body=b"1")
    s3.put_object(Bucket=name, Key="private/2", Body=b"2")
    # before any policy, bob learns nothing of which keys exist in a bucket he may not list
    assert _denied(lambda: bob.head_object(Bucket=name, Key="public/none"))[0] == 403
    listing = _allow(
        {"AWS": OTHER_USER},
        "s3:ListBucket",
        f"arn:aws:s3:::{name}",
        Condition={
            "StringLike": {"s3:prefix": "public/*"},
            "NumericLessThanEqualsIfExists": {"s3:max-keys": "100"},
        },
    )
    s3.put_bucket_policy(Bucket=name, Policy=_policy(name, listing))
    page = bob.list_objects_v2(Bucket=name, Prefix="public/", MaxKeys=100)
    assert [c["Key"] for c in page["Contents"]] == ["public/1"]
    too_many = lambda: bob.list_objects_v2(Bucket=name, Prefix="public/", MaxKeys=1000)  # noqa: E731
    assert _denied(too_many)[0] == 403
    assert _denied(lambda: bob.list_objects_v2(Bucket=name, Prefix="private/", MaxKeys=5))[0] == 403
    assert _denied(lambda: bob.head_object(Bucket=name, Key="public/none"))[0] == 404
    assert _denied(lambda: bob.head_object(Bucket=name, Key="private/none"))[0] == 403
    elsewhere = _allow(
        "*",
        "s3:GetObject",
        f"arn:aws:s3:::{name}/*",
        Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
    )
    s3.put_bucket_policy(Bucket=name, Policy=_policy(name, elsewhere))
    assert _denied(lambda: bob.get_object(Bucket=name, Key="public/1"))[0] == 403
    assert s3.get_bucket_policy_status(Bucket=name)["PolicyStatus"]["IsPublic"] is False
    here = {**elsewhere, "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}}
    s3.put_bucket_policy(Bucket=name, Policy=_policy(name, here))
    assert bob.get_object(Bucket=name, Key="public/1")["Body"].read() == b"1"


def test_policy_grants_no_more_than_the_bucket_owner_has(gateway: Gateway) -> None:
    """The gateway acts for the bucket's owner: what the owner may not read, the policy
    cannot open, and the policy opens nothing outside its bucket."""
    s3 = gateway.client()
    bob = gateway.client(key=OTHER_KEY, secret=OTHER_SECRET)
    name, other = f"acl-bobs-policy-{next(_names)}", f"acl-bobs-other-{next(_names)}"
    with gateway.cluster.client() as fs:
        fs.mkdir(f"/{name}", owner=OTHER_USER, mode=0o711)
        fs.mkdir(f"/{other}", owner=OTHER_USER, mode=0o711)
    bob.put_object(Bucket=name, Key="bobs", Body=b"b")
    s3.put_object(Bucket=name, Key="anns", Body=b"a")  # the superuser's, mode 0600
    bob.put_object(Bucket=other, Key="k", Body=b"k")
    everything = _policy(name, _allow("*", "*", [f"arn:aws:s3:::{name}", f"arn:aws:s3:::{name}/*"]))
    bob.put_bucket_policy(Bucket=name, Policy=everything)
    assert _anonymous(gateway, "GET", f"{name}/bobs").content == b"b"
    assert _anonymous(gateway, "GET", f"{name}/anns").status_code == 403  # bob may not read it
    assert _anonymous(gateway, "PUT", f"{name}/new", b"n").status_code == 200
    assert _owner(gateway, f"/{name}/new") == OTHER_USER

    def copy(source: str) -> int:
        return requests.put(
            f"{gateway.endpoint}/{name}/copied",
            headers={"x-amz-copy-source": source},
            timeout=30,
        ).status_code

    assert copy(f"/{name}/bobs") == 200
    # the owner's other bucket is not this policy's to open, not even by a copy
    assert copy(f"/{other}/k") == 403
    # nor does it change who may do what: ACLs, the policy, the bucket itself
    for method, query in (("PUT", "acl"), ("DELETE", "policy"), ("DELETE", "")):
        answer = _anonymous(gateway, method, f"{name}?{query}" if query else name)
        assert answer.status_code == 403, (method, query)
    bob.delete_bucket_policy(Bucket=name)


def test_a_planted_policy_file_does_not_count(gateway: Gateway) -> None:
    """In a bucket everyone may write, another user can make a file where the policy is
    kept; it counts only when the bucket's owner owns it."""
    import json

    s3 = gateway.client()
    bob = gateway.client(key=OTHER_KEY, secret=OTHER_SECRET)
    name = _bucket(s3, "planted", ACL="public-read-write")
    s3.put_object(Bucket=name, Key="private", Body=b"p")
    planted = json.dumps(
        {
            "bucket": name,
            "kind": "policy",
            "value": _policy(name, _allow("*", "*", f"arn:aws:s3:::{name}/*")),
        }
    ).encode()
    with gateway.cluster.client(user=OTHER_USER) as bob_fs:
        bob_fs.write_bytes(f"/{name}/.s3/policy", planted)
    assert _denied(lambda: bob.get_object(Bucket=name, Key="private"))[0] == 403
    assert _denied(lambda: s3.get_bucket_policy(Bucket=name))[0] == 404


def test_bucket_policy_validation(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = _bucket(s3, "badpolicy")
    for text in (
        "{",
        _policy(
            name, {"Effect": "Allow", "NotPrincipal": {"AWS": "x"}, "Action": "*", "Resource": "*"}
        ),  # fmt: skip
        _policy(name, _allow("*", "s3:GetObject", "arn:aws:s3:::someone-else/*")),
        _policy(name, _allow("*", "s3:GetObject", "*", Condition={"Sometimes": {"a": "b"}})),
    ):
        with pytest.raises(ClientError) as exc:
            s3.put_bucket_policy(Bucket=name, Policy=text)
        assert _code(exc) == (400, "MalformedPolicy"), text
    bob = gateway.client(key=OTHER_KEY, secret=OTHER_SECRET)
    good = _policy(name, _allow({"AWS": OTHER_USER}, "s3:GetObject", f"arn:aws:s3:::{name}/*"))
    assert _denied(lambda: bob.put_bucket_policy(Bucket=name, Policy=good))[0] == 403
    with pytest.raises(ClientError):
        s3.get_bucket_policy(Bucket=name)


def test_public_access_block(gateway: Gateway) -> None:
    s3 = gateway.client()
    bob = gateway.client(key=OTHER_KEY, secret=OTHER_SECRET)
    name = _bucket(s3, "block", ACL="public-read")
    s3.put_object(Bucket=name, Key="k", Body=b"k", ACL="public-read")
    assert bob.list_objects_v2(Bucket=name)["KeyCount"] == 1
    with pytest.raises(ClientError) as exc:
        s3.get_public_access_block(Bucket=name)
    assert _code(exc) == (404, "NoSuchPublicAccessBlockConfiguration")
    config = {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": False,
    }
    s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=config)
    assert s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"] == config
    assert _denied(lambda: bob.get_public_access_block(Bucket=name))[0] == 403
    # BlockPublicAcls: no public ACL is set, on the bucket or its objects
    for call in (
        lambda: s3.put_bucket_acl(Bucket=name, ACL="public-read-write"),
        lambda: s3.put_bucket_acl(Bucket=name, ACL="authenticated-read"),
        lambda: s3.put_object(Bucket=name, Key="p", Body=b"p", ACL="public-read"),
        lambda: s3.put_object_acl(Bucket=name, Key="k", ACL="authenticated-read"),
        lambda: s3.create_bucket(Bucket=name, ACL="public-read"),  # created again
    ):
        assert _denied(call) == (403, "AccessDenied")
    s3.put_object(Bucket=name, Key="private", Body=b"p", ACL="private")
    # IgnorePublicAcls: the public ACLs still there grant nothing
    assert _denied(lambda: bob.list_objects_v2(Bucket=name))[0] == 403
    assert _denied(lambda: bob.get_object(Bucket=name, Key="k"))[0] == 403
    assert _anonymous(gateway, "GET", f"{name}/k").status_code == 403
    # BlockPublicPolicy: a policy for everyone is refused, one for a named user is not
    public = _policy(name, _allow("*", "s3:GetObject", f"arn:aws:s3:::{name}/*"))
    assert _denied(lambda: s3.put_bucket_policy(Bucket=name, Policy=public))[0] == 403
    named = _policy(name, _allow({"AWS": OTHER_USER}, "s3:GetObject", f"arn:aws:s3:::{name}/*"))
    s3.put_bucket_policy(Bucket=name, Policy=named)
    assert bob.get_object(Bucket=name, Key="k")["Body"].read() == b"k"
    s3.delete_public_access_block(Bucket=name)
    with pytest.raises(ClientError):
        s3.get_public_access_block(Bucket=name)
    assert bob.list_objects_v2(Bucket=name)["KeyCount"] == 2


def test_restrict_public_buckets(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = _bucket(s3, "restrict")
    s3.put_object(Bucket=name, Key="k", Body=b"k")
    public = _policy(name, _allow("*", "s3:GetObject", f"arn:aws:s3:::{name}/*"))
    s3.put_bucket_policy(Bucket=name, Policy=public)
    assert s3.get_bucket_policy_status(Bucket=name)["PolicyStatus"]["IsPublic"] is True
    assert _anonymous(gateway, "GET", f"{name}/k").content == b"k"
    s3.put_public_access_block(
        Bucket=name, PublicAccessBlockConfiguration={"RestrictPublicBuckets": True}
    )
    assert _anonymous(gateway, "GET", f"{name}/k").status_code == 403
    assert s3.get_object(Bucket=name, Key="k")["Body"].read() == b"k"


def test_ownership_controls(gateway: Gateway) -> None:
    s3 = gateway.client()
    bob = gateway.client(key=OTHER_KEY, secret=OTHER_SECRET)
    name = _bucket(s3, "owned", ObjectOwnership="BucketOwnerEnforced")
    rules = s3.get_bucket_ownership_controls(Bucket=name)["OwnershipControls"]["Rules"]
    assert rules == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    # ACLs are off: setting one is refused, but for bucket-owner-full-control
    not_supported = (400, "AccessControlListNotSupported")
    assert _denied(lambda: s3.put_bucket_acl(Bucket=name, ACL="private")) == not_supported
    assert _denied(lambda: s3.put_object(Bucket=name, Key="x", Body=b"x", ACL="private")) == (
        not_supported
    )
    s3.put_object(Bucket=name, Key="y", Body=b"y", ACL="bucket-owner-full-control")
    assert _denied(lambda: s3.put_object_acl(Bucket=name, Key="y", ACL="private")) == (
        not_supported
    )
    # what another user writes by the policy is the bucket owner's
    writes = _policy(name, _allow({"AWS": OTHER_USER}, "s3:PutObject", f"arn:aws:s3:::{name}/*"))
    s3.put_bucket_policy(Bucket=name, Policy=writes)
    bob.put_object(Bucket=name, Key="bobs", Body=b"b")
    assert s3.get_object_acl(Bucket=name, Key="bobs")["Owner"]["ID"] == gateway.user
    s3.delete_bucket_ownership_controls(Bucket=name)
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_ownership_controls(Bucket=name)
    assert _code(exc) == (404, "OwnershipControlsNotFoundError")
    s3.delete_bucket_ownership_controls(Bucket=name)  # again: nothing to delete, fine
    # enforcing is refused while the bucket's ACL is public
    s3.put_bucket_acl(Bucket=name, ACL="public-read")
    enforced = {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls=enforced)
    assert _code(exc) == (400, "InvalidBucketAclWithObjectOwnership")
    writer = {"Rules": [{"ObjectOwnership": "ObjectWriter"}]}
    s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls=writer)
    assert _denied(lambda: bob.get_bucket_ownership_controls(Bucket=name))[0] == 403


def test_get_object_attributes(gateway: Gateway) -> None:
    import base64
    import hashlib

    s3 = gateway.client()
    name = _bucket(s3, "attrs")
    body = b"attributes"
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    put = s3.put_object(Bucket=name, Key="k", Body=body, ChecksumSHA256=digest)
    assert put["ChecksumSHA256"] == digest
    wanted = ["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"]
    answer = s3.get_object_attributes(Bucket=name, Key="k", ObjectAttributes=wanted)
    assert answer["ETag"] == put["ETag"].strip('"') and answer["ObjectSize"] == len(body)
    assert answer["Checksum"]["ChecksumSHA256"] == digest and "ObjectParts" not in answer
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=name, Key="bad", Body=body, ChecksumSHA256=digest[::-1])
    assert _code(exc)[0] == 400
    upload = s3.create_multipart_upload(Bucket=name, Key="m")
    parts = []
    for number, size in ((1, 5 * 1024 * 1024), (2, 5 * 1024 * 1024), (3, 7)):
        part = s3.upload_part(
            Bucket=name, Key="m", UploadId=upload["UploadId"], PartNumber=number,
            Body=b"p" * size,
        )  # fmt: skip
        parts.append({"PartNumber": number, "ETag": part["ETag"]})
    s3.complete_multipart_upload(
        Bucket=name, Key="m", UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    answer = s3.get_object_attributes(
        Bucket=name, Key="m", ObjectAttributes=wanted, MaxParts=1, PartNumberMarker=1
    )
    object_parts = answer["ObjectParts"]
    assert object_parts["TotalPartsCount"] == 3 and object_parts["IsTruncated"] is True
    assert [(p["PartNumber"], p["Size"]) for p in object_parts["Parts"]] == [(2, 5 * 1024 * 1024)]
    assert object_parts["NextPartNumberMarker"] == 2


def test_policy_deny_reaches_each_key_of_a_delete_and_a_copy_source(gateway: Gateway) -> None:
    s3 = gateway.client()
    bob = gateway.client(key=OTHER_KEY, secret=OTHER_SECRET)
    name = _bucket(s3, "denykeys", ACL="public-read-write")
    for key in ("secret/k", "open/k"):
        s3.put_object(Bucket=name, Key=key, Body=b"x", ACL="public-read")
    deny = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": ["s3:DeleteObject", "s3:GetObject"],
        "Resource": f"arn:aws:s3:::{name}/secret/*",
    }
    s3.put_bucket_policy(Bucket=name, Policy=_policy(name, deny))
    answer = bob.delete_objects(
        Bucket=name, Delete={"Objects": [{"Key": "secret/k"}, {"Key": "open/k"}]}
    )
    assert [(e["Key"], e["Code"]) for e in answer["Errors"]] == [("secret/k", "AccessDenied")]
    assert [d["Key"] for d in answer["Deleted"]] == ["open/k"]
    copy = {"Bucket": name, "Key": "secret/k"}
    assert _denied(lambda: bob.copy_object(Bucket=name, Key="mine", CopySource=copy))[0] == 403
    other = f"acl-denykeys-bobs-{next(_names)}"
    with gateway.cluster.client() as fs:
        fs.mkdir(f"/{other}", owner=OTHER_USER, mode=0o711)
    assert _denied(lambda: bob.copy_object(Bucket=other, Key="mine", CopySource=copy))[0] == 403
    s3.delete_bucket_policy(Bucket=name)
    assert s3.head_object(Bucket=name, Key="secret/k")["ContentLength"] == 1


# -- grants to named users: keelfs named-user ACL entries --------------------------------------
def _entries(gateway: Gateway, path: str) -> set[str]:
    with gateway.cluster.client() as fs:
        return {entry.to_text() for entry in fs.stat(path).acl}


def _refused(call: Any) -> None:
    with pytest.raises(ClientError) as exc:
        call()
    assert _code(exc)[0] == 403


def _to_bob(gateway: Gateway, permission: str) -> dict[str, Any]:
    """A policy: the owner's FULL_CONTROL and ``permission`` to bob by canonical id."""
    owner = {"Type": "CanonicalUser", "ID": gateway.user}
    bob = {"Type": "CanonicalUser", "ID": OTHER_USER}
    return {
        "Owner": {"ID": gateway.user},
        "Grants": [
            {"Grantee": owner, "Permission": "FULL_CONTROL"},
            {"Grantee": bob, "Permission": permission},
        ],
    }


def _grantee(answer: dict[str, Any], user: str) -> list[tuple[str, str]]:
    return [
        (grant["Grantee"].get("DisplayName"), grant["Permission"])
        for grant in answer["Grants"]
        if grant["Grantee"].get("ID") == user
    ]


def test_a_read_grant_lets_that_user_read_and_only_read(gateway: Gateway) -> None:
    s3 = gateway.client()
    bob = gateway.client(key=OTHER_KEY, secret=OTHER_SECRET)
    name = _bucket(s3, "grant-read")
    s3.put_object(Bucket=name, Key="d/e/k", Body=b"nested")
    s3.put_bucket_acl(Bucket=name, AccessControlPolicy=_to_bob(gateway, "READ"))
    s3.put_object_acl(
        Bucket=name,
        Key="d/e/k",
        GrantFullControl=f'id="{gateway.user}"',
        GrantRead=f"id={OTHER_USER}",
    )
    # what GetAcl reports, by display name, and the entries behind it
    assert _grantee(s3.get_bucket_acl(Bucket=name), OTHER_USER) == [(OTHER_NAME, "READ")]
    assert _grantee(s3.get_object_acl(Bucket=name, Key="d/e/k"), OTHER_USER) == [
        (OTHER_NAME, "READ")
    ]
    assert f"user:{OTHER_USER}:r-x" in _entries(gateway, f"/{name}")
    assert f"user:{OTHER_USER}:r-x" in _entries(gateway, f"/{name}/d/e")
    assert f"user:{OTHER_USER}:r--" in _entries(gateway, f"/{name}/d/e/k")
    # the canned mapping still reads right: the group bits are the mask now
    assert _grants(s3.get_bucket_acl(Bucket=name)) == {
        (gateway.user, "FULL_CONTROL"), (OTHER_USER, "READ"),
    }  # fmt: skip
    # bob lists (nested too) and reads
    listed = bob.list_objects_v2(Bucket=name, Prefix="d/e/")
    assert [c["Key"] for c in listed["Contents"]] == ["d/e/k"]
    assert bob.get_object(Bucket=name, Key="d/e/k")["Body"].read() == b"nested"
    # and nothing more
    _refused(lambda: bob.put_object(Bucket=name, Key="bobs", Body=b"b"))
    _refused(lambda: bob.put_object(Bucket=name, Key="d/e/bobs", Body=b"b"))
    _refused(lambda: bob.delete_object(Bucket=name, Key="d/e/k"))
    _refused(lambda: bob.get_bucket_acl(Bucket=name))
    _refused(lambda: bob.put_object_acl(Bucket=name, Key="d/e/k", ACL="public-read"))
    # nobody else was given anything
    with gateway.cluster.client(user=ANONYMOUS_USER) as other:
        with pytest.raises(PermissionDenied):
            other.read_bytes(f"/{name}/d/e/k")
        with pytest.raises(PermissionDenied):
            list(other.ls(f"/{name}"))


def test_a_bucket_write_grant_lets_that_user_put_and_delete_nested_keys(gateway: Gateway) -> None:
    s3 = gateway.client()
    bob = gateway.client(key=OTHER_KEY, secret=OTHER_SECRET)
    name = _bucket(s3, "grant-write")
    s3.put_object(Bucket=name, Key="old/deep/k", Body=b"owner's")
    s3.put_object(Bucket=name, Key="old/owners", Body=b"owner's too")
    s3.put_bucket_acl(
        Bucket=name, GrantFullControl=f"id={gateway.user}", GrantWrite=f"id={OTHER_USER}"
    )
    assert _grantee(s3.get_bucket_acl(Bucket=name), OTHER_USER) == [(OTHER_NAME, "WRITE")]
    bob.put_object(Bucket=name, Key="new/a/b/c", Body=b"bob's nested")  # directories made
    bob.put_object(Bucket=name, Key="old/deep/k", Body=b"overwritten")  # one made before
    bob.put_object(Bucket=name, Key="old/deep/more/x", Body=b"x")
    upload = bob.create_multipart_upload(Bucket=name, Key="new/multi")
    part = bob.upload_part(
        Bucket=name, Key="new/multi", UploadId=upload["UploadId"], PartNumber=1, Body=b"m"
    )
    bob.complete_multipart_upload(
        Bucket=name,
        Key="new/multi",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    bob.copy_object(Bucket=name, Key="new/copied", CopySource=f"{name}/new/a/b/c")
    for key in ("new/a/b/c", "old/deep/k", "new/multi", "old/owners"):
        bob.delete_object(Bucket=name, Key=key)
    keys = [c["Key"] for c in s3.list_objects_v2(Bucket=name)["Contents"]]
    assert keys == ["new/copied", "old/deep/more/x"]
    # WRITE is not READ: bob may not list
    _refused(lambda: bob.list_objects_v2(Bucket=name))
    assert f"user:{OTHER_USER}:-wx" in _entries(gateway, f"/{name}/old/deep")
    assert f"default:user:{OTHER_USER}:-wx" in _entries(gateway, f"/{name}")


def test_a_replaced_acl_takes_the_grant_away(gateway: Gateway) -> None:
    s3 = gateway.client()
    bob = gateway.client(key=OTHER_KEY, secret=OTHER_SECRET)
    name = _bucket(s3, "grant-gone")
    s3.put_object(Bucket=name, Key="d/k", Body=b"k")
    s3.put_bucket_acl(Bucket=name, AccessControlPolicy=_to_bob(gateway, "FULL_CONTROL"))
    s3.put_object_acl(Bucket=name, Key="d/k", AccessControlPolicy=_to_bob(gateway, "FULL_CONTROL"))
    assert _grantee(s3.get_bucket_acl(Bucket=name), OTHER_USER) == [(OTHER_NAME, "FULL_CONTROL")]
    assert _grantee(s3.get_object_acl(Bucket=name, Key="d/k"), OTHER_USER) == [
        (OTHER_NAME, "FULL_CONTROL")
    ]
    assert bob.get_object(Bucket=name, Key="d/k")["Body"].read() == b"k"
    bob.put_object(Bucket=name, Key="d/bobs", Body=b"b")
    assert len(bob.list_objects_v2(Bucket=name)["Contents"]) == 2
    # a full replace: public-read keeps no grant to bob beyond what everyone has
    s3.put_bucket_acl(Bucket=name, ACL="authenticated-read")
    assert _grants(s3.get_bucket_acl(Bucket=name)) == {
        (gateway.user, "FULL_CONTROL"), (AUTHENTICATED, "READ"),
    }  # fmt: skip
    _refused(lambda: bob.put_object(Bucket=name, Key="d/again", Body=b"b"))
    s3.put_bucket_acl(Bucket=name, ACL="private")
    s3.put_object_acl(Bucket=name, Key="d/k", GrantFullControl=f"id={gateway.user}")
    _refused(lambda: bob.list_objects_v2(Bucket=name))
    _refused(lambda: bob.get_object(Bucket=name, Key="d/k"))
    _refused(lambda: bob.put_object(Bucket=name, Key="d/again", Body=b"b"))
    for path in (f"/{name}", f"/{name}/d", f"/{name}/d/k"):
        assert _entries(gateway, path) == set(), path
    assert (_mode(gateway, f"/{name}"), _mode(gateway, f"/{name}/d")) == (0o711, 0o711)
    assert _mode(gateway, f"/{name}/d/k") == 0o600
    assert _grants(s3.get_object_acl(Bucket=name, Key="d/k")) == {(gateway.user, "FULL_CONTROL")}


def test_named_grants_keelfs_cannot_hold_or_resolve(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = _bucket(s3, "grant-refused")
    s3.put_object(Bucket=name, Key="k", Body=b"k")
    for call in (
        lambda: s3.put_bucket_acl(Bucket=name, AccessControlPolicy=_to_bob(gateway, "READ_ACP")),
        lambda: s3.put_bucket_acl(Bucket=name, AccessControlPolicy=_to_bob(gateway, "WRITE_ACP")),
        lambda: s3.put_object_acl(
            Bucket=name, Key="k", AccessControlPolicy=_to_bob(gateway, "WRITE")
        ),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert _code(exc) == (501, "NotImplemented")
    nobody = _to_bob(gateway, "READ")
    nobody["Grants"][1]["Grantee"]["ID"] = "no-such-user"
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_acl(Bucket=name, AccessControlPolicy=nobody)
    assert _code(exc) == (400, "InvalidArgument")
    assert _entries(gateway, f"/{name}") == set() and _mode(gateway, f"/{name}") == 0o711


# -- how soon a change of a bucket's settings applies (``settings_cache``) ------------------------
def _deny_all_gets(name: str) -> str:
    deny = {"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject"}
    return _policy(name, {**deny, "Resource": f"arn:aws:s3:::{name}/*"})


def _versions(s3: Any, name: str, key: str) -> list[str]:
    answer = s3.list_object_versions(Bucket=name, Prefix=key)
    return [v["VersionId"] for v in answer.get("Versions", []) if v["Key"] == key]


def test_a_change_through_this_gateway_applies_to_its_next_request(gateway: Gateway) -> None:
    """The gateway keeps a bucket's settings a second, but forgets them once it changes
    them: a policy's Deny, versioning turned on, CORS rules apply to the very next request
    (each read just before, so the old settings are kept when the change comes)."""
    s3 = gateway.client()
    name = _bucket(s3, "next")
    s3.put_object(Bucket=name, Key="k", Body=b"1")
    assert s3.get_object(Bucket=name, Key="k")["Body"].read() == b"1"
    s3.put_bucket_policy(Bucket=name, Policy=_deny_all_gets(name))
    assert _denied(lambda: s3.get_object(Bucket=name, Key="k")) == (403, "AccessDenied")
    s3.delete_bucket_policy(Bucket=name)
    assert s3.get_object(Bucket=name, Key="k")["Body"].read() == b"1"
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=name, Key="k", Body=b"2")  # the first write must keep "1"
    assert len(_versions(s3, name, "k")) == 2
    origin = {"Origin": "https://a.example.com"}
    url = f"{gateway.endpoint}/{name}/k"
    assert (
        "Access-Control-Allow-Origin" not in requests.get(url, headers=origin, timeout=30).headers
    )
    rules = {"AllowedOrigins": ["https://*.example.com"], "AllowedMethods": ["GET"]}
    s3.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": [rules]})
    assert "Access-Control-Allow-Origin" in requests.get(url, headers=origin, timeout=30).headers


def test_a_bucket_made_again_has_none_of_the_old_ones_settings(gateway: Gateway) -> None:
    """Deleted and created again under the same name (through this gateway), a bucket has
    none of its predecessor's policy or versioning, at once."""
    s3 = gateway.client()
    bob = gateway.client(key=OTHER_KEY, secret=OTHER_SECRET)
    name = _bucket(s3, "again")
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    vid = s3.put_object(Bucket=name, Key="k", Body=b"old")["VersionId"]
    grant = _allow({"AWS": OTHER_USER}, "s3:GetObject", f"arn:aws:s3:::{name}/*")
    s3.put_bucket_policy(Bucket=name, Policy=_policy(name, grant))
    assert bob.get_object(Bucket=name, Key="k")["Body"].read() == b"old"
    s3.delete_object(Bucket=name, Key="k", VersionId=vid)
    s3.delete_bucket(Bucket=name)
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="k", Body=b"new")
    s3.put_object(Bucket=name, Key="k", Body=b"newer")
    assert _versions(s3, name, "k") == ["null"]
    assert _denied(lambda: bob.get_object(Bucket=name, Key="k")) == (403, "AccessDenied")


def _until(deadline_s: float, check: Any) -> bool:
    """Whether ``check()`` came true before the deadline (tried at once, then every 50 ms)."""
    import time

    deadline = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _get_denied(client: Any, name: str) -> bool:
    try:
        client.get_object(Bucket=name, Key="k")
    except ClientError as exc:
        return exc.response["Error"]["Code"] == "AccessDenied"
    return False


def test_a_change_through_another_gateway_applies_within_the_window(
    gateway: Gateway, tmp_path: Any
) -> None:
    """A second gateway on the same cluster changes a bucket's settings: the first one
    applies the change within its window (a second, ``settings_cache``; waited for here
    with a generous deadline), but never acts for the owner on a grant that is gone: a
    bucket deleted and created again through the other gateway gives none of the old
    one's grants, at once."""
    import time

    from keelfs.runtime.processes import hard_kill
    from tests.gateways.s3_helpers import start_gateway

    proc, endpoint, _ = start_gateway(gateway.cluster, tmp_path)
    try:
        s3_other = Gateway(gateway.cluster, endpoint, proc, gateway.user).client()
        s3 = gateway.client()
        bob = gateway.client(key=OTHER_KEY, secret=OTHER_SECRET)
        name = _bucket(s3, "elsewhere")
        s3.put_object(Bucket=name, Key="k", Body=b"1")
        assert s3.get_object(Bucket=name, Key="k")["Body"].read() == b"1"  # kept here
        started = time.monotonic()
        s3_other.put_bucket_policy(Bucket=name, Policy=_deny_all_gets(name))
        assert _until(30, lambda: _get_denied(s3, name)), "the other gateway's Deny never applied"
        took = time.monotonic() - started
        grant = _allow({"AWS": OTHER_USER}, "s3:GetObject", f"arn:aws:s3:::{name}/*")
        s3_other.put_bucket_policy(Bucket=name, Policy=_policy(name, grant))
        assert _until(30, lambda: not _get_denied(bob, name))
        # deleted and made again (no policy) through the other gateway: at once, the old
        # bucket's grant lets bob in no more (the gateway acts for an owner only on
        # settings read for the request)
        s3_other.delete_object(Bucket=name, Key="k")
        s3_other.delete_bucket(Bucket=name)
        s3_other.create_bucket(Bucket=name)
        s3_other.put_object(Bucket=name, Key="k", Body=b"new")
        assert _get_denied(bob, name)
        enable = {"Status": "Enabled"}
        s3_other.put_bucket_versioning(Bucket=name, VersioningConfiguration=enable)
        assert _until(30, lambda: s3.get_bucket_versioning(Bucket=name).get("Status") == "Enabled")
        print(f"the other gateway's Deny applied here after {took:.2f} s")
    finally:
        hard_kill(proc)


def test_a_gateway_with_settings_ttl_zero_applies_another_gateways_change_at_once(
    gateway: Gateway, tmp_path: Any
) -> None:
    """``keelfs s3 --settings-ttl 0`` keeps no settings: a Deny put through another gateway
    binds its very next request (with the default window it may not, for a second), every
    time, while the bucket was just read there."""
    from keelfs.runtime.processes import hard_kill
    from tests.gateways.s3_helpers import start_gateway

    proc, endpoint, _ = start_gateway(gateway.cluster, tmp_path, "--settings-ttl", "0")
    try:
        s3_fresh = Gateway(gateway.cluster, endpoint, proc, gateway.user).client()
        s3 = gateway.client()
        for round_ in range(3):
            name = _bucket(s3, f"ttl0-{round_}")
            s3.put_object(Bucket=name, Key="k", Body=b"1")
            assert s3_fresh.get_object(Bucket=name, Key="k")["Body"].read() == b"1"
            s3.put_bucket_policy(Bucket=name, Policy=_deny_all_gets(name))
            assert _get_denied(s3_fresh, name), f"round {round_}: a kept Allow answered"
            s3.delete_bucket_policy(Bucket=name)
            assert s3_fresh.get_object(Bucket=name, Key="k")["Body"].read() == b"1"
    finally:
        hard_kill(proc)


# -- what a policy's Allow never lets the gateway do as the owner --------------------------------
def test_a_policy_allow_never_sets_versioning_for_another_user(gateway: Gateway) -> None:
    """PutBucketVersioning is the owner's alone: a policy that allows it to another user
    does not let the gateway act as the owner for it (a Deny still binds the owner)."""
    s3 = gateway.client()
    bob = gateway.client(key=OTHER_KEY, secret=OTHER_SECRET)
    name = _bucket(s3, "allow-ver")
    allow = _allow({"AWS": OTHER_USER}, "s3:PutBucketVersioning", f"arn:aws:s3:::{name}")
    s3.put_bucket_policy(Bucket=name, Policy=_policy(name, allow))
    enable = {"Status": "Enabled"}
    assert _denied(
        lambda: bob.put_bucket_versioning(Bucket=name, VersioningConfiguration=enable)
    ) == (403, "AccessDenied")
    assert "Status" not in s3.get_bucket_versioning(Bucket=name)
    deny = {"Effect": "Deny", "Principal": "*", "Action": "s3:PutBucketVersioning"}
    s3.put_bucket_policy(
        Bucket=name, Policy=_policy(name, {**deny, "Resource": f"arn:aws:s3:::{name}"})
    )
    assert _denied(
        lambda: s3.put_bucket_versioning(Bucket=name, VersioningConfiguration=enable)
    ) == (403, "AccessDenied")
    assert "Status" not in s3.get_bucket_versioning(Bucket=name)


def test_a_policy_allow_never_sets_cors_for_another_user(gateway: Gateway) -> None:
    """PutBucketCors and DeleteBucketCors are the owner's alone, whatever the policy
    allows another user (a Deny still binds the owner)."""
    s3 = gateway.client()
    bob = gateway.client(key=OTHER_KEY, secret=OTHER_SECRET)
    name = _bucket(s3, "allow-cors")
    owners = {"CORSRules": [{"AllowedOrigins": ["https://a.example"], "AllowedMethods": ["GET"]}]}
    s3.put_bucket_cors(Bucket=name, CORSConfiguration=owners)
    allow = _allow({"AWS": OTHER_USER}, "s3:PutBucketCORS", f"arn:aws:s3:::{name}")
    s3.put_bucket_policy(Bucket=name, Policy=_policy(name, allow))
    bobs = {"CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET", "PUT"]}]}
    assert _denied(lambda: bob.put_bucket_cors(Bucket=name, CORSConfiguration=bobs)) == (
        403,
        "AccessDenied",
    )
    assert _denied(lambda: bob.delete_bucket_cors(Bucket=name)) == (403, "AccessDenied")
    assert s3.get_bucket_cors(Bucket=name)["CORSRules"] == owners["CORSRules"]
    deny = {"Effect": "Deny", "Principal": "*", "Action": "s3:PutBucketCORS"}
    s3.put_bucket_policy(
        Bucket=name, Policy=_policy(name, {**deny, "Resource": f"arn:aws:s3:::{name}"})
    )
    assert _denied(lambda: s3.delete_bucket_cors(Bucket=name))[0] == 403
    assert s3.get_bucket_cors(Bucket=name)["CORSRules"] == owners["CORSRules"]
