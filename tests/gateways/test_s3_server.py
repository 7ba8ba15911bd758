"""``keelfs server --s3-listen``: the embedded server serves S3 too, prints where, and makes
its access keys on first use."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.cli.test_server import Server

pytestmark = [pytest.mark.process, pytest.mark.timeout(180)]


def test_server_serves_s3_with_keys_it_made(tmp_path: Path) -> None:
    server = Server(tmp_path, tmp_path / "data")
    server.args += ["--s3-listen", "127.0.0.1:0"]
    try:
        info = server.start()
        credentials = Path(info["s3_credentials"])
        assert credentials == tmp_path / "data" / "s3-credentials.toml"
        assert f"S3 gateway           {info['s3_url']}" in server.banner
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        ((key_id, key),) = tomllib.loads(credentials.read_text())["access_keys"].items()
        s3 = boto3.client(
            "s3",
            endpoint_url=info["s3_url"],
            aws_access_key_id=key_id,
            aws_secret_access_key=key["secret"],
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
        )
        s3.create_bucket(Bucket="embedded")
        s3.put_object(Bucket="embedded", Key="k/v", Body=b"served")
        assert s3.get_object(Bucket="embedded", Key="k/v")["Body"].read() == b"served"
        assert server.terminate() == 0
        info = server.start()  # the same keys after a restart
        assert Path(info["s3_credentials"]).read_text() == credentials.read_text()
        s3 = boto3.client(
            "s3",
            endpoint_url=info["s3_url"],
            aws_access_key_id=key_id,
            aws_secret_access_key=key["secret"],
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
        )
        assert s3.get_object(Bucket="embedded", Key="k/v")["Body"].read() == b"served"
        assert server.terminate() == 0
    finally:
        server.kill()
