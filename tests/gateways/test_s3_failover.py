"""A PUT through the gateway while the shard's leader is killed (kill -9): it completes or
fails cleanly, never half-written: afterwards the object is absent or whole, nothing of the
upload is listed, and the gateway serves the next PUT."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from keelfs.errors import KeelError
from tests.gateways.s3_helpers import Gateway

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MiB = 1024 * 1024


def _until(probe: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def _uploading(gateway: Gateway, bucket: str) -> bool:
    """Whether the gateway has started writing the upload (its hidden temporary file)."""
    try:
        with gateway.cluster.client() as fs:
            return any(True for _ in fs.ls(f"/{bucket}/.s3/tmp"))
    except KeelError:
        return False


def _get_when_served(s3: Any, bucket: str, key: str) -> bytes | None:
    """The object (None: not there), asking again while the cluster elects."""
    deadline = time.monotonic() + 90
    while True:
        try:
            return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code == "NoSuchKey":
                return None
            if code not in ("ServiceUnavailable", "InternalError", "SlowDown"):
                raise
        except BotoCoreError:
            pass
        assert time.monotonic() < deadline, "the object was not served again after failover"
        time.sleep(0.2)


def test_put_while_the_shard_leader_is_killed(gateway: Gateway) -> None:
    s3 = gateway.client(read_timeout=180, connect_timeout=10)
    bucket = "failover"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="before", Body=b"before")
    body = bytes(range(256)) * (96 * 4096)  # 96 MiB: still uploading when the leader dies
    outcome: dict[str, Any] = {}

    def put() -> None:
        try:
            outcome["etag"] = s3.put_object(Bucket=bucket, Key="big", Body=body)["ETag"]
        except (ClientError, BotoCoreError) as exc:
            outcome["error"] = exc

    writer = threading.Thread(target=put, daemon=True)
    writer.start()
    _until(lambda: _uploading(gateway, bucket), 60, "the upload started")
    leader = gateway.cluster.leader("shard-1")
    gateway.cluster.kill9(leader)
    writer.join(timeout=300)
    assert not writer.is_alive(), "the PUT neither completed nor failed"
    got = _get_when_served(s3, bucket, "big")
    print(f"PUT outcome: {outcome}, object there: {got is not None}")
    if "etag" in outcome:
        assert got == body, "an acknowledged PUT must be whole"
    else:
        assert got is None or got == body, f"half-written after {outcome['error']!r}"
    keys = [c["Key"] for c in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == (["before", "big"] if got is not None else ["before"])
    s3.put_object(Bucket=bucket, Key="after", Body=b"after")
    assert s3.get_object(Bucket=bucket, Key="after")["Body"].read() == b"after"


def test_versioned_overwrite_while_the_shard_leader_is_killed(gateway: Gateway) -> None:
    """An overwrite in a bucket with versioning moves the key's object into its archive,
    then renames the new one over the key: with the leader killed in the middle, the key
    still has the old object or the new one (never neither), the old one is a version, and
    the new one is listed only if it was acknowledged."""
    for node_id in sorted(gateway.cluster.nodes):  # the test before left one dead
        if node_id not in gateway.cluster.running():
            gateway.cluster.restart(node_id)
    s3 = gateway.client(read_timeout=180, connect_timeout=10)
    bucket = "failover-versioned"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    old_body = b"old" * 1000
    old = s3.put_object(Bucket=bucket, Key="big", Body=old_body)["VersionId"]
    body = bytes(range(256)) * (96 * 4096)
    outcome: dict[str, Any] = {}

    def put() -> None:
        try:
            outcome["version"] = s3.put_object(Bucket=bucket, Key="big", Body=body)["VersionId"]
        except (ClientError, BotoCoreError) as exc:
            outcome["error"] = exc

    writer = threading.Thread(target=put, daemon=True)
    writer.start()
    _until(lambda: _uploading(gateway, bucket), 60, "the upload started")
    gateway.cluster.kill9(gateway.cluster.leader("shard-1"))
    writer.join(timeout=300)
    assert not writer.is_alive(), "the PUT neither completed nor failed"
    got = _get_when_served(s3, bucket, "big")
    print(f"versioned PUT outcome: {outcome}")
    assert got is not None, "the key lost both its old and its new object"
    if "version" in outcome:
        assert got == body, "an acknowledged PUT must be the latest, whole"
    else:
        assert got in (old_body, body), f"half-written after {outcome['error']!r}"
    listed = s3.list_object_versions(Bucket=bucket)["Versions"]
    ids = [v["VersionId"] for v in listed]
    assert old in ids and len(ids) == len(set(ids))
    if "version" in outcome:
        assert ids == [outcome["version"], old]
    assert s3.get_object(Bucket=bucket, Key="big", VersionId=old)["Body"].read() == old_body
    assert [c["Key"] for c in s3.list_objects_v2(Bucket=bucket).get("Contents", [])] == ["big"]
