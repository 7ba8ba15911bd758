"""The WebHDFS gateway's pure parts: every keelfs error code has its Hadoop exception, the
JSON shapes, parameter parsing, paths, the proxy-user rule, unknown operations."""

from __future__ import annotations

import json
from typing import Any

import pytest

from keelfs import errors as keel_errors
from keelfs.gateways.webhdfs import errors, shapes
from keelfs.gateways.webhdfs.app import (
    _OPERATIONS,
    ANONYMOUS_USER,
    GatewaySettings,
    WebHdfsGateway,
    _host_of,
    _Params,
    _path,
    _unknown,
    home_directory,
    parse_listen,
    trash_root,
)
from keelfs.meta.records import ContentSummary, FileInfo


def _body(response: Any) -> tuple[int, dict[str, str]]:
    return response.status, json.loads(response.text)["RemoteException"]


def test_every_keel_error_code_has_a_hadoop_exception() -> None:
    codes = {cls.code for cls in keel_errors._BY_CODE.values()}
    assert codes - {"UNKNOWN"} <= set(errors.HADOOP_EXCEPTIONS), codes - set(
        errors.HADOOP_EXCEPTIONS
    )


@pytest.mark.parametrize(
    ("error", "status", "exception"),
    [
        (keel_errors.NotFound("/a"), 404, "FileNotFoundException"),
        (keel_errors.PermissionDenied("/a", "READ"), 403, "AccessControlException"),
        (keel_errors.InvalidArgument("bad", "x"), 400, "IllegalArgumentException"),
        (keel_errors.AlreadyExists("/a"), 403, "FileAlreadyExistsException"),
        (keel_errors.DirectoryNotEmpty("/a"), 403, "PathIsNotEmptyDirectoryException"),
        (keel_errors.Unavailable("down"), 503, "RetriableException"),
        (errors.unsupported("no"), 400, "UnsupportedOperationException"),
        (RuntimeError("boom"), 500, "RuntimeException"),
    ],
)
def test_remote_exception(error: BaseException, status: int, exception: str) -> None:
    got_status, body = _body(errors.remote_exception(error, "/a"))
    assert (got_status, body["exception"]) == (status, exception)
    assert set(body) == {"exception", "javaClassName", "message"}


def test_missing_path_is_said_in_hadoops_words() -> None:
    _, body = _body(errors.remote_exception(keel_errors.NotFound("/a"), "/a/b"))
    assert body["message"] == "File /a/b does not exist."
    assert body["javaClassName"] == "java.io.FileNotFoundException"


def _info(**over: Any) -> FileInfo:
    base: dict[str, Any] = dict(
        path="/d/f", kind="file", length=10, mode=0o1750, owner="u", group="g",
        mtime=5, atime=4, replication=3, block_size=1 << 20,
    )  # fmt: skip
    base.update(over)
    return FileInfo(**base)


def test_file_status_shape() -> None:
    status = shapes.file_status(_info(), "f")
    assert status == {
        "accessTime": 4,
        "blockSize": 1 << 20,
        "childrenNum": 0,
        "fileId": shapes.file_id("/d/f"),
        "group": "g",
        "length": 10,
        "modificationTime": 5,
        "owner": "u",
        "pathSuffix": "f",
        "permission": "1750",
        "replication": 3,
        "storagePolicy": 0,
        "type": "FILE",
    }
    directory = shapes.file_status(_info(kind="dir", mode=0o755, length=3))
    assert directory["type"] == "DIRECTORY" and directory["permission"] == "755"
    assert (directory["length"], directory["replication"], directory["blockSize"]) == (0, 0, 0)
    assert shapes.content_summary(ContentSummary(7, 2, 1, 21)) == {
        "directoryCount": 1,
        "fileCount": 2,
        "length": 7,
        "quota": -1,
        "spaceConsumed": 21,
        "spaceQuota": -1,
        "typeQuota": {},
    }


def test_params() -> None:
    p = _Params({"Overwrite": "TRUE", "offset": "5", "permission": "640", "bad": "x"})
    assert p.boolean("overwrite") is True and p.boolean("recursive") is False
    assert p.integer("offset") == 5 and p.integer("length") is None
    assert p.permission() == 0o640
    for bad in ({"offset": "five"}, {"offset": "-1"}):
        with pytest.raises(errors.HadoopError, match="offset"):
            _Params(bad).integer("offset")
    with pytest.raises(errors.HadoopError, match="octal"):
        _Params({"permission": "999"}).permission()
    with pytest.raises(errors.HadoopError, match="recursive"):
        _Params({"recursive": "y"}).boolean("recursive")
    with pytest.raises(errors.HadoopError, match="destination"):
        _Params({}).required("destination")


def test_paths_users_and_ops() -> None:
    assert (_path(""), _path("/"), _path("/a/b/"), _path("a")) == ("/", "/", "/a/b", "/a")
    assert [_host_of(h) for h in ("a:1", "a", "[::1]:9870", "[::1]")] == ["a", "a", "::1", "::1"]
    assert home_directory("ann") == "/user/ann" and trash_root("ann") == "/.Trash/ann"
    gateway = WebHdfsGateway(GatewaySettings(("127.0.0.1:1",), "127.0.0.1:0", frozenset({"px"})))
    assert gateway._acting_user(_Params({})) == ANONYMOUS_USER
    assert gateway._acting_user(_Params({"user.name": "ann"})) == "ann"
    assert gateway._acting_user(_Params({"user.name": "ann", "doas": "ann"})) == "ann"
    assert gateway._acting_user(_Params({"user.name": "px", "doas": "bob"})) == "bob"
    with pytest.raises(errors.HadoopError, match="not allowed to impersonate"):
        gateway._acting_user(_Params({"user.name": "ann", "doas": "bob"}))
    assert "No enum constant NOPE" in _unknown("GET", "NOPE").message
    assert "Invalid operation MKDIRS" in _unknown("GET", "MKDIRS").message
    for method, op in (
        ("PUT", "SETXATTR"),
        ("GET", "GETXATTRS"),
        ("GET", "GETSNAPSHOTDIFFLISTING"),
    ):
        assert _OPERATIONS[(method, op)] is WebHdfsGateway._unsupported
    for op in ("SETACL", "MODIFYACLENTRIES", "REMOVEACLENTRIES", "REMOVEDEFAULTACL", "REMOVEACL"):
        assert _OPERATIONS[("PUT", op)] is WebHdfsGateway._acl_change
    with pytest.raises(ValueError, match="loopback"):
        parse_listen("10.0.0.1:9870")


def test_a_tls_clusters_gateway_serves_its_certificates_user_alone(tmp_path: Any) -> None:
    from keelfs.tls.credentials import TlsSettings

    tls = TlsSettings(peer_ca=tmp_path / "ca", cert=tmp_path / "c", key=tmp_path / "k")
    settings = GatewaySettings(("127.0.0.1:1",), "127.0.0.1:0", frozenset({"px"}), 1000, tls, "ann")
    gateway = WebHdfsGateway(settings)
    assert gateway._acting_user(_Params({"user.name": "ann"})) == "ann"
    for params in ({"user.name": "bob"}, {}, {"user.name": "px", "doas": "bob"}):
        with pytest.raises(errors.HadoopError, match="acts for ann alone"):
            gateway._acting_user(_Params(params))
    with pytest.raises(ValueError, match="both"):
        WebHdfsGateway(GatewaySettings(("127.0.0.1:1",), "127.0.0.1:0", tls=tls))
