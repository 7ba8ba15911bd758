"""AWS Signature Version 2 (``keelfs.gateways.s3.sigv2``), without a cluster: requests
signed by botocore's own V2 signers (header and presigned URL) are accepted through
``sigv4.authenticate`` as the key's user; a changed request, a wrong secret, an unknown key,
an old date and an expired URL are refused with S3's errors."""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import hmac
import time
from urllib.parse import urlsplit

import pytest
from botocore.auth import HmacV1Auth, HmacV1QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from multidict import CIMultiDict

from keelfs.gateways.s3 import sigv4
from keelfs.gateways.s3.credentials import AccessKey
from keelfs.gateways.s3.errors import S3Error

KEYS = {"AKID": AccessKey("AKID", "sekrit/0123", "ann")}
URL = "http://127.0.0.1:9/bucket/some%20key?acl&x-id=PutObjectAcl"


def _parts(request: AWSRequest) -> tuple[str, str, CIMultiDict[str]]:
    split = urlsplit(request.url)
    return split.path, split.query, CIMultiDict(request.headers.items())


def _header_signed(secret: str = "sekrit/0123", **headers: str) -> AWSRequest:
    request = AWSRequest(method="PUT", url=URL, headers=headers, data=b"body")
    HmacV1Auth(Credentials("AKID", secret)).add_auth(request)
    return request


def _authenticate(method: str, request: AWSRequest, now: dt.datetime | None = None) -> str:
    path, query, headers = _parts(request)
    return sigv4.authenticate(method, path, query, headers, KEYS, now).key.user


def _code(call: object) -> tuple[int, str]:
    with pytest.raises(S3Error) as exc:
        call()  # type: ignore[operator]
    return exc.value.status, exc.value.code


def test_header_signature_names_the_keys_user() -> None:
    request = _header_signed(**{"Content-Type": "text/plain", "x-amz-acl": "public-read"})
    assert _authenticate("PUT", request) == "ann"
    assert _code(lambda: _authenticate("POST", request)) == (403, "SignatureDoesNotMatch")
    changed = _header_signed(**{"x-amz-acl": "public-read"})
    changed.headers.replace_header("x-amz-acl", "private")
    assert _code(lambda: _authenticate("PUT", changed)) == (403, "SignatureDoesNotMatch")
    wrong = _header_signed(secret="other")
    assert _code(lambda: _authenticate("PUT", wrong)) == (403, "SignatureDoesNotMatch")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=20)
    assert _code(lambda: _authenticate("PUT", _header_signed(), later)) == (
        403,
        "RequestTimeTooSkewed",
    )


def test_unknown_key_is_refused() -> None:
    request = AWSRequest(method="GET", url=URL)
    HmacV1Auth(Credentials("NOPE", "x")).add_auth(request)
    assert _code(lambda: _authenticate("GET", request)) == (403, "InvalidAccessKeyId")


def test_presigned_url() -> None:
    request = AWSRequest(method="GET", url="http://127.0.0.1:9/bucket/k")
    HmacV1QueryAuth(Credentials("AKID", "sekrit/0123"), expires=60).add_auth(request)
    assert _authenticate("GET", request) == "ann"
    assert _code(lambda: _authenticate("PUT", request)) == (403, "SignatureDoesNotMatch")
    past = dt.datetime.fromtimestamp(time.time() + 120, dt.UTC)
    assert _code(lambda: _authenticate("GET", request, past)) == (403, "AccessDenied")


def test_x_amz_date_empties_the_date_line() -> None:
    """With ``x-amz-date`` the ``Date`` line is empty (S3's rule): a client that sends both
    signed this, not the ``Date``."""
    amz_date = email.utils.formatdate(usegmt=True)
    text = f"GET\n\n\n\nx-amz-date:{amz_date}\n/bucket/k"
    digest = hmac.new(b"sekrit/0123", text.encode(), hashlib.sha1).digest()
    headers = CIMultiDict(
        {
            "Authorization": "AWS AKID:" + base64.b64encode(digest).decode(),
            "x-amz-date": amz_date,
            "Date": "Thu, 01 Jan 1970 00:00:00 GMT",
        }
    )
    assert sigv4.authenticate("GET", "/bucket/k", "", headers, KEYS).key.user == "ann"
