"""S3's errors: a code, its HTTP status and a message, answered as S3's ``<Error>`` XML."""

from __future__ import annotations

from xml.etree.ElementTree import Element, SubElement, tostring

from keelfs.errors import (
    AlreadyExists,
    DirectoryNotEmpty,
    InvalidArgument,
    IsADirectory,
    KeelError,
    NotADirectory,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    ResourceExhausted,
    RetryableError,
)

__all__ = ["STATUS", "S3Error", "error_xml", "from_keel"]

STATUS: dict[str, int] = {
    "AccessControlListNotSupported": 400,
    "AccessDenied": 403,
    "AccessForbidden": 403,
    "AuthorizationHeaderMalformed": 400,
    "AuthorizationQueryParametersError": 400,
    "BadDigest": 400,
    "BucketAlreadyExists": 409,
    "BucketAlreadyOwnedByYou": 409,
    "BucketNotEmpty": 409,
    "EntityTooLarge": 400,
    "EntityTooSmall": 400,
    "IncompleteBody": 400,
    "InternalError": 500,
    "InvalidAccessKeyId": 403,
    "InvalidArgument": 400,
    "InvalidBucketAclWithObjectOwnership": 400,
    "InvalidBucketName": 400,
    "InvalidDigest": 400,
    "InvalidLocationConstraint": 400,
    "InvalidPart": 400,
    "InvalidPolicyDocument": 400,
    "InvalidPartOrder": 400,
    "InvalidRange": 416,
    "InvalidRequest": 400,
    "KeyTooLongError": 400,
    "MalformedACLError": 400,
    "MalformedPOSTRequest": 400,
    "MalformedPolicy": 400,
    "MalformedXML": 400,
    "MaxPostPreDataLengthExceeded": 400,
    "MethodNotAllowed": 405,
    "MissingContentLength": 411,
    "NoSuchBucket": 404,
    "NoSuchCORSConfiguration": 404,
    "NoSuchBucketPolicy": 404,
    "NoSuchKey": 404,
    "NoSuchPublicAccessBlockConfiguration": 404,
    "NoSuchUpload": 404,
    "NoSuchVersion": 404,
    "NotImplemented": 501,
    "OwnershipControlsNotFoundError": 404,
    "PolicyTooLarge": 400,
    "PreconditionFailed": 412,
    "RequestTimeTooSkewed": 403,
    "ServiceUnavailable": 503,
    "SignatureDoesNotMatch": 403,
    "SlowDown": 503,
    "UnresolvableGrantByEmailAddress": 400,
    "QuotaExceeded": 403,  # Ceph RGW's code for a bucket or user quota
    "XAmzContentSHA256Mismatch": 400,
}


class S3Error(Exception):
    """An S3 error answer; ``extra``: more elements of the ``<Error>`` (``Key``, ``BucketName``,
    ...)."""

    def __init__(self, code: str, message: str = "", **extra: str) -> None:
        super().__init__(message or code)
        self.code = code
        self.message = message or code
        self.extra = extra
        self.headers: dict[str, str] = {}
        """Response headers the answer carries (a delete marker's ``x-amz-delete-marker``)."""

    @property
    def status(self) -> int:
        return STATUS.get(self.code, 400)


def error_xml(err: S3Error, resource: str, request_id: str) -> bytes:
    root = Element("Error")
    SubElement(root, "Code").text = err.code
    SubElement(root, "Message").text = err.message
    for name, value in err.extra.items():
        SubElement(root, name).text = value
    SubElement(root, "Resource").text = resource
    SubElement(root, "RequestId").text = request_id
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + tostring(root)


def from_keel(exc: KeelError, *, missing: str = "NoSuchKey", **extra: str) -> S3Error:
    """The S3 error for a keelfs error met while serving a request (``missing``: the code a
    missing path means there)."""
    if isinstance(exc, PermissionDenied):
        return S3Error("AccessDenied", "Access Denied", **extra)
    if isinstance(exc, NotFound | NotADirectory | IsADirectory):
        return S3Error(missing, str(exc), **extra)
    if isinstance(exc, DirectoryNotEmpty):
        return S3Error("BucketNotEmpty", str(exc), **extra)
    if isinstance(exc, AlreadyExists):
        return S3Error("InvalidRequest", str(exc), **extra)
    if isinstance(exc, InvalidArgument):
        return S3Error("InvalidArgument", str(exc), **extra)
    if isinstance(exc, QuotaExceeded):
        return S3Error("QuotaExceeded", str(exc), **extra)
    if isinstance(exc, ResourceExhausted):
        return S3Error("SlowDown", str(exc), **extra)
    if isinstance(exc, RetryableError):
        return S3Error("ServiceUnavailable", str(exc), **extra)
    return S3Error("InternalError", str(exc), **extra)
