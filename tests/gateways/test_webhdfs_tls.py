"""A WebHDFS gateway in front of a cluster with mutual TLS: it presents one user's
certificate and serves that user alone; the masters check that user's rights."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from hdfs import HdfsError, InsecureClient

from keelfs.server.layout import ADMIN_USER

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_tls_cluster_gateway_acts_for_its_certificates_user(tls_webhdfs_gateway: Any) -> None:
    hdfs = InsecureClient(tls_webhdfs_gateway.url, user=ADMIN_USER)
    hdfs.write("/tls/hello", data=b"over tls", replication=1)
    with hdfs.read("/tls/hello") as reader:
        assert reader.read() == b"over tls"
    assert hdfs.status("/tls/hello")["owner"] == ADMIN_USER  # the certificate's user
    other = requests.get(
        f"{tls_webhdfs_gateway.url}/webhdfs/v1/tls/hello",
        params={"op": "GETFILESTATUS", "user.name": "mallory"},
        timeout=30,
    )
    assert other.status_code == 403
    assert other.json()["RemoteException"]["exception"] == "AccessControlException"
    with pytest.raises(HdfsError):
        InsecureClient(tls_webhdfs_gateway.url, user="mallory").list("/tls")
    assert hdfs.delete("/tls", recursive=True)
