"""The bucket policy language (``keelfs.gateways.s3.policy``), without a cluster: what a
policy must be to be accepted, and what it says of a request."""

from __future__ import annotations

import json
from typing import Any

import pytest

from keelfs.gateways.s3.errors import S3Error
from keelfs.gateways.s3.policy import ALLOW, DENY, Request, parse_policy

BUCKET = "photos"


def _policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _stmt(effect: str = "Allow", **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "Effect": effect,
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{BUCKET}/*",
    }
    base.update(fields)
    return base


def _ask(
    text: str, user: str = "bob", action: str = "s3:GetObject", key: str = "a", **context: str
) -> str | None:
    resource = f"arn:aws:s3:::{BUCKET}/{key}" if key else f"arn:aws:s3:::{BUCKET}"
    return parse_policy(text, BUCKET).evaluate(Request(user, action, resource, context))


def test_allow_deny_and_silence() -> None:
    text = _policy(
        _stmt(Resource=f"arn:aws:s3:::{BUCKET}/pub/*"),
        _stmt("Deny", Resource=f"arn:aws:s3:::{BUCKET}/pub/secret*"),
    )
    assert _ask(text, key="pub/a") == ALLOW
    assert _ask(text, key="pub/secret-1") == DENY  # an explicit deny wins over the allow
    assert _ask(text, key="other/a") is None  # the policy says nothing: ACLs decide
    assert _ask(text, action="s3:PutObject", key="pub/a") is None
    assert _ask(text, user="", key="pub/a") == ALLOW  # "*" is everyone, unsigned callers too


def test_principals_by_name_and_arn() -> None:
    for principal in ("bob", "arn:aws:iam::acct:user/bob", "arn:aws:iam::bob:root"):
        text = _policy(_stmt(Principal={"AWS": [principal]}))
        assert _ask(text, user="bob") == ALLOW, principal
        assert _ask(text, user="ann") is None, principal
        assert _ask(text, user="") is None, principal  # never an unsigned caller
    assert _ask(_policy(_stmt(Principal={"AWS": "*"})), user="") == ALLOW


def test_action_and_resource_wildcards() -> None:
    text = _policy(_stmt(Action=["s3:Get*", "s3:List?ucket"], Resource=["*"]))
    assert _ask(text, action="s3:GetObjectAcl") == ALLOW
    assert _ask(text, action="s3:getobject") == ALLOW  # actions ignore case
    assert _ask(text, action="s3:ListBucket", key="") == ALLOW
    assert _ask(text, action="s3:PutObject") is None
    with pytest.raises(S3Error):  # Action and NotAction together
        parse_policy(_policy(_stmt("Deny", NotAction="s3:GetObject")), BUCKET)
    only_not = _stmt("Deny", NotAction="s3:GetObject")
    del only_not["Action"]
    assert _ask(_policy(only_not), action="s3:DeleteObject") == DENY
    assert _ask(_policy(only_not), action="s3:GetObject") is None


def test_conditions() -> None:
    prefix = _policy(
        _stmt(
            Action="s3:ListBucket",
            Resource=f"arn:aws:s3:::{BUCKET}",
            Condition={"StringLike": {"s3:prefix": "public/*"}},
        )
    )
    assert _ask(prefix, action="s3:ListBucket", key="", **{"s3:prefix": "public/x"}) == ALLOW
    assert _ask(prefix, action="s3:ListBucket", key="", **{"s3:prefix": "private/"}) is None
    assert _ask(prefix, action="s3:ListBucket", key="") is None  # no prefix: no match
    not_like = _policy(_stmt("Deny", Condition={"StringNotLike": {"s3:prefix": "ok/*"}}))
    assert _ask(not_like) == DENY  # a negated operator holds where the key is absent
    assert _ask(not_like, **{"s3:prefix": "ok/1"}) is None
    keys = _policy(_stmt(Condition={"NumericLessThanEquals": {"s3:max-keys": "10"}}))
    assert _ask(keys, **{"s3:max-keys": "10"}) == ALLOW
    assert _ask(keys, **{"s3:max-keys": "11"}) is None
    ip = _policy(_stmt(Condition={"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}))
    assert _ask(ip, **{"aws:sourceip": "127.0.0.1"}) == ALLOW
    assert _ask(ip, **{"aws:sourceip": "10.1.2.3"}) is None
    equals = _policy(_stmt(Condition={"StringEquals": {"s3:x-amz-acl": ["private"]}}))
    assert _ask(equals, **{"s3:x-amz-acl": "private"}) == ALLOW
    assert _ask(equals, **{"s3:x-amz-acl": "public-read"}) is None


def test_what_is_public() -> None:
    assert parse_policy(_policy(_stmt()), BUCKET).public
    assert parse_policy(_policy(_stmt(Principal={"AWS": "*"})), BUCKET).public
    assert not parse_policy(_policy(_stmt(Principal={"AWS": "bob"})), BUCKET).public
    assert not parse_policy(_policy(_stmt("Deny")), BUCKET).public
    tied = _stmt(Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/32"}})
    assert not parse_policy(_policy(tied), BUCKET).public
    anywhere = _stmt(Condition={"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}})
    assert parse_policy(_policy(anywhere), BUCKET).public


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        json.dumps({"Statement": []}),
        _policy(_stmt(Effect="Maybe")),
        _policy({k: v for k, v in _stmt().items() if k != "Principal"}),
        _policy(_stmt(NotPrincipal={"AWS": "bob"})),
        _policy(_stmt(Principal={"Service": "s3.amazonaws.com"})),
        _policy(_stmt(Action="iam:CreateUser")),
        _policy(_stmt(Resource="arn:aws:s3:::another-bucket/*")),
        _policy(_stmt(Resource="arn:aws:sqs:::queue")),
        _policy(_stmt(Condition={"DateGreaterThan": {"aws:CurrentTime": "2020-01-01"}})),
        json.dumps({"Version": "1999-01-01", "Statement": [_stmt()]}),
    ],
)
def test_malformed_policies_are_refused(text: str) -> None:
    with pytest.raises(S3Error) as exc:
        parse_policy(text, BUCKET)
    assert exc.value.code == "MalformedPolicy"


def test_a_policy_over_20_kib_is_refused() -> None:
    big = _policy(
        *[_stmt(Sid=f"s{i}", Resource=f"arn:aws:s3:::{BUCKET}/{'k' * 200}") for i in range(100)]
    )
    with pytest.raises(S3Error) as exc:
        parse_policy(big, BUCKET)
    assert exc.value.code == "PolicyTooLarge"
