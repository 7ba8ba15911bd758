"""POST Object (browser form uploads) and CORS against the real gateway process
(``keelfs s3``): boto3's presigned POST, a form signed with V2, anonymous forms by the
bucket's ACL and the refusals (signature, expiry, conditions, size); Put/Get/DeleteBucketCors,
preflights and the CORS headers of requests with an ``Origin``."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import itertools
import json
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError

from tests.gateways.s3_helpers import (
    ACCESS_KEY,
    OTHER_KEY,
    OTHER_SECRET,
    OTHER_USER,
    SECRET_KEY,
    Gateway,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

_names = itertools.count(1)


def _bucket(s3: Any, stem: str, **create: Any) -> str:
    name = f"pc-{stem}-{next(_names)}"
    s3.create_bucket(Bucket=name, **create)
    return name


def _post(url: str, fields: dict[str, str], data: bytes, filename: str = "f.bin") -> Any:
    files = {"file": (filename, data)}
    return requests.post(url, data=fields, files=files, timeout=60, allow_redirects=False)


def _code(response: Any) -> str:
    return response.text.split("<Code>")[1].split("</Code>")[0]


def _v2_form(bucket: str, key: str, conditions: list[Any], minutes: float = 10) -> dict[str, str]:
    expiration = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)
    document = {
        "expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "conditions": [{"bucket": bucket}, *conditions],
    }
    policy = base64.b64encode(json.dumps(document).encode()).decode()
    signature = hmac.new(SECRET_KEY.encode(), policy.encode(), hashlib.sha1).digest()
    return {
        "key": key,
        "AWSAccessKeyId": ACCESS_KEY,
        "policy": policy,
        "signature": base64.b64encode(signature).decode(),
    }


def _missing(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        return exc.response["Error"]["Code"] in ("404", "NoSuchKey")
    return False


# -- POST Object ----------------------------------------------------------------------------------
def test_presigned_post_writes_the_object_as_put_would(gateway: Gateway) -> None:
    s3 = gateway.client()
    bucket = _bucket(s3, "post")
    presigned = s3.generate_presigned_post(
        bucket,
        "up/${filename}",
        Fields={"Content-Type": "text/plain", "x-amz-meta-tag": "blue"},
        Conditions=[
            ["starts-with", "$key", "up/"],
            {"Content-Type": "text/plain"},
            {"x-amz-meta-tag": "blue"},
            {"success_action_status": "201"},
            ["content-length-range", 1, 1 << 20],
        ],
    )
    data = b"form data " * 5000  # past an inline file: the chunk path
    fields = {**presigned["fields"], "success_action_status": "201"}
    answer = _post(presigned["url"], fields, data, filename="a.txt")
    assert answer.status_code == 201, answer.text
    assert "<Key>up/a.txt</Key>" in answer.text
    got = s3.get_object(Bucket=bucket, Key="up/a.txt")
    assert got["Body"].read() == data
    assert got["ContentType"] == "text/plain" and got["Metadata"] == {"tag": "blue"}
    assert got["ETag"] == f'"{hashlib.md5(data).hexdigest()}"' == answer.headers["ETag"]


def test_v2_form_with_redirect(gateway: Gateway) -> None:
    s3 = gateway.client()
    bucket = _bucket(s3, "redirect")
    fields = _v2_form(
        bucket,
        "k",
        [{"key": "k"}, {"success_action_redirect": "http://example.invalid/done"}],
    )
    fields["success_action_redirect"] = "http://example.invalid/done"
    answer = _post(f"{gateway.endpoint}/{bucket}", fields, b"abc")
    assert answer.status_code == 303, answer.text
    etag = s3.head_object(Bucket=bucket, Key="k")["ETag"]
    location = answer.headers["Location"]
    assert location.startswith(f"http://example.invalid/done?bucket={bucket}&key=k&etag=")
    assert location.endswith(requests.utils.quote(etag, safe=""))


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("bad signature", 403, "SignatureDoesNotMatch"),
        ("unknown key", 403, "InvalidAccessKeyId"),
        ("expired", 403, "AccessDenied"),
        ("condition not met", 403, "AccessDenied"),
        ("field not in the policy", 403, "AccessDenied"),
        ("too large", 400, "EntityTooLarge"),
        ("too small", 400, "EntityTooSmall"),
        ("no key", 400, "InvalidArgument"),
        ("no file", 400, "InvalidArgument"),
    ],
)
def test_refused_forms_write_nothing(gateway: Gateway, case: str, status: int, code: str) -> None:
    s3 = gateway.client()
    bucket = _bucket(s3, "refused")
    conditions: list[Any] = [["starts-with", "$key", "in/"], ["content-length-range", 2, 4]]
    fields = _v2_form(bucket, "in/k", conditions, minutes=-1 if case == "expired" else 10)
    data = b"abc"
    if case == "bad signature":
        fields["signature"] = base64.b64encode(b"x" * 20).decode()
    elif case == "unknown key":
        fields["AWSAccessKeyId"] = "AKIANOBODY0000000000"
    elif case == "condition not met":
        fields["key"] = "out/k"
    elif case == "field not in the policy":
        fields["x-amz-meta-extra"] = "1"
    elif case == "too large":
        data = b"x" * 5000
    elif case == "too small":
        data = b"x"
    elif case == "no key":
        del fields["key"]
    url = f"{gateway.endpoint}/{bucket}"
    if case == "no file":
        answer = requests.post(url, files={k: (None, v) for k, v in fields.items()}, timeout=60)
    else:
        answer = _post(url, fields, data)
    assert (answer.status_code, _code(answer)) == (status, code), answer.text
    assert _missing(s3, bucket, "in/k") and _missing(s3, bucket, "out/k")
    listed = s3.list_objects_v2(Bucket=bucket)
    assert listed["KeyCount"] == 0
    with gateway.cluster.client() as fs:  # nothing left behind in the gateway's temp files
        assert [e.path for e in fs.ls(f"/{bucket}/.s3/tmp")] == []


def test_anonymous_form_follows_the_bucket_acl(gateway: Gateway) -> None:
    s3 = gateway.client()
    private = _bucket(s3, "anon-private")
    open_bucket = _bucket(s3, "anon-open", ACL="public-read-write")
    fields = {"key": "k", "acl": "public-read", "Content-Type": "text/plain"}
    refused = _post(f"{gateway.endpoint}/{private}", fields, b"no")
    assert (refused.status_code, _code(refused)) == (403, "AccessDenied")
    assert _missing(s3, private, "k")
    accepted = _post(f"{gateway.endpoint}/{open_bucket}", fields, b"yes")
    assert accepted.status_code == 204, accepted.text
    assert requests.get(f"{gateway.endpoint}/{open_bucket}/k", timeout=30).content == b"yes"


def _policy(name: str, effect: str, principal: Any, key_pattern: str) -> str:
    statement = {
        "Effect": effect,
        "Principal": principal,
        "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{name}/{key_pattern}",
    }
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def test_a_form_upload_passes_the_bucket_policy_as_a_put(gateway: Gateway) -> None:
    """A POST upload is an ``s3:PutObject`` to the bucket's policy: a Deny refuses it (the
    owner's too) and writes nothing; an Allow for another user lets their form in where
    their own rights would not, as it lets their PUT in (the object is the owner's)."""
    s3 = gateway.client()
    bob = gateway.client(OTHER_KEY, OTHER_SECRET)
    bucket = _bucket(s3, "post-policy")
    s3.put_bucket_policy(Bucket=bucket, Policy=_policy(bucket, "Deny", "*", "locked/*"))
    denied = s3.generate_presigned_post(bucket, "locked/k")
    answer = _post(denied["url"], denied["fields"], b"no")
    assert (answer.status_code, _code(answer)) == (403, "AccessDenied")
    assert _missing(s3, bucket, "locked/k")
    open_form = s3.generate_presigned_post(bucket, "open/k")
    assert _post(open_form["url"], open_form["fields"], b"yes").status_code == 204
    bobs = bob.generate_presigned_post(bucket, "bob/k")
    refused = _post(bobs["url"], bobs["fields"], b"bob")  # a private bucket: not bob's
    assert (refused.status_code, _code(refused)) == (403, "AccessDenied")
    allow = _policy(bucket, "Allow", {"AWS": OTHER_USER}, "bob/*")
    s3.put_bucket_policy(Bucket=bucket, Policy=allow)
    bob.put_object(Bucket=bucket, Key="bob/put", Body=b"put")
    accepted = _post(bobs["url"], bobs["fields"], b"bob")
    assert accepted.status_code == 204, accepted.text
    assert s3.get_object(Bucket=bucket, Key="bob/k")["Body"].read() == b"bob"
    owners = {s3.get_object_acl(Bucket=bucket, Key=k)["Owner"]["ID"] for k in ("bob/put", "bob/k")}
    assert owners == {gateway.user}
    elsewhere = bob.generate_presigned_post(bucket, "other/k")
    answer = _post(elsewhere["url"], elsewhere["fields"], b"bob")
    assert (answer.status_code, _code(answer)) == (403, "AccessDenied")


def test_a_form_upload_naming_an_acl_is_refused_where_acls_are_off(gateway: Gateway) -> None:
    """``BucketOwnerEnforced``: a form's ``acl`` field is refused as a PUT's ``x-amz-acl``
    is (``AccessControlListNotSupported``, nothing written), but for
    ``bucket-owner-full-control``; a form without one is taken."""
    s3 = gateway.client()
    bucket = _bucket(s3, "post-enforced")
    s3.put_bucket_ownership_controls(
        Bucket=bucket,
        OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
    )
    named = s3.generate_presigned_post(
        bucket, "k", Fields={"acl": "public-read"}, Conditions=[{"acl": "public-read"}]
    )
    answer = _post(named["url"], named["fields"], b"no")
    assert (answer.status_code, _code(answer)) == (400, "AccessControlListNotSupported")
    assert _missing(s3, bucket, "k")
    full = s3.generate_presigned_post(
        bucket,
        "k",
        Fields={"acl": "bucket-owner-full-control"},
        Conditions=[{"acl": "bucket-owner-full-control"}],
    )
    assert _post(full["url"], full["fields"], b"ok").status_code == 204
    plain = s3.generate_presigned_post(bucket, "p")
    assert _post(plain["url"], plain["fields"], b"ok").status_code == 204


def test_a_form_upload_keeps_the_old_version(gateway: Gateway) -> None:
    s3 = gateway.client()
    bucket = _bucket(s3, "post-versions")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first = s3.put_object(Bucket=bucket, Key="k", Body=b"one")["VersionId"]
    form = s3.generate_presigned_post(bucket, "k")
    assert _post(form["url"], form["fields"], b"two").status_code == 204
    versions = s3.list_object_versions(Bucket=bucket, Prefix="k")["Versions"]
    assert len(versions) == 2 and first in {v["VersionId"] for v in versions}
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"two"
    assert s3.get_object(Bucket=bucket, Key="k", VersionId=first)["Body"].read() == b"one"


# -- CORS -----------------------------------------------------------------------------------------
RULES = {
    "CORSRules": [
        {
            "AllowedOrigins": ["https://*.example.com"],
            "AllowedMethods": ["GET", "PUT"],
            "AllowedHeaders": ["x-amz-*", "content-type"],
            "ExposeHeaders": ["ETag"],
            "MaxAgeSeconds": 300,
        }
    ]
}


def test_bucket_cors_configuration_is_the_owners(gateway: Gateway) -> None:
    s3 = gateway.client()
    bucket = _bucket(s3, "cors-conf", ACL="public-read-write")
    with pytest.raises(ClientError) as missing:
        s3.get_bucket_cors(Bucket=bucket)
    assert missing.value.response["Error"]["Code"] == "NoSuchCORSConfiguration"
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=RULES)
    assert s3.get_bucket_cors(Bucket=bucket)["CORSRules"] == RULES["CORSRules"]
    other = gateway.client(OTHER_KEY, OTHER_SECRET)
    for call in (
        lambda: other.put_bucket_cors(Bucket=bucket, CORSConfiguration=RULES),
        lambda: other.get_bucket_cors(Bucket=bucket),
        lambda: other.delete_bucket_cors(Bucket=bucket),
    ):
        with pytest.raises(ClientError) as denied:
            call()
        assert denied.value.response["Error"]["Code"] == "AccessDenied"
    s3.delete_bucket_cors(Bucket=bucket)
    with pytest.raises(ClientError) as deleted:
        s3.get_bucket_cors(Bucket=bucket)
    assert deleted.value.response["Error"]["Code"] == "NoSuchCORSConfiguration"


def test_preflights_and_origin_headers_follow_the_rules(gateway: Gateway) -> None:
    s3 = gateway.client()
    bucket = _bucket(s3, "cors", ACL="public-read")
    s3.put_object(Bucket=bucket, Key="k", Body=b"v", ACL="public-read")
    url = f"{gateway.endpoint}/{bucket}/k"
    origin = "https://app.example.com"
    preflight = {"Origin": origin, "Access-Control-Request-Method": "PUT"}
    before = requests.options(url, headers=preflight, timeout=30)
    assert before.status_code == 403  # no configuration yet
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=RULES)

    allowed = requests.options(
        url, headers={**preflight, "Access-Control-Request-Headers": "X-Amz-Date"}, timeout=30
    )
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["Access-Control-Allow-Origin"] == origin
    assert allowed.headers["Access-Control-Allow-Methods"] == "GET, PUT"
    assert allowed.headers["Access-Control-Allow-Headers"] == "X-Amz-Date"
    assert allowed.headers["Access-Control-Max-Age"] == "300"
    for refused in (
        {**preflight, "Origin": "https://example.org"},
        {**preflight, "Access-Control-Request-Method": "DELETE"},
        {**preflight, "Access-Control-Request-Headers": "authorization"},
    ):
        answer = requests.options(url, headers=refused, timeout=30)
        assert answer.status_code == 403, refused
        assert "Access-Control-Allow-Origin" not in answer.headers
    assert requests.options(url, headers={"Origin": origin}, timeout=30).status_code == 400

    got = requests.get(url, headers={"Origin": origin}, timeout=30)
    assert got.status_code == 200 and got.content == b"v"
    assert got.headers["Access-Control-Allow-Origin"] == origin
    assert got.headers["Access-Control-Expose-Headers"] == "ETag"
    missing = requests.get(url + "-missing", headers={"Origin": origin}, timeout=30)
    assert missing.status_code == 404  # errors carry them too (a browser reads the error)
    assert missing.headers["Access-Control-Allow-Origin"] == origin
    stranger = requests.get(url, headers={"Origin": "https://example.org"}, timeout=30)
    assert stranger.status_code == 200
    assert "Access-Control-Allow-Origin" not in stranger.headers


# -- Signature Version 2 (the suite's CORS tests sign with it) ------------------------------------
def test_signature_v2_clients(gateway: Gateway) -> None:
    v2 = gateway.client(signature_version="s3")
    bucket = _bucket(v2, "sigv2", ACL="public-read")
    v2.put_object(Bucket=bucket, Key="a b", Body=b"v2", ACL="public-read", Metadata={"m": "1"})
    v2.put_bucket_cors(Bucket=bucket, CORSConfiguration=RULES)
    assert v2.get_bucket_cors(Bucket=bucket)["CORSRules"] == RULES["CORSRules"]
    assert v2.get_object(Bucket=bucket, Key="a b")["Body"].read() == b"v2"
    assert gateway.client().get_object_acl(Bucket=bucket, Key="a b")["Owner"]["ID"] == gateway.user
    url = v2.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "a b"})
    assert requests.get(url, timeout=30).content == b"v2"
    other_key = url.replace("/a%20b?", "/other?")
    assert requests.get(other_key, timeout=30).status_code == 403
    forged = gateway.client(OTHER_KEY, "not-the-secret", signature_version="s3")
    with pytest.raises(ClientError) as exc:
        forged.list_objects(Bucket=bucket)
    assert exc.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
