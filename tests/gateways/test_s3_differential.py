"""The same boto3 calls against moto's S3 server (``moto.server.ThreadedMotoServer``, a
model of S3 that AWS's own SDK tests lean on) and against the gateway: the answers must agree
in status, error code and content (objects, ranges, listing pages, ETags, multipart)."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.gateways.s3_helpers import Gateway

moto_server = pytest.importorskip("moto.server")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MiB = 1024 * 1024
B = "diff-bucket"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def _moto_client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"}, signature_version="s3v4", retries={"max_attempts": 1}
        ),
    )


def _page(reply: dict[str, Any]) -> dict[str, Any]:
    return {
        "keys": [(c["Key"], c["Size"], c["ETag"]) for c in reply.get("Contents", [])],
        "prefixes": [p["Prefix"] for p in reply.get("CommonPrefixes", [])],
        "truncated": reply.get("IsTruncated"),
        "count": reply.get("KeyCount"),
    }


def _pages(s3: Any, operation: str, **kwargs: Any) -> list[dict[str, Any]]:
    return [_page(p) for p in s3.get_paginator(operation).paginate(**kwargs)]


def _get(s3: Any, **kwargs: Any) -> dict[str, Any]:
    reply = s3.get_object(**kwargs)
    return {
        "status": reply["ResponseMetadata"]["HTTPStatusCode"],
        "body": hashlib.sha256(reply["Body"].read()).hexdigest(),
        "etag": reply["ETag"],
        "type": reply["ContentType"],
        "meta": reply["Metadata"],
        "range": reply.get("ContentRange"),
        "length": reply["ContentLength"],
    }


def _multipart(s3: Any, key: str, sizes: list[int], order: list[int] | None = None) -> Any:
    upload = s3.create_multipart_upload(Bucket=B, Key=key, ContentType="x/mp")["UploadId"]
    etags = [
        s3.upload_part(
            Bucket=B, Key=key, UploadId=upload, PartNumber=i + 1, Body=bytes([65 + i]) * size
        )["ETag"]
        for i, size in enumerate(sizes)
    ]
    parts = [{"PartNumber": n + 1, "ETag": etags[n]} for n in (order or range(len(sizes)))]
    listed = [
        (p["PartNumber"], p["Size"], p["ETag"])
        for p in s3.list_parts(Bucket=B, Key=key, UploadId=upload)["Parts"]
    ]
    try:
        done = s3.complete_multipart_upload(
            Bucket=B, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
        )
    finally:
        with contextlib.suppress(ClientError):
            s3.abort_multipart_upload(Bucket=B, Key=key, UploadId=upload)
    return {"listed": listed, "etag": done["ETag"], "object": _get(s3, Bucket=B, Key=key)}


KEYS = ["a-1", "a/b", "a/c/d", "a0", "b/x", "b/y/z", "c", "d/e/f/g", "d/e/h"]
"""S3's key order is not a directory walk's (``a-1`` < ``a/b`` < ``a0``); no key is both an
object and a directory (``a`` and ``a/b``), which keelfs cannot hold (docs/s3.md)."""

STEPS: list[tuple[str, Callable[[Any], Any]]] = [
    ("create bucket", lambda s3: s3.create_bucket(Bucket=B)["ResponseMetadata"]["HTTPStatusCode"]),
    ("head missing bucket", lambda s3: s3.head_bucket(Bucket="diff-nobody")),
    ("list missing bucket", lambda s3: s3.list_objects_v2(Bucket="diff-nobody")),
    ("put keys", lambda s3: [
        s3.put_object(Bucket=B, Key=k, Body=k.encode() * 3, ContentType="text/k",
                      Metadata={"k": k.replace("/", "_")})["ETag"]
        for k in KEYS
    ]),
    ("get", lambda s3: _get(s3, Bucket=B, Key="a/c/d")),
    ("get range", lambda s3: _get(s3, Bucket=B, Key="d/e/f/g", Range="bytes=2-5")),
    ("get suffix range", lambda s3: _get(s3, Bucket=B, Key="d/e/f/g", Range="bytes=-4")),
    ("get range past the end", lambda s3: _get(s3, Bucket=B, Key="a0", Range="bytes=2-100")),
    ("get invalid range", lambda s3: _get(s3, Bucket=B, Key="a0", Range="bytes=50-60")),
    ("get missing key", lambda s3: _get(s3, Bucket=B, Key="nope")),
    ("get from missing bucket", lambda s3: _get(s3, Bucket="diff-nobody", Key="a")),
    ("head", lambda s3: {k: v for k, v in s3.head_object(Bucket=B, Key="c").items()
                         if k in ("ContentLength", "ETag", "ContentType", "Metadata")}),
    ("head missing", lambda s3: s3.head_object(Bucket=B, Key="zz")),
    ("if-match fails", lambda s3: _get(s3, Bucket=B, Key="a0", IfMatch='"deadbeef"')),
    ("if-none-match hits", lambda s3: _get(
        s3, Bucket=B, Key="a0", IfNoneMatch=s3.head_object(Bucket=B, Key="a0")["ETag"])),
    ("list v2", lambda s3: _pages(s3, "list_objects_v2", Bucket=B)),
    ("list v2 pages of 2 with /", lambda s3: _pages(
        s3, "list_objects_v2", Bucket=B, Delimiter="/", PaginationConfig={"PageSize": 2})),
    ("list v2 prefix a/", lambda s3: _pages(
        s3, "list_objects_v2", Bucket=B, Prefix="a/", Delimiter="/")),
    ("list v2 prefix d/e", lambda s3: _pages(
        s3, "list_objects_v2", Bucket=B, Prefix="d/e", Delimiter="/")),
    ("list v2 start-after", lambda s3: _page(
        s3.list_objects_v2(Bucket=B, StartAfter="a/c/d"))),
    ("list v2 max-keys 3", lambda s3: _page(s3.list_objects_v2(Bucket=B, MaxKeys=3))),
    ("list v1 pages of 3", lambda s3: _pages(
        s3, "list_objects", Bucket=B, PaginationConfig={"PageSize": 3})),
    ("list v1 marker", lambda s3: _page(s3.list_objects(Bucket=B, Marker="b/x", MaxKeys=2))),
    ("copy", lambda s3: s3.copy_object(
        Bucket=B, Key="copied", CopySource={"Bucket": B, "Key": "a/b"}
    )["CopyObjectResult"]["ETag"]),
    ("copied", lambda s3: _get(s3, Bucket=B, Key="copied")),
    ("copy replace", lambda s3: s3.copy_object(
        Bucket=B, Key="copied", CopySource={"Bucket": B, "Key": "copied"},
        MetadataDirective="REPLACE", ContentType="y/z", Metadata={"n": "1"},
    )["CopyObjectResult"]["ETag"]),
    ("replaced", lambda s3: _get(s3, Bucket=B, Key="copied")),
    ("copy onto itself", lambda s3: s3.copy_object(
        Bucket=B, Key="copied", CopySource={"Bucket": B, "Key": "copied"})),
    ("copy missing", lambda s3: s3.copy_object(
        Bucket=B, Key="x", CopySource={"Bucket": B, "Key": "missing"})),
    ("delete objects", lambda s3: sorted(
        d["Key"] for d in s3.delete_objects(
            Bucket=B, Delete={"Objects": [{"Key": "copied"}, {"Key": "a-1"}, {"Key": "nope"}]}
        )["Deleted"])),
    ("delete objects quiet", lambda s3: s3.delete_objects(
        Bucket=B, Delete={"Objects": [{"Key": "c"}], "Quiet": True}).get("Deleted", [])),
    ("delete object", lambda s3: s3.delete_object(
        Bucket=B, Key="a/c/d")["ResponseMetadata"]["HTTPStatusCode"]),
    ("delete missing object", lambda s3: s3.delete_object(
        Bucket=B, Key="never")["ResponseMetadata"]["HTTPStatusCode"]),
    ("list after deletes", lambda s3: _pages(s3, "list_objects_v2", Bucket=B, Delimiter="/")),
    ("multipart", lambda s3: _multipart(s3, "mp/obj", [5 * MiB, 1234])),
    ("multipart small part", lambda s3: _multipart(s3, "mp/small", [1000, 1000])),
    ("multipart bad order", lambda s3: _multipart(
        s3, "mp/order", [5 * MiB, 5 * MiB], order=[1, 0])),
    ("list parts of no upload", lambda s3: s3.list_parts(Bucket=B, Key="k", UploadId="0" * 32)),
    ("uploads", lambda s3: [
        u["Key"] for u in s3.list_multipart_uploads(Bucket=B).get("Uploads", [])]),
    ("delete non-empty bucket", lambda s3: s3.delete_bucket(Bucket=B)),
]  # fmt: skip


S3_NOT_MOTO: dict[str, Any] = {
    # S3 documents that a quiet DeleteObjects lists only the keys that failed; moto lists all
    "delete objects quiet": ("ok", []),
    # S3 refuses parts not in ascending order; moto sorts them and completes
    "multipart bad order": ("error", 400, "InvalidPartOrder"),
}
"""Where moto departs from S3's documented answer: the gateway must give S3's."""


def _outcome(s3: Any, step: Callable[[Any], Any]) -> Any:
    try:
        return ("ok", step(s3))
    except ClientError as exc:
        error = exc.response["Error"]
        status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
        return ("error", status, error.get("Code"))


def test_gateway_answers_as_moto_does(gateway: Gateway, moto_endpoint: str) -> None:
    ours, theirs = gateway.client(), _moto_client(moto_endpoint)
    differences = []
    for name, step in STEPS:
        expected, got = _outcome(theirs, step), _outcome(ours, step)
        expected = S3_NOT_MOTO.get(name, expected)
        if expected != got:
            differences.append(f"{name}:\n  moto:   {expected}\n  keelfs: {got}")
    assert not differences, "\n".join(differences)
