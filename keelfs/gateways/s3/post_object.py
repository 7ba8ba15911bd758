"""POST Object: an HTML form's upload to the bucket's URL (``multipart/form-data``).

The form's fields come first (``key``, ``${filename}`` in it standing for the file's name;
``acl``, ``Content-Type``, ``x-amz-meta-*``, the stored headers; ``success_action_status``
or ``success_action_redirect``; the policy and its signature, ``post_policy``), then the
``file`` part, whose data is streamed into the object as a PUT's body is (nothing after it
is read). The fields before the file are bounded (``MaxPostPreDataLengthExceeded``), the
file by the policy's ``content-length-range`` while it streams.

A signed form acts as the user of its access key; an unsigned one as the gateway's
anonymous user. Either passes the same gate as a PUT of its key (``s3:PutObject``:
``policy_ops.authorize``): the bucket's policy may deny it, or allow it and let the gateway
write as the bucket's owner; without either, the bucket's ACL decides (an unsigned form only
where it lets everyone write). The object is written through the same steps as a PUT
(temporary file, sidecar, rename, a new version where the bucket keeps them; its ACL and
mode; keelfs's permissions), so the answer is the same object a PUT would have made.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote
from xml.etree.ElementTree import Element

from aiohttp import BodyPartReader, web
from multidict import CIMultiDict

from keelfs.client.aio import AsyncClient
from keelfs.gateways.s3 import acl as acls
from keelfs.gateways.s3 import objects, policy_ops, sigv4, store
from keelfs.gateways.s3.context import BODY_PIECE, Ctx, stored_from_headers, xml_response
from keelfs.gateways.s3.credentials import AccessKey
from keelfs.gateways.s3.errors import S3Error
from keelfs.gateways.s3.post_policy import Policy, authenticate_form, is_signed_form
from keelfs.gateways.s3.settings_cache import SettingsCache
from keelfs.gateways.s3.xmlio import sub

__all__ = ["MAX_FIELDS_BYTES", "FormGateway", "is_form_post", "post_object"]

MAX_FIELDS_BYTES = 20 * 1024
"""The most bytes of fields (names and values) before the file, as S3."""
_OBJECT_FIELDS = frozenset({"content-type", *store.STORED_HEADERS})


@dataclass(frozen=True)
class FormGateway:
    """What a form upload needs of the gateway (``S3Gateway``)."""

    client_for: Callable[[str], AsyncClient]
    owner_client: Callable[[str], AsyncClient | None]
    """A client acting for a bucket's owner, where its policy allows (``policy_ops``)."""
    names: dict[str, str]
    settings: SettingsCache


def is_form_post(request: web.Request, bucket: str, key: str, query: Mapping[str, str]) -> bool:
    """A POST Object: a form posted to a bucket's URL (not ``?delete``, ``?uploads``)."""
    return (
        request.method == "POST"
        and bool(bucket)
        and not key
        and not query
        and request.content_type == "multipart/form-data"
    )


async def post_object(
    request: web.Request,
    bucket: str,
    keys: Mapping[str, AccessKey],
    anonymous_user: str,
    gateway: FormGateway,
) -> web.Response:
    """Serve a POST Object (module doc)."""
    try:
        reader = await request.multipart()
        fields, file_part = await _read_fields(reader)
    except ValueError as exc:
        raise S3Error("MalformedPOSTRequest", f"cannot read the form: {exc}") from None
    if "key" not in fields:
        raise S3Error("InvalidArgument", "Bucket POST must contain a field named 'key'.")
    key = fields["key"].replace("${filename}", file_part.filename or "")
    given = {name.lower(): value for name, value in fields.items()}
    given.update(bucket=bucket, key=key)
    anonymous = not is_signed_form(given)
    policy = None
    if anonymous:
        if not anonymous_user:
            raise S3Error("AccessDenied", "Anonymous access is not allowed; sign the form")
        signed = sigv4.anonymous(anonymous_user)
    else:
        access_key, policy = authenticate_form(given, keys)
        policy.check_fields(given)
        signed = sigv4.Signed(access_key, sigv4.UNSIGNED, "", "", "", b"")
    client = gateway.client_for(signed.key.user)
    ctx = Ctx(request, signed, client, bucket, key, {}, gateway.names, anonymous)
    ctx.settings_cache = gateway.settings
    await policy_ops.authorize(ctx, objects.put_object, gateway.owner_client)
    etag = await _write(ctx, _object_headers(fields, file_part), file_part, policy)
    return _answer(request, given, bucket, key, etag)


async def _read_fields(reader: object) -> tuple[CIMultiDict[str], BodyPartReader]:
    """The fields before the ``file`` part, and that part (unread)."""
    fields: CIMultiDict[str] = CIMultiDict()
    budget = MAX_FIELDS_BYTES
    while True:
        part = await reader.next()  # type: ignore[attr-defined]
        if part is None:
            raise S3Error("InvalidArgument", "POST requires exactly one file upload per request.")
        if not isinstance(part, BodyPartReader) or not part.name:
            raise S3Error("MalformedPOSTRequest", "every part of the form is a named field")
        if part.name.lower() == "file":
            return fields, part
        budget -= len(part.name.encode())
        value = await _read_value(part, budget)
        budget -= len(value)
        fields[part.name] = value.decode("utf-8", errors="replace")


async def _read_value(part: BodyPartReader, budget: int) -> bytes:
    value = bytearray()
    while not part.at_eof():
        value += await part.read_chunk(BodyPartReader.chunk_size)
        if len(value) > budget:
            raise S3Error(
                "MaxPostPreDataLengthExceeded",
                "Your POST request fields preceding the upload file were too large.",
            )
    return bytes(value)


def _object_headers(fields: CIMultiDict[str], file_part: BodyPartReader) -> CIMultiDict[str]:
    """What the form asks of its object, as the headers a PUT would give it: the ACL
    (``acl``), Content-Type (the field, else the file part's), user metadata and stored
    headers."""
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in fields.items():
        lower = name.lower()
        if lower == "acl":
            headers["x-amz-acl"] = value
        elif lower in _OBJECT_FIELDS or lower.startswith("x-amz-meta-"):
            headers[name] = value
    part_type = file_part.headers.get("Content-Type")
    if "Content-Type" not in headers and part_type:
        headers["Content-Type"] = part_type
    return headers


async def _file_data(part: BodyPartReader, policy: Policy | None) -> AsyncIterator[bytes]:
    """The file's data, refused (``EntityTooLarge``) as soon as it is past the policy's
    range."""
    most = policy.length_range[1] if policy and policy.length_range else None
    length = 0
    while not part.at_eof():
        piece = await part.read_chunk(BODY_PIECE)
        length += len(piece)
        if most is not None and length > most:
            assert policy is not None
            policy.check_length(length)
        if piece:
            yield piece


async def _write(
    ctx: Ctx, headers: CIMultiDict[str], part: BodyPartReader, policy: Policy | None
) -> str:
    """The object written as a PUT writes it; its ETag."""
    store.check_key(ctx.key)
    ctx.refuse_disabled_acl(allowed=("bucket-owner-full-control",), headers=headers)
    chosen = await ctx.object_acl_of(headers)
    data = _file_data(part, policy)
    if ctx.key.endswith("/"):  # a directory marker, as PUT makes one
        if any([piece async for piece in data]):
            raise S3Error("InvalidArgument", "a key ending in '/' is a directory: no data")
        return (await store.make_marker(ctx.fs, ctx.bucket, ctx.key)).etag
    written = await store.write_temp(ctx.fs, ctx.bucket, data, mode=acls.file_mode(chosen))
    try:
        if policy is not None:
            policy.check_length(written.length)
    except S3Error:
        await store.discard(ctx.fs, written.path)
        raise
    stored = stored_from_headers(headers, objects.md5_etag(written.md5))
    obj = await objects.commit(ctx, written.path, stored, acl=chosen)  # a version, if kept
    return obj.etag


def _answer(
    request: web.Request, given: Mapping[str, str], bucket: str, key: str, etag: str
) -> web.Response:
    """``success_action_redirect``: 303 to it with the bucket, key and ETag;
    ``success_action_status`` 200 or 201 (an XML ``PostResponse``); 204 otherwise."""
    location = f"{request.scheme}://{request.host}/{quote(bucket)}/{quote(key)}"
    headers = {"ETag": etag, "Location": location}
    redirect = given.get("success_action_redirect") or given.get("redirect")
    if redirect:
        joiner = "&" if "?" in redirect else "?"
        headers["Location"] = (
            f"{redirect}{joiner}bucket={quote(bucket, safe='')}&key={quote(key, safe='')}"
            f"&etag={quote(etag, safe='')}"
        )
        return web.Response(status=303, headers=headers)
    status = given.get("success_action_status")
    if status == "201":
        root = Element("PostResponse")  # no namespace, as S3
        sub(root, "Location", location)
        sub(root, "Bucket", bucket)
        sub(root, "Key", key)
        sub(root, "ETag", etag)
        response = xml_response(root, status=201)
        response.headers.update(headers)
        return response
    return web.Response(status=200 if status == "200" else 204, headers=headers)
