"""``S3Gateway``: the S3 gateway's aiohttp server, its routing and its clients.

Path-style addressing only (``http://HOST:PORT/bucket/key``). Every request is authenticated
(``sigv4``, ``sigv2``) before anything else (but a POST Object, whose form carries its signed
policy, ``post_object``, and a CORS preflight, never signed, ``cors``); the access key names
a keelfs user, and the request runs through a client of the cluster acting as that user (one
``AsyncClient`` per user, made on first use), so keelfs's permissions decide what it may do:

- without TLS (simple mode) the client names the user (``keelfs-user``), as any client may;
- with TLS (``tls_dir``) each user's client presents that user's own certificate from the
  directory (``keelfs certs issue-client``): the gateway holds the certificates of the users
  it serves, as it holds their S3 secrets, and the masters need no proxy rule.

The gateway keeps no state of its own: any number of them may serve the same cluster.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from urllib.parse import unquote

from aiohttp import web

from keelfs.client.aio import AsyncClient
from keelfs.errors import KeelError
from keelfs.gateways.s3 import (
    acl_ops,
    buckets,
    cors,
    multipart,
    objects,
    policy_ops,
    post_object,
    sigv4,
    versions,
)
from keelfs.gateways.s3.context import Ctx
from keelfs.gateways.s3.credentials import AccessKey, KeyTable
from keelfs.gateways.s3.errors import S3Error, error_xml, from_keel
from keelfs.gateways.s3.settings_cache import DEFAULT_TTL, SettingsCache
from keelfs.gateways.site import HttpSite
from keelfs.runtime.requests import request_scope
from keelfs.tls.certs import user_files
from keelfs.tls.credentials import TlsSettings

__all__ = ["S3Gateway"]

log = logging.getLogger(__name__)

Handler = Callable[[Ctx], Awaitable[web.StreamResponse]]
_CORS_HEADERS = web.RequestKey("keelfs_cors_headers", dict)
"""The ``Access-Control-*`` headers the bucket's CORS rules give a request's answer."""
_UNSUPPORTED = frozenset(
    {
        "lifecycle", "tagging", "website",
        "encryption", "replication", "logging", "notification", "object-lock", "retention",
        "legal-hold", "accelerate", "requestPayment", "analytics", "metrics", "inventory",
        "intelligent-tiering", "select", "restore",
    }
)  # fmt: skip


_BUCKET_SETTINGS: dict[tuple[str, str], Handler] = {
    ("GET", "policy"): policy_ops.get_bucket_policy,
    ("PUT", "policy"): policy_ops.put_bucket_policy,
    ("DELETE", "policy"): policy_ops.delete_bucket_policy,
    ("GET", "policyStatus"): policy_ops.get_bucket_policy_status,
    ("GET", "publicAccessBlock"): policy_ops.get_public_access_block,
    ("PUT", "publicAccessBlock"): policy_ops.put_public_access_block,
    ("DELETE", "publicAccessBlock"): policy_ops.delete_public_access_block,
    ("GET", "ownershipControls"): policy_ops.get_bucket_ownership,
    ("PUT", "ownershipControls"): policy_ops.put_bucket_ownership,
    ("DELETE", "ownershipControls"): policy_ops.delete_bucket_ownership,
}
_OBJECT_QUERIES: dict[tuple[str, str], Handler] = {
    ("GET", "attributes"): objects.get_object_attributes,
    ("GET", "torrent"): objects.get_object_torrent,
}


def _route(method: str, has_bucket: bool, has_key: bool, query: Mapping[str, str]) -> Handler:
    """The operation a request names (``MethodNotAllowed`` / ``NotImplemented`` otherwise)."""
    if has_bucket and not has_key and "versioning" in query:
        if method == "GET":
            return buckets.get_bucket_versioning
        if method == "PUT":
            return buckets.put_bucket_versioning
    named = _BUCKET_SETTINGS if has_bucket and not has_key else _OBJECT_QUERIES if has_key else {}
    for (verb, name), handler in named.items():
        if name in query and verb == method:
            return handler
    if "acl" in query and has_bucket and method in ("GET", "PUT"):
        if has_key:
            return acl_ops.get_object_acl if method == "GET" else acl_ops.put_object_acl
        return acl_ops.get_bucket_acl if method == "GET" else acl_ops.put_bucket_acl
    if "cors" in query and has_bucket and not has_key:
        cors_ops = {
            "GET": cors.get_bucket_cors,
            "PUT": cors.put_bucket_cors,
            "DELETE": cors.delete_bucket_cors,
        }
        if method in cors_ops:
            return cors_ops[method]
    unsupported = _UNSUPPORTED.intersection(query)
    if unsupported:
        raise S3Error("NotImplemented", f"?{sorted(unsupported)[0]} is not supported by keelfs")
    if not has_bucket:
        if method == "GET":
            return buckets.list_buckets
    elif not has_key:
        table: dict[str, Handler] = {
            "PUT": buckets.create_bucket,
            "DELETE": buckets.delete_bucket,
            "HEAD": buckets.head_bucket,
        }
        if method == "GET":
            if "uploads" in query:
                return multipart.list_uploads
            if "versions" in query:
                return versions.list_object_versions
            if "location" in query:
                return buckets.get_bucket_location
            return buckets.list_objects
        if method == "POST" and "delete" in query:
            return objects.delete_objects
        if method in table:
            return table[method]
    else:
        upload = "uploadId" in query
        if method == "GET":
            return multipart.list_parts if upload else objects.get_object
        if method == "HEAD":
            return objects.head_object
        if method == "PUT":
            return multipart.upload_part if upload or "partNumber" in query else objects.put_object
        if method == "DELETE":
            return multipart.abort_upload if upload else objects.delete_object
        if method == "POST":
            if "uploads" in query:
                return multipart.create_upload
            if upload:
                return multipart.complete_upload
    raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.")


def _form_post(request: web.Request, raw_path: str, raw_query: str) -> bool:
    bucket, _, key = unquote(raw_path).lstrip("/").partition("/")
    return post_object.is_form_post(request, bucket, key, dict(sigv4.query_pairs(raw_query)))


async def _add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer, streamed or not, errors too, takes the CORS headers noted for its
    request (``S3Gateway._note_cors``)."""
    headers = request.get(_CORS_HEADERS)
    if headers:
        for name, value in headers.items():
            response.headers.setdefault(name, value)


_READS = frozenset({objects.get_object, objects.head_object, objects.get_object_attributes})
"""Reads whose "no such key" only a caller who may list the bucket learns."""


async def _check_bucket_owner(ctx: Ctx, expected: str) -> None:
    """``x-amz-expected-bucket-owner``: the request goes on only if the bucket's owner is
    that user (``AccessDenied`` otherwise, as S3)."""
    from keelfs.gateways.s3.store import require_bucket

    if (await require_bucket(ctx.fs, ctx.bucket)).owner != expected:
        raise S3Error("AccessDenied", "Access Denied: the bucket has another owner")


class S3Gateway:
    """The gateway on ``host:port`` for the cluster at ``seeds`` (module doc)."""

    def __init__(
        self,
        seeds: list[str],
        keys: Mapping[str, AccessKey],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls_dir: Path | None = None,
        anonymous_user: str | None = None,
        settings_ttl: float = DEFAULT_TTL,
    ) -> None:
        self.seeds = list(seeds)
        self.keys = dict(keys)
        table = keys if isinstance(keys, KeyTable) else KeyTable(keys)
        self.names = table.display_names()
        self.anonymous_user = table.anonymous_user if anonymous_user is None else anonymous_user
        """The keelfs user unsigned requests act as where an ACL allows ("": refused)."""
        self.host = host
        self.port = port
        self.tls_dir = tls_dir
        self.clients: dict[str, AsyncClient] = {}
        self.settings = SettingsCache(settings_ttl)
        """Buckets' settings, kept ``settings_ttl`` seconds (``settings_cache``)."""
        self._site = HttpSite(self.host, self.port)
        self.address = ""

    def owner_client(self, user: str) -> AsyncClient | None:
        """A client acting as ``user`` where a bucket policy lets the gateway act for a
        bucket's owner; None with TLS when the gateway holds no certificate of theirs."""
        if self.tls_dir is not None and not user_files(self.tls_dir, user).cert.exists():
            return None
        return self.client_for(user)

    def client_for(self, user: str) -> AsyncClient:
        client = self.clients.get(user)
        if client is None:
            tls = TlsSettings.for_user(self.tls_dir, user) if self.tls_dir is not None else None
            client = self.clients[user] = AsyncClient(self.seeds, user=user, tls=tls)
        return client

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024**4)
        app.router.add_route("*", "/{tail:.*}", self._handle, expect_handler=self._expect)
        app.on_response_prepare.append(_add_cors_headers)
        return app

    async def start(self) -> None:
        # auto_decompress off: a body sent with Content-Encoding gzip is the object's bytes
        # (S3 stores them as sent and serves the header back), not something to inflate
        self.address = await self._site.start(self.app(), auto_decompress=False)

    @property
    def url(self) -> str:
        return self._site.url

    async def stop(self) -> None:
        await self._site.stop()
        clients, self.clients = self.clients, {}
        for client in clients.values():
            await client.close()

    def settings_client(self) -> AsyncClient | None:
        """The client that reads a bucket's CORS rules for requests not yet (or never)
        authenticated: the anonymous user's, else the first served user's (``cors``)."""
        user = self.anonymous_user or next((k.user for k in self.keys.values()), "")
        return self.client_for(user) if user else None

    async def _expect(self, request: web.Request) -> web.StreamResponse | None:
        """``Expect: 100-continue``: the request's signature (or, unsigned, its ACL) is
        checked before the client is told to send its body, so a refused upload is refused
        at once, its body never sent (a POST Object's signature is in its body: it is
        checked once the fields are read)."""
        raw_path, _, raw_query = request.raw_path.partition("?")
        try:
            if not _form_post(request, raw_path, raw_query):
                await self._prepare(request, raw_path, raw_query)
        except (S3Error, KeelError) as exc:
            err = exc if isinstance(exc, S3Error) else from_keel(exc)
            response = self._error(request, err, raw_path, secrets.token_hex(8).upper())
            response.force_close()
            return response
        if request.version >= (1, 1) and request.headers.get("Expect", "").lower() == (
            "100-continue"
        ):  # as aiohttp's own expect handler
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        request_id = secrets.token_hex(8).upper()
        with request_scope(request_id):  # its log lines and the cluster calls made for it
            return await self._answer(request, request_id)

    async def _answer(self, request: web.Request, request_id: str) -> web.StreamResponse:
        raw_path, _, raw_query = request.raw_path.partition("?")
        bucket = unquote(raw_path).lstrip("/").partition("/")[0]
        response: web.StreamResponse
        try:
            if request.method == "OPTIONS":
                response = await cors.preflight(self._cors_rules, bucket, request.headers)
            else:
                await self._note_cors(request, bucket)
                response = await self._serve(request, raw_path, raw_query)
        except S3Error as err:
            response = self._error(request, err, raw_path, request_id)
        except KeelError as exc:
            response = self._error(request, from_keel(exc), raw_path, request_id)
        except Exception:
            log.exception("S3 request %s %s failed", request.method, raw_path)
            internal = S3Error(
                "InternalError", "We encountered an internal error. Please try again."
            )
            response = self._error(request, internal, raw_path, request_id)
        if not response.prepared:
            response.headers["x-amz-request-id"] = request_id
            response.headers.setdefault("Server", "keelfs")
        return response

    async def _note_cors(self, request: web.Request, bucket: str) -> None:
        """The CORS headers of the answer to a request with an ``Origin``, from the first
        rule of its bucket that allows the origin and the method (its
        ``Access-Control-Request-Method`` where it gives one, as RGW): none where no rule
        does, or the rules cannot be read."""
        origin = request.headers.get("Origin")
        if origin is None or not bucket:
            return
        try:
            rules = await self._cors_rules(bucket)
        except (S3Error, KeelError):
            return
        method = request.headers.get("Access-Control-Request-Method", request.method)
        rule = cors.matching_rule(rules or [], origin, method)
        if rule is not None:
            request[_CORS_HEADERS] = cors.response_headers(rule, origin)

    async def _cors_rules(self, bucket: str) -> list[cors.Rule] | None:
        """The bucket's CORS rules, read as ``settings_client`` (None: no one to read them
        as); ``NoSuchBucket`` where there is no bucket."""
        client = self.settings_client()
        if client is None:
            return None
        return cors.rules_of(await self.settings.get(client, bucket))

    async def _serve(
        self, request: web.Request, raw_path: str, raw_query: str
    ) -> web.StreamResponse:
        if _form_post(request, raw_path, raw_query):
            bucket = unquote(raw_path).lstrip("/").partition("/")[0]
            return await post_object.post_object(
                request, bucket, self.keys, self.anonymous_user, self._form_gateway()
            )
        ctx, handler = await self._prepare(request, raw_path, raw_query)
        try:
            return await handler(ctx)
        except S3Error as err:
            if err.code == "NoSuchKey" and handler in _READS and not await policy_ops.may_list(ctx):
                raise S3Error("AccessDenied", "Access Denied") from None
            raise
        finally:
            if handler in policy_ops.SETTINGS_WRITERS:  # its next request sees the change
                self.settings.invalidate(ctx.bucket)

    def _form_gateway(self) -> post_object.FormGateway:
        return post_object.FormGateway(
            self.client_for, self.owner_client, self.names, self.settings
        )

    async def _prepare(
        self, request: web.Request, raw_path: str, raw_query: str
    ) -> tuple[Ctx, Handler]:
        """Who the request is, what it asks, and whether it may ask it (anonymous callers,
        ``x-amz-expected-bucket-owner``), before its body is read."""
        anonymous = bool(self.anonymous_user) and sigv4.is_unsigned(raw_query, request.headers)
        if anonymous:
            signed = sigv4.anonymous(self.anonymous_user)
        else:
            signed = sigv4.authenticate(
                request.method, raw_path, raw_query, request.headers, self.keys
            )
        bucket, _, key = unquote(raw_path).lstrip("/").partition("/")
        query = dict(sigv4.query_pairs(raw_query))
        handler = _route(request.method, bool(bucket), bool(key), query)
        client = self.client_for(signed.key.user)
        ctx = Ctx(request, signed, client, bucket, key, query, self.names, anonymous)
        ctx.settings_cache = self.settings
        await policy_ops.authorize(ctx, handler, self.owner_client)
        expected = request.headers.get("x-amz-expected-bucket-owner")
        if expected is not None and bucket and handler is not buckets.create_bucket:
            await _check_bucket_owner(ctx, expected)
        return ctx, handler

    def _error(
        self, request: web.Request, err: S3Error, resource: str, request_id: str
    ) -> web.Response:
        if request.method == "HEAD":
            return web.Response(status=err.status, headers=err.headers)
        headers = dict(err.headers)
        if err.code == "InvalidRange" and "ActualObjectSize" in err.extra:
            headers["Content-Range"] = f"bytes */{err.extra['ActualObjectSize']}"
            err.extra.pop("RangeRequested", None)
        return web.Response(
            body=error_xml(err, resource, request_id),
            status=err.status,
            content_type="application/xml",
            headers=headers,
        )
