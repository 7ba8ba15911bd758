"""AWS Signature Version 4, as S3 checks it: the ``Authorization`` header, presigned URLs
(``X-Amz-*`` query parameters, ``X-Amz-Expires`` enforced) and ``aws-chunked`` bodies whose
every chunk is signed (``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``), chained from the request's
signature. Version 2 (``AWS key:signature``, ``?Signature=``) is ``sigv2``'s.

Pure functions of the request's parts: ``authenticate`` answers who signed (the access key)
or raises the S3 error a client expects (``InvalidAccessKeyId``, ``SignatureDoesNotMatch``,
``AccessDenied`` for an expired URL, ``RequestTimeTooSkewed``, ...). Every signature is
compared in constant time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote, unquote

from multidict import CIMultiDict, CIMultiDictProxy

from keelfs.gateways.s3.credentials import AccessKey
from keelfs.gateways.s3.errors import S3Error

__all__ = [
    "ALGORITHM",
    "access_key",
    "EMPTY_SHA256",
    "STREAMING_SIGNED",
    "UNSIGNED",
    "Signed",
    "anonymous",
    "authenticate",
    "is_unsigned",
    "chunked_body",
    "signing_key",
]

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING = frozenset({STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER})
MAX_SKEW = dt.timedelta(minutes=15)
MAX_EXPIRES_S = 7 * 24 * 3600
MAX_CHUNK_BYTES = 16 * 1024 * 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


Headers = CIMultiDictProxy[str] | CIMultiDict[str]


@dataclass(frozen=True)
class Signed:
    """A request whose signature checked: who signed it, what its body's hash claims
    (``payload``: a hex SHA-256, ``UNSIGNED-PAYLOAD`` or a ``STREAMING-*`` mode) and what a
    signed chunked body's chunks are chained to."""

    key: AccessKey
    payload: str
    amz_date: str
    scope: str
    signature: str
    key_bytes: bytes


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    k = hmac.new(("AWS4" + secret).encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


def _hmac_hex(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def _uri_encode(text: str) -> str:
    return quote(text, safe="-_.~")


def query_pairs(raw_query: str) -> list[tuple[str, str]]:
    """The query string's (name, value) pairs, decoded (``+`` kept: SigV4 clients send
    ``%20``)."""
    pairs = []
    for item in raw_query.split("&"):
        if item:
            name, _, value = item.partition("=")
            pairs.append((unquote(name), unquote(value)))
    return pairs


def _canonical_query(pairs: list[tuple[str, str]]) -> str:
    encoded = sorted((_uri_encode(k), _uri_encode(v)) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def _canonical_headers(headers: Headers, names: list[str]) -> str:
    lines = []
    for name in names:
        values = headers.getall(name, [])
        if not values:
            raise S3Error("SignatureDoesNotMatch", f"signed header {name!r} is missing")
        joined = ",".join(" ".join(v.split()) for v in values)
        lines.append(f"{name}:{joined}\n")
    return "".join(lines)


def _paths(raw_path: str) -> list[str]:
    """The canonical URIs a client may have signed: the path as sent, else re-encoded (a
    client that sent a character raw that it signed encoded)."""
    again = quote(unquote(raw_path), safe="/~")
    return [raw_path] if again == raw_path else [raw_path, again]


def _parse_credential(credential: str) -> tuple[str, str, str, str]:
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or parts[3] != "s3":
        raise S3Error("AuthorizationHeaderMalformed", f"malformed credential {credential!r}")
    return parts[0], parts[1], parts[2], parts[3]


def _parse_time(amz_date: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise S3Error("AccessDenied", f"malformed X-Amz-Date {amz_date!r}") from None


def authenticate(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Headers,
    keys: Mapping[str, AccessKey],
    now: dt.datetime | None = None,
) -> Signed:
    """Who signed the request (module doc)."""
    now = now or dt.datetime.now(dt.UTC)
    pairs = query_pairs(raw_query)
    query = dict(pairs)
    authorization = headers.get("Authorization")
    if authorization is not None:
        return _header_auth(method, raw_path, pairs, headers, authorization, keys, now)
    if "X-Amz-Signature" in query or "X-Amz-Credential" in query:
        return _presigned_auth(method, raw_path, pairs, headers, keys, now)
    if "Signature" in query or "AWSAccessKeyId" in query:
        from keelfs.gateways.s3 import sigv2  # it builds on this module

        return sigv2.authenticate_query(method, raw_path, pairs, headers, keys, now)
    raise S3Error("AccessDenied", "Anonymous access is not allowed; sign the request")


def is_unsigned(raw_query: str, headers: Headers) -> bool:
    """No signature of either version: an anonymous request."""
    if headers.get("Authorization") is not None:
        return False
    names = {name for name, _ in query_pairs(raw_query)}
    return not names & {"X-Amz-Signature", "X-Amz-Credential", "Signature", "AWSAccessKeyId"}


def anonymous(user: str) -> Signed:
    """What an unsigned request is, acting as ``user``: its body unsigned."""
    return Signed(AccessKey("", "", user), UNSIGNED, "", "", "", b"")


def _header_auth(
    method: str,
    raw_path: str,
    pairs: list[tuple[str, str]],
    headers: Headers,
    authorization: str,
    keys: Mapping[str, AccessKey],
    now: dt.datetime,
) -> Signed:
    scheme, _, rest = authorization.partition(" ")
    if scheme != ALGORITHM:
        if scheme == "AWS":
            from keelfs.gateways.s3 import sigv2  # it builds on this module

            return sigv2.authenticate_header(method, raw_path, pairs, headers, rest, keys, now)
        raise S3Error("AuthorizationHeaderMalformed", f"unsupported algorithm {scheme!r}")
    fields: dict[str, str] = {}
    for item in rest.split(","):
        name, _, value = item.strip().partition("=")
        fields[name] = value
    try:
        credential, signed_names, signature = (
            fields["Credential"],
            fields["SignedHeaders"],
            fields["Signature"],
        )
    except KeyError as missing:
        raise S3Error("AuthorizationHeaderMalformed", f"{missing.args[0]} missing") from None
    amz_date = headers.get("x-amz-date") or ""
    if not amz_date:
        date_header = headers.get("Date")
        if date_header is None:
            raise S3Error("AccessDenied", "the request names no date (X-Amz-Date)")
        try:
            parsed = dt.datetime.strptime(date_header, "%a, %d %b %Y %H:%M:%S GMT")
        except ValueError:
            raise S3Error("AccessDenied", f"malformed Date {date_header!r}") from None
        amz_date = parsed.strftime("%Y%m%dT%H%M%SZ")
    when = _parse_time(amz_date)
    if abs(now - when) > MAX_SKEW:
        raise S3Error(
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
        )
    payload = headers.get("x-amz-content-sha256") or ""
    if not payload:
        raise S3Error("InvalidRequest", "x-amz-content-sha256 is required")
    if payload not in STREAMING and payload != UNSIGNED and not _HEX64.match(payload):
        raise S3Error("InvalidArgument", f"x-amz-content-sha256 {payload!r} is not valid")
    return _check(
        method, raw_path, pairs, headers, credential, signed_names, signature,
        amz_date, payload, keys,
    )  # fmt: skip


def access_key(keys: Mapping[str, AccessKey], key_id: str) -> AccessKey:
    """The access key named ``key_id`` (``InvalidAccessKeyId`` if there is none): every
    signature version and POST policies look keys up here."""
    key = keys.get(key_id)
    if key is None:
        raise S3Error(
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
            AWSAccessKeyId=key_id,
        )
    return key


def _presigned_auth(
    method: str,
    raw_path: str,
    pairs: list[tuple[str, str]],
    headers: Headers,
    keys: Mapping[str, AccessKey],
    now: dt.datetime,
) -> Signed:
    query = dict(pairs)
    if query.get("X-Amz-Algorithm") != ALGORITHM:
        raise S3Error("AuthorizationQueryParametersError", "X-Amz-Algorithm must be " + ALGORITHM)
    try:
        credential = query["X-Amz-Credential"]
        amz_date = query["X-Amz-Date"]
        expires_text = query["X-Amz-Expires"]
        signed_names = query["X-Amz-SignedHeaders"]
        signature = query["X-Amz-Signature"]
    except KeyError as missing:
        raise S3Error(
            "AuthorizationQueryParametersError", f"query parameter {missing.args[0]} missing"
        ) from None
    if not expires_text.isdigit() or not 1 <= int(expires_text) <= MAX_EXPIRES_S:
        raise S3Error(  # 403, as the suite of ceph/s3-tests expects of S3
            "AccessDenied", "X-Amz-Expires must be a number of seconds from 1 to 604800"
        )
    when = _parse_time(amz_date)
    if now > when + dt.timedelta(seconds=int(expires_text)):
        raise S3Error("AccessDenied", "Request has expired")
    if when - now > MAX_SKEW:
        raise S3Error("AccessDenied", "Request is not valid yet")
    unsigned = [(k, v) for k, v in pairs if k != "X-Amz-Signature"]
    payload = headers.get("x-amz-content-sha256") or UNSIGNED
    return _check(
        method, raw_path, unsigned, headers, credential, signed_names, signature,
        amz_date, payload, keys,
    )  # fmt: skip


def _check(
    method: str,
    raw_path: str,
    pairs: list[tuple[str, str]],
    headers: Headers,
    credential: str,
    signed_names: str,
    signature: str,
    amz_date: str,
    payload: str,
    keys: Mapping[str, AccessKey],
) -> Signed:
    key_id, date, region, service = _parse_credential(credential)
    key = access_key(keys, key_id)
    if amz_date[:8] != date:
        raise S3Error("SignatureDoesNotMatch", "the credential's date is not the request's")
    names = signed_names.split(";")
    if "host" not in names:
        raise S3Error("AccessDenied", "the host header must be signed")
    scope = f"{date}/{region}/{service}/aws4_request"
    k = signing_key(key.secret, date, region, service)
    canonical_headers = _canonical_headers(headers, names)
    query = _canonical_query(pairs)
    for path in _paths(raw_path):
        canonical = "\n".join([method, path, query, canonical_headers, signed_names, payload])
        to_sign = "\n".join(
            [ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        if hmac.compare_digest(_hmac_hex(k, to_sign), signature):
            return Signed(key, payload, amz_date, scope, signature, k)
    raise S3Error(
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
        AWSAccessKeyId=key_id,
    )


class Stream(Protocol):
    async def readline(self) -> bytes: ...
    async def readexactly(self, n: int) -> bytes: ...


async def chunked_body(
    stream: Stream, signed: Signed, on_trailer: Callable[[str, str], None] | None = None
) -> AsyncIterator[bytes]:
    """The data of an ``aws-chunked`` body, chunk by chunk, each chunk's signature checked
    against the chain (``SignatureDoesNotMatch`` at the first that fails, before its data is
    yielded); trailing headers go to ``on_trailer``."""
    previous = signed.signature
    check = signed.payload in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER)
    while True:
        line = (await stream.readline()).rstrip(b"\r\n").decode("latin-1")
        if not line:
            raise S3Error("IncompleteBody", "the chunked body ended early")
        size_text, _, extension = line.partition(";")
        try:
            size = int(size_text, 16)
        except ValueError:
            raise S3Error("IncompleteBody", f"malformed chunk header {line!r}") from None
        if size > MAX_CHUNK_BYTES:
            raise S3Error("InvalidRequest", "a chunk of the body is too large")
        data = await stream.readexactly(size) if size else b""
        if check:
            name, _, chunk_signature = extension.partition("=")
            to_sign = "\n".join(
                [
                    ALGORITHM + "-PAYLOAD",
                    signed.amz_date,
                    signed.scope,
                    previous,
                    EMPTY_SHA256,
                    hashlib.sha256(data).hexdigest(),
                ]
            )
            expected = _hmac_hex(signed.key_bytes, to_sign)
            if name != "chunk-signature" or not hmac.compare_digest(expected, chunk_signature):
                raise S3Error(
                    "SignatureDoesNotMatch", "a chunk's signature does not match the chain"
                )
            previous = chunk_signature
        if size == 0:
            break
        if await stream.readexactly(2) != b"\r\n":
            raise S3Error("IncompleteBody", "a chunk is not followed by CRLF")
        yield data
    while True:  # trailers (the *-TRAILER modes), then the empty line
        try:
            line = (await stream.readline()).rstrip(b"\r\n").decode("latin-1")
        except Exception:
            return
        if not line:
            return
        name, _, value = line.partition(":")
        if on_trailer is not None and name.lower() != "x-amz-trailer-signature":
            on_trailer(name.strip().lower(), value.strip())
