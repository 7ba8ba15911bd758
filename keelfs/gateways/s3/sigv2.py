"""AWS Signature Version 2, as S3 checks it: the ``Authorization: AWS key:signature`` header
and presigned URLs (``AWSAccessKeyId``, ``Signature``, ``Expires``), for the tools that
still sign that way (boto3's ``signature_version="s3"``, old SDKs, s3cmd's default).

The signature is base64 HMAC-SHA1, under the key's secret, of::

    METHOD \\n Content-MD5 \\n Content-Type \\n Date (presigned: Expires) \\n
    x-amz-* headers (lower case, sorted, ``name:value`` lines) resource

where the resource is the path as sent and the sub-resources of its query (``?acl``,
``?cors``, ``?uploadId=...``, ``response-*``, ...), sorted. The body is not signed
(``Content-MD5``, where given, is checked against it as for any request). The request's
time (``x-amz-date``, else ``Date``) must be within 15 minutes of the gateway's; a presigned
URL is refused once its ``Expires`` has passed. Signatures are compared in constant time.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import hmac
from collections.abc import Mapping

from keelfs.gateways.s3.credentials import AccessKey
from keelfs.gateways.s3.errors import S3Error
from keelfs.gateways.s3.sigv4 import MAX_SKEW, UNSIGNED, Headers, Signed, access_key

__all__ = ["SUBRESOURCES", "authenticate_header", "authenticate_query", "string_to_sign"]

SUBRESOURCES = frozenset(
    {
        "accelerate", "acl", "cors", "defaultObjectAcl", "delete", "lifecycle", "location",
        "logging", "notification", "object-lock", "partNumber", "policy", "replication",
        "requestPayment", "restore", "select", "select-type", "storageClass", "tagging",
        "torrent", "uploadId", "uploads", "versionId", "versioning", "versions", "website",
        "response-content-type", "response-content-language", "response-expires",
        "response-cache-control", "response-content-disposition", "response-content-encoding",
        "analytics", "metrics", "inventory",
    }
)  # fmt: skip
"""Query parameters that are part of the signed resource (the list the SDKs sign)."""


def _resource(raw_path: str, pairs: list[tuple[str, str]]) -> str:
    signed = sorted((name, value) for name, value in pairs if name in SUBRESOURCES)
    if not signed:
        return raw_path
    parts = [name if value == "" else f"{name}={value}" for name, value in signed]
    return raw_path + "?" + "&".join(parts)


def string_to_sign(
    method: str,
    raw_path: str,
    pairs: list[tuple[str, str]],
    headers: Headers,
    date: str,
) -> str:
    amz = sorted(
        (name.lower(), ",".join(v.strip() for v in headers.getall(name)))
        for name in {n.lower() for n in headers if n.lower().startswith("x-amz-")}
    )
    lines = [
        method,
        headers.get("Content-MD5", "").strip(),
        headers.get("Content-Type", "").strip(),
        date,
        *(f"{name}:{value}" for name, value in amz),
    ]
    return "\n".join(lines) + "\n" + _resource(raw_path, pairs)


def _sign(secret: str, text: str) -> str:
    digest = hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _paths(raw_path: str) -> list[str]:
    """The resources a client may have signed for the path: as sent, and for a bucket's
    own URL (``/bucket``) also ``/bucket/``, as botocore signs it."""
    bucket_only = raw_path.count("/") == 1 and len(raw_path) > 1
    return [raw_path, raw_path + "/"] if bucket_only else [raw_path]


def _verify(
    key: AccessKey,
    signature: str,
    method: str,
    raw_path: str,
    pairs: list[tuple[str, str]],
    headers: Headers,
    date: str,
) -> Signed:
    for path in _paths(raw_path):
        text = string_to_sign(method, path, pairs, headers, date)
        if hmac.compare_digest(_sign(key.secret, text), signature):
            return Signed(key, UNSIGNED, "", "", signature, b"")
    raise S3Error(
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
        AWSAccessKeyId=key.key_id,
    )


def _request_time(headers: Headers) -> dt.datetime:
    text = headers.get("x-amz-date") or headers.get("Date")
    if not text:
        raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date")
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        try:
            when = dt.datetime.strptime(text, "%Y%m%dT%H%M%SZ")
        except ValueError:
            raise S3Error("AccessDenied", f"malformed date {text!r}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def authenticate_header(
    method: str,
    raw_path: str,
    pairs: list[tuple[str, str]],
    headers: Headers,
    credentials: str,
    keys: Mapping[str, AccessKey],
    now: dt.datetime,
) -> Signed:
    """``Authorization: AWS key:signature`` (module doc)."""
    key_id, colon, signature = credentials.strip().rpartition(":")
    if not colon or not key_id:
        raise S3Error("InvalidArgument", "the Authorization header is AWS KEY:SIGNATURE")
    key = access_key(keys, key_id)
    if abs(now - _request_time(headers)) > MAX_SKEW:
        raise S3Error(
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
        )
    # with x-amz-date (signed among the x-amz-* headers) the Date line is empty, as S3 says
    date = "" if "x-amz-date" in headers else headers.get("Date", "").strip()
    return _verify(key, signature, method, raw_path, pairs, headers, date)


def authenticate_query(
    method: str,
    raw_path: str,
    pairs: list[tuple[str, str]],
    headers: Headers,
    keys: Mapping[str, AccessKey],
    now: dt.datetime,
) -> Signed:
    """A presigned URL: ``AWSAccessKeyId``, ``Signature``, ``Expires`` (module doc)."""
    query = dict(pairs)
    try:
        key_id, signature, expires = (
            query["AWSAccessKeyId"],
            query["Signature"],
            query["Expires"],
        )
    except KeyError as missing:
        raise S3Error("AccessDenied", f"query parameter {missing.args[0]} missing") from None
    if not expires.isdigit():
        raise S3Error("AccessDenied", f"Expires {expires!r} is not a time in seconds")
    key = access_key(keys, key_id)
    if now.timestamp() > int(expires):
        raise S3Error("AccessDenied", "Request has expired")
    return _verify(key, signature, method, raw_path, pairs, headers, expires)
