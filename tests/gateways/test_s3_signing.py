"""The S3 gateway's body signing: ``aws-chunked`` uploads whose every chunk is signed
(``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``), ``UNSIGNED-PAYLOAD``, and the body checked
against ``x-amz-content-sha256`` and ``Content-MD5``; a refused body leaves nothing behind.
Requests are signed here with botocore's own signer, the chunks by the AWS documentation's
recipe."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from typing import Any

import pytest
import requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.gateways.s3_helpers import ACCESS_KEY, SECRET_KEY, Gateway

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

EMPTY = hashlib.sha256(b"").hexdigest()


class _Signer(S3SigV4Auth):  # type: ignore[misc]
    """botocore's S3 signer, claiming the payload hash it is told to (botocore would put the
    body's own there)."""

    def __init__(self, payload: str | None) -> None:
        super().__init__(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1")
        self.claimed = payload

    def payload(self, request: AWSRequest) -> str:
        return self.claimed if self.claimed is not None else str(super().payload(request))


def _signed(method: str, url: str, headers: dict[str, str], body: bytes = b"") -> AWSRequest:
    claimed = headers.pop("x-amz-content-sha256", None)
    request = AWSRequest(method=method, url=url, headers=headers, data=body)
    _Signer(claimed).add_auth(request)
    return request


def _signing_key(date: str) -> bytes:
    k = hmac.new(b"AWS4" + SECRET_KEY.encode(), date.encode(), hashlib.sha256).digest()
    for part in ("us-east-1", "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


def _chunked(request: AWSRequest, pieces: list[bytes], corrupt: int | None = None) -> bytes:
    """The ``aws-chunked`` body of ``pieces`` (and the final empty chunk), each signed in the
    chain from the request's signature; chunk ``corrupt`` gets a wrong signature."""
    amz_date = request.headers["X-Amz-Date"]
    scope = f"{amz_date[:8]}/us-east-1/s3/aws4_request"
    previous = request.headers["Authorization"].rpartition("Signature=")[2]
    key = _signing_key(amz_date[:8])
    out = b""
    for index, piece in enumerate([*pieces, b""]):
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous, EMPTY,
             hashlib.sha256(piece).hexdigest()]
        )  # fmt: skip
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if index == corrupt:
            signature = "0" * 64
        out += f"{len(piece):x};chunk-signature={signature}\r\n".encode() + piece + b"\r\n"
        previous = signature
    return out


def _put_chunked(
    gateway: Gateway, key: str, pieces: list[bytes], corrupt: int | None = None
) -> Any:
    url = f"{gateway.endpoint}/{_bucket(gateway)}/{key}"
    total = sum(len(p) for p in pieces)
    headers = {
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(total),
        "Content-Type": "text/plain",
    }
    request = _signed("PUT", url, headers)
    body = _chunked(request, pieces, corrupt)
    return requests.put(url, data=body, headers=dict(request.headers.items()), timeout=60)


_BUCKET = "signing-bucket"


def _bucket(gateway: Gateway) -> str:
    s3 = gateway.client()
    if _BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=_BUCKET)
    return _BUCKET


def _keys(gateway: Gateway) -> list[str]:
    page = gateway.client().list_objects_v2(Bucket=_bucket(gateway))
    return [c["Key"] for c in page.get("Contents", [])]


def test_aws_chunked_upload_with_signed_chunks(gateway: Gateway) -> None:
    pieces = [b"a" * 65536, b"b" * 65536, b"tail"]
    reply = _put_chunked(gateway, "chunked", pieces)
    assert reply.status_code == 200, reply.text
    got = gateway.client().get_object(Bucket=_BUCKET, Key="chunked")
    assert got["Body"].read() == b"".join(pieces)
    assert got["ETag"] == f'"{hashlib.md5(b"".join(pieces)).hexdigest()}"'
    assert "ContentEncoding" not in got  # aws-chunked is the transfer's, not the object's


def test_a_chunk_with_a_bad_signature_leaves_nothing(gateway: Gateway) -> None:
    reply = _put_chunked(gateway, "forged", [b"a" * 65536, b"evil"], corrupt=1)
    assert reply.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in reply.text
    assert "forged" not in _keys(gateway)


def test_unsigned_payload(gateway: Gateway) -> None:
    url = f"{gateway.endpoint}/{_bucket(gateway)}/unsigned"
    request = _signed("PUT", url, {"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}, b"free body")
    reply = requests.put(url, data=b"free body", headers=dict(request.headers.items()), timeout=60)
    assert reply.status_code == 200, reply.text
    assert (
        gateway.client().get_object(Bucket=_BUCKET, Key="unsigned")["Body"].read() == b"free body"
    )


def test_body_not_matching_its_signed_hash_is_refused(gateway: Gateway) -> None:
    url = f"{gateway.endpoint}/{_bucket(gateway)}/swapped"
    claimed = hashlib.sha256(b"what was signed").hexdigest()
    request = _signed("PUT", url, {"x-amz-content-sha256": claimed}, b"what was signed")
    reply = requests.put(
        url, data=b"something else!", headers=dict(request.headers.items()), timeout=60
    )
    assert reply.status_code == 400 and "XAmzContentSHA256Mismatch" in reply.text
    assert "swapped" not in _keys(gateway)


def test_bad_content_md5_is_refused(gateway: Gateway) -> None:
    s3 = gateway.client()
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(Exception) as exc:
        s3.put_object(Bucket=_bucket(gateway), Key="md5", Body=b"body", ContentMD5=wrong)
    assert "BadDigest" in str(exc.value)
    assert "md5" not in _keys(gateway)


def test_request_signed_long_ago_is_refused(gateway: Gateway) -> None:
    url = f"{gateway.endpoint}/"
    request = _signed("GET", url, {})
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).strftime("%Y%m%dT%H%M%SZ")
    request.headers.replace_header("X-Amz-Date", old)
    reply = requests.get(url, headers=dict(request.headers.items()), timeout=60)
    assert reply.status_code == 403 and "RequestTimeTooSkewed" in reply.text
