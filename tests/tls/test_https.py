"""The HTTP side off the loopback: HTTPS only, and from another host only with a certificate of
the cluster's CAs or the bearer token of ``--http-token-file`` (``/health`` open to probes).

A real ``keelfs chunkserver`` serves HTTPS on the gateway address of a network namespace
bridge; the requests come from a process in another namespace (another "host", so not from
loopback), over real TLS. Needs root for the namespaces: under ``CI=true`` that is a failure,
not a skip."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from keelfs.runtime.netns import NetnsNetwork, free_subnet
from keelfs.runtime.processes import (
    free_ports,
    hard_kill,
    read_ready_line,
    spawn_tracked,
    wait_until,
)
from keelfs.testing.commands import keelfs_command as keelfs
from keelfs.testing.environment import cannot_run

pytestmark = [pytest.mark.process, pytest.mark.timeout(180)]

TOKEN = "s3cret-scrape-token-0123456789"

# Run inside the other namespace: one HTTPS request, its status printed as JSON (or the error).
_FETCH = r"""
import http.client, json, ssl, sys
url_host, port, path, cafile, cert, key, token, host = sys.argv[1:9]
ctx = ssl.create_default_context(cafile=cafile)
if cert:
    ctx.load_cert_chain(cert, key)
headers = {"Host": host} if host else {}
if token:
    headers["Authorization"] = "Bearer " + token
try:
    conn = http.client.HTTPSConnection(url_host, int(port), context=ctx, timeout=10)
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    print(json.dumps({"status": r.status, "body": r.read().decode(errors="replace")[:200],
                      "auth": r.getheader("WWW-Authenticate")}))
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__ + ": " + str(exc)}))
"""

_PLAIN = r"""
import http.client, json, sys
try:
    conn = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=10)
    conn.request("GET", "/health")
    print(json.dumps({"status": conn.getresponse().status}))
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__}))
"""


@dataclass
class Exposed:
    net: NetnsNetwork
    certs: Path
    host: str
    port: int

    def fetch(
        self,
        path: str,
        *,
        user: str = "",
        token: str = "",
        host: str = "",
    ) -> dict[str, object]:
        """GET ``path`` from the other namespace, as ``user`` (their certificate) or with
        ``token``, naming the server ``host`` (default: its address)."""
        cert = key = ""
        if user:
            cert, key = str(self.certs / f"user-{user}.crt"), str(self.certs / f"user-{user}.key")
        args = [self.host, str(self.port), path, str(self.certs / "peer-ca.crt"), cert, key]
        return self._run(_FETCH, *args, token, host)

    def fetch_plain(self) -> dict[str, object]:
        return self._run(_PLAIN, self.host, str(self.port))

    def _run(self, script: str, *args: str) -> dict[str, object]:
        out = subprocess.run(
            [*self.net.exec_prefix(1), sys.executable, "-c", script, *args],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        result: dict[str, object] = json.loads(out.stdout)
        return result


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exposed]:
    ok, why = NetnsNetwork.available(gateway=True)
    if not ok:
        cannot_run(f"needs network namespaces: {why}")
    base = tmp_path_factory.mktemp("https")
    certs = base / "certs"
    with NetnsNetwork([1], free_subnet(), gateway=True) as net:
        for args in (
            ("init", str(certs)),
            ("issue", str(certs), "chunkserver/cs-1", "--host", "127.0.0.1",
             "--host", net.gateway_ip),
            ("issue", str(certs), "user/alice"),
        ):  # fmt: skip
            out = keelfs("certs", *args)
            assert out.returncode == 0, out.stdout + out.stderr
        token_file = base / "token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        (grpc_port,) = free_ports(1)
        stdout = base / "stdout.log"
        proc = spawn_tracked(
            [sys.executable, "-m", "keelfs.cli.main", "chunkserver", "--data", str(base / "d"),
             "--listen", f"127.0.0.1:{grpc_port}", "--server-id", "cs-1",
             "--tls-dir", str(certs), "--http-listen", f"{net.gateway_ip}:0",
             "--http-token-file", str(token_file), "--no-fsync-on-close"],
            stdout,
            base / "stderr.log",
        )  # fmt: skip
        try:
            ready = wait_until(
                lambda: read_ready_line(stdout) or (proc.poll() is not None and {}) or None,
                60,
                "keelfs chunkserver READY",
            )
            assert ready, (base / "stderr.log").read_text()
            assert ready["http_url"].startswith(f"https://{net.gateway_ip}:")
            port = int(ready["http"].rpartition(":")[2])
            yield Exposed(net, certs, net.gateway_ip, port)
        finally:
            hard_kill(proc)


def test_health_is_open_to_probes_from_another_host(exposed: Exposed) -> None:
    got = exposed.fetch("/health")
    assert got.get("status") == 200, got
    assert '"role": "chunk"' in str(got["body"])


@pytest.mark.parametrize("path", ["/metrics", "/api/node", "/raft/state"])
def test_another_host_without_credentials_is_refused(exposed: Exposed, path: str) -> None:
    got = exposed.fetch(path)
    assert got.get("status") == 401, got
    assert got["auth"] == 'Bearer realm="keelfs"'
    got = exposed.fetch(path, token=TOKEN[:-1] + "x")
    assert got.get("status") == 401, got


def test_the_bearer_token_or_a_certificate_lets_another_host_in(exposed: Exposed) -> None:
    got = exposed.fetch("/metrics", token=TOKEN)
    assert got.get("status") == 200, got
    assert "keelfs_" in str(got["body"])
    got = exposed.fetch("/api/node", user="alice")
    assert got.get("status") == 200, got
    assert '"server_id": "cs-1"' in str(got["body"])


def test_a_foreign_host_name_is_refused_even_with_credentials(exposed: Exposed) -> None:
    got = exposed.fetch("/metrics", token=TOKEN, host="attacker.example")
    assert got.get("status") == 421, got


def test_plain_http_gets_no_answer(exposed: Exposed) -> None:
    got = exposed.fetch_plain()
    assert "status" not in got or got["status"] == 400, got


def test_off_host_http_without_tls_or_a_token_without_tls_is_refused(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    base = ["chunkserver", "--data", str(tmp_path / "d"), "--listen", f"127.0.0.1:{port}"]
    out = keelfs(*base, "--http-listen", "0.0.0.0:0")
    assert out.returncode == 2 and "loopback only" in out.stderr, out.stderr
    token = tmp_path / "token"
    token.write_text(TOKEN)
    out = keelfs(*base, "--http-listen", "127.0.0.1:0", "--http-token-file", str(token))
    assert out.returncode == 2 and "only accepted over HTTPS" in out.stderr, out.stderr
    assert not (tmp_path / "d").exists()
