"""``keelfs certs init|issue|show`` through click's CliRunner."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from click.testing import CliRunner, Result

from keelfs.cli.main import cli


def certs(*args: str) -> Result:
    return CliRunner().invoke(cli, ["certs", *args])


def test_init_issue_and_show(tmp_path: Path) -> None:
    d = tmp_path / "certs"
    assert certs("init", str(d)).exit_code == 0
    r = certs("issue", str(d), "master/3", "--host", "127.0.0.1", "--host", "m3.example")
    assert r.exit_code == 0, r.output
    assert certs("issue", str(d), "user/root", "--group", "ops", "--admin").exit_code == 0
    assert stat.S_IMODE((d / "master-3.key").stat().st_mode) == 0o600
    node = json.loads(certs("show", str(d / "master-3.crt"), "--json").output)
    assert node["uris"] == ["keelfs://master/3"]
    assert node["issuer"] == "CN=keelfs peer CA"
    assert {"127.0.0.1", "m3.example"} <= set(node["hosts"])
    root = json.loads(certs("show", str(d / "user-root.crt"), "--json").output)
    assert root["uris"] == ["keelfs://user/root", "keelfs://group/ops", "keelfs://role/admin"]
    assert root["issuer"] == "CN=keelfs client CA"


def test_errors_are_one_line(tmp_path: Path) -> None:
    d = tmp_path / "certs"
    assert certs("init", str(d)).exit_code == 0
    again = certs("init", str(d))
    assert again.exit_code == 1
    assert again.output.startswith("keelfs certs: ") and "already exists" in again.output
    bad = certs("issue", str(d), "master/abc")
    assert bad.exit_code == 1 and "positive integer" in bad.output
    assert certs("issue", str(d), "user/al", "--host", "x").exit_code == 2
    assert certs("issue", str(d), "master/1", "--admin").exit_code == 2
    assert certs("issue", str(d), "master").exit_code == 2
    assert not (d / "user-al.crt").exists()


def test_issue_a_proxy_certificate(tmp_path: Path) -> None:
    from keelfs.tls.certs import load_certificate, uris_of, user_files

    runner = CliRunner()
    assert runner.invoke(cli, ["certs", "init", str(tmp_path)]).exit_code == 0
    made = runner.invoke(
        cli, ["certs", "issue", str(tmp_path), "user/gw", "--proxy-for", "*", "--proxy-for", "bob"]
    )
    assert made.exit_code == 0, made.output
    uris = uris_of(load_certificate(user_files(tmp_path, "gw").cert))
    assert {"keelfs://proxy/*", "keelfs://proxy/bob"} <= set(uris)
    refused = runner.invoke(cli, ["certs", "issue", str(tmp_path), "master/1", "--proxy-for", "*"])
    assert refused.exit_code == 2
