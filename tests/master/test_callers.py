"""Who a request acts for (``keelfs.master.callers``) and the audit log's lines
(``keelfs.master.audit``): in process, with fake servicer contexts."""

from __future__ import annotations

import getpass
import grp
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from keelfs.client.identity import CALLER_METADATA_KEY, USER_METADATA_KEY
from keelfs.errors import InvalidArgument, PermissionDenied
from keelfs.master.audit import AUDIT_LOGGER, AuditLog, client_ip
from keelfs.master.callers import Callers, os_groups
from keelfs.meta.principals import SUPERUSER, Caller
from keelfs.tls.identity import ANONYMOUS, Client, Peer


class Context:
    def __init__(self, metadata: tuple[tuple[str, str], ...] = (), peer: str = "") -> None:
        self._metadata = metadata
        self._peer = peer

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer


class FakeAuthenticator:
    def __init__(self, identity: Any) -> None:
        self.identity = identity

    def identity_of(self, context: Any) -> Any:
        return self.identity


def simple(**kwargs: Any) -> Callers:
    return Callers(process_user="keeper", **kwargs)


def test_simple_mode_takes_the_named_user_and_no_name_is_the_superuser() -> None:
    callers = simple()
    assert callers.caller_of(Context()) == SUPERUSER  # an old client, a raw tool
    bob = callers.caller_of(Context(((USER_METADATA_KEY, "bob-not-on-this-host"),)))
    assert bob == Caller("bob-not-on-this-host", (), False)
    keeper = callers.caller_of(Context(((USER_METADATA_KEY, "keeper"),)))
    assert keeper.superuser  # the OS user running the master
    with pytest.raises(InvalidArgument):
        callers.caller_of(Context(((USER_METADATA_KEY, "a:b"),)))


def test_simple_mode_groups_are_the_hosts_and_the_superuser_group_counts() -> None:
    me = getpass.getuser()
    groups = os_groups(me)
    assert groups and groups[0] == grp.getgrgid(os.getgid()).gr_name
    caller = Callers(process_user="someone-else", superuser_group=groups[0]).caller_of(
        Context(((USER_METADATA_KEY, me),))
    )
    assert caller.groups == groups and caller.superuser
    plain = Callers(process_user="someone-else", superuser_group="no-such-group-here")
    assert not plain.caller_of(Context(((USER_METADATA_KEY, me),))).superuser


def test_a_master_acting_for_a_caller_sends_it_whole() -> None:
    alice = Caller("alice", ("staff",))
    acting = Context(((CALLER_METADATA_KEY, json.dumps(alice.encode())),))
    assert simple().caller_of(acting) == alice
    peer = Callers(FakeAuthenticator(Peer("master", "2")))  # type: ignore[arg-type]
    assert peer.caller_of(acting) == alice
    assert peer.caller_of(Context()) == SUPERUSER  # a master for itself
    # a client certificate cannot claim another caller
    carol = Callers(FakeAuthenticator(Client("carol")))  # type: ignore[arg-type]
    assert carol.caller_of(acting) == Caller("carol", (), False)


def test_with_tls_the_certificate_decides() -> None:
    def caller(identity: Any, **kwargs: Any) -> Caller:
        callers = Callers(FakeAuthenticator(identity), **kwargs)
        return callers.caller_of(Context(((USER_METADATA_KEY, "keeper"),)))

    assert caller(Client("ann", frozenset({"b", "a"}))) == Caller("ann", ("a", "b"), False)
    assert caller(Client("ann", admin=True)).superuser
    assert caller(Client("ann", frozenset({"ops"})), superuser_group="ops").superuser
    with pytest.raises(PermissionDenied):
        caller(ANONYMOUS)


def test_a_proxy_certificate_acts_for_the_users_it_may_name() -> None:
    def caller(identity: Any, named: str | None, **kwargs: Any) -> Caller:
        callers = Callers(FakeAuthenticator(identity), **kwargs)
        metadata = ((USER_METADATA_KEY, named),) if named is not None else ()
        return callers.caller_of(Context(metadata))

    gateway = Client("gw", frozenset({"gws"}), proxy_for=frozenset({"bob"}))
    assert caller(gateway, "bob") == Caller("bob", os_groups("bob"), False)
    assert caller(gateway, "gw") == Caller("gw", ("gws",), False)  # itself
    assert caller(gateway, None) == Caller("gw", ("gws",), False)
    with pytest.raises(PermissionDenied):
        caller(gateway, "carol")  # not among those it may name
    anyone = Client("gw", proxy_for=frozenset({"*"}))
    me = getpass.getuser()
    # a user acted for is never a superuser, whatever its groups
    acted = caller(anyone, me, superuser_group=os_groups(me)[0], process_user=me)
    assert acted.user == me and not acted.superuser
    with pytest.raises(InvalidArgument):
        caller(anyone, "a:b")
    # a certificate without proxy rights ignores the name, as before
    assert caller(Client("ann"), "bob") == Caller("ann", (), False)


def test_proxy_rights_come_from_the_client_ca_only(tmp_path: Path) -> None:
    from keelfs.tls.certs import init_authorities, issue_client, load_certificate, uris_of
    from keelfs.tls.identity import identity_from_uris

    init_authorities(tmp_path)
    pair = issue_client(tmp_path, "gw", proxy_for=["bob", "*"])
    uris = uris_of(load_certificate(pair.cert))
    assert "keelfs://proxy/bob" in uris and "keelfs://proxy/*" in uris
    identity = identity_from_uris(uris, peer_ca=False, client_ca=True)
    assert isinstance(identity, Client) and identity.proxy_for == {"bob", "*"}
    assert identity_from_uris(uris, peer_ca=True, client_ca=False) == ANONYMOUS


def test_audit_log_lines(tmp_path: Path) -> None:
    assert client_ip(Context(peer="ipv4:127.0.0.1:5123")) == "127.0.0.1"
    assert client_ip(Context(peer="ipv6:[::1]:5123")) == "::1"
    off = AuditLog(None)
    off.record(False, Caller("x"), "1.2.3.4", "delete", "/a")  # nothing, no error
    path = tmp_path / "audit.log"
    log = AuditLog(path, node_id=7)
    try:
        log.record(False, Caller("bob"), "127.0.0.1", "listStatus", "/home/a")
        log.record(True, Caller("ann"), "::1", "rename", "/a", "/b", "ann:staff:0644")
    finally:
        log.close()
    lines = path.read_text().splitlines()
    assert lines[0].endswith(
        "allowed=false ugi=bob ip=127.0.0.1 cmd=listStatus src=/home/a dst=null perm=null"
    )
    assert lines[1].endswith(
        "allowed=true ugi=ann ip=::1 cmd=rename src=/a dst=/b perm=ann:staff:0644"
    )
    assert not logging.getLogger(AUDIT_LOGGER).propagate  # never in the process's own log
