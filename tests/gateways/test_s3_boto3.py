"""The S3 gateway with boto3, the reference S3 client: every operation, against a real cluster
and ``keelfs s3`` in its own process (``conftest.py``)."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import itertools
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.gateways.s3_helpers import OTHER_KEY, OTHER_SECRET, Gateway

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

_names = itertools.count(1)
MiB = 1024 * 1024


def new_bucket(s3: Any, stem: str = "b") -> str:
    name = f"{stem}-{next(_names)}"
    s3.create_bucket(Bucket=name)
    return name


def code_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    response = exc.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def keys_of(page: dict[str, Any]) -> list[str]:
    return [c["Key"] for c in page.get("Contents", [])]


def prefixes_of(page: dict[str, Any]) -> list[str]:
    return [p["Prefix"] for p in page.get("CommonPrefixes", [])]


# -- buckets ----------------------------------------------------------------------------------
def test_buckets_create_list_head_delete(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = new_bucket(s3, "buckets")
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
    # creating one's own bucket again succeeds, as S3 in us-east-1 (and moto)
    assert s3.create_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
    with pytest.raises(ClientError) as exc:
        s3.create_bucket(Bucket="No_Such")
    assert code_of(exc)[1] == "InvalidBucketName"
    s3.put_object(Bucket=name, Key="k", Body=b"x")
    with pytest.raises(ClientError) as exc:
        s3.delete_bucket(Bucket=name)
    assert code_of(exc) == (409, "BucketNotEmpty")
    s3.delete_object(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)
    with pytest.raises(ClientError) as exc:
        s3.head_bucket(Bucket=name)
    assert code_of(exc)[0] == 404
    with pytest.raises(ClientError) as exc:
        s3.list_objects_v2(Bucket=name)
    assert code_of(exc) == (404, "NoSuchBucket")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=name, Key="k", Body=b"x")
    assert code_of(exc) == (404, "NoSuchBucket")


def test_list_buckets_pages_and_prefix(gateway: Gateway) -> None:
    s3 = gateway.client()
    names = sorted(new_bucket(s3, "pages") for _ in range(3))
    mine = [b["Name"] for b in s3.list_buckets(Prefix="pages-")["Buckets"]]
    assert mine == names
    first = s3.list_buckets(Prefix="pages-", MaxBuckets=2)
    assert [b["Name"] for b in first["Buckets"]] == names[:2]
    rest = s3.list_buckets(
        Prefix="pages-", MaxBuckets=2, ContinuationToken=first["ContinuationToken"]
    )
    assert [b["Name"] for b in rest["Buckets"]] == names[2:] and "ContinuationToken" not in rest


def test_expected_bucket_owner_and_conditional_put(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = new_bucket(s3, "expected")
    s3.put_object(Bucket=name, Key="k", Body=b"x", ExpectedBucketOwner=gateway.user)
    with pytest.raises(ClientError) as exc:
        s3.list_objects_v2(Bucket=name, ExpectedBucketOwner="someone-else")
    assert code_of(exc) == (403, "AccessDenied")
    # a write whose If-Match fails changes nothing
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=name, Key="k", Body=b"y", IfMatch='"0"')
    assert code_of(exc) == (412, "PreconditionFailed")
    assert s3.get_object(Bucket=name, Key="k")["Body"].read() == b"x"


def test_conditional_writes(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = new_bucket(s3, "ifmatch")
    etag = s3.put_object(Bucket=name, Key="k", Body=b"one", IfNoneMatch="*")["ETag"]
    for header in ("*", etag):
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket=name, Key="k", Body=b"no", IfNoneMatch=header)
        assert code_of(exc) == (412, "PreconditionFailed")
    s3.put_object(Bucket=name, Key="k", Body=b"two", IfNoneMatch='"other"')
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=name, Key="k", Body=b"no", IfMatch=etag)  # "one" is gone
    assert code_of(exc) == (412, "PreconditionFailed")
    current = s3.head_object(Bucket=name, Key="k")["ETag"]
    s3.put_object(Bucket=name, Key="k", Body=b"three", IfMatch=current)
    s3.put_object(Bucket=name, Key="k", Body=b"four", IfMatch="*")
    assert s3.get_object(Bucket=name, Key="k")["Body"].read() == b"four"
    for header in ("*", current):
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket=name, Key="absent", Body=b"no", IfMatch=header)
        assert code_of(exc) == (404, "NoSuchKey")
    # a multipart upload completes under the same conditions
    upload = s3.create_multipart_upload(Bucket=name, Key="k")
    part = s3.upload_part(
        Bucket=name, Key="k", UploadId=upload["UploadId"], PartNumber=1, Body=b"five"
    )
    parts = {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(
            Bucket=name, Key="k", UploadId=upload["UploadId"], MultipartUpload=parts,
            IfMatch=current,
        )  # fmt: skip
    assert code_of(exc) == (412, "PreconditionFailed")
    s3.complete_multipart_upload(
        Bucket=name, Key="k", UploadId=upload["UploadId"], MultipartUpload=parts,
        IfMatch=s3.head_object(Bucket=name, Key="k")["ETag"],
    )  # fmt: skip
    assert s3.get_object(Bucket=name, Key="k")["Body"].read() == b"five"


def test_if_match_writers_race_and_one_wins(gateway: Gateway) -> None:
    """Writers that all saw one ETag each PUT with ``If-Match`` at once: the compare and the
    replace are one metadata command, so exactly one of them replaces the object and the
    others get 412, round after round (bodies of several blocks' worth of time to write,
    so that every writer has checked before any has renamed)."""
    from concurrent.futures import ThreadPoolExecutor

    s3 = gateway.client()
    name = new_bucket(s3, "ifrace")
    etag = s3.put_object(Bucket=name, Key="k", Body=b"start")["ETag"]
    writers = 6
    for round_number in range(3):
        bodies = [f"{round_number}-{i}-".encode() * 40_000 for i in range(writers)]

        def put(body: bytes, seen: str = etag) -> str:
            client = gateway.client()
            try:
                return str(client.put_object(Bucket=name, Key="k", Body=body, IfMatch=seen)["ETag"])
            except ClientError as exc:
                assert exc.response["Error"]["Code"] == "PreconditionFailed"
                return ""

        with ThreadPoolExecutor(writers) as pool:
            answers = list(pool.map(put, bodies))
        winners = [i for i, answer in enumerate(answers) if answer]
        assert len(winners) == 1, answers
        stored = s3.get_object(Bucket=name, Key="k")
        assert stored["Body"].read() == bodies[winners[0]]
        etag = stored["ETag"]
        assert etag == answers[winners[0]]


def test_copy_part_range_past_the_source_is_invalid(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = new_bucket(s3, "copyrange")
    s3.put_object(Bucket=name, Key="src", Body=b"12345")
    upload = s3.create_multipart_upload(Bucket=name, Key="dst")["UploadId"]
    with pytest.raises(ClientError) as exc:
        s3.upload_part_copy(
            Bucket=name, Key="dst", UploadId=upload, PartNumber=1,
            CopySource={"Bucket": name, "Key": "src"}, CopySourceRange="bytes=0-21",
        )  # fmt: skip
    assert code_of(exc) == (416, "InvalidRange")


def test_bucket_with_an_unfinished_upload_is_deleted(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = new_bucket(s3, "unfinished")
    s3.create_multipart_upload(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


# -- objects ----------------------------------------------------------------------------------
def test_put_get_head_delete_with_metadata(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = new_bucket(s3, "objects")
    small, large = b"hello, keelfs", bytes(range(256)) * (12 * 1024)  # 3 MiB: blocks
    for key, body in (("dir/sub/small.txt", small), ("large.bin", large)):
        put = s3.put_object(
            Bucket=name,
            Key=key,
            Body=body,
            ContentType="text/plain",
            Metadata={"Colour": "blue", "n": "1"},
            CacheControl="max-age=60",
        )
        assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
        got = s3.get_object(Bucket=name, Key=key)
        assert got["Body"].read() == body
        assert got["ETag"] == put["ETag"]
        assert got["ContentType"] == "text/plain"
        assert got["Metadata"] == {"colour": "blue", "n": "1"}
        assert got["CacheControl"] == "max-age=60"
        assert got["ContentLength"] == len(body)
        head = s3.head_object(Bucket=name, Key=key)
        assert head["ContentLength"] == len(body) and head["ETag"] == put["ETag"]
    s3.put_object(Bucket=name, Key="large.bin", Body=b"replaced")
    got = s3.get_object(Bucket=name, Key="large.bin")
    assert got["Body"].read() == b"replaced"
    assert got["ContentType"] == "binary/octet-stream" or got["Metadata"] == {}
    s3.delete_object(Bucket=name, Key="dir/sub/small.txt")
    s3.delete_object(Bucket=name, Key="never-there")  # S3: 204 all the same
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=name, Key="dir/sub/small.txt")
    assert code_of(exc) == (404, "NoSuchKey")
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=name, Key="dir/sub/small.txt")
    assert code_of(exc)[0] == 404
    # the directories the deleted key implied are gone, and list as nothing
    assert keys_of(s3.list_objects_v2(Bucket=name)) == ["large.bin"]
    assert prefixes_of(s3.list_objects_v2(Bucket=name, Delimiter="/")) == []


def test_ranges(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = new_bucket(s3, "ranges")
    body = bytes(range(256)) * 4096  # 1 MiB
    s3.put_object(Bucket=name, Key="r", Body=body)
    for header, want, content_range in (
        ("bytes=0-9", body[:10], f"bytes 0-9/{len(body)}"),
        ("bytes=100-", body[100:], f"bytes 100-{len(body) - 1}/{len(body)}"),
        ("bytes=-7", body[-7:], f"bytes {len(body) - 7}-{len(body) - 1}/{len(body)}"),
        ("bytes=1000-99999999", body[1000:], f"bytes 1000-{len(body) - 1}/{len(body)}"),
    ):
        got = s3.get_object(Bucket=name, Key="r", Range=header)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert got["ContentRange"] == content_range
        assert got["Body"].read() == want
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=name, Key="r", Range=f"bytes={len(body)}-")
    assert code_of(exc) == (416, "InvalidRange")


def test_conditional_get(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = new_bucket(s3, "cond")
    etag = s3.put_object(Bucket=name, Key="c", Body=b"data")["ETag"]
    modified = s3.head_object(Bucket=name, Key="c")["LastModified"]
    later, earlier = modified + dt.timedelta(hours=1), modified - dt.timedelta(hours=1)
    assert s3.get_object(Bucket=name, Key="c", IfMatch=etag)["Body"].read() == b"data"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=name, Key="c", IfMatch='"0123"')
    assert code_of(exc) == (412, "PreconditionFailed")
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=name, Key="c", IfNoneMatch=etag)
    assert code_of(exc)[0] == 304
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=name, Key="c", IfModifiedSince=later)
    assert code_of(exc)[0] == 304
    assert s3.get_object(Bucket=name, Key="c", IfModifiedSince=earlier)["Body"].read()
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=name, Key="c", IfUnmodifiedSince=earlier)
    assert code_of(exc) == (412, "PreconditionFailed")
    assert s3.get_object(Bucket=name, Key="c", IfUnmodifiedSince=later)["Body"].read()
    # If-Match wins over a failing If-Unmodified-Since (S3's rule)
    assert s3.get_object(Bucket=name, Key="c", IfMatch=etag, IfUnmodifiedSince=earlier)
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=name, Key="c", IfMatch='"0123"')
    assert code_of(exc)[0] == 412
    # a conditional write: only if nothing is there yet
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=name, Key="c", Body=b"other", IfNoneMatch="*")
    assert code_of(exc) == (412, "PreconditionFailed")
    assert s3.get_object(Bucket=name, Key="c")["Body"].read() == b"data"


def test_copy_object_directives(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = new_bucket(s3, "copy")
    other = new_bucket(s3, "copy")
    s3.put_object(
        Bucket=name, Key="src", Body=b"copy me", ContentType="text/x", Metadata={"a": "1"}
    )
    done = s3.copy_object(Bucket=other, Key="d/copied", CopySource={"Bucket": name, "Key": "src"})
    assert done["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(b"copy me").hexdigest()}"'
    got = s3.get_object(Bucket=other, Key="d/copied")
    assert (got["Body"].read(), got["ContentType"], got["Metadata"]) == (
        b"copy me", "text/x", {"a": "1"},
    )  # fmt: skip
    s3.copy_object(
        Bucket=name,
        Key="src",
        CopySource={"Bucket": name, "Key": "src"},
        MetadataDirective="REPLACE",
        ContentType="text/y",
        Metadata={"b": "2"},
    )
    got = s3.get_object(Bucket=name, Key="src")
    assert (got["ContentType"], got["Metadata"]) == ("text/y", {"b": "2"})
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=name, Key="src", CopySource={"Bucket": name, "Key": "src"})
    assert code_of(exc) == (400, "InvalidRequest")
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=name, Key="x", CopySource={"Bucket": name, "Key": "missing"})
    assert code_of(exc) == (404, "NoSuchKey")
    with pytest.raises(ClientError) as exc:
        s3.copy_object(
            Bucket=name, Key="x", CopySource={"Bucket": name, "Key": "src"},
            CopySourceIfMatch='"nope"',
        )  # fmt: skip
    assert code_of(exc) == (412, "PreconditionFailed")


def test_delete_objects_reports_and_quiet(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = new_bucket(s3, "multidelete")
    for key in ("a", "b/c", "b/d"):
        s3.put_object(Bucket=name, Key=key, Body=b"1")
    reply = s3.delete_objects(
        Bucket=name, Delete={"Objects": [{"Key": "a"}, {"Key": "b/c"}, {"Key": "zz"}]}
    )
    assert sorted(d["Key"] for d in reply["Deleted"]) == ["a", "b/c", "zz"]
    assert not reply.get("Errors")
    reply = s3.delete_objects(Bucket=name, Delete={"Objects": [{"Key": "b/d"}], "Quiet": True})
    assert not reply.get("Deleted") and not reply.get("Errors")
    assert s3.list_objects_v2(Bucket=name)["KeyCount"] == 0


# -- listings ---------------------------------------------------------------------------------
LISTED = sorted(
    ["a-b", "a/b", "a/c/d", "a/c/e", "b", "c/x/y/z", "c/x1", "d d+e", "e/é", "f/1", "f/2", "f/3"],
    key=str.encode,
)


@pytest.fixture(scope="module")
def listed(gateway: Gateway) -> str:
    s3 = gateway.client()
    name = new_bucket(s3, "listing")
    for key in LISTED:
        s3.put_object(Bucket=name, Key=key, Body=key.encode())
    return name


def _all_pages(s3: Any, v2: bool = True, **kwargs: Any) -> list[dict[str, Any]]:
    paginator = s3.get_paginator("list_objects_v2" if v2 else "list_objects")
    return list(paginator.paginate(**kwargs))


def test_list_order_and_prefix(gateway: Gateway, listed: str) -> None:
    s3 = gateway.client()
    assert keys_of(s3.list_objects_v2(Bucket=listed)) == LISTED
    assert keys_of(s3.list_objects_v2(Bucket=listed, Prefix="a")) == [
        "a-b",
        "a/b",
        "a/c/d",
        "a/c/e",
    ]
    assert keys_of(s3.list_objects_v2(Bucket=listed, Prefix="c/x")) == ["c/x/y/z", "c/x1"]
    assert keys_of(s3.list_objects_v2(Bucket=listed, Prefix="nothing/")) == []
    assert keys_of(s3.list_objects_v2(Bucket=listed, StartAfter="c/x/y/z")) == LISTED[6:]


def test_list_pagination_with_delimiter(gateway: Gateway, listed: str) -> None:
    s3 = gateway.client()
    page = s3.list_objects_v2(Bucket=listed, Delimiter="/")
    assert keys_of(page) == ["a-b", "b", "d d+e"]
    assert prefixes_of(page) == ["a/", "c/", "e/", "f/"]
    assert page["KeyCount"] == 7 and not page["IsTruncated"]
    for v2 in (True, False):
        pages = _all_pages(s3, v2, Bucket=listed, Delimiter="/", PaginationConfig={"PageSize": 2})
        assert len(pages) == 4
        assert all(p["IsTruncated"] for p in pages[:-1]) and not pages[-1]["IsTruncated"]
        assert [k for p in pages for k in keys_of(p)] == ["a-b", "b", "d d+e"]
        assert [c for p in pages for c in prefixes_of(p)] == ["a/", "c/", "e/", "f/"]
    pages = _all_pages(s3, Bucket=listed, PaginationConfig={"PageSize": 5})
    assert [k for p in pages for k in keys_of(p)] == LISTED
    assert [p["KeyCount"] for p in pages] == [5, 5, 2]
    page = s3.list_objects_v2(Bucket=listed, Prefix="a/", Delimiter="/")
    assert (keys_of(page), prefixes_of(page)) == (["a/b"], ["a/c/"])
    page = s3.list_objects_v2(Bucket=listed, Delimiter="-")
    assert prefixes_of(page) == ["a-"]
    page = s3.list_objects(Bucket=listed, Marker="c/x1", MaxKeys=2)
    assert keys_of(page) == ["d d+e", "e/é"] and page["IsTruncated"]


def test_list_encoding_url_round_trips_odd_keys(gateway: Gateway, listed: str) -> None:
    s3 = gateway.client()  # botocore asks for encoding-type=url and decodes
    assert "d d+e" in keys_of(s3.list_objects_v2(Bucket=listed))
    # asked for explicitly, botocore leaves the encoded keys as they came
    raw = s3.list_objects_v2(Bucket=listed, Prefix="d", EncodingType="url")
    assert keys_of(raw) == ["d%20d%2Be"]
    raw = s3.list_objects_v2(Bucket=listed, Prefix="e/", EncodingType="url")
    assert keys_of(raw) == ["e/%C3%A9"]


def test_list_bad_arguments(gateway: Gateway, listed: str) -> None:
    s3 = gateway.client()
    with pytest.raises(ClientError) as exc:
        s3.list_objects_v2(Bucket=listed, ContinuationToken="!!not-a-token!!")
    assert code_of(exc) == (400, "InvalidArgument")


def test_directory_marker_keys(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = new_bucket(s3, "markers")
    s3.put_object(Bucket=name, Key="folder/", Body=b"")
    assert s3.head_object(Bucket=name, Key="folder/")["ContentLength"] == 0
    assert keys_of(s3.list_objects_v2(Bucket=name)) == ["folder/"]
    assert prefixes_of(s3.list_objects_v2(Bucket=name, Delimiter="/")) == ["folder/"]
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=name, Key="folder/", Body=b"data")
    assert code_of(exc)[1] == "InvalidArgument"
    s3.put_object(Bucket=name, Key="folder/inside", Body=b"1")
    assert keys_of(s3.list_objects_v2(Bucket=name)) == ["folder/inside"]
    s3.delete_object(Bucket=name, Key="folder/inside")
    assert keys_of(s3.list_objects_v2(Bucket=name)) == []


# -- multipart --------------------------------------------------------------------------------
def test_multipart_upload_complete(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = new_bucket(s3, "mpu")
    s3.put_object(Bucket=name, Key="source", Body=b"S" * (5 * MiB + 10))
    upload = s3.create_multipart_upload(
        Bucket=name, Key="big/obj", ContentType="application/x-big", Metadata={"m": "v"}
    )["UploadId"]
    parts_data = [b"1" * (5 * MiB), b"2" * 1000]
    etags = [
        s3.upload_part(Bucket=name, Key="big/obj", UploadId=upload, PartNumber=i + 1, Body=d)[
            "ETag"
        ]
        for i, d in enumerate(parts_data)
    ]
    assert etags == [f'"{hashlib.md5(d).hexdigest()}"' for d in parts_data]
    copied = s3.upload_part_copy(
        Bucket=name, Key="big/obj", UploadId=upload, PartNumber=3,
        CopySource={"Bucket": name, "Key": "source"}, CopySourceRange="bytes=0-99",
    )["CopyPartResult"]["ETag"]  # fmt: skip
    assert copied == f'"{hashlib.md5(b"S" * 100).hexdigest()}"'
    listed = s3.list_parts(Bucket=name, Key="big/obj", UploadId=upload)
    assert [(p["PartNumber"], p["Size"]) for p in listed["Parts"]] == [
        (1, 5 * MiB), (2, 1000), (3, 100),
    ]  # fmt: skip
    uploads = s3.list_multipart_uploads(Bucket=name)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("big/obj", upload)]
    # not visible before completion; the hidden parts are never listed
    assert keys_of(s3.list_objects_v2(Bucket=name)) == ["source"]
    with pytest.raises(ClientError) as exc:  # part 2 is too small to be followed by another
        s3.complete_multipart_upload(
            Bucket=name, Key="big/obj", UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e}
                                       for n, e in ((1, etags[0]), (2, etags[1]), (3, copied))]},
        )  # fmt: skip
    assert code_of(exc) == (400, "EntityTooSmall")
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(
            Bucket=name, Key="big/obj", UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": etags[1]},
                                       {"PartNumber": 1, "ETag": etags[0]}]},
        )  # fmt: skip
    assert code_of(exc) == (400, "InvalidPartOrder")
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(
            Bucket=name, Key="big/obj", UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"' + "0" * 32 + '"'}]},
        )  # fmt: skip
    assert code_of(exc) == (400, "InvalidPart")
    done = s3.complete_multipart_upload(
        Bucket=name, Key="big/obj", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etags[0]},
                                   {"PartNumber": 2, "ETag": etags[1]}]},
    )  # fmt: skip
    digest = hashlib.md5(b"".join(bytes.fromhex(e.strip('"')) for e in etags)).hexdigest()
    assert done["ETag"] == f'"{digest}-2"'
    got = s3.get_object(Bucket=name, Key="big/obj")
    assert got["Body"].read() == b"".join(parts_data)
    assert (got["ETag"], got["ContentType"], got["Metadata"]) == (
        done["ETag"], "application/x-big", {"m": "v"},
    )  # fmt: skip
    # partNumber= reads serve one part, with the parts' count
    for number, data in ((1, parts_data[0]), (2, parts_data[1])):
        part = s3.get_object(Bucket=name, Key="big/obj", PartNumber=number)
        assert part["Body"].read() == data and part["PartsCount"] == 2
        assert part["ContentLength"] == len(data) and part["ETag"] == done["ETag"]
        head = s3.head_object(Bucket=name, Key="big/obj", PartNumber=number)
        assert head["ContentLength"] == len(data) and head["PartsCount"] == 2
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=name, Key="big/obj", PartNumber=3)
    assert code_of(exc) == (400, "InvalidPart")
    whole = s3.get_object(Bucket=name, Key="source", PartNumber=1)["Body"].read()
    assert whole == b"S" * (5 * MiB + 10)
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=name, Key="source", PartNumber=2)
    assert code_of(exc) == (400, "InvalidPart")
    assert s3.list_multipart_uploads(Bucket=name).get("Uploads", []) == []
    with pytest.raises(ClientError) as exc:
        s3.list_parts(Bucket=name, Key="big/obj", UploadId=upload)
    assert code_of(exc) == (404, "NoSuchUpload")
    # a retried Complete (its answer lost) is answered again; another parts list is not
    again = s3.complete_multipart_upload(
        Bucket=name, Key="big/obj", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etags[0]},
                                   {"PartNumber": 2, "ETag": etags[1]}]},
    )  # fmt: skip
    assert again["ETag"] == done["ETag"]
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(
            Bucket=name, Key="big/obj", UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etags[0]}]},
        )  # fmt: skip
    assert code_of(exc) == (404, "NoSuchUpload")


def test_multipart_abort_and_unknown_upload(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = new_bucket(s3, "abort")
    upload = s3.create_multipart_upload(Bucket=name, Key="k")["UploadId"]
    s3.upload_part(Bucket=name, Key="k", UploadId=upload, PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket=name, Key="k", UploadId=upload)
    with pytest.raises(ClientError) as exc:
        s3.upload_part(Bucket=name, Key="k", UploadId=upload, PartNumber=1, Body=b"x")
    assert code_of(exc) == (404, "NoSuchUpload")
    with pytest.raises(ClientError) as exc:
        s3.abort_multipart_upload(Bucket=name, Key="k", UploadId="0" * 32)
    assert code_of(exc) == (404, "NoSuchUpload")
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(
            Bucket=name, Key="k", UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"x"'}]},
        )  # fmt: skip
    assert code_of(exc) == (404, "NoSuchUpload")
    assert keys_of(s3.list_objects_v2(Bucket=name)) == []


def test_upload_fileobj_uses_multipart(gateway: Gateway, tmp_path: Any) -> None:
    from boto3.s3.transfer import TransferConfig

    s3 = gateway.client()
    name = new_bucket(s3, "transfer")
    data = bytes(range(256)) * (48 * 1024)  # 12 MiB: two 6 MiB parts
    source = tmp_path / "data.bin"
    source.write_bytes(data)
    config = TransferConfig(multipart_threshold=6 * MiB, multipart_chunksize=6 * MiB)
    s3.upload_file(str(source), name, "t/data.bin", Config=config)
    assert s3.head_object(Bucket=name, Key="t/data.bin")["ETag"].endswith('-2"')
    target = tmp_path / "back.bin"
    s3.download_file(name, "t/data.bin", str(target), Config=config)
    assert target.read_bytes() == data


# -- authentication and permissions -----------------------------------------------------------
def test_wrong_secret_and_unknown_key(gateway: Gateway) -> None:
    bad = gateway.client(secret="not-the-secret")
    with pytest.raises(ClientError) as exc:
        bad.list_buckets()
    assert code_of(exc) == (403, "SignatureDoesNotMatch")
    unknown = gateway.client(key="AKIANOBODY", secret="x")
    with pytest.raises(ClientError) as exc:
        unknown.list_buckets()
    assert code_of(exc) == (403, "InvalidAccessKeyId")


def test_unsigned_request_refused(gateway: Gateway) -> None:
    import requests

    reply = requests.get(gateway.endpoint + "/", timeout=30)
    assert reply.status_code == 403 and b"<Code>AccessDenied</Code>" in reply.content


def test_presigned_urls(gateway: Gateway) -> None:
    import requests

    s3 = gateway.client()
    name = new_bucket(s3, "presign")
    s3.put_object(Bucket=name, Key="p k", Body=b"presigned body")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": name, "Key": "p k"})
    assert requests.get(url, timeout=30).content == b"presigned body"
    put = s3.generate_presigned_url("put_object", Params={"Bucket": name, "Key": "up"})
    assert requests.put(put, data=b"uploaded", timeout=30).status_code == 200
    assert s3.get_object(Bucket=name, Key="up")["Body"].read() == b"uploaded"
    tampered = url.replace("p%20k", "other")
    reply = requests.get(tampered, timeout=30)
    assert reply.status_code == 403 and b"SignatureDoesNotMatch" in reply.content
    expired = _presigned_in_the_past(gateway, name)
    reply = requests.get(expired, timeout=30)
    assert reply.status_code == 403 and b"<Code>AccessDenied</Code>" in reply.content
    assert b"expired" in reply.content
    v2 = gateway.client(signature_version="s3")  # Signature Version 2 (sigv2)
    reply = requests.get(
        v2.generate_presigned_url("get_object", Params={"Bucket": name, "Key": "up"}), timeout=30
    )
    assert reply.status_code == 200 and reply.content == b"uploaded"


def _presigned_in_the_past(gateway: Gateway, bucket: str) -> str:
    """A URL signed two hours ago, valid for one."""
    from unittest import mock

    import botocore.auth

    s3 = gateway.client()
    past = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(hours=2)
    with mock.patch.object(botocore.auth.datetime, "datetime") as fake:
        fake.utcnow.return_value = past
        fake.now.return_value = past
        fake.strptime = dt.datetime.strptime
        return str(
            s3.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": "p k"}, ExpiresIn=3600
            )
        )


def test_permissions_of_the_mapped_user(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = new_bucket(s3, "perm")
    s3.put_object(Bucket=name, Key="readable", Body=b"r", ACL="authenticated-read")
    s3.put_object(Bucket=name, Key="private", Body=b"p")  # S3's default ACL: private
    bob = gateway.client(key=OTHER_KEY, secret=OTHER_SECRET)
    assert bob.get_object(Bucket=name, Key="readable")["Body"].read() == b"r"
    with pytest.raises(ClientError) as exc:
        bob.get_object(Bucket=name, Key="private")
    assert code_of(exc) == (403, "AccessDenied")
    with pytest.raises(ClientError) as exc:
        bob.put_object(Bucket=name, Key="mine", Body=b"x")
    assert code_of(exc) == (403, "AccessDenied")
    with pytest.raises(ClientError) as exc:
        bob.delete_object(Bucket=name, Key="readable")
    assert code_of(exc) == (403, "AccessDenied")
    with pytest.raises(ClientError) as exc:
        bob.create_bucket(Bucket=f"bob-{next(_names)}")
    assert code_of(exc) == (403, "AccessDenied")
    assert keys_of(s3.list_objects_v2(Bucket=name)) == ["private", "readable"]


def test_prefix_naming_a_file_as_a_directory_lists_nothing(gateway: Gateway, listed: str) -> None:
    s3 = gateway.client()
    assert keys_of(s3.list_objects_v2(Bucket=listed, Prefix="b/")) == []
    assert keys_of(s3.list_objects_v2(Bucket=listed, Prefix="f/1/", Delimiter="/")) == []


# -- versions (never kept: each object is its only version, "null") ----------------------------
def test_list_object_versions_and_delete_by_null_version(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = new_bucket(s3, "versions")
    for key in ("a", "d/b", "d/c"):
        s3.put_object(Bucket=name, Key=key, Body=key.encode())
    for key in (" ", "_ "):  # spaces are a key's own: DeleteObjects must not strip them
        s3.put_object(Bucket=name, Key=key, Body=b"x")
    spaced = s3.delete_objects(Bucket=name, Delete={"Objects": [{"Key": " "}, {"Key": "_ "}]})
    assert [d["Key"] for d in spaced["Deleted"]] == [" ", "_ "] and "Errors" not in spaced
    page = s3.list_object_versions(Bucket=name, MaxKeys=2)
    assert [(v["Key"], v["VersionId"], v["IsLatest"]) for v in page["Versions"]] == [
        ("a", "null", True), ("d/b", "null", True),
    ]  # fmt: skip
    assert page["Versions"][0]["ETag"] == f'"{hashlib.md5(b"a").hexdigest()}"'
    assert (page["IsTruncated"], page["NextKeyMarker"]) == (True, "d/b")
    rest = s3.list_object_versions(Bucket=name, KeyMarker="d/b", VersionIdMarker="null")
    assert [v["Key"] for v in rest["Versions"]] == ["d/c"] and not rest["IsTruncated"]
    assert "DeleteMarkers" not in rest
    grouped = s3.list_object_versions(Bucket=name, Delimiter="/")
    assert [v["Key"] for v in grouped["Versions"]] == ["a"]
    assert prefixes_of(grouped) == ["d/"]
    done = s3.delete_objects(
        Bucket=name,
        Delete={"Objects": [{"Key": "a", "VersionId": "null"}, {"Key": "d/b", "VersionId": "v9"},
                            {"Key": "d/c"}]},
    )  # fmt: skip
    assert [(d["Key"], d.get("VersionId")) for d in done["Deleted"]] == [
        ("a", "null"), ("d/c", None),
    ]  # fmt: skip
    assert [(e["Key"], e["VersionId"], e["Code"]) for e in done["Errors"]] == [
        ("d/b", "v9", "NoSuchVersion"),
    ]  # fmt: skip
    assert keys_of(s3.list_objects_v2(Bucket=name)) == ["d/b"]
    with pytest.raises(ClientError) as exc:
        s3.list_object_versions(Bucket="no-such-bucket-here")
    assert code_of(exc) == (404, "NoSuchBucket")


def test_listing_a_prefix_no_key_has_and_max_keys_zero(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = new_bucket(s3, "oddprefix")
    for key in ("b/a/r", "b/a/c", "g"):
        s3.put_object(Bucket=name, Key=key, Body=b"x")
    for prefix in ("/", "b//", "b/a//"):
        page = s3.list_objects(Bucket=name, Prefix=prefix, Delimiter="d")
        assert (keys_of(page), prefixes_of(page)) == ([], []), prefix
        assert keys_of(s3.list_objects_v2(Bucket=name, Prefix=prefix)) == [], prefix
    for page in (
        s3.list_objects(Bucket=name, MaxKeys=0),
        s3.list_objects_v2(Bucket=name, MaxKeys=0),
    ):
        assert (keys_of(page), page["IsTruncated"]) == ([], False)


def test_content_encoding_kept_as_given_less_aws_chunked(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = new_bucket(s3, "encoding")
    for given, kept in (
        ("gzip", "gzip"), ("deflate, gzip", "deflate, gzip"), ("gzip, aws-chunked", "gzip"),
        ("aws-chunked, deflate, gzip", "deflate, gzip"), ("aws-chunked", None),
    ):  # fmt: skip
        s3.put_object(Bucket=name, Key="k", Body=b"x", ContentEncoding=given)
        assert s3.head_object(Bucket=name, Key="k").get("ContentEncoding") == kept, given
    gzipped = gzip.compress(b"a web page\n" * 100)  # stored as sent, never inflated
    s3.put_object(Bucket=name, Key="page.gz", Body=gzipped, ContentEncoding="gzip")
    got = s3.get_object(Bucket=name, Key="page.gz")
    assert (got["ContentEncoding"], got["ContentLength"]) == ("gzip", len(gzipped))


# -- versioning -------------------------------------------------------------------------------
def versioned_bucket(s3: Any, stem: str) -> str:
    name = new_bucket(s3, stem)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def header(response: dict[str, Any], name: str) -> str | None:
    return response["ResponseMetadata"]["HTTPHeaders"].get(name)


def versions_of(s3: Any, bucket: str, **args: Any) -> list[tuple[str, str, bool, bool]]:
    """(key, VersionId, IsLatest, is a delete marker) in the listing's own order (boto3
    parts versions from delete markers; the raw XML, fetched by a presigned URL, keeps the
    order S3 gives: by key, each key's newest first)."""
    import urllib.request
    from xml.etree import ElementTree

    params = {"Bucket": bucket, **args}
    url = s3.generate_presigned_url("list_object_versions", Params=params)
    with urllib.request.urlopen(url) as answer:  # noqa: S310 (the test's own gateway)
        root = ElementTree.fromstring(answer.read())
    found = []
    for item in root:
        kind = item.tag.rsplit("}", 1)[-1]
        if kind in ("Version", "DeleteMarker"):
            fields = {c.tag.rsplit("}", 1)[-1]: c.text or "" for c in item}
            latest = fields["IsLatest"] == "true"
            found.append((fields["Key"], fields["VersionId"], latest, kind == "DeleteMarker"))
    return found


def test_bucket_versioning_state_is_kept_and_owner_only(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = new_bucket(s3, "vstate")
    assert "Status" not in s3.get_bucket_versioning(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Suspended"})
    assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Suspended"
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "On"})
    assert code_of(exc) == (400, "MalformedXML")
    s3.put_bucket_acl(Bucket=name, ACL="public-read-write")
    bob = gateway.client(key=OTHER_KEY, secret=OTHER_SECRET)
    with pytest.raises(ClientError) as exc:
        bob.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    assert code_of(exc) == (403, "AccessDenied")
    assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Suspended"
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_versioning(
            Bucket="no-such-bucket-v", VersioningConfiguration={"Status": "Enabled"}
        )
    assert code_of(exc) == (404, "NoSuchBucket")


def test_versions_are_kept_read_and_deleted_by_id(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = versioned_bucket(s3, "vkeep")
    ids = [
        s3.put_object(Bucket=name, Key="d/k", Body=f"v{i}".encode())["VersionId"] for i in range(3)
    ]
    assert len(set(ids)) == 3 and "null" not in ids
    assert versions_of(s3, name) == [
        ("d/k", ids[2], True, False), ("d/k", ids[1], False, False), ("d/k", ids[0], False, False),
    ]  # fmt: skip
    listed = s3.list_object_versions(Bucket=name)["Versions"]
    assert [v["VersionId"] for v in listed] == ids[::-1]  # newest first
    for number, vid in enumerate(ids):
        got = s3.get_object(Bucket=name, Key="d/k", VersionId=vid)
        assert got["Body"].read() == f"v{number}".encode() and got["VersionId"] == vid
        assert s3.head_object(Bucket=name, Key="d/k", VersionId=vid)["ContentLength"] == 2
    assert s3.get_object(Bucket=name, Key="d/k")["VersionId"] == ids[2]
    assert keys_of(s3.list_objects_v2(Bucket=name)) == ["d/k"]  # older versions never listed
    assert prefixes_of(s3.list_objects_v2(Bucket=name, Delimiter="/")) == ["d/"]
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=name, Key="d/k", VersionId="0" * 28)
    assert code_of(exc) == (404, "NoSuchVersion")
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=name, Key="d/k", VersionId="not-an-id")
    assert code_of(exc) == (400, "InvalidArgument")
    gone = s3.delete_object(Bucket=name, Key="d/k", VersionId=ids[1])
    assert gone["VersionId"] == ids[1] and "DeleteMarker" not in gone
    assert [v[1] for v in versions_of(s3, name)] == [ids[2], ids[0]]
    s3.delete_object(Bucket=name, Key="d/k", VersionId=ids[2])  # the latest: v0 is again
    assert s3.get_object(Bucket=name, Key="d/k")["Body"].read() == b"v0"
    assert keys_of(s3.list_objects_v2(Bucket=name)) == ["d/k"]
    assert versions_of(s3, name) == [("d/k", ids[0], True, False)]
    with pytest.raises(ClientError) as exc:
        s3.delete_bucket(Bucket=name)
    assert code_of(exc) == (409, "BucketNotEmpty")
    s3.delete_object(Bucket=name, Key="d/k", VersionId=ids[0])
    assert versions_of(s3, name) == [] and keys_of(s3.list_objects_v2(Bucket=name)) == []
    s3.delete_bucket(Bucket=name)


def test_delete_markers(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = versioned_bucket(s3, "vmark")
    first = s3.put_object(Bucket=name, Key="k", Body=b"one")["VersionId"]
    deleted = s3.delete_object(Bucket=name, Key="k")
    marker = deleted["VersionId"]
    assert deleted["DeleteMarker"] is True and marker not in (first, "null")
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=name, Key="k")
    assert code_of(exc) == (404, "NoSuchKey")
    assert header(exc.value.response, "x-amz-delete-marker") == "true"
    assert header(exc.value.response, "x-amz-version-id") == marker
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=name, Key="k")
    assert code_of(exc)[0] == 404
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=name, Key="k", VersionId=marker)
    assert code_of(exc) == (405, "MethodNotAllowed")
    assert keys_of(s3.list_objects_v2(Bucket=name)) == []
    assert versions_of(s3, name) == [("k", marker, True, True), ("k", first, False, False)]
    assert s3.get_object(Bucket=name, Key="k", VersionId=first)["Body"].read() == b"one"
    second = s3.delete_object(Bucket=name, Key="k")["VersionId"]  # markers stack
    assert [v[1] for v in versions_of(s3, name)] == [second, marker, first]
    for vid in (second, marker):
        removed = s3.delete_object(Bucket=name, Key="k", VersionId=vid)
        assert removed["DeleteMarker"] is True and removed["VersionId"] == vid
    assert s3.get_object(Bucket=name, Key="k")["Body"].read() == b"one"  # back, as S3
    assert keys_of(s3.list_objects_v2(Bucket=name)) == ["k"]
    done = s3.delete_objects(Bucket=name, Delete={"Objects": [{"Key": "k"}]})
    assert done["Deleted"][0]["DeleteMarker"] is True
    dm = done["Deleted"][0]["DeleteMarkerVersionId"]
    done = s3.delete_objects(
        Bucket=name, Delete={"Objects": [{"Key": "k", "VersionId": v} for v in (dm, first)]}
    )
    assert sorted(d["VersionId"] for d in done["Deleted"]) == sorted([dm, first])
    assert versions_of(s3, name) == []


def test_null_version_before_and_while_suspended(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = new_bucket(s3, "vnull")
    s3.put_object(Bucket=name, Key="k", Body=b"plain")  # before versioning: the null version
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    vid = s3.put_object(Bucket=name, Key="k", Body=b"versioned")["VersionId"]
    assert versions_of(s3, name) == [("k", vid, True, False), ("k", "null", False, False)]
    assert s3.get_object(Bucket=name, Key="k", VersionId="null")["Body"].read() == b"plain"
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Suspended"})
    put = s3.put_object(Bucket=name, Key="k", Body=b"null one")
    assert "VersionId" not in put  # S3 names no version for a suspended write
    put = s3.put_object(Bucket=name, Key="k", Body=b"null two")  # replaces the null version
    assert versions_of(s3, name) == [("k", "null", True, False), ("k", vid, False, False)]
    got = s3.get_object(Bucket=name, Key="k")
    assert got["Body"].read() == b"null two" and got["VersionId"] == "null"
    assert s3.get_object(Bucket=name, Key="k", VersionId=vid)["Body"].read() == b"versioned"
    deleted = s3.delete_object(Bucket=name, Key="k")  # a null marker replaces the null version
    assert deleted["DeleteMarker"] is True and deleted["VersionId"] == "null"
    assert versions_of(s3, name) == [("k", "null", True, True), ("k", vid, False, False)]
    s3.delete_object(Bucket=name, Key="k", VersionId="null")
    assert s3.get_object(Bucket=name, Key="k")["Body"].read() == b"versioned"


def test_version_listing_pages_prefix_and_delimiter(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = versioned_bucket(s3, "vpage")
    for key in ("a", "b/x", "b/y", "c"):
        for number in range(2):
            s3.put_object(Bucket=name, Key=key, Body=f"{key}{number}".encode())
    s3.delete_object(Bucket=name, Key="c")
    s3.put_object(Bucket=name, Key="b/z", Body=b"z")
    s3.delete_object(Bucket=name, Key="b/z")  # a key with no file, only an archive
    whole = versions_of(s3, name)
    assert [(k, latest, marker) for k, _, latest, marker in whole] == [
        ("a", True, False), ("a", False, False),
        ("b/x", True, False), ("b/x", False, False), ("b/y", True, False), ("b/y", False, False),
        ("b/z", True, True), ("b/z", False, False),
        ("c", True, True), ("c", False, False), ("c", False, False),
    ]  # fmt: skip
    paged: list[tuple[str, str]] = []
    args: dict[str, Any] = {}
    pages = 0
    while True:
        page = s3.list_object_versions(Bucket=name, MaxKeys=3, **args)
        pages += 1
        items = page.get("Versions", []) + page.get("DeleteMarkers", [])
        assert len(items) <= 3
        paged += [(v["Key"], v["VersionId"]) for v in items]
        if not page["IsTruncated"]:
            break
        args = {"KeyMarker": page["NextKeyMarker"], "VersionIdMarker": page["NextVersionIdMarker"]}
    assert pages == 4 and sorted(paged) == sorted((k, v) for k, v, _, _ in whole)
    assert len(set(paged)) == len(whole)
    grouped = s3.list_object_versions(Bucket=name, Delimiter="/")
    assert prefixes_of(grouped) == ["b/"]
    assert {v["Key"] for v in grouped["Versions"] + grouped["DeleteMarkers"]} == {"a", "c"}
    under = versions_of(s3, name, Prefix="b/", Delimiter="/")
    assert [k for k, *_ in under] == ["b/x", "b/x", "b/y", "b/y", "b/z", "b/z"]
    assert keys_of(s3.list_objects_v2(Bucket=name)) == ["a", "b/x", "b/y"]


def test_copy_and_multipart_in_a_versioned_bucket(gateway: Gateway) -> None:
    s3 = gateway.client()
    name = versioned_bucket(s3, "vcopy")
    old = s3.put_object(Bucket=name, Key="src", Body=b"old")["VersionId"]
    s3.put_object(Bucket=name, Key="src", Body=b"new")
    copied = s3.copy_object(
        Bucket=name, Key="dst", CopySource={"Bucket": name, "Key": "src", "VersionId": old}
    )
    assert copied["CopySourceVersionId"] == old and copied["VersionId"] not in (old, "null")
    assert s3.get_object(Bucket=name, Key="dst")["Body"].read() == b"old"
    upload = s3.create_multipart_upload(Bucket=name, Key="dst")["UploadId"]
    part = s3.upload_part_copy(
        Bucket=name, Key="dst", UploadId=upload, PartNumber=1,
        CopySource={"Bucket": name, "Key": "src", "VersionId": old},
    )  # fmt: skip
    done = s3.complete_multipart_upload(
        Bucket=name, Key="dst", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]},
    )  # fmt: skip
    assert done["VersionId"] not in (copied["VersionId"], "null")
    assert [v[1] for v in versions_of(s3, name, Prefix="dst")] == [
        done["VersionId"], copied["VersionId"],
    ]  # fmt: skip
    acl = s3.get_object_acl(Bucket=name, Key="src", VersionId=old)
    assert acl["Owner"]["ID"] == gateway.user
    s3.put_object_acl(Bucket=name, Key="src", VersionId=old, ACL="public-read")
    grants = s3.get_object_acl(Bucket=name, Key="src", VersionId=old)["Grants"]
    assert any(g["Grantee"].get("URI", "").endswith("AllUsers") for g in grants)
    latest = s3.get_object_acl(Bucket=name, Key="src")["Grants"]
    assert not any(g["Grantee"].get("URI", "").endswith("AllUsers") for g in latest)


def test_a_crash_between_archive_and_rename_keeps_the_old_object(gateway: Gateway) -> None:
    """The two steps of an overwrite, the first done and the second never (the gateway died
    between): the key has no file, its old object is in the archive; GET still serves it as
    the latest, and the next write archives nothing twice and loses nothing."""
    s3 = gateway.client()
    name = versioned_bucket(s3, "vcrash")
    vid = s3.put_object(Bucket=name, Key="d/k", Body=b"old")["VersionId"]
    with gateway.cluster.client() as fs:
        fs.mkdir(f"/{name}/.s3/versions/d%2Fk", parents=True)
        fs.rename(f"/{name}/d/k", f"/{name}/.s3/versions/d%2Fk/{vid}")
        assert not fs.exists(f"/{name}/d/k")
    got = s3.get_object(Bucket=name, Key="d/k")
    assert got["Body"].read() == b"old" and got["VersionId"] == vid
    assert s3.head_object(Bucket=name, Key="d/k")["VersionId"] == vid
    assert keys_of(s3.list_objects_v2(Bucket=name)) == ["d/k"]  # the read put it back
    assert versions_of(s3, name, Prefix="d/k") == [("d/k", vid, True, False)]
    new = s3.put_object(Bucket=name, Key="d/k", Body=b"new")["VersionId"]
    assert versions_of(s3, name) == [("d/k", new, True, False), ("d/k", vid, False, False)]
    assert s3.get_object(Bucket=name, Key="d/k", VersionId=vid)["Body"].read() == b"old"
    s3.delete_object(Bucket=name, Key="d/k", VersionId=new)
    assert s3.get_object(Bucket=name, Key="d/k")["Body"].read() == b"old"
    assert keys_of(s3.list_objects_v2(Bucket=name)) == ["d/k"]


def test_versions_of_a_key_too_long_for_one_name(gateway: Gateway) -> None:
    """A key whose quoted form is longer than a file name: its archive is named by a hash,
    the key kept beside its versions."""
    s3 = gateway.client()
    name = versioned_bucket(s3, "vlong")
    key = "/".join(["p" * 100] * 3)
    first = s3.put_object(Bucket=name, Key=key, Body=b"1")["VersionId"]
    second = s3.put_object(Bucket=name, Key=key, Body=b"2")["VersionId"]
    assert versions_of(s3, name) == [(key, second, True, False), (key, first, False, False)]
    assert s3.get_object(Bucket=name, Key=key, VersionId=first)["Body"].read() == b"1"
    for vid in (first, second):
        s3.delete_object(Bucket=name, Key=key, VersionId=vid)
    assert versions_of(s3, name) == []
    s3.delete_bucket(Bucket=name)


def test_concurrent_overwrites_and_version_deletes_lose_nothing(gateway: Gateway) -> None:
    """Writers racing on one key each archive what they find (never one another's new
    object); deleters racing on its versions each remove theirs wherever it has moved."""
    from concurrent.futures import ThreadPoolExecutor

    s3 = gateway.client()
    name = versioned_bucket(s3, "vrace")
    bodies = [f"body {n}".encode() for n in range(8)]

    def put(body: bytes) -> str:
        return str(s3.put_object(Bucket=name, Key="k", Body=body)["VersionId"])

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(put, bodies))
    assert len(set(ids)) == 8
    listed = versions_of(s3, name)
    assert sorted(v[1] for v in listed) == sorted(ids) and [v[2] for v in listed].count(True) == 1
    for vid, body in zip(ids, bodies, strict=True):
        assert s3.get_object(Bucket=name, Key="k", VersionId=vid)["Body"].read() == body
    assert s3.get_object(Bucket=name, Key="k")["VersionId"] == listed[0][1]

    def remove(vid: str) -> None:
        s3.delete_object(Bucket=name, Key="k", VersionId=vid)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(remove, ids))
    assert versions_of(s3, name) == [] and keys_of(s3.list_objects_v2(Bucket=name)) == []


def test_bucket_location_is_the_one_it_was_created_with(gateway: Gateway) -> None:
    s3 = gateway.client()
    plain = new_bucket(s3, "where")
    assert s3.get_bucket_location(Bucket=plain)["LocationConstraint"] is None
    name = f"where-{next(_names)}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] == "eu-west-1"
    with pytest.raises(ClientError) as exc:
        s3.create_bucket(
            Bucket=f"where-{next(_names)}",
            CreateBucketConfiguration={"LocationConstraint": "<nowhere>"},
        )
    assert code_of(exc) == (400, "InvalidLocationConstraint")
