"""What every operation handler gets: the request, who signed it, the keelfs client acting
for their user, the bucket and key it names; and the helpers every family shares (the body,
stored headers, HTTP dates, XML answers)."""

from __future__ import annotations

import base64
import binascii
import email.utils
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from keelfs.client.aio import AsyncClient
from keelfs.gateways.s3 import acl as acls
from keelfs.gateways.s3 import sigv4, store
from keelfs.gateways.s3.bucket_config import BucketConfig, read_config
from keelfs.gateways.s3.errors import S3Error
from keelfs.gateways.s3.settings_cache import SettingsCache
from keelfs.gateways.s3.xmlio import render

__all__ = ["Ctx", "http_date", "stored_from_headers", "xml_response"]

BODY_PIECE = 1024 * 1024
Headers = CIMultiDictProxy[str] | CIMultiDict[str]


@dataclass
class Ctx:
    request: web.Request
    signed: sigv4.Signed
    fs: AsyncClient
    bucket: str
    key: str
    query: dict[str, str]
    names: dict[str, str] = field(default_factory=dict)
    """keelfs user -> DisplayName (the credentials' ``display_name``)."""
    anonymous: bool = False
    """An unsigned request, acting as the gateway's anonymous user where an ACL allows."""
    config: BucketConfig | None = None
    """The bucket's settings (policy, public access block, ownership), read by the gate."""
    acting: str = ""
    """The bucket's owner where its policy lets the gateway act for them (``act_as``)."""
    caller_fs: AsyncClient | None = None
    """The caller's own client while ``fs`` acts for the bucket's owner."""
    settings_cache: SettingsCache | None = None
    """The gateway's cache of buckets' settings (None: read at each use)."""

    @property
    def user(self) -> str:
        """The keelfs user the request acts as: the signer's, or the bucket owner's where
        the bucket's policy allowed it (``policy_ops``)."""
        return self.acting or self.signed.key.user

    @property
    def own_fs(self) -> AsyncClient:
        """The caller's own client, whoever ``fs`` acts for."""
        return self.caller_fs or self.fs

    async def settings(self, bucket: str = "", *, fresh: bool = False) -> BucketConfig:
        """The settings of ``bucket`` (the request's by default) through the gateway's cache
        (``settings_cache``: at most a second old, or changed by this gateway since);
        ``fresh``: read now."""
        bucket = bucket or self.bucket
        if self.settings_cache is None:
            return await read_config(self.fs, bucket)
        return await self.settings_cache.get(self.fs, bucket, fresh=fresh)

    async def versioning_state(self) -> str:
        """The bucket's versioning state (``Enabled``, ``Suspended``, "": never set)."""
        return (await self.settings()).versioning

    def act_as(self, owner: str, client: AsyncClient) -> None:
        """Run the rest of this request as the bucket's owner (its policy allowed it)."""
        self.caller_fs, self.fs, self.acting = self.fs, client, owner

    async def object_acl_of_request(self) -> acls.Acl:
        """The ACL a PUT, copy or multipart create asks for its object (private where it
        asks none), refused before anything is written if keelfs cannot hold it."""
        self.refuse_disabled_acl(allowed=("bucket-owner-full-control",))
        return await self.object_acl_of(self.request.headers)

    async def object_acl_of(self, headers: Headers) -> acls.Acl:
        """The ACL ``headers`` (a request's, or a POST form's fields) ask for their object."""
        bucket_owner = ""
        if (headers.get("x-amz-acl") or "").strip().startswith("bucket-owner-"):
            bucket_owner = (await store.require_bucket(self.fs, self.bucket)).owner
        chosen = acls.from_request(
            headers,
            b"",
            owner=self.user,
            is_bucket=False,
            bucket_owner=bucket_owner,
            known=self.names,
        )
        self.refuse_public_acl(chosen)
        return chosen or acls.PRIVATE

    def refuse_disabled_acl(
        self, *, allowed: tuple[str, ...] = (), headers: Headers | None = None
    ) -> None:
        """``BucketOwnerEnforced``: ACLs are off, and a request that sets one (but for a
        canned ACL in ``allowed``) is refused (S3's ``AccessControlListNotSupported``).
        ``headers``: where the request names its ACL (a POST form's fields), if not in its
        own headers."""
        if self.config is None or not self.config.acls_disabled:
            return
        if headers is None:
            headers = self.request.headers
        canned = headers.get("x-amz-acl")
        grants = any(name.lower().startswith("x-amz-grant-") for name in headers)
        if grants or (canned is not None and canned.strip() not in allowed):
            raise S3Error("AccessControlListNotSupported", "The bucket does not allow ACLs")

    def refuse_public_acl(self, chosen: acls.Acl | None) -> None:
        """``BlockPublicAcls``: an ACL that grants anything to everyone is refused."""
        block = self.config.block if self.config is not None else None
        public = chosen is not None and bool(chosen.others or chosen.anonymous)
        if block is not None and block.block_public_acls and public:
            raise S3Error(
                "AccessDenied",
                "Access Denied: the bucket's public access block forbids public ACLs",
            )

    def header(self, name: str) -> str | None:
        return self.request.headers.get(name)

    def body(self) -> AsyncIterator[bytes]:
        """The request's data: ``aws-chunked`` decoded and its chunks' signatures checked, or
        the plain body."""
        if self.signed.payload in sigv4.STREAMING:
            return sigv4.chunked_body(self.request.content, self.signed)
        return self.request.content.iter_chunked(BODY_PIECE)

    def check_digests(self, written: store.Written) -> None:
        """The body against ``x-amz-content-sha256`` (a signed payload), ``Content-MD5`` and
        ``x-amz-decoded-content-length``: S3's errors if it is not what was signed/sent."""
        payload = self.signed.payload
        signed = payload not in sigv4.STREAMING and payload != sigv4.UNSIGNED
        if signed and written.sha256 != payload:
            raise S3Error(
                "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            )
        md5 = self.header("Content-MD5")
        if md5 is not None:
            try:
                expected = base64.b64decode(md5, validate=True)
            except (binascii.Error, ValueError):
                raise S3Error(
                    "InvalidDigest", "The Content-MD5 you specified is not valid."
                ) from None
            if expected != written.md5:
                raise S3Error(
                    "BadDigest", "The Content-MD5 you specified did not match what we received."
                )
        decoded = self.header("x-amz-decoded-content-length")
        announced = int(decoded) if decoded is not None and decoded.isdigit() else None
        if payload in sigv4.STREAMING and announced not in (None, written.length):
            raise S3Error("IncompleteBody", "the body is not the decoded length announced")

    def stored_from_request(self, etag: str) -> store.Stored:
        """The Content-Type, user metadata and stored headers a PUT (or a REPLACE copy, or a
        multipart create) gives its object."""
        return stored_from_headers(self.request.headers, etag)


def stored_from_headers(headers: Headers, etag: str) -> store.Stored:
    """What ``headers`` (a request's, or a POST form's fields) give an object: its
    Content-Type, user metadata and stored headers."""
    meta = {
        name[len("x-amz-meta-") :].lower(): value
        for name, value in headers.items()
        if name.lower().startswith("x-amz-meta-")
    }
    kept = {name: headers[name] for name in store.STORED_HEADERS if name in headers}
    given = kept.pop("content-encoding", "")
    encoding = [e.strip() for e in given.split(",") if e.strip() not in ("", "aws-chunked")]
    if encoding:  # as given, less the transfer's own "aws-chunked"
        unchanged = len(encoding) == len(given.split(","))
        kept["content-encoding"] = given if unchanged else ", ".join(encoding)
    content_type = headers.get("Content-Type") or store.DEFAULT_TYPE
    return store.Stored(etag, content_type, meta, kept)


def http_date(ms: int) -> str:
    return email.utils.formatdate(ms / 1000, usegmt=True)


def xml_response(
    root: Element, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=render(root), status=status, content_type="application/xml", headers=headers
    )
