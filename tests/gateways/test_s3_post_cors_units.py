"""POST Object's policies and signatures (``post_policy``) and CORS rules (``cors``), without
a cluster: what a policy accepts and refuses with which S3 error, both signature versions,
and which rule answers which origin, method and headers."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from typing import Any

import pytest

from keelfs.gateways.s3 import cors
from keelfs.gateways.s3.credentials import AccessKey
from keelfs.gateways.s3.errors import S3Error
from keelfs.gateways.s3.post_policy import authenticate_form, parse_policy
from keelfs.gateways.s3.sigv4 import signing_key

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
LATER = "2026-12-07T13:00:00Z"
KEYS = {"AKID": AccessKey("AKID", "sekrit", "ann")}


def _encode(document: Any) -> str:
    return base64.b64encode(json.dumps(document).encode()).decode()


def _policy(*conditions: Any, expiration: str = LATER) -> str:
    return _encode({"expiration": expiration, "conditions": list(conditions)})


def _error(call: Any) -> tuple[int, str]:
    with pytest.raises(S3Error) as exc:
        call()
    return exc.value.status, exc.value.code


def _v2_fields(policy: str, secret: str = "sekrit", **extra: str) -> dict[str, str]:
    signature = base64.b64encode(
        hmac.new(secret.encode(), policy.encode(), hashlib.sha1).digest()
    ).decode()
    return {"awsaccesskeyid": "AKID", "policy": policy, "signature": signature, **extra}


def test_policy_conditions_accept_matching_fields_and_refuse_others() -> None:
    policy = parse_policy(
        _policy(
            {"bucket": "b"},
            ["starts-with", "$key", "up/"],
            ["eq", "$Content-Type", "text/plain"],
            {"AcL": "private"},
            ["content-length-range", 1, 10],
        ),
        NOW,
    )
    fields = {
        "bucket": "b",
        "key": "up/a",
        "content-type": "text/plain",
        "acl": "private",
        "x-ignore-me": "1",
        "file": "",
    }
    policy.check_fields(fields)  # no error: every field is named and met
    assert _error(lambda: policy.check_fields({**fields, "key": "down/a"})) == (
        403,
        "AccessDenied",
    )
    assert _error(lambda: policy.check_fields({**fields, "bucket": "other"})) == (
        403,
        "AccessDenied",
    )
    # a field no condition names
    assert _error(lambda: policy.check_fields({**fields, "x-amz-meta-a": "1"})) == (
        403,
        "AccessDenied",
    )
    policy.check_length(10)
    assert _error(lambda: policy.check_length(11)) == (400, "EntityTooLarge")
    assert _error(lambda: policy.check_length(0)) == (400, "EntityTooSmall")


@pytest.mark.parametrize(
    "document",
    [
        {"conditions": []},  # no expiration
        {"expiration": LATER},  # no conditions
        {"EXPIRATION": LATER, "conditions": []},  # names are case-sensitive
        {"expiration": "2026-12-07 13:00:00+00:00", "conditions": []},  # not ISO 8601 UTC
        {"expiration": LATER, "conditions": [{}]},
        {"expiration": LATER, "conditions": [["content-length-range", 0]]},
        {"expiration": LATER, "conditions": [["content-length-range", -1, 0]]},
        {"expiration": LATER, "conditions": [["matches", "$key", "a"]]},
        {"expiration": LATER, "conditions": [["eq", "key", "a"]]},
        [],
    ],
)
def test_unreadable_policies_are_invalid_policy_documents(document: Any) -> None:
    assert _error(lambda: parse_policy(_encode(document), NOW)) == (400, "InvalidPolicyDocument")


def test_not_base64_policy_is_invalid() -> None:
    assert _error(lambda: parse_policy("%%%", NOW)) == (400, "InvalidPolicyDocument")


def test_expired_policy_is_access_denied() -> None:
    expired = _policy({"bucket": "b"}, expiration="2026-12-07T11:59:59Z")
    assert _error(lambda: parse_policy(expired, NOW)) == (403, "AccessDenied")


def test_v2_signature() -> None:
    policy = _policy({"bucket": "b"})
    key, parsed = authenticate_form(_v2_fields(policy), KEYS, NOW)
    assert key.user == "ann" and parsed.conditions[0].name == "bucket"
    wrong = _v2_fields(policy, secret="other")
    assert _error(lambda: authenticate_form(wrong, KEYS, NOW)) == (403, "SignatureDoesNotMatch")
    unknown = {**_v2_fields(policy), "awsaccesskeyid": "NOPE"}
    assert _error(lambda: authenticate_form(unknown, KEYS, NOW)) == (403, "InvalidAccessKeyId")
    unsigned = {k: v for k, v in _v2_fields(policy).items() if k != "signature"}
    assert _error(lambda: authenticate_form(unsigned, KEYS, NOW)) == (400, "InvalidArgument")


def test_v4_signature() -> None:
    policy = _policy({"bucket": "b"})
    k = signing_key("sekrit", "20261207", "us-east-1", "s3")
    fields = {
        "x-amz-algorithm": "AWS4-HMAC-SHA256",
        "x-amz-credential": "AKID/20261207/us-east-1/s3/aws4_request",
        "x-amz-date": "20261207T120000Z",
        "policy": policy,
        "x-amz-signature": hmac.new(k, policy.encode(), hashlib.sha256).hexdigest(),
    }
    assert authenticate_form(fields, KEYS, NOW)[0].user == "ann"
    tampered = {**fields, "policy": _policy({"bucket": "c"})}
    assert _error(lambda: authenticate_form(tampered, KEYS, NOW)) == (
        403,
        "SignatureDoesNotMatch",
    )
    other_day = {**fields, "x-amz-date": "20261208T120000Z"}
    assert _error(lambda: authenticate_form(other_day, KEYS, NOW)) == (400, "InvalidArgument")


# -- CORS ---------------------------------------------------------------------------------------
def _config(*rules: str) -> bytes:
    return f"<CORSConfiguration>{''.join(rules)}</CORSConfiguration>".encode()


def test_rules_parse_and_match_with_wildcards() -> None:
    rules = cors.parse_rules(
        _config(
            "<CORSRule><AllowedOrigin>*.example.com</AllowedOrigin>"
            "<AllowedMethod>GET</AllowedMethod><AllowedHeader>x-amz-*</AllowedHeader>"
            "<ExposeHeader>ETag</ExposeHeader><MaxAgeSeconds>60</MaxAgeSeconds></CORSRule>",
            "<CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>PUT</AllowedMethod>"
            "</CORSRule>",
        )
    )
    first = rules[0]
    assert cors.matching_rule(rules, "https://a.example.com", "GET") is first
    assert cors.matching_rule(rules, "https://a.example.org", "GET") is None
    assert cors.matching_rule(rules, "https://a.example.com", "GET", ["X-Amz-Date"]) is first
    assert cors.matching_rule(rules, "https://a.example.com", "GET", ["authorization"]) is None
    assert cors.matching_rule(rules, "anything", "PUT") is rules[1]
    assert cors.matching_rule(rules, "anything", "DELETE") is None
    headers = cors.response_headers(first, "https://a.example.com")
    assert headers["Access-Control-Allow-Origin"] == "https://a.example.com"
    assert headers["Access-Control-Expose-Headers"] == "ETag"
    assert headers["Access-Control-Max-Age"] == "60"
    assert cors.response_headers(rules[1], "x")["Access-Control-Allow-Origin"] == "*"
    assert cors.decode(cors.encode(rules)) == rules


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (_config(), "MalformedXML"),
        (b"<Other/>", "MalformedXML"),
        (_config("<CORSRule><AllowedMethod>GET</AllowedMethod></CORSRule>"), "MalformedXML"),
        (
            _config(
                "<CORSRule><AllowedOrigin>*</AllowedOrigin>"
                "<AllowedMethod>PATCH</AllowedMethod></CORSRule>"
            ),
            "InvalidRequest",
        ),
        (
            _config(
                "<CORSRule><AllowedOrigin>*a*</AllowedOrigin>"
                "<AllowedMethod>GET</AllowedMethod></CORSRule>"
            ),
            "InvalidRequest",
        ),
    ],
)
def test_bad_configurations_are_refused(body: bytes, code: str) -> None:
    with pytest.raises(S3Error) as exc:
        cors.parse_rules(body)
    assert exc.value.code == code
