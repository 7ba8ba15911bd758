"""The S3 gateway's pure parts, in process: SigV4 checked against botocore's own signer
(headers, presigned URLs, expiry, tampering), ranges, credentials files, key and bucket
rules, XML parsing of hostile input."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from multidict import CIMultiDict

from keelfs.gateways.s3 import sigv4, store
from keelfs.gateways.s3.credentials import (
    AccessKey,
    CredentialsError,
    load_credentials,
    parse_credentials,
)
from keelfs.gateways.s3.errors import S3Error
from keelfs.gateways.s3.objects import parse_range
from keelfs.gateways.s3.xmlio import parse

KEYS = {"AKID": AccessKey("AKID", "secret/key", "ann")}


def _headers(request: AWSRequest) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict(request.headers.items())
    headers["Host"] = urlsplit(request.url).netloc
    return headers


def _signed(method: str, url: str, body: bytes = b"", secret: str = "secret/key") -> AWSRequest:
    request = AWSRequest(method=method, url=url, data=body)
    S3SigV4Auth(Credentials("AKID", secret), "s3", "us-east-1").add_auth(request)
    return request


def _check(request: AWSRequest, now: dt.datetime | None = None) -> sigv4.Signed:
    parts = urlsplit(request.url)
    return sigv4.authenticate(
        request.method, parts.path, parts.query, _headers(request), KEYS, now=now
    )


def test_header_signature_of_botocore_checks() -> None:
    request = _signed("GET", "http://h:1/bucket/some%20key?list-type=2&prefix=a%2Fb")
    signed = _check(request)
    assert signed.key.user == "ann" and signed.payload == sigv4.EMPTY_SHA256


def test_wrong_secret_tampered_query_and_unknown_key() -> None:
    with pytest.raises(S3Error) as exc:
        _check(_signed("GET", "http://h:1/b/k", secret="other"))
    assert exc.value.code == "SignatureDoesNotMatch"
    request = _signed("GET", "http://h:1/b/k?prefix=a")
    request.url = "http://h:1/b/k?prefix=b"
    with pytest.raises(S3Error) as exc:
        _check(request)
    assert exc.value.code == "SignatureDoesNotMatch"
    request = _signed("GET", "http://h:1/b/k")
    request.headers.replace_header(
        "Authorization", request.headers["Authorization"].replace("AKID", "NOPE")
    )
    with pytest.raises(S3Error) as exc:
        _check(request)
    assert exc.value.code == "InvalidAccessKeyId"


def test_skewed_clock_refused() -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=20)
    with pytest.raises(S3Error) as exc:
        _check(_signed("GET", "http://h:1/"), now=later)
    assert exc.value.code == "RequestTimeTooSkewed"


def test_presigned_url_and_its_expiry() -> None:
    request = AWSRequest(method="GET", url="http://h:1/b/k%2Bplus")
    S3SigV4QueryAuth(Credentials("AKID", "secret/key"), "s3", "us-east-1", expires=60).add_auth(
        request
    )
    assert _check(request).payload == sigv4.UNSIGNED
    with pytest.raises(S3Error) as exc:
        _check(request, now=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120))
    assert (exc.value.code, exc.value.message) == ("AccessDenied", "Request has expired")


def test_anonymous_refused_and_version_2_checked() -> None:
    with pytest.raises(S3Error) as exc:
        sigv4.authenticate("GET", "/", "", CIMultiDict(), KEYS)
    assert exc.value.code == "AccessDenied"
    date = email.utils.formatdate(usegmt=True)
    v2 = CIMultiDict(Authorization="AWS AKID:c2ln", Date=date)  # sigv2's: a wrong signature
    with pytest.raises(S3Error) as exc:
        sigv4.authenticate("GET", "/", "", v2, KEYS)
    assert exc.value.code == "SignatureDoesNotMatch"


@pytest.mark.parametrize(
    ("header", "length", "expected"),
    [
        (None, 10, None),
        ("bytes=0-0", 10, (0, 1)),
        ("bytes=3-", 10, (3, 10)),
        ("bytes=-3", 10, (7, 10)),
        ("bytes=-30", 10, (0, 10)),
        ("bytes=5-100", 10, (5, 10)),
        ("bytes=5-2", 10, None),  # S3 ignores a malformed range
        ("bytes=0-1,4-5", 10, None),  # several ranges: the whole object
        ("items=0-1", 10, None),
    ],
)
def test_ranges(header: str | None, length: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, length) == expected


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=10-20", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(S3Error) as exc:
        parse_range(header, 10)
    assert exc.value.code == "InvalidRange" and exc.value.status == 416


def test_credentials_files(tmp_path: Path) -> None:
    toml = tmp_path / "k.toml"
    toml.write_text('[access_keys.A1]\nsecret = "s1"\nuser = "ann"\n')
    assert load_credentials(toml) == {"A1": AccessKey("A1", "s1", "ann")}
    as_json = tmp_path / "k.json"
    as_json.write_text(json.dumps({"access_keys": {"A2": {"secret": "s2", "user": "bob"}}}))
    assert load_credentials(as_json)["A2"].user == "bob"
    for bad in ({}, {"access_keys": {"A": {"secret": "s"}}}, {"access_keys": {"A": "s"}}):
        with pytest.raises(CredentialsError):
            parse_credentials(bad)
    with pytest.raises(CredentialsError):
        load_credentials(tmp_path / "missing.toml")


@pytest.mark.parametrize("key", ["a//b", "./a", "a/../b", "x\x00y", ".s3/tmp/x", "", "a" * 300])
def test_keys_keelfs_cannot_hold(key: str) -> None:
    with pytest.raises(S3Error) as exc:
        store.check_key(key)
    assert exc.value.code in ("InvalidArgument", "KeyTooLongError")


@pytest.mark.parametrize("name", ["ab", "Upper", "a_b", "a..b", "-ab", "192.168.1.1", ".s3"])
def test_bucket_names(name: str) -> None:
    with pytest.raises(S3Error) as exc:
        store.check_bucket_name(name)
    assert exc.value.code == "InvalidBucketName"


def test_hostile_xml_refused() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><Delete><Object><Key>&b;</Key></Object></Delete>'
    )
    external = (
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<Delete><Object><Key>&x;</Key></Object></Delete>"
    )
    for body in (bomb, external, b"<Delete><Object>", b"not xml"):
        with pytest.raises(S3Error) as exc:
            parse(body)
        assert exc.value.code == "MalformedXML"


def test_cli_refuses_bad_setups(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from keelfs.cli.main import cli

    keys = tmp_path / "keys.toml"
    keys.write_text('[access_keys.A]\nsecret = "s"\nuser = "ann"\n')
    runner = CliRunner()
    off_host = runner.invoke(cli, ["s3", "--listen", "0.0.0.0:9000", "--credentials", str(keys)])
    assert off_host.exit_code == 2 and "--insecure" in off_host.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[access_keys.A]\nuser = 'ann'\n")
    no_secret = runner.invoke(cli, ["s3", "--credentials", str(bad)])
    assert no_secret.exit_code == 2 and "has no secret" in no_secret.output
    malformed = runner.invoke(cli, ["s3", "--listen", "nohost", "--credentials", str(keys)])
    assert malformed.exit_code == 2 and "HOST:PORT" in malformed.output
    for ttl in ("nan", "-1", "61"):
        refused = runner.invoke(cli, ["s3", "--settings-ttl", ttl, "--credentials", str(keys)])
        assert refused.exit_code == 2 and "--settings-ttl" in refused.output, ttl


def test_server_refuses_s3_off_the_loopback_without_insecure() -> None:
    from keelfs.server.embedded import ServerConfig
    from keelfs.server.settings import SERVER_SETTINGS, ConfigError, resolve

    flags = {s.name: None for s in SERVER_SETTINGS}
    flags["s3_listen"] = "0.0.0.0:7090"
    with pytest.raises(ConfigError, match="s3_listen"):
        ServerConfig.from_resolved(resolve(SERVER_SETTINGS, "server", flags, environ={}))


def test_a_quota_exceeded_is_s3s_quota_exceeded_403() -> None:
    from keelfs.errors import QuotaExceeded
    from keelfs.gateways.s3.errors import from_keel

    error = from_keel(QuotaExceeded("/bucket", "space", 100, 90, 64))
    assert (error.code, error.status) == ("QuotaExceeded", 403)
    assert "/bucket" in str(error)


def test_part_spans_of_run_length_part_sizes() -> None:
    from keelfs.gateways.s3.store import Stored

    stored = Stored('"e-4"', parts=4, part_sizes=[(5, 3), (2, 1)])
    assert [stored.part_span(n) for n in (1, 2, 3, 4, 5)] == [
        (0, 5), (5, 10), (10, 15), (15, 17), None,
    ]  # fmt: skip
    assert Stored.decode(stored.encode("k")).part_sizes == [(5, 3), (2, 1)]
    assert Stored('"e-2"', parts=2).part_span(1) is None  # sizes not recorded


def test_version_ids_sort_newest_first_and_are_checked() -> None:
    from keelfs.gateways.s3 import versioning

    made = [versioning.new_version_id() for _ in range(50)]
    assert len(set(made)) == 50
    assert all(a[:16] >= b[:16] for a, b in zip(made, made[1:], strict=False))  # newer: smaller
    for vid in made + ["null"]:
        versioning.check_version_id(vid)
    for bad in ("", "v9", "NULL", made[0][:-1], made[0] + "0", made[0].upper()):
        with pytest.raises(S3Error) as exc:
            versioning.check_version_id(bad)
        assert exc.value.code == "InvalidArgument"
    assert versioning.archive_dir("b", "d/k") == "/b/.s3/versions/d%2Fk"
    long_key = "/".join(["p" * 100] * 3)
    assert versioning.archive_dir("b", long_key).startswith("/b/.s3/versions/#")
