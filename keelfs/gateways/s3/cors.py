"""CORS: a bucket's rules (Put/Get/DeleteBucketCors), the answer to a browser's preflight
(``OPTIONS``) and the ``Access-Control-*`` headers of requests that carry an ``Origin``.

A bucket's rules are the JSON file ``/b/.s3/cors``, written by the bucket's owner (only
the owner may set, read or delete them, as S3) and counted only while that file is owned
by the bucket's owner, as the ACL's mark (``acl``): no one else can open a bucket to other
origins. The file is readable by every user (it says nothing an ``OPTIONS`` does not), so
the gateway reads it as its anonymous user (or, without one, as the first user it serves)
for preflights, which are never signed, with the bucket's other settings
(``bucket_config.read_config``, kept a second: ``settings_cache``).

A rule matches an origin when one of its ``AllowedOrigin`` does (one ``*`` in it stands for
any run of characters), a method when it is one of its ``AllowedMethod``, and a preflight's
``Access-Control-Request-Headers`` when each is matched by an ``AllowedHeader`` (with ``*``
the same way, case-insensitively). The first matching rule answers.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from xml.etree.ElementTree import Element

from aiohttp import web

from keelfs.client.files import write_inline
from keelfs.errors import KeelError, NotADirectory, NotFound
from keelfs.gateways.s3 import store
from keelfs.gateways.s3.bucket_config import CORS, BucketConfig
from keelfs.gateways.s3.context import Ctx, xml_response
from keelfs.gateways.s3.errors import S3Error, from_keel
from keelfs.gateways.s3.xmlio import child_text, children, document, parse, sub, tag

__all__ = [
    "Rule",
    "delete_bucket_cors",
    "get_bucket_cors",
    "matching_rule",
    "parse_rules",
    "preflight",
    "put_bucket_cors",
    "rules_of",
    "response_headers",
]

CORS_FILE = CORS
"""The bucket's rules, in its hidden directory."""
METHODS = ("GET", "PUT", "HEAD", "POST", "DELETE")
MAX_RULES = 100
MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class Rule:
    origins: tuple[str, ...]
    methods: tuple[str, ...]
    headers: tuple[str, ...] = ()
    expose: tuple[str, ...] = ()
    max_age: int | None = None
    id: str = ""

    def allows_origin(self, origin: str) -> bool:
        return any(_wildcard_match(pattern, origin) for pattern in self.origins)

    def allows_headers(self, requested: list[str]) -> bool:
        return all(
            any(_wildcard_match(p.lower(), name.lower()) for p in self.headers)
            for name in requested
        )

    def allow_origin_value(self, origin: str) -> str:
        """What ``Access-Control-Allow-Origin`` says: ``*`` for a rule open to every origin,
        else the origin itself."""
        return "*" if "*" in self.origins else origin


def _wildcard_match(pattern: str, text: str) -> bool:
    """``pattern`` with at most one ``*`` (any run of characters) against ``text``."""
    if "*" not in pattern:
        return pattern == text
    head, _, tail = pattern.partition("*")
    return len(text) >= len(head) + len(tail) and text.startswith(head) and text.endswith(tail)


# -- the configuration document -----------------------------------------------------------------
def _malformed(why: str) -> S3Error:
    return S3Error(
        "MalformedXML",
        "The XML you provided was not well-formed or did not validate against our published "
        f"schema ({why})",
    )


def parse_rules(body: bytes) -> list[Rule]:
    """The rules of a ``CORSConfiguration`` document, checked as S3 checks them."""
    root = parse(body)
    if tag(root) != "CORSConfiguration":
        raise _malformed("the root is not CORSConfiguration")
    elements = children(root, "CORSRule")
    if not elements or len(elements) > MAX_RULES:
        raise _malformed(f"a configuration has 1 to {MAX_RULES} CORSRule")
    return [_rule(element) for element in elements]


def _texts(element: Element, name: str) -> tuple[str, ...]:
    return tuple((c.text or "").strip() for c in children(element, name))


def _rule(element: Element) -> Rule:
    origins = _texts(element, "AllowedOrigin")
    methods = _texts(element, "AllowedMethod")
    if not origins or not methods:
        raise _malformed("a CORSRule has an AllowedOrigin and an AllowedMethod")
    for method in methods:
        if method not in METHODS:
            raise S3Error(
                "InvalidRequest",
                f"Found unsupported HTTP method in CORS config. Unsupported method is {method}",
            )
    headers = _texts(element, "AllowedHeader")
    for value, what in [(o, "AllowedOrigin") for o in origins] + [
        (h, "AllowedHeader") for h in headers
    ]:
        if value.count("*") > 1:
            raise S3Error(
                "InvalidRequest", f'{what} "{value}" can not have more than one wildcard.'
            )
    max_age_text = child_text(element, "MaxAgeSeconds")
    max_age = None
    if max_age_text is not None:
        if not max_age_text.isdigit():
            raise _malformed("MaxAgeSeconds is a whole number of seconds")
        max_age = int(max_age_text)
    rule_id = child_text(element, "ID") or ""
    return Rule(origins, methods, headers, _texts(element, "ExposeHeader"), max_age, rule_id)


def render_rules(rules: list[Rule]) -> web.Response:
    root = document("CORSConfiguration")
    for rule in rules:
        element = sub(root, "CORSRule")
        if rule.id:
            sub(element, "ID", rule.id)
        for name, values in (
            ("AllowedHeader", rule.headers),
            ("AllowedMethod", rule.methods),
            ("AllowedOrigin", rule.origins),
            ("ExposeHeader", rule.expose),
        ):
            for value in values:
                sub(element, name, value)
        if rule.max_age is not None:
            sub(element, "MaxAgeSeconds", rule.max_age)
    return xml_response(root)


def encode(rules: list[Rule]) -> bytes:
    return json.dumps({"rules": [asdict(rule) for rule in rules]}).encode()


def decode(raw: bytes) -> list[Rule]:
    body = json.loads(raw)
    return [
        Rule(
            tuple(r["origins"]),
            tuple(r["methods"]),
            tuple(r.get("headers", ())),
            tuple(r.get("expose", ())),
            r.get("max_age"),
            r.get("id", ""),
        )
        for r in body["rules"]
    ]


# -- where they are kept ------------------------------------------------------------------------
def _path(bucket: str) -> str:
    return store.hidden(bucket, CORS_FILE)


def rules_of(config: BucketConfig) -> list[Rule] | None:
    """The bucket's rules; None where it has none (or its file is not its owner's, or not
    rules): read with its other settings (``bucket_config.read_config``)."""
    if config.cors_data is None:
        return None
    try:
        return decode(config.cors_data)
    except (ValueError, KeyError, TypeError):
        return None


async def _require_owner(ctx: Ctx) -> None:
    info = await store.require_bucket(ctx.fs, ctx.bucket)
    if ctx.user != info.owner:
        raise S3Error("AccessDenied", "Access Denied: only the bucket's owner sets its CORS")


async def _body_checked(ctx: Ctx) -> bytes:
    """The request's body, against its ``Content-MD5`` where it gives one."""
    body = await ctx.request.content.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise _malformed("the document is too large")
    md5 = ctx.header("Content-MD5")
    if md5 is not None:
        try:
            expected = base64.b64decode(md5, validate=True)
        except (binascii.Error, ValueError):
            raise S3Error("InvalidDigest", "The Content-MD5 you specified is not valid.") from None
        if expected != hashlib.md5(body).digest():
            raise S3Error(
                "BadDigest", "The Content-MD5 you specified did not match what we received."
            )
    return body


# -- the operations -----------------------------------------------------------------------------
async def put_bucket_cors(ctx: Ctx) -> web.Response:
    rules = parse_rules(await _body_checked(ctx))
    await _require_owner(ctx)
    data = encode(rules)
    try:
        try:
            await write_inline(ctx.fs, _path(ctx.bucket), data, overwrite=True, mode=0o644)
        except NotFound:
            await store.make_hidden_dir(ctx.fs, ctx.bucket, store.hidden(ctx.bucket))
            await write_inline(ctx.fs, _path(ctx.bucket), data, overwrite=True, mode=0o644)
    except KeelError as exc:
        raise from_keel(exc, missing="NoSuchBucket", BucketName=ctx.bucket) from None
    return web.Response()


async def get_bucket_cors(ctx: Ctx) -> web.Response:
    await _require_owner(ctx)
    rules = rules_of(await ctx.settings())
    if rules is None:
        raise S3Error(
            "NoSuchCORSConfiguration",
            "The CORS configuration does not exist",
            BucketName=ctx.bucket,
        )
    return render_rules(rules)


async def delete_bucket_cors(ctx: Ctx) -> web.Response:
    await _require_owner(ctx)
    try:
        with contextlib.suppress(NotFound, NotADirectory):
            await ctx.fs.delete(_path(ctx.bucket))
    except KeelError as exc:
        raise from_keel(exc, missing="NoSuchBucket", BucketName=ctx.bucket) from None
    return web.Response(status=204)


# -- answering browsers -------------------------------------------------------------------------
def matching_rule(
    rules: list[Rule], origin: str, method: str, requested: list[str] | None = None
) -> Rule | None:
    for rule in rules:
        if not rule.allows_origin(origin) or method not in rule.methods:
            continue
        if requested and not rule.allows_headers(requested):
            continue
        return rule
    return None


def response_headers(rule: Rule, origin: str) -> dict[str, str]:
    """The ``Access-Control-*`` headers a rule gives an answer to ``origin``."""
    headers = {
        "Access-Control-Allow-Origin": rule.allow_origin_value(origin),
        "Access-Control-Allow-Methods": ", ".join(rule.methods),
        "Vary": "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
    }
    if rule.allow_origin_value(origin) != "*":
        headers["Access-Control-Allow-Credentials"] = "true"
    if rule.expose:
        headers["Access-Control-Expose-Headers"] = ", ".join(rule.expose)
    if rule.max_age is not None:
        headers["Access-Control-Max-Age"] = str(rule.max_age)
    return headers


def _forbidden(why: str) -> S3Error:
    return S3Error("AccessForbidden", f"CORSResponse: {why}")


async def preflight(
    read_rules: Callable[[str], Awaitable[list[Rule] | None]],
    bucket: str,
    headers: Mapping[str, str],
) -> web.Response:
    """The answer to an ``OPTIONS`` (module doc): 200 with the matching rule's headers;
    400 without ``Origin`` or ``Access-Control-Request-Method``; 403 where no rule
    matches."""
    origin = headers.get("Origin")
    if origin is None:
        raise S3Error("InvalidRequest", "Insufficient information. Origin request header needed.")
    method = headers.get("Access-Control-Request-Method")
    if method is None or not bucket:
        raise S3Error("InvalidRequest", "Invalid Access-Control-Request-Method: none given")
    rules = await read_rules(bucket)
    if not rules:
        raise _forbidden("CORS is not enabled for this bucket.")
    requested = [
        name.strip()
        for name in headers.get("Access-Control-Request-Headers", "").split(",")
        if name.strip()
    ]
    rule = matching_rule(rules, origin, method, requested)
    if rule is None:
        raise _forbidden(
            "This CORS request is not allowed. This is usually because the evalution of "
            "Origin, request method / Access-Control-Request-Method or "
            "Access-Control-Request-Headers are not whitelisted by the resource's CORS spec."
        )
    answer = response_headers(rule, origin)
    if requested:
        answer["Access-Control-Allow-Headers"] = ", ".join(requested)
    return web.Response(headers=answer)
