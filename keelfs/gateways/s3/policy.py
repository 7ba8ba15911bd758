"""S3 bucket policies: the JSON language, checked when a policy is put, and evaluated for a
request (``docs/s3.md``, "Bucket policies"). Pure: no I/O.

A policy is a list of statements, each ``Effect`` (``Allow``/``Deny``), ``Principal``
(``"*"``, ``{"AWS": ...}``, ``{"CanonicalUser": ...}``), ``Action`` or ``NotAction``
(``s3:*`` patterns), ``Resource`` or ``NotResource`` (ARNs of this bucket and its keys,
``*``/``?`` wildcards) and an optional ``Condition``. A request is denied if any statement
that applies denies it, allowed if one allows it, and neither (``None``) otherwise: keelfs's
own permissions then decide.

Principals: keelfs users are S3's accounts and users at once, so ``AWS`` names a user by its
name, by ``arn:aws:iam::<account>:user/<name>`` or by ``arn:aws:iam::<name>:root``; ``"*"``
is everyone, unsigned callers too. ``NotPrincipal`` is refused (``MalformedPolicy``).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from keelfs.gateways.s3.errors import S3Error

__all__ = [
    "ALLOW",
    "DENY",
    "MAX_POLICY_BYTES",
    "Policy",
    "Request",
    "parse_policy",
]

ALLOW, DENY = "Allow", "Deny"
MAX_POLICY_BYTES = 20 * 1024
"""S3's limit on a bucket policy's size."""
_STRING_OPS = {
    "StringEquals", "StringNotEquals", "StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase",
    "StringLike", "StringNotLike",
}  # fmt: skip
_NUMERIC_OPS = {
    "NumericEquals", "NumericNotEquals", "NumericLessThan", "NumericLessThanEquals",
    "NumericGreaterThan", "NumericGreaterThanEquals",
}  # fmt: skip
_IP_OPS = {"IpAddress", "NotIpAddress"}
_OPERATORS = _STRING_OPS | _NUMERIC_OPS | _IP_OPS | {"Bool", "Null"}
_NEGATED = {"StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike",
            "NumericNotEquals", "NotIpAddress"}  # fmt: skip
_NOT_PUBLIC_KEYS = {
    "aws:sourceip", "aws:sourcevpc", "aws:sourcevpce", "aws:sourcearn", "aws:sourceaccount",
    "aws:sourceowner", "aws:principalaccount", "aws:principalarn", "aws:principalorgid",
    "aws:userid", "aws:username",
}  # fmt: skip
"""Condition keys that tie a statement to known callers: a statement for everyone with one
of them (a fixed value) is not public (S3's rule for "public" policies)."""
_ANY_ADDRESS = {"0.0.0.0/0", "::/0"}


def _malformed(message: str) -> S3Error:
    return S3Error("MalformedPolicy", message)


def _strings(value: Any, what: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v for v in items):
        raise _malformed(f"{what} must be a string or a list of strings")
    return tuple(items)


def _glob(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    """An IAM wildcard pattern: ``*`` any run of characters, ``?`` any one."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


@dataclass(frozen=True)
class Request:
    """What a statement is matched against."""

    principal: str
    """The keelfs user; "" for an unsigned caller."""
    action: str
    """``s3:GetObject`` and the like."""
    resource: str
    """``arn:aws:s3:::bucket`` or ``arn:aws:s3:::bucket/key``."""
    context: Mapping[str, str] = field(default_factory=dict)
    """Condition keys, lower case (``s3:prefix``, ``aws:sourceip``, ...)."""


@dataclass(frozen=True)
class Condition:
    operator: str
    key: str
    values: tuple[str, ...]
    if_exists: bool

    def holds(self, context: Mapping[str, str]) -> bool:
        value = context.get(self.key)
        if self.operator == "Null":
            wanted = any(v.lower() == "true" for v in self.values)
            return (value is None) == wanted
        if value is None:
            return self.if_exists or self.operator in _NEGATED
        matched = any(self._match(value, v) for v in self.values)
        return not matched if self.operator in _NEGATED else matched

    def _match(self, value: str, wanted: str) -> bool:
        op = self.operator
        if op in ("StringEquals", "StringNotEquals"):
            return value == wanted
        if op in ("StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase"):
            return value.lower() == wanted.lower()
        if op in ("StringLike", "StringNotLike"):
            return _glob(wanted).fullmatch(value) is not None
        if op == "Bool":
            return value.lower() == wanted.lower()
        if op in _IP_OPS:
            try:
                return ipaddress.ip_address(value) in ipaddress.ip_network(wanted, strict=False)
            except ValueError:
                return False
        return _numeric(op, value, wanted)


def _numeric(op: str, value: str, wanted: str) -> bool:
    try:
        a, b = float(value), float(wanted)
    except ValueError:
        return False
    return {
        "NumericEquals": a == b,
        "NumericNotEquals": a == b,  # negated by the caller
        "NumericLessThan": a < b,
        "NumericLessThanEquals": a <= b,
        "NumericGreaterThan": a > b,
        "NumericGreaterThanEquals": a >= b,
    }[op]


@dataclass(frozen=True)
class Statement:
    effect: str
    principals: tuple[str, ...]
    """``*`` or user names / ARNs (``AWS``, ``CanonicalUser``)."""
    actions: tuple[str, ...]
    not_action: bool
    resources: tuple[str, ...]
    not_resource: bool
    conditions: tuple[Condition, ...]

    def applies(self, request: Request) -> bool:
        return (
            self._principal_matches(request.principal)
            and self._any(self.actions, request.action, ignore_case=True) != self.not_action
            and self._any(self.resources, request.resource) != self.not_resource
            and all(c.holds(request.context) for c in self.conditions)
        )

    def _principal_matches(self, user: str) -> bool:
        return any(p == "*" or (user and _names_user(p, user)) for p in self.principals)

    @staticmethod
    def _any(patterns: Sequence[str], value: str, *, ignore_case: bool = False) -> bool:
        return any(_glob(p, ignore_case=ignore_case).fullmatch(value) for p in patterns)

    @property
    def public(self) -> bool:
        """An Allow for everyone not tied to known callers by a condition."""
        if self.effect != ALLOW or "*" not in self.principals:
            return False
        for condition in self.conditions:
            if condition.key in _NOT_PUBLIC_KEYS and not (
                condition.key == "aws:sourceip" and set(condition.values) & _ANY_ADDRESS
            ):
                return False
        return True


def _names_user(principal: str, user: str) -> bool:
    if principal == user:
        return True
    match = re.fullmatch(r"arn:aws:iam::([^:]*):(user/(.+)|root)", principal)
    if match is None:
        return False
    return match.group(3) == user if match.group(3) else match.group(1) == user


@dataclass(frozen=True)
class Policy:
    statements: tuple[Statement, ...]

    def evaluate(self, request: Request) -> str | None:
        """``DENY`` if a statement that applies denies, else ``ALLOW`` if one allows, else
        None (the policy says nothing about it)."""
        effects = {s.effect for s in self.statements if s.applies(request)}
        if DENY in effects:
            return DENY
        return ALLOW if ALLOW in effects else None

    @property
    def public(self) -> bool:
        return any(s.public for s in self.statements)


def parse_policy(text: str | bytes, bucket: str) -> Policy:
    """A policy document for ``bucket``, or ``MalformedPolicy`` with what is wrong."""
    if len(text) > MAX_POLICY_BYTES:
        raise S3Error("PolicyTooLarge", f"a bucket policy is at most {MAX_POLICY_BYTES} bytes")
    try:
        document = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise _malformed("the policy is not valid JSON") from None
    if not isinstance(document, dict):
        raise _malformed("the policy must be a JSON object")
    version = document.get("Version", "2012-10-17")
    if version not in ("2012-10-17", "2008-10-17"):
        raise _malformed(f"unknown policy Version {version!r}")
    raw = document.get("Statement")
    statements = raw if isinstance(raw, list) else [raw] if isinstance(raw, dict) else None
    if not statements:
        raise _malformed("the policy has no Statement")
    return Policy(tuple(_statement(s, bucket) for s in statements))


def _statement(raw: Any, bucket: str) -> Statement:
    if not isinstance(raw, dict):
        raise _malformed("a Statement must be an object")
    effect = raw.get("Effect")
    if effect not in (ALLOW, DENY):
        raise _malformed("a Statement's Effect is Allow or Deny")
    if "NotPrincipal" in raw:
        raise _malformed("NotPrincipal is not supported by keelfs")
    if "Principal" not in raw:
        raise _malformed("a bucket policy's Statement names a Principal")
    actions, not_action = _one_of(raw, "Action", "NotAction")
    for action in actions:
        if action != "*" and not action.lower().startswith("s3:"):
            raise _malformed(f"unknown action {action!r} (an S3 action, s3:...)")
    resources, not_resource = _one_of(raw, "Resource", "NotResource")
    for resource in resources:
        _check_resource(resource, bucket)
    return Statement(
        effect,
        _principals(raw["Principal"]),
        actions,
        not_action,
        resources,
        not_resource,
        _conditions(raw.get("Condition", {})),
    )


def _one_of(raw: dict[str, Any], name: str, negated: str) -> tuple[tuple[str, ...], bool]:
    if (name in raw) == (negated in raw):
        raise _malformed(f"a Statement has one of {name} and {negated}")
    if name in raw:
        return _strings(raw[name], name), False
    return _strings(raw[negated], negated), True


def _check_resource(resource: str, bucket: str) -> None:
    """A resource must be this bucket or keys of it (S3: "Policy has invalid resource")."""
    prefix = "arn:aws:s3:::"
    if resource == "*":
        return
    if not resource.startswith(prefix):
        raise _malformed(f"Policy has invalid resource {resource!r}")
    name = resource[len(prefix) :].split("/", 1)[0]
    if not _glob(name).fullmatch(bucket):
        raise _malformed(f"Policy has invalid resource {resource!r}: not bucket {bucket}")


def _principals(raw: Any) -> tuple[str, ...]:
    if raw == "*":
        return ("*",)
    if not isinstance(raw, dict) or not raw:
        raise _malformed('a Principal is "*" or {"AWS": ...}')
    found: list[str] = []
    for kind, value in raw.items():
        if kind not in ("AWS", "CanonicalUser"):
            raise _malformed(f"keelfs has no {kind} principals")
        found.extend(_strings(value, f"Principal {kind}"))
    return tuple(found)


def _conditions(raw: Any) -> tuple[Condition, ...]:
    if not isinstance(raw, dict):
        raise _malformed("a Condition is an object of operators")
    found: list[Condition] = []
    for operator, keys in raw.items():
        base = operator[: -len("IfExists")] if operator.endswith("IfExists") else operator
        if base not in _OPERATORS or not isinstance(keys, dict) or not keys:
            raise _malformed(f"unsupported condition operator {operator!r}")
        for key, values in keys.items():
            if not isinstance(key, str):
                raise _malformed("a condition key is a string")
            texts = values if isinstance(values, list) else [values]
            strings = tuple(str(v).lower() if isinstance(v, bool) else str(v) for v in texts)
            found.append(Condition(base, key.lower(), strings, base != operator))
    return tuple(found)
