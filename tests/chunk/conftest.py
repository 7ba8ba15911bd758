"""Fixtures for the chunk server tests: real processes on 127.0.0.1, always cleaned up.

``trio`` (module-scoped) is three chunk servers shared by the tests that kill nothing (each
test uses its own block ids); ``make_servers(n, *args)`` starts fresh ones for one test. Every
process is killed by pid at teardown, and when a test failed the tail of each server's log is
printed.

The servers run without masters, so each is provisioned with the one block key of this test
session (``BLOCK_KEYS``) and the ``client`` fixture signs its own tokens with it
(``keelfs.datapath.tokens``); a client without a signer is refused.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # the helpers in chunk_keys import however pytest is launched
    sys.path.insert(0, str(_HERE))

from chunk_keys import provisioned, signer  # noqa: E402

from keelfs.datapath.client import ChunkClient  # noqa: E402
from keelfs.server.chunkservers import LocalChunkServers  # noqa: E402
from keelfs.testing.tiers import starts_processes  # noqa: E402


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None]:
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep


def _dump(servers: LocalChunkServers) -> None:
    for i in range(len(servers.addresses)):
        print(f"----- chunk server {i} log (tail) -----")
        print(servers.log_tail(i, 30))


@pytest.fixture(scope="module")
@starts_processes
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalChunkServers]:
    servers = provisioned(LocalChunkServers(tmp_path_factory.mktemp("trio"), 3))
    try:
        servers.start()
        yield servers
    except BaseException:
        _dump(servers)
        raise
    finally:
        servers.stop_all()


@pytest.fixture
@starts_processes
def make_servers(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., LocalChunkServers]]:
    made: list[LocalChunkServers] = []

    def make(n: int = 3, *args: str) -> LocalChunkServers:
        servers = provisioned(LocalChunkServers(tmp_path / f"set{len(made)}", n, server_args=args))
        made.append(servers)
        return servers.start()

    try:
        yield make
    finally:
        rep = getattr(request.node, "rep_call", None)
        if rep is None or rep.failed:
            for servers in made:
                _dump(servers)
        for servers in made:
            servers.stop_all()


@pytest.fixture
def client() -> Iterator[ChunkClient]:
    c = ChunkClient(ack_timeout_s=30.0, signer=signer())
    try:
        yield c
    finally:
        c.close()
