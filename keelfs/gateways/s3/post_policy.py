"""POST Object's policy document and its signatures (browser-based uploads), as pure
functions of the form's fields.

A signed form carries a base64 JSON **policy**: an ``expiration`` and a list of
``conditions`` every field must meet (``{"field": value}`` and ``["eq", "$field", value]``:
equal; ``["starts-with", "$field", prefix]``; ``["content-length-range", min, max]``: the
file's size). The policy is signed, not the request: Signature V2 (``AWSAccessKeyId``,
``signature`` = base64 HMAC-SHA1 of the policy) or V4 (``x-amz-algorithm``,
``x-amz-credential``, ``x-amz-date``, ``x-amz-signature`` = hex HMAC-SHA256 of the policy
with the V4 signing key). Every field of the form must be named by a condition, except the
file, the policy and its signature and ``x-ignore-*`` fields; the bucket counts as a field.

Errors are S3's: a policy that cannot be read ``InvalidPolicyDocument`` (400), a field it
needs missing ``InvalidArgument`` (400), a bad key or signature ``InvalidAccessKeyId`` /
``SignatureDoesNotMatch`` (403), an expired policy or a condition not met ``AccessDenied``
(403).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keelfs.gateways.s3.credentials import AccessKey
from keelfs.gateways.s3.errors import S3Error
from keelfs.gateways.s3.sigv4 import ALGORITHM, access_key, signing_key

__all__ = [
    "NOT_CONDITIONED",
    "Policy",
    "authenticate_form",
    "is_signed_form",
    "parse_policy",
]

NOT_CONDITIONED = frozenset({"file", "policy", "signature", "awsaccesskeyid", "x-amz-signature"})
"""Fields no condition needs to name (besides ``x-ignore-*``)."""
_V4_FIELDS = ("x-amz-credential", "x-amz-date", "x-amz-signature")
_TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Condition:
    """One condition: ``op`` ``eq``/``starts-with`` on field ``name`` (lower case)."""

    op: str
    name: str
    value: str


@dataclass
class Policy:
    expiration: dt.datetime
    conditions: list[Condition] = field(default_factory=list)
    length_range: tuple[int, int] | None = None
    """``content-length-range``: the least and most bytes the file may hold."""

    def check_fields(self, fields: Mapping[str, str]) -> None:
        """``fields`` (lower-case names, the bucket among them) against the conditions, and
        every field against there being a condition for it (module doc)."""
        for condition in self.conditions:
            given = fields.get(condition.name, "")
            if condition.op == "eq":
                met = given == condition.value
            else:
                met = given.startswith(condition.value)
            if not met:
                raise _denied(
                    f"Policy Condition failed: [{condition.op!r}, "
                    f"'${condition.name}', {condition.value!r}]"
                )
        named = {c.name for c in self.conditions}
        for name in fields:
            if name in NOT_CONDITIONED or name.startswith("x-ignore-") or name in named:
                continue
            raise _denied(f"Extra input fields: {name}")

    def check_length(self, length: int) -> None:
        if self.length_range is None:
            return
        least, most = self.length_range
        if length > most:
            raise S3Error(
                "EntityTooLarge",
                "Your proposed upload exceeds the maximum allowed size",
                ProposedSize=str(length),
                MaxSizeAllowed=str(most),
            )
        if length < least:
            raise S3Error(
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed size",
                ProposedSize=str(length),
                MinSizeAllowed=str(least),
            )


def _denied(why: str) -> S3Error:
    return S3Error("AccessDenied", f"Invalid according to Policy: {why}")


def _invalid(why: str) -> S3Error:
    return S3Error("InvalidPolicyDocument", f"Invalid Policy: {why}")


def parse_policy(encoded: str, now: dt.datetime | None = None) -> Policy:
    """The policy of a form's ``policy`` field; ``AccessDenied`` once it has expired."""
    try:
        document = json.loads(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        raise _invalid("the policy is not base64-encoded JSON") from None
    if not isinstance(document, dict):
        raise _invalid("the policy is not a JSON object")
    if "expiration" not in document:
        raise _invalid("Policy missing expiration.")
    expiration = _parse_expiration(document["expiration"])
    if not isinstance(document.get("conditions"), list):
        raise _invalid("Policy missing conditions.")
    policy = Policy(expiration)
    for item in document["conditions"]:
        _add_condition(policy, item)
    if (now or dt.datetime.now(dt.UTC)) > expiration:
        raise _denied("Policy expired.")
    return policy


def _parse_expiration(value: Any) -> dt.datetime:
    for fmt in _TIME_FORMATS:
        try:
            return dt.datetime.strptime(str(value), fmt).replace(tzinfo=dt.UTC)
        except ValueError:
            continue
    raise _invalid(f"Invalid 'expiration' value: {value!r} (ISO 8601, UTC: ...T12:00:00Z)")


def _add_condition(policy: Policy, item: Any) -> None:
    if isinstance(item, dict):
        if len(item) != 1:
            raise _invalid("a condition object names exactly one field")
        ((name, value),) = item.items()
        if not isinstance(value, str):
            raise _invalid(f"the condition on {name!r} is not a string")
        policy.conditions.append(Condition("eq", name.lower(), value))
        return
    if not isinstance(item, list) or not item or not isinstance(item[0], str):
        raise _invalid(f"cannot read the condition {item!r}")
    op = item[0].lower()
    if op == "content-length-range":
        if len(item) != 3 or not all(type(v) is int and v >= 0 for v in item[1:]):
            raise _invalid("content-length-range takes two sizes, 0 or more")
        policy.length_range = (item[1], item[2])
        return
    if op not in ("eq", "starts-with") or len(item) != 3:
        raise _invalid(f"cannot read the condition {item!r}")
    name, value = item[1], item[2]
    if not isinstance(name, str) or not name.startswith("$") or not isinstance(value, str):
        raise _invalid(f"cannot read the condition {item!r}")
    policy.conditions.append(Condition(op, name[1:].lower(), value))


def is_signed_form(fields: Mapping[str, str]) -> bool:
    """A form that claims a signer (else it is anonymous)."""
    return any(
        name in fields
        for name in ("policy", "awsaccesskeyid", "signature", "x-amz-algorithm", *_V4_FIELDS)
    )


def _required(fields: Mapping[str, str], name: str) -> str:
    value = fields.get(name)
    if value is None:
        raise S3Error("InvalidArgument", f"Bucket POST must contain a field named '{name}'")
    return value


def _mismatch(key_id: str) -> S3Error:
    return S3Error(
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided.",
        AWSAccessKeyId=key_id,
    )


def authenticate_form(
    fields: Mapping[str, str], keys: Mapping[str, AccessKey], now: dt.datetime | None = None
) -> tuple[AccessKey, Policy]:
    """Who signed a signed form's policy (V4 where ``x-amz-algorithm`` is given, else V2),
    and the policy (module doc)."""
    if "x-amz-algorithm" in fields:
        key = _check_v4(fields, keys)
    else:
        key_id = _required(fields, "awsaccesskeyid")
        signature = _required(fields, "signature")
        policy_text = _required(fields, "policy")
        key = access_key(keys, key_id)
        expected = base64.b64encode(
            hmac.new(key.secret.encode(), policy_text.encode(), hashlib.sha1).digest()
        ).decode()
        if not hmac.compare_digest(expected, signature):
            raise _mismatch(key_id)
    return key, parse_policy(fields["policy"], now)


def _check_v4(fields: Mapping[str, str], keys: Mapping[str, AccessKey]) -> AccessKey:
    if fields["x-amz-algorithm"] != ALGORITHM:
        raise S3Error("InvalidArgument", f"x-amz-algorithm must be {ALGORITHM}")
    credential, amz_date, signature = (_required(fields, name) for name in _V4_FIELDS)
    policy_text = _required(fields, "policy")
    parts = credential.split("/")
    if len(parts) != 5 or parts[3] != "s3" or parts[4] != "aws4_request":
        raise S3Error("InvalidArgument", f"malformed x-amz-credential {credential!r}")
    key_id, date, region, service = parts[:4]
    key = access_key(keys, key_id)
    if amz_date[:8] != date:
        raise S3Error("InvalidArgument", "x-amz-date is not the credential's date")
    k = signing_key(key.secret, date, region, service)
    expected = hmac.new(k, policy_text.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise _mismatch(key_id)
    return key
