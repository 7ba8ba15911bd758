"""The S3 gateway in its own process (``keelfs s3``) for a test cluster, and boto3 clients of
it."""

from __future__ import annotations

import getpass
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keelfs.runtime.processes import hard_kill, read_ready_line, spawn_tracked
from keelfs.server.layout import ADMIN_USER
from keelfs.server.metacluster import MetaCluster

ACCESS_KEY = "AKIAKEELFSTEST000001"
SECRET_KEY = "keelfs-test-secret/0000000000000000000001"
OTHER_KEY = "AKIAKEELFSTEST000002"
OTHER_SECRET = "keelfs-test-secret/0000000000000000000002"
OTHER_USER = "bob"
OTHER_NAME = "Bob Example"
"""``OTHER_KEY``'s DisplayName (the credentials' ``display_name``)."""
ANONYMOUS_USER = "s3anon"
"""The keelfs user unsigned requests act as, where an ACL lets everyone in."""


@dataclass
class Gateway:
    cluster: MetaCluster
    endpoint: str
    proc: Any
    user: str
    """The keelfs user ``ACCESS_KEY`` acts for (a superuser of the cluster)."""

    def client(self, key: str = ACCESS_KEY, secret: str = SECRET_KEY, **config: Any) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name="us-east-1",
            config=Config(
                **{
                    "s3": {"addressing_style": "path"},
                    "signature_version": "s3v4",
                    "retries": {"max_attempts": 1},
                    **config,
                }
            ),
        )


def start_gateway(cluster: MetaCluster, root: Path, *args: str) -> tuple[Any, str, str]:
    """``keelfs s3`` on a free loopback port for ``cluster`` (``args``: more flags):
    (process, endpoint, user)."""
    user = ADMIN_USER if cluster.tls_dir is not None else getpass.getuser()
    credentials = root / "s3-credentials.json"
    credentials.write_text(
        json.dumps(
            {
                "access_keys": {
                    ACCESS_KEY: {"secret": SECRET_KEY, "user": user},
                    OTHER_KEY: {
                        "secret": OTHER_SECRET,
                        "user": OTHER_USER,
                        "display_name": OTHER_NAME,
                    },
                },
                "anonymous": {"user": ANONYMOUS_USER},
            }
        )
    )
    cmd = [
        sys.executable, "-m", "keelfs.cli.main", "s3", "--listen", "127.0.0.1:0",
        "--cluster", ",".join(cluster.config_addresses), "--credentials", str(credentials),
        *args,
    ]  # fmt: skip
    if cluster.tls_dir is not None:
        from keelfs.tls.certs import issue_client

        issue_client(cluster.tls_dir, OTHER_USER)
        issue_client(cluster.tls_dir, ANONYMOUS_USER)
        cmd += ["--tls-dir", str(cluster.tls_dir)]
    out, err = root / "s3.out", root / "s3.err"
    proc = spawn_tracked(cmd, out, err, "keelfs s3")
    deadline = time.monotonic() + 30
    ready = None
    while time.monotonic() < deadline and proc.poll() is None:
        ready = read_ready_line(out)
        if ready is not None:
            break
        time.sleep(0.05)
    if ready is None:
        hard_kill(proc)
        raise RuntimeError(f"keelfs s3 did not start:\n{err.read_text()[-3000:]}")
    return proc, ready["s3_url"], user
