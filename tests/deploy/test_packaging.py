"""What an operator runs, checked as far as this machine allows (docs/deploy.md):

- ``deploy/compose/docker-compose.yml`` validates with ``docker-compose config`` (Debian's
  docker-compose needs no daemon; under ``CI=true`` a missing one FAILS, ``.ci/run`` installs
  it); its topology is the seed's (3 config servers, 2 shards x 3 masters, 3 chunk servers, an
  S3 gateway), each service with its own volume and advertised address; ``make-certs.sh`` makes
  the certificate directory every service mounts, and every service's command line, with its
  environment and mounts, is accepted by the real ``keelfs`` parsers and node configs (its own
  certificate found in its own directory);
- the systemd units pass ``systemd-analyze verify`` (else a parse) with the hardening options,
  and each unit's ``/etc/keelfs/*.toml`` loads through the real config loader into a valid
  node config;
- the Dockerfile is the one the brief asks for (slim base, non-root, one entry point, a volume,
  a health check by ``keelfs.web.healthcheck``), whose probe is tested here against a server.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from keelfs.cli.main import cli
from keelfs.cli.s3_cmd import s3
from keelfs.cli.webhdfs_cmd import webhdfs
from keelfs.runtime.processes import (
    free_ports,
    hard_kill,
    read_ready_line,
    spawn_tracked,
    wait_until,
)
from keelfs.server.chunk_process import chunk_config
from keelfs.server.master_process import node_config
from keelfs.server.roles import chunkserver, config_server, master, resolve_args
from keelfs.testing.environment import cannot_run
from keelfs.tls.certs import init_authorities, issue_node
from keelfs.web.healthcheck import health_url
from keelfs.web.healthcheck import main as healthcheck

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose"
UNITS = ROOT / "deploy" / "systemd"
ETC = ROOT / "deploy" / "etc" / "keelfs"
ROLES = {"config-server": config_server, "master": master, "chunkserver": chunkserver}


# -- Docker Compose -----------------------------------------------------------------------------


def test_the_compose_file_validates_with_docker_compose() -> None:
    exe = shutil.which("docker-compose")
    if exe is None:
        cannot_run("docker-compose is not installed (apt-get install docker-compose)")
    out = subprocess.run(
        [exe, "-f", str(COMPOSE / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    return doc


def _flag(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_the_compose_topology_is_the_seeds() -> None:
    services = _compose()["services"]
    nodes = {name: s for name, s in services.items() if name != "admin"}
    assert sorted(nodes) == sorted(
        [f"config-{i}" for i in (1, 2, 3)]
        + [f"master-{k}-{j}" for k in (1, 2) for j in (1, 2, 3)]
        + [f"chunk-{i}" for i in (1, 2, 3)]
        + ["s3"]
    )
    volumes = {}
    for name, s in nodes.items():
        data = [v for v in s["volumes"] if v.endswith(":/var/lib/keelfs")]
        assert len(data) == 1, name
        volumes[name] = data[0].split(":")[0]
        assert volumes[name] in _compose()["volumes"], name  # a named volume, not a bind
        assert f"./certs/{name}:/etc/keelfs/certs:ro" in s["volumes"], name
        command = s["command"]
        if name != "s3":  # every node listens on the wildcard, advertises its service name
            assert _flag(command, "--listen") == "0.0.0.0:7001", name
            assert _flag(command, "--advertise") == s["hostname"] == name
    assert len(set(volumes.values())) == len(nodes)  # each its own
    ids = {name: _flag(s["command"], "--id") for name, s in nodes.items() if "--id" in s["command"]}
    assert ids == {f"config-{i}": str(i) for i in (1, 2, 3)} | {
        f"master-{k}-{j}": f"{k}{j}" for k in (1, 2) for j in (1, 2, 3)
    }
    for k in (1, 2):  # a shard's peers are its three masters, at their service names
        for j in (1, 2, 3):
            command = nodes[f"master-{k}-{j}"]["command"]
            assert _flag(command, "--shard") == f"shard-{k}"
            assert _flag(command, "--peers") == ",".join(
                f"{k}{m}=master-{k}-{m}:7000" for m in (1, 2, 3)
            )


def _host_path(service: dict[str, Any], compose_dir: Path, container_path: str) -> str:
    """Where a container path of ``service`` lies on the host, through its bind mounts."""
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("./") and (
            container_path == target or container_path.startswith(target + "/")
        ):
            return str(compose_dir / source) + container_path[len(target) :]
    return container_path


@pytest.mark.process
def test_make_certs_gives_every_service_what_its_command_needs(tmp_path: Path) -> None:
    """``make-certs.sh`` (with this checkout's ``keelfs``), then every service's command line
    through the real parsers, its environment and mounts applied: each node finds its own
    certificate in its own directory (and nothing else's key is there)."""
    compose_dir = tmp_path / "compose"
    shutil.copytree(COMPOSE, compose_dir, ignore=shutil.ignore_patterns("certs", "*.toml"))
    env = dict(os.environ, KEELFS=f"{sys.executable} -m keelfs.cli.main")
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        ["sh", str(compose_dir / "make-certs.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    doc = _compose()
    anchor_env = doc["x-node"]["environment"]
    for name, s in doc["services"].items():
        certs = compose_dir / "certs" / name
        keys = sorted(p.name for p in certs.glob("*.key"))
        assert len(keys) == 1 and "ca" not in keys[0], (name, keys)  # its own pair only
        if name in ("admin", "s3"):
            continue
        role, *argv = s["command"]
        environ = {**anchor_env, **s.get("environment", {})}
        environ["KEELFS_TLS_DIR"] = _host_path(s, compose_dir, environ["KEELFS_TLS_DIR"])
        environ["KEELFS_DATA"] = str(tmp_path / "data" / name)  # the image's, in its volume
        values = resolve_args(ROLES[role], argv, environ)
        if role == "chunkserver":
            config, reporting, http = chunk_config(values)
            assert config.advertise == name and config.tls is not None
            assert len(reporting.config_servers) == 3
        else:
            config, http = node_config("config" if role == "config-server" else "master", values)
            assert config.advertise == name and config.tls is not None
        assert http.listen == "0.0.0.0:7080"
    s = doc["services"]["s3"]
    argv = [_host_path(s, compose_dir, a) for a in s["command"][1:]]
    ctx = s3.make_context("s3", argv)
    assert Path(ctx.params["credentials"]).is_file()
    assert (Path(ctx.params["tls_dir"]) / "user-s3user.crt").is_file()
    assert "s3user" in Path(ctx.params["credentials"]).read_text()


# -- systemd -------------------------------------------------------------------------------------


def _unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file's sections: key -> every value it is given (a key may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


UNIT_FILES = sorted(UNITS.glob("keelfs-*.service"))


def test_one_unit_per_role() -> None:
    names = {p.name for p in UNIT_FILES}
    assert names == {
        f"keelfs-{r}.service" for r in ("config-server", "master", "chunkserver", "s3", "webhdfs")
    }


@pytest.mark.parametrize("path", UNIT_FILES, ids=lambda p: p.stem)
def test_units_restart_on_failure_hardened(path: Path) -> None:
    unit = _unit(path)
    service = {k: v[-1] for k, v in unit["Service"].items()}
    assert service["Restart"] == "on-failure"
    assert service["User"] == "keelfs" != "root"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "ReadOnlyPaths": "/etc/keelfs",
    }.items():
        assert service.get(key) == value, (path.name, key)
    exec_start = service["ExecStart"].split()
    assert exec_start[0] == "/opt/keelfs/bin/keelfs"
    role = exec_start[1]
    config = Path(exec_start[exec_start.index("--config") + 1])
    sample = ETC / config.name
    assert config.parent == Path("/etc/keelfs") and sample.is_file(), config
    text = sample.read_text()
    assert f"[{role}]" in text
    data = re.search(r'^data = "([^"]+)"', text, re.M)
    if role in ROLES:  # a node: it may write its data directory, and only that
        assert data is not None
        assert service["ReadWritePaths"] == data.group(1)
        assert service["StateDirectory"] == "keelfs/" + Path(data.group(1)).name
    else:  # a gateway keeps nothing
        assert data is None and "ReadWritePaths" not in service
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify`` on each unit, ExecStart pointed at this checkout's ``keelfs``
    (it checks that the binary exists); a warning on stderr (an unknown key, a bad value)
    fails the test."""
    exe = shutil.which("systemd-analyze")
    if exe is None:
        cannot_run("systemd-analyze is not installed (Debian: systemd)")
    keelfs = Path(sys.executable).with_name("keelfs")
    if not keelfs.exists():
        keelfs = Path(shutil.which("true") or "/bin/true")
    for path in UNIT_FILES:
        copy = tmp_path / path.name
        copy.write_text(path.read_text().replace("/opt/keelfs/bin/keelfs", str(keelfs)))
    out = subprocess.run(
        [exe, "verify", *(str(tmp_path / p.name) for p in UNIT_FILES)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr


@pytest.fixture(scope="module")
def sample_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A certificate directory with the nodes the sample files name."""
    d = tmp_path_factory.mktemp("certs")
    init_authorities(d)
    issue_node(d, "config", 1, ["10.0.0.1"])
    issue_node(d, "master", 11, ["10.0.0.11"])
    issue_node(d, "chunkserver", "cs-1", ["10.0.0.21"])
    return d


@pytest.mark.parametrize("role", sorted(ROLES))
def test_sample_tomls_load_into_valid_node_configs(role: str, sample_certs: Path) -> None:
    """Each node's sample through the real loader (a flag wins over the file: the certificate
    directory here), every value checked by the node's config."""
    path = ETC / f"{role}.toml"
    values = resolve_args(
        ROLES[role], ["--config", str(path), "--tls-dir", str(sample_certs)], environ={}
    )
    assert str(values["data"]).startswith("/var/lib/keelfs/")
    assert values["listen"] == "0.0.0.0:7001" and values["advertise"].startswith("10.0.0.")
    if role == "chunkserver":
        config, reporting, http = chunk_config(values)
        assert config.server_id == "cs-1" and len(reporting.config_servers) == 3
    else:
        config, http = node_config("config" if role == "config-server" else "master", values)
        assert config.peers is not None and len(config.peers) == 3
    assert config.tls is not None and http.listen == "0.0.0.0:7080"


def test_gateway_tomls_load_and_flags_win(tmp_path: Path) -> None:
    creds = tmp_path / "creds.toml"
    creds.write_text('[access_keys.K]\nsecret = "s"\nuser = "u"\n')
    ctx = s3.make_context("s3", ["--config", str(ETC / "s3.toml"), "--credentials", str(creds)])
    assert ctx.params["listen"] == "127.0.0.1:7090"
    assert ctx.params["cluster"] == ("10.0.0.1:7001", "10.0.0.2:7001", "10.0.0.3:7001")
    assert str(ctx.params["tls_dir"]) == "/etc/keelfs/certs"
    argv = ["--config", str(ETC / "s3.toml"), "--credentials", str(creds), "--listen", "h:1"]
    assert s3.make_context("s3", argv).params["listen"] == "h:1"  # the flag wins
    ctx = webhdfs.make_context("webhdfs", ["--config", str(ETC / "webhdfs.toml")])
    assert ctx.params["listen"] == "127.0.0.1:9870" and ctx.params["user"] == "hdfs"
    assert len(ctx.params["cluster"]) == 3


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[s3]\nlisen = "h:1"\n', ["unknown key 'lisen'"]),
        ("[s3]\nlisten = [1, 2]\n", ["must be a single value"]),
        ("[s3\n", ["not valid TOML"]),
    ],
)
def test_a_bad_gateway_toml_stops_the_command(tmp_path: Path, text: str, words: list[str]) -> None:
    path = tmp_path / "s3.toml"
    path.write_text(text)
    r = CliRunner().invoke(cli, ["s3", "--config", str(path)])
    assert r.exit_code == 2, r.output
    for w in words:
        assert w in r.output


# -- the image -------------------------------------------------------------------------------------


def test_the_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert stages and all(s.startswith("python:3.11-slim") for s in stages)
    final = text[text.rindex("\nFROM ") :]
    users = re.findall(r"^USER (\S+)", final, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["keelfs"\]$', final, re.M)
    assert re.search(r'^VOLUME \["/var/lib/keelfs"\]$', final, re.M)
    assert "KEELFS_DATA=/var/lib/keelfs/data" in final
    assert re.search(r"^HEALTHCHECK .*\n.*keelfs\.web\.healthcheck", final, re.M)
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignored[:1] == ["*"] and "!keelfs/" in ignored  # no .git, .venv, tests, certs


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802  # the http.server API
        code = self.status if self.path == "/health" else 404
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_the_healthcheck_probe(health_server: http.server.HTTPServer) -> None:
    port = health_server.server_address[1]
    assert healthcheck([], environ={"KEELFS_HTTP_LISTEN": f"0.0.0.0:{port}"}) == 0
    assert healthcheck([f"127.0.0.1:{port}"], environ={}) == 0
    assert healthcheck(["--tcp", f"0.0.0.0:{port}"], environ={}) == 0
    _Health.status = 503
    try:
        assert healthcheck([f"127.0.0.1:{port}"], environ={}) == 1
    finally:
        _Health.status = 200
    health_server.shutdown()
    health_server.server_close()
    assert healthcheck([f"127.0.0.1:{port}"], environ={}) == 1
    assert healthcheck(["--tcp", f"127.0.0.1:{port}"], environ={}) == 1
    assert healthcheck([], environ={}) == 1  # no address: unhealthy, with the reason
    assert health_url("0.0.0.0:7080", {"KEELFS_TLS_DIR": "/etc/keelfs/certs"}) == (
        "https://127.0.0.1:7080/health"
    )
    assert health_url("[::]:7080", {}) == "http://127.0.0.1:7080/health"


@pytest.mark.process
def test_the_healthcheck_asks_a_tls_node_as_the_image_does(tmp_path: Path) -> None:
    """The image's probe against a chunk server with TLS, its HTTP side on a wildcard as in
    the compose file (``KEELFS_HTTP_LISTEN=0.0.0.0:PORT``, ``KEELFS_TLS_DIR``): healthy while
    it serves, unhealthy once it is gone."""
    certs = tmp_path / "certs"
    init_authorities(certs)
    issue_node(certs, "chunkserver", "cs-1", ["127.0.0.1"])
    port = free_ports(1)[0]
    env = {"KEELFS_TLS_DIR": str(certs), "KEELFS_HTTP_LISTEN": f"0.0.0.0:{port}"}
    command = [sys.executable, "-m", "keelfs.cli.main", "chunkserver", "--data",
               str(tmp_path / "data"), "--listen", "127.0.0.1:0", "--server-id", "cs-1",
               "--tls-dir", str(certs), "--http-listen", f"127.0.0.1:{port}"]  # fmt: skip
    proc = spawn_tracked(command, tmp_path / "stdout.log", tmp_path / "stderr.log")
    try:
        wait_until(lambda: read_ready_line(tmp_path / "stdout.log"), 60.0, "no READY")
        assert healthcheck([], environ=env) == 0
        assert healthcheck([f"127.0.0.1:{port}"], environ={}) == 1  # plain HTTP: refused
    finally:
        hard_kill(proc)
    assert healthcheck([], environ=env) == 1
