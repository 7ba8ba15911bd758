"""The WebHDFS gateway with the real clients, against a real cluster (``conftest.py``): HdfsCLI
(``hdfs.InsecureClient``) and fsspec's ``webhdfs`` file system through every operation they
have, Hadoop's error answers seen by raw HTTP, and a CREATE in flight while the shard leader
is killed (-9)."""

from __future__ import annotations

import getpass
import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
import requests
from hdfs import HdfsError, InsecureClient

from keelfs.runtime.processes import hard_kill, wait_until
from tests.gateways.conftest import start_webhdfs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

BS = 64 * 1024
"""The smallest block size: a few hundred KiB make files of several blocks."""
ME = getpass.getuser()
"""The OS user running the masters: the superuser in simple mode."""


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture(scope="module")
def hdfs(webhdfs_gateway: Any) -> InsecureClient:
    return InsecureClient(webhdfs_gateway.url, user=ME)


def api(webhdfs_gateway: Any, path: str, op: str, method: str = "GET", **params: Any) -> Any:
    params.setdefault("user.name", ME)
    return requests.request(
        method,
        f"{webhdfs_gateway.url}/webhdfs/v1{path}",
        params={"op": op, **params},
        allow_redirects=False,
        timeout=60,
    )


def test_hdfscli_files_and_directories(
    webhdfs_gateway: Any, hdfs: InsecureClient, tmp_path: Path
) -> None:
    data = os.urandom(5 * BS + 1234)  # six blocks
    local = tmp_path / "up.bin"
    local.write_bytes(data)
    hdfs.makedirs("/cli/a/b", permission="750")
    assert hdfs.status("/cli/a/b")["permission"] == "750"
    assert hdfs.upload("/cli/a/up.bin", str(local), blocksize=BS, replication=2) == "/cli/a/up.bin"
    status = hdfs.status("/cli/a/up.bin")
    assert status["type"] == "FILE" and status["length"] == len(data)
    assert status["blockSize"] == BS and status["replication"] == 2 and status["owner"] == ME
    assert {
        "accessTime",
        "childrenNum",
        "fileId",
        "group",
        "modificationTime",
        "pathSuffix",
        "storagePolicy",
    } <= set(status)

    back = tmp_path / "down.bin"
    hdfs.download("/cli/a/up.bin", str(back))
    assert md5(back.read_bytes()) == md5(data)
    with hdfs.read("/cli/a/up.bin", offset=BS - 10, length=BS + 20) as reader:
        assert reader.read() == data[BS - 10 : 2 * BS + 10]
    with hdfs.read("/cli/a/up.bin", offset=len(data) - 5) as reader:
        assert reader.read() == data[-5:]

    hdfs.write("/cli/a/log", data=b"first\n")
    hdfs.write("/cli/a/log", data=b"second\n", append=True)
    tail = os.urandom(2 * BS)
    hdfs.write("/cli/a/log", data=tail, append=True)
    with hdfs.read("/cli/a/log") as reader:
        assert reader.read() == b"first\nsecond\n" + tail
    with pytest.raises(HdfsError) as exists:
        hdfs.write("/cli/a/log", data=b"x")
    assert exists.value.exception == "FileAlreadyExistsException"
    hdfs.write("/cli/a/log", data=b"replaced", overwrite=True)
    with hdfs.read("/cli/a/log") as reader:
        assert reader.read() == b"replaced"

    assert hdfs.list("/cli/a") == ["b", "log", "up.bin"]
    listed = dict(hdfs.list("/cli/a", status=True))
    assert listed["b"]["type"] == "DIRECTORY" and listed["log"]["length"] == 8
    content = hdfs.content("/cli")
    assert content["fileCount"] == 2 and content["directoryCount"] == 3
    assert content["length"] == len(data) + 8
    assert hdfs.content("/cli/nothing", strict=False) is None
    assert hdfs.status("/cli/nothing", strict=False) is None

    hdfs.rename("/cli/a/log", "/cli/a/b")  # into an existing directory, as HDFS
    assert hdfs.list("/cli/a/b") == ["log"]
    hdfs.rename("/cli/a/b/log", "/cli/a/b/log2")
    with pytest.raises(HdfsError):
        hdfs.rename("/cli/a/missing", "/cli/a/x")  # HDFS says false; HdfsCLI raises

    walked = list(hdfs.walk("/cli"))
    assert walked == [
        ("/cli", ["a"], []),
        ("/cli/a", ["b"], ["up.bin"]),
        ("/cli/a/b", [], ["log2"]),
    ]

    hdfs.set_owner("/cli/a/up.bin", owner="alice", group="staff")
    hdfs.set_permission("/cli/a/up.bin", permission="640")
    hdfs.set_replication("/cli/a/up.bin", 3)
    hdfs.set_times("/cli/a/up.bin", access_time=1_000_000, modification_time=2_000_000)
    status = hdfs.status("/cli/a/up.bin")
    assert (status["owner"], status["group"], status["permission"]) == ("alice", "staff", "640")
    assert status["replication"] == 3
    assert (status["accessTime"], status["modificationTime"]) == (1_000_000, 2_000_000)

    with webhdfs_gateway.cluster.client() as keel:
        expected = keel.checksum("/cli/a/up.bin")
    assert hdfs.checksum("/cli/a/up.bin") == {
        "algorithm": expected.algorithm,
        "bytes": expected.hex,
        "length": 28,
    }
    assert expected.algorithm == f"MD5-of-{BS // 65536}MD5-of-65536CRC32C"

    with pytest.raises(HdfsError) as not_empty:
        hdfs.delete("/cli/a")
    assert not_empty.value.exception == "PathIsNotEmptyDirectoryException"
    assert hdfs.delete("/cli", recursive=True) is True
    assert hdfs.delete("/cli", recursive=True) is False
    assert hdfs.status("/cli", strict=False) is None


def test_fsspec_webhdfs(webhdfs_gateway: Any, tmp_path: Path) -> None:
    host, port = webhdfs_gateway.address.rsplit(":", 1)
    fs = fsspec.filesystem("webhdfs", host=host, port=int(port), user=ME, skip_instance_cache=True)
    data = os.urandom(3 * BS + 77)
    local = tmp_path / "in.bin"
    local.write_bytes(data)
    fs.mkdir("/fss")
    fs.put(str(local), "/fss/in.bin")
    assert fs.info("/fss/in.bin")["size"] == len(data)
    fs.get("/fss/in.bin", str(tmp_path / "out.bin"))
    assert md5((tmp_path / "out.bin").read_bytes()) == md5(data)
    # written in several pieces: CREATE of an empty file, then one APPEND per piece
    with fs.open("/fss/pieces.bin", "wb", block_size=BS) as f:
        for _ in range(4):
            f.write(data[: BS + 1])
    with fs.open("/fss/pieces.bin", "rb") as f:
        f.seek(BS)
        assert f.read(10) == (data[: BS + 1] * 4)[BS : BS + 10]
    assert fs.cat("/fss/pieces.bin") == data[: BS + 1] * 4
    assert sorted(fs.ls("/fss", detail=False)) == ["/fss/in.bin", "/fss/pieces.bin"]
    fs.mv("/fss/in.bin", "/fss/moved.bin")
    assert fs.exists("/fss/moved.bin") and not fs.exists("/fss/in.bin")
    fs.rm("/fss", recursive=True)
    assert not fs.exists("/fss")


def test_hadoop_errors(webhdfs_gateway: Any, hdfs: InsecureClient) -> None:
    def remote(response: Any) -> tuple[int, str, str]:
        body = response.json()["RemoteException"]
        return response.status_code, body["exception"], body["javaClassName"]

    missing = api(webhdfs_gateway, "/nothing/here", "GETFILESTATUS")
    assert remote(missing) == (404, "FileNotFoundException", "java.io.FileNotFoundException")
    assert remote(api(webhdfs_gateway, "/nothing", "OPEN"))[:2] == (404, "FileNotFoundException")
    bad_op = api(webhdfs_gateway, "/", "NOSUCHOP")
    assert remote(bad_op) == (400, "IllegalArgumentException", "java.lang.IllegalArgumentException")
    assert remote(api(webhdfs_gateway, "/", "MKDIRS"))[:2] == (
        400,
        "IllegalArgumentException",
    )  # GET
    assert remote(api(webhdfs_gateway, "/", "GETSNAPSHOTDIFFLISTING"))[:2] == (
        400,
        "UnsupportedOperationException",
    )
    assert remote(api(webhdfs_gateway, "/x", "SETREPLICATION", "PUT", replication="many"))[:2] == (
        400,
        "IllegalArgumentException",
    )

    # alice's private directory: bob is refused, as Hadoop refuses, with 403
    hdfs.makedirs("/home/alice")
    hdfs.set_owner("/home/alice", owner="alice")
    hdfs.set_permission("/home/alice", permission="700")
    alice = InsecureClient(webhdfs_gateway.url, user="alice")
    alice.write("/home/alice/secret", data=b"mine")
    for op, method in (("LISTSTATUS", "GET"), ("OPEN", "GET"), ("GETFILESTATUS", "GET")):
        path = "/home/alice" if op == "LISTSTATUS" else "/home/alice/secret"
        denied = api(webhdfs_gateway, path, op, method, **{"user.name": "bob"})
        assert remote(denied) == (
            403,
            "AccessControlException",
            "org.apache.hadoop.security.AccessControlException",
        )
    create = api(webhdfs_gateway, "/home/alice/bobs", "CREATE", "PUT", **{"user.name": "bob"})
    if create.status_code == 307:  # refused at the data step
        create = requests.put(create.headers["Location"], data=b"x", timeout=60)
    assert remote(create)[:2] == (403, "AccessControlException")
    exists = api(webhdfs_gateway, "/home/alice/secret", "CREATE", "PUT", **{"user.name": "alice"})
    assert remote(exists)[:2] == (403, "FileAlreadyExistsException")

    # doas: only a proxy user may act for another
    impersonate = api(
        webhdfs_gateway, "/home/alice", "LISTSTATUS", **{"user.name": "bob", "doas": "alice"}
    )
    assert remote(impersonate)[:2] == (403, "AccessControlException")
    proxied = api(
        webhdfs_gateway, "/home/alice", "LISTSTATUS", **{"user.name": "gatekeeper", "doas": "alice"}
    )
    assert proxied.status_code == 200
    assert [s["pathSuffix"] for s in proxied.json()["FileStatuses"]["FileStatus"]] == ["secret"]
    assert hdfs.delete("/home", recursive=True)


def test_raw_operations(webhdfs_gateway: Any, hdfs: InsecureClient) -> None:
    """What HdfsCLI does not send: noredirect, LISTSTATUS_BATCH pages, TRUNCATE, CONCAT, the
    home and trash roots, a directory's status."""
    first = api(webhdfs_gateway, "/raw/f", "CREATE", "PUT", noredirect="true", blocksize=BS)
    assert first.status_code == 200
    location = first.json()["Location"]
    assert "datanode=true" in location and "noredirect" not in location
    body = os.urandom(2 * BS)
    created = requests.put(location, data=iter([body[:1000], body[1000:]]), timeout=60)
    assert created.status_code == 201 and created.headers["Location"].endswith("/raw/f")
    redirect = api(webhdfs_gateway, "/raw/f", "OPEN", offset=5, length=7)
    assert redirect.status_code == 307
    assert requests.get(redirect.headers["Location"], timeout=60).content == body[5:12]
    assert (
        requests.get(
            f"{webhdfs_gateway.url}/webhdfs/v1/raw/f",
            params={"op": "OPEN", "user.name": ME, "offset": 3, "length": 4},
            timeout=60,
        ).content
        == body[3:7]
    )  # a client that follows redirects

    trunc = api(webhdfs_gateway, "/raw/f", "TRUNCATE", "POST", newlength=BS + 10)
    assert trunc.json() == {"boolean": True}
    assert hdfs.status("/raw/f")["length"] == BS + 10

    for name in ("p1", "p2"):
        hdfs.write(f"/raw/{name}", data=name.encode() * BS, blocksize=BS)
    # (more than 64 KiB: a target kept inline takes no sources in blocks, docs/data.md)
    hdfs.write("/raw/target", data=b"t" * (BS + 1), blocksize=BS)
    concat = api(webhdfs_gateway, "/raw/target", "CONCAT", "POST", sources="/raw/p1,/raw/p2")
    assert concat.status_code == 200, concat.text
    with hdfs.read("/raw/target") as reader:
        assert reader.read() == b"t" * (BS + 1) + b"p1" * BS + b"p2" * BS
    assert hdfs.list("/raw") == ["f", "target"]

    for i in range(7):  # the gateway's --ls-limit is 4 (conftest)
        api(webhdfs_gateway, f"/raw/many/d{i}", "MKDIRS", "PUT")
    page = api(webhdfs_gateway, "/raw/many", "LISTSTATUS_BATCH").json()["DirectoryListing"]
    names = [s["pathSuffix"] for s in page["partialListing"]["FileStatuses"]["FileStatus"]]
    assert names == ["d0", "d1", "d2", "d3"] and page["remainingEntries"] == 3
    rest = api(webhdfs_gateway, "/raw/many", "LISTSTATUS_BATCH", startAfter="d3").json()
    listing = rest["DirectoryListing"]
    assert listing["remainingEntries"] == 0
    assert [s["pathSuffix"] for s in listing["partialListing"]["FileStatuses"]["FileStatus"]] == [
        "d4",
        "d5",
        "d6",
    ]

    assert api(webhdfs_gateway, "/", "GETHOMEDIRECTORY").json() == {"Path": f"/user/{ME}"}
    trash = api(webhdfs_gateway, "/raw", "GETTRASHROOT", **{"user.name": "carol"})
    assert trash.json() == {"Path": "/.Trash/carol"}
    directory = api(webhdfs_gateway, "/raw", "GETFILESTATUS").json()["FileStatus"]
    assert directory["type"] == "DIRECTORY" and directory["length"] == 0
    assert api(webhdfs_gateway, "/raw/f", "SETREPLICATION", "PUT", replication=2).json() == {
        "boolean": True
    }
    assert api(webhdfs_gateway, "/raw", "SETREPLICATION", "PUT", replication=2).json() == {
        "boolean": False
    }
    assert hdfs.delete("/raw", recursive=True)


def remote_error(response: Any) -> tuple[int, str]:
    body = response.json()["RemoteException"]
    return response.status_code, body["exception"]


def test_snapshots_through_hdfscli_and_raw_ops(webhdfs_gateway: Any, hdfs: InsecureClient) -> None:
    hdfs.makedirs("/snaps/d")
    hdfs.write("/snaps/d/kept", data=b"old bytes", overwrite=True)
    hdfs.write("/snaps/d/gone", data=b"x", overwrite=True)
    # not snapshottable yet: HDFS's SnapshotException
    refused = api(webhdfs_gateway, "/snaps", "CREATESNAPSHOT", "PUT", snapshotname="s0")
    assert remote_error(refused) == (403, "SnapshotException")
    hdfs.allow_snapshot("/snaps")
    hdfs.allow_snapshot("/snaps")  # again: a no-op, as HDFS
    assert hdfs.create_snapshot("/snaps", snapshotname="s1") == "/snaps/.snapshot/s1"
    unnamed = api(webhdfs_gateway, "/snaps", "CREATESNAPSHOT", "PUT").json()["Path"]
    assert unnamed.startswith("/snaps/.snapshot/s")  # HDFS's default name, sYYYYMMDD-...
    again = api(webhdfs_gateway, "/snaps", "CREATESNAPSHOT", "PUT", snapshotname="s1")
    assert remote_error(again) == (403, "SnapshotException")
    # alice owns nothing here: the owner's (or a superuser's) right, as HDFS
    alices = api(webhdfs_gateway, "/snaps", "CREATESNAPSHOT", "PUT", **{"user.name": "alice"})
    assert remote_error(alices) == (403, "AccessControlException")

    hdfs.write("/snaps/d/kept", data=b"new bytes", overwrite=True)
    hdfs.delete("/snaps/d/gone")
    hdfs.write("/snaps/d/born", data=b"y")
    # reads in the snapshot see the old tree: OPEN, GETFILESTATUS, LISTSTATUS
    with hdfs.read("/snaps/.snapshot/s1/d/kept") as reader:
        assert reader.read() == b"old bytes"
    assert hdfs.status("/snaps/.snapshot/s1/d/gone")["length"] == 1
    assert sorted(hdfs.list("/snaps/.snapshot/s1/d")) == ["gone", "kept"]
    assert sorted(hdfs.list("/snaps/.snapshot")) == sorted(["s1", unnamed.rsplit("/", 1)[1]])

    diff = api(webhdfs_gateway, "/snaps", "GETSNAPSHOTDIFF", oldsnapshotname="s1").json()
    report = diff["SnapshotDiffReport"]
    assert (report["snapshotRoot"], report["fromSnapshot"], report["toSnapshot"]) == (
        "/snaps",
        "s1",
        "",
    )
    entries = {(e["type"], e["sourcePath"]) for e in report["diffList"]}
    assert {("CREATE", "d/born"), ("DELETE", "d/gone"), ("MODIFY", "d/kept")} <= entries
    assert all(set(e) <= {"sourcePath", "targetPath", "type"} for e in report["diffList"])

    listing = api(webhdfs_gateway, "/snaps", "GETSNAPSHOTLIST").json()["SnapshotList"]
    assert [s["dirStatus"]["pathSuffix"] for s in listing][0] == "s1"
    assert [s["snapshotID"] for s in listing] == [0, 1]
    assert {s["fullPath"] for s in listing} == {"/snaps"}
    assert {s["deletionStatus"] for s in listing} == {"ACTIVE"}
    assert listing[0]["dirStatus"]["type"] == "DIRECTORY"

    table = api(webhdfs_gateway, "/", "GETSNAPSHOTTABLEDIRECTORYLIST").json()
    (mine,) = [d for d in table["SnapshottableDirectoryList"] if d["parentFullPath"] == "/"]
    assert mine["dirStatus"]["pathSuffix"] == "snaps" and mine["snapshotNumber"] == 2
    assert mine["snapshotQuota"] == 65536

    hdfs.rename_snapshot("/snaps", "s1", "s2")
    with hdfs.read("/snaps/.snapshot/s2/d/kept") as reader:
        assert reader.read() == b"old bytes"
    assert (
        remote_error(api(webhdfs_gateway, "/snaps/.snapshot/s1/d/kept", "GETFILESTATUS"))[0] == 404
    )
    taken = api(
        webhdfs_gateway, "/snaps", "RENAMESNAPSHOT", "PUT",
        oldsnapshotname="s2", snapshotname=unnamed.rsplit("/", 1)[1],
    )  # fmt: skip
    assert remote_error(taken) == (403, "SnapshotException")
    hdfs.rename_snapshot("/snaps", "s2", "s1")
    refused = api(webhdfs_gateway, "/snaps", "DISALLOWSNAPSHOT", "PUT")
    assert remote_error(refused) == (403, "SnapshotException")  # snapshots remain
    refused = api(webhdfs_gateway, "/snaps", "DELETE", "DELETE", recursive="true")
    assert remote_error(refused) == (403, "SnapshotException")
    assert hdfs.status("/snaps/d/kept")["length"] == 9
    missing = api(webhdfs_gateway, "/snaps", "DELETESNAPSHOT", "DELETE", snapshotname="nope")
    assert remote_error(missing) == (403, "SnapshotException")
    hdfs.delete_snapshot("/snaps", "s1")
    hdfs.delete_snapshot("/snaps", unnamed.rsplit("/", 1)[1])
    assert api(webhdfs_gateway, "/snaps", "GETSNAPSHOTLIST").json() == {"SnapshotList": []}
    hdfs.disallow_snapshot("/snaps")
    table = api(webhdfs_gateway, "/", "GETSNAPSHOTTABLEDIRECTORYLIST").json()
    assert "/snaps" not in {
        d["parentFullPath"].rstrip("/") + "/" + d["dirStatus"]["pathSuffix"]
        for d in table["SnapshottableDirectoryList"]
    }
    # a snapshottable directory without snapshots is deleted, as HDFS deletes it
    hdfs.allow_snapshot("/snaps")
    assert hdfs.delete("/snaps", recursive=True) is True
    assert hdfs.status("/snaps", strict=False) is None


def test_quotas_in_content_summary_quota_usage_and_setquota(
    webhdfs_gateway: Any, hdfs: InsecureClient
) -> None:
    hdfs.makedirs("/quota/sub")
    hdfs.write("/quota/sub/f", data=b"12345", overwrite=True, replication=2)
    summary = hdfs.content("/quota")
    assert (summary["quota"], summary["spaceQuota"]) == (-1, -1)
    ok = api(webhdfs_gateway, "/quota", "SETQUOTA", "PUT", namespacequota=10)
    assert ok.status_code == 200
    ok = api(webhdfs_gateway, "/quota", "SETQUOTA", "PUT", storagespacequota=1 << 20)
    assert ok.status_code == 200  # the namespace quota is left as it was
    summary = hdfs.content("/quota")
    assert (summary["quota"], summary["spaceQuota"]) == (10, 1 << 20)
    assert summary["fileCount"] == 1 and summary["spaceConsumed"] == 10
    usage = api(webhdfs_gateway, "/quota", "GETQUOTAUSAGE").json()["QuotaUsage"]
    assert usage == {
        "fileAndDirectoryCount": 3,  # /quota, /quota/sub, the file
        "quota": 10,
        "spaceConsumed": 10,
        "spaceQuota": 1 << 20,
        "typeQuota": {},
    }
    # a superuser's right, as in HDFS
    alices = api(
        webhdfs_gateway, "/quota", "SETQUOTA", "PUT", namespacequota=99, **{"user.name": "alice"}
    )
    assert remote_error(alices) == (403, "AccessControlException")
    bad = api(webhdfs_gateway, "/quota", "SETQUOTA", "PUT", namespacequota=0)
    assert remote_error(bad) == (400, "IllegalArgumentException")
    by_type = api(
        webhdfs_gateway, "/quota", "SETQUOTABYSTORAGETYPE", "PUT", storagetype="SSD",
        storagespacequota=5,
    )  # fmt: skip
    assert remote_error(by_type) == (400, "UnsupportedOperationException")
    # past the namespace quota, the create fails as HDFS's does
    api(webhdfs_gateway, "/quota", "SETQUOTA", "PUT", namespacequota=3)
    with pytest.raises(HdfsError, match="quota of /quota is exceeded"):
        hdfs.write("/quota/sub/g", data=b"x")
    api(webhdfs_gateway, "/quota", "SETQUOTA", "PUT", namespacequota=-1, storagespacequota=-1)
    summary = hdfs.content("/quota")
    assert (summary["quota"], summary["spaceQuota"]) == (-1, -1)
    hdfs.delete("/quota", recursive=True)


def _token(webhdfs_gateway: Any, user: str, **params: Any) -> str:
    answer = api(webhdfs_gateway, "/", "GETDELEGATIONTOKEN", **{"user.name": user, **params})
    assert answer.status_code == 200, answer.text
    text: str = answer.json()["Token"]["urlString"]
    return text


def test_delegation_tokens_act_as_their_user(
    webhdfs_gateway: Any, hdfs: InsecureClient, tmp_path: Path
) -> None:
    from hdfs import TokenClient

    from keelfs.gateways.webhdfs import tokens

    hdfs.makedirs("/tok/alice")
    hdfs.set_owner("/tok/alice", owner="alice")
    hdfs.set_permission("/tok/alice", permission="700")
    text = _token(webhdfs_gateway, "alice", renewer="yarn")
    decoded, _ = tokens.decode_url_string(text)
    assert (decoded.owner, decoded.renewer, decoded.kind) == ("alice", "yarn", tokens.KIND)

    # the token alone acts as alice: HdfsCLI's TokenClient sends delegation= and no user.name
    as_alice = TokenClient(webhdfs_gateway.url, text)
    as_alice.write("/tok/alice/by-token", data=b"via token")
    assert hdfs.status("/tok/alice/by-token")["owner"] == "alice"
    with as_alice.read("/tok/alice/by-token") as reader:
        assert reader.read() == b"via token"
    # never as anyone else
    for other in ({"user.name": ME}, {"user.name": "", "doas": ME}):
        refused = api(webhdfs_gateway, "/tok/alice", "LISTSTATUS", delegation=text, **other)
        assert refused.status_code == 403, refused.text
    no_right = api(
        webhdfs_gateway, "/tok", "SETQUOTA", "PUT", namespacequota=5, delegation=text,
        **{"user.name": ""},
    )  # fmt: skip
    assert remote_error(no_right) == (403, "AccessControlException")
    again = api(webhdfs_gateway, "/", "GETDELEGATIONTOKEN", delegation=text, **{"user.name": ""})
    assert remote_error(again) == (403, "IOException")

    # forged: bob's name under alice's password; expired: signed with the secret, but old
    signer = tokens.TokenSigner(tokens.load_secret(webhdfs_gateway.token_secret))
    forged = tokens.encode_url_string(
        tokens.DelegationToken(
            "bob", "", "", decoded.issue_date, decoded.max_date, decoded.sequence,
            decoded.key_id,
        ),
        tokens.decode_url_string(text)[1],
    )  # fmt: skip
    day = 24 * 3600 * 1000
    _, expired = signer.issue("alice", "", "", tokens.KIND, "", now_ms=decoded.issue_date - 2 * day)
    _, foreign = tokens.TokenSigner(b"f" * 40).issue("alice", "", "", tokens.KIND, "")
    for bad, status, exception, words in (
        (forged, 403, "InvalidToken", "password"),
        (expired, 403, "InvalidToken", "is expired"),
        (foreign, 403, "InvalidToken", "can't be found"),
        ("not-a-token", 401, "SecurityException", "cannot be decoded"),
    ):
        answer = api(webhdfs_gateway, "/tok", "LISTSTATUS", delegation=bad, **{"user.name": ""})
        body = answer.json()["RemoteException"]
        assert (answer.status_code, body["exception"]) == (status, exception), body
        assert words in body["message"]
    assert body["javaClassName"] == "java.lang.SecurityException"

    # renew: the renewer only, and the answer is the new expiry
    renewed = api(
        webhdfs_gateway, "/", "RENEWDELEGATIONTOKEN", "PUT", token=text, **{"user.name": "yarn"}
    )
    assert renewed.status_code == 200 and renewed.json()["long"] > decoded.issue_date
    by_alice = api(
        webhdfs_gateway, "/", "RENEWDELEGATIONTOKEN", "PUT", token=text, **{"user.name": "alice"}
    )
    assert remote_error(by_alice) == (403, "AccessControlException")

    # a second gateway with the same secret file accepts the token, and sees its cancellation
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    second, ready = start_webhdfs(
        webhdfs_gateway.cluster,
        second_dir,
        "--token-secret-file",
        str(webhdfs_gateway.token_secret),
    )
    try:
        other = TokenClient(ready["url"], text)
        assert other.list("/tok/alice") == ["by-token"]
        cancel = api(
            webhdfs_gateway,
            "/",
            "CANCELDELEGATIONTOKEN",
            "PUT",
            token=text,
            **{"user.name": "mallory"},
        )
        assert remote_error(cancel) == (403, "AccessControlException")
        cancel = api(
            webhdfs_gateway,
            "/",
            "CANCELDELEGATIONTOKEN",
            "PUT",
            token=text,
            **{"user.name": "alice"},
        )
        assert cancel.status_code == 200 and not cancel.content
        for url in (webhdfs_gateway.url, ready["url"]):
            answer = requests.get(
                f"{url}/webhdfs/v1/tok/alice",
                params={"op": "LISTSTATUS", "delegation": text},
                timeout=60,
            )
            assert remote_error(answer) == (403, "InvalidToken")
            assert "can't be found" in answer.json()["RemoteException"]["message"]
    finally:
        hard_kill(second)
    hdfs.delete("/tok", recursive=True)


def test_hdfscli_acls(webhdfs_gateway: Any, hdfs: InsecureClient) -> None:
    """ACLs through HdfsCLI (SETACL, MODIFYACLENTRIES, REMOVEACLENTRIES, REMOVEDEFAULTACL,
    REMOVEACL, GETACLSTATUS) and what they do: bob let into alice's 0700 directory by a
    named entry, a default ACL inherited by a file written through CREATE, the aclBit, the
    owner alone changing it, a bad spec refused."""
    hdfs.makedirs("/acl/alice")
    hdfs.set_owner("/acl/alice", owner="alice")
    hdfs.set_permission("/acl/alice", permission="700")
    alice = InsecureClient(webhdfs_gateway.url, user="alice")
    bob = InsecureClient(webhdfs_gateway.url, user="bob")
    alice.write("/acl/alice/f", data=b"for bob")
    alice.set_permission("/acl/alice/f", permission="600")
    with pytest.raises(HdfsError, match="Permission denied|permission denied"):
        bob.status("/acl/alice/f")
    assert alice.acl_status("/acl/alice") == {
        "entries": [],
        "group": alice.status("/acl/alice")["group"],
        "owner": "alice",
        "permission": "700",
        "stickyBit": False,
    }
    assert "aclBit" not in alice.status("/acl/alice")

    alice.set_acl("/acl/alice", "user:bob:r-x", clear=False)
    alice.set_acl("/acl/alice/f", "user::rw-,user:bob:r--,group::---,other::---")
    status = alice.acl_status("/acl/alice")
    assert status["entries"] == ["user:bob:r-x", "group::---"] and status["permission"] == "750"
    assert alice.status("/acl/alice")["aclBit"] is True
    with bob.read("/acl/alice/f") as reader:
        assert reader.read() == b"for bob"
    assert bob.list("/acl/alice") == ["f"]
    with pytest.raises(HdfsError, match="OWNER|denied"):
        bob.set_acl("/acl/alice", "user:bob:rwx", clear=False)
    with pytest.raises(HdfsError, match="Invalid"):
        alice.set_acl("/acl/alice", "user:bob:rwz", clear=False)
    with pytest.raises(HdfsError, match="only directories may have a default ACL"):
        alice.set_acl("/acl/alice/f", "default:user:bob:rwx", clear=False)

    alice.set_acl("/acl/alice", "default:user:bob:rw-", clear=False)
    alice.write("/acl/alice/g", data=b"inherited")
    inherited = alice.acl_status("/acl/alice/g")["entries"]
    assert inherited == ["user:bob:rw-", "group::---"]
    alice.remove_default_acl("/acl/alice")
    assert alice.acl_status("/acl/alice")["entries"] == ["user:bob:r-x", "group::---"]
    alice.remove_acl_entries("/acl/alice/f", "user:bob:")
    with pytest.raises(HdfsError, match="denied"):
        bob.read("/acl/alice/f").__enter__()
    alice.remove_acl("/acl/alice")
    assert alice.acl_status("/acl/alice")["entries"] == []
    assert alice.status("/acl/alice")["permission"] == "700"
    with pytest.raises(HdfsError, match="denied"):
        bob.list("/acl/alice")
    assert hdfs.delete("/acl", recursive=True)


def _hidden_files(webhdfs_gateway: Any, directory: str) -> list[str]:
    listing = api(webhdfs_gateway, directory, "LISTSTATUS").json()["FileStatuses"]["FileStatus"]
    return [s["pathSuffix"] for s in listing if "_WEBHDFS_" in s["pathSuffix"]]


def test_create_in_flight_while_the_shard_leader_is_killed(
    webhdfs_gateway: Any, hdfs: InsecureClient
) -> None:
    """A CREATE whose body is half sent when the shard leader dies (-9) either completes with
    every byte or fails with a RemoteException and leaves no file at the target: never
    half-written."""
    cluster = webhdfs_gateway.cluster
    hdfs.makedirs("/fo")
    data = os.urandom(6 * BS)
    half_sent = threading.Event()
    go_on = threading.Event()

    def body() -> Iterator[bytes]:
        yield data[: 3 * BS]
        half_sent.set()
        go_on.wait(60)
        yield data[3 * BS :]

    first = api(webhdfs_gateway, "/fo/file", "CREATE", "PUT", blocksize=BS)
    outcome: dict[str, Any] = {}

    def send() -> None:
        try:
            outcome["response"] = requests.put(first.headers["Location"], data=body(), timeout=120)
        except requests.RequestException as exc:
            outcome["error"] = exc

    sender = threading.Thread(target=send)
    sender.start()
    assert half_sent.wait(30)
    leader = cluster.leader("shard-1")
    cluster.kill9(leader)
    go_on.set()
    sender.join(150)
    assert not sender.is_alive()
    response = outcome.get("response")
    print("OUTCOME", response.status_code if response is not None else outcome.get("error"))
    try:
        if response is not None and response.status_code == 201:
            with hdfs.read("/fo/file") as reader:
                assert md5(reader.read()) == md5(data)
        else:
            if response is not None:
                assert "RemoteException" in response.json()
            assert hdfs.status("/fo/file", strict=False) is None
        # the hidden file of the CREATE is gone either way (the gateway deleted it)
        wait_until(lambda: not _hidden_files(webhdfs_gateway, "/fo"), 30, "hidden file removed")
    finally:
        cluster.restart(leader)
    # and the gateway serves on after the failover
    hdfs.write("/fo/after", data=b"after", overwrite=True)
    with hdfs.read("/fo/after") as reader:
        assert reader.read() == b"after"
    assert hdfs.delete("/fo", recursive=True)


def test_create_cut_off_by_the_client_leaves_nothing(webhdfs_gateway: Any) -> None:
    """A CREATE whose client goes away after part of the body (``Content-Length`` promised
    more) leaves no file at the target and no hidden file: never half-written."""
    first = api(webhdfs_gateway, "/cut/file", "CREATE", "PUT", blocksize=BS)
    location = first.headers["Location"]
    target = location.split("://", 1)[1].split("/", 1)[1]
    host, port = webhdfs_gateway.address.rsplit(":", 1)
    for sent in (1000, 3 * BS):  # an inline-sized head; a head and blocks
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            head = (
                f"PUT /{target} HTTP/1.1\r\nHost: {webhdfs_gateway.address}\r\n"
                f"Content-Length: {6 * BS}\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            sock.sendall(head.encode() + os.urandom(sent))
        wait_until(
            lambda: (
                api(webhdfs_gateway, "/cut", "LISTSTATUS").status_code == 404
                or not api(webhdfs_gateway, "/cut", "LISTSTATUS").json()["FileStatuses"][
                    "FileStatus"
                ]
            ),
            60,
            "nothing left in /cut",
        )
    assert api(webhdfs_gateway, "/cut/file", "GETFILESTATUS").status_code == 404
