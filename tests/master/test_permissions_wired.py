"""Permissions enforced end to end, against real processes in simple mode (no TLS): the
masters take the caller from the ``keelfs-user`` metadata the client sends
(``keelfs.master.callers``), and write an audit log (``keelfs.master.audit``).

One co-hosted two-shard cluster serves the module; this process runs as the OS user that
runs the masters, so a client naming no other user is the superuser. Users "alice" and "bob"
are names this host does not know: no groups, no privileges.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from keelfs.client import Client
from keelfs.errors import PermissionDenied
from keelfs.meta.shardmap import ShardMap
from keelfs.server.metacluster import MetaCluster
from keelfs.testing.tiers import starts_processes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

HOME = "/home/alice"


@pytest.fixture(scope="module")
@starts_processes
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MetaCluster, Path]]:
    root = tmp_path_factory.mktemp("perm")
    audit = root / "audit.log"
    c = MetaCluster(root / "cluster", node_args=("--audit-log", str(audit)))
    try:
        c.start()
        yield c, audit
    finally:
        c.stop_all()


@pytest.fixture(scope="module")
def users(cluster: tuple[MetaCluster, Path]) -> tuple[Client, Client, Client]:
    """(root, alice, bob): alice owns ``HOME`` at 0700; ``/tmp`` is 0777."""
    c, _ = cluster
    root, alice, bob = c.client(), c.client(user="alice"), c.client(user="bob")
    root.mkdir(HOME, parents=True)
    root.chown(HOME, "alice")
    alice.chmod(HOME, 0o700)
    root.mkdir("/tmp")
    root.chmod("/tmp", 0o777)
    alice.create(f"{HOME}/secret")
    alice.complete(f"{HOME}/secret")
    return root, alice, bob


def _name(prefix: str, ok: Callable[[str], bool]) -> str:
    """The first ``prefix<n>`` for which ``ok`` holds (a name the map puts where wanted)."""
    for n in range(1000):
        if ok(f"{prefix}{n}"):
            return f"{prefix}{n}"
    raise AssertionError(f"no name {prefix}N fits")


def _denied(call: Callable[[], object]) -> PermissionDenied:
    with pytest.raises(PermissionDenied) as info:
        call()
    return info.value


def test_another_user_is_refused_everything_inside_a_0700_directory(
    users: tuple[Client, Client, Client],
) -> None:
    root, alice, bob = users
    secret = f"{HOME}/secret"
    assert alice.stat(secret).owner == "alice" and root.stat(secret).path == secret
    assert "user=bob" in str(_denied(lambda: bob.stat(secret)))
    _denied(lambda: list(bob.ls(HOME)))
    _denied(lambda: bob.du(HOME))
    _denied(lambda: bob.create(f"{HOME}/mine"))
    _denied(lambda: bob.mkdir(f"{HOME}/mine"))
    _denied(lambda: bob.delete(secret))
    _denied(lambda: bob.rename(secret, f"{HOME}/moved"))
    _denied(lambda: bob.chmod(secret, 0o777))
    assert [e.path for e in alice.ls(HOME)] == [secret]  # nothing of it happened


def test_rename_across_shards_into_a_directory_bob_may_not_write(
    users: tuple[Client, Client, Client],
) -> None:
    root, alice, bob = users
    m: ShardMap = root.shard_map()
    # bob's own directory, on another shard than alice's home: the rename is a transaction
    mine = "/tmp/" + _name(
        "bob", lambda n: m.shard_for_directory(f"/tmp/{n}") != m.shard_for_directory(HOME)
    )
    bob.mkdir(mine)
    bob.create(f"{mine}/f")
    bob.complete(f"{mine}/f")
    assert m.shard_for_path(f"{mine}/f") != m.shard_for_path(f"{HOME}/f")
    _denied(lambda: bob.rename(f"{mine}/f", f"{HOME}/f"))
    _denied(lambda: bob.rename(f"{HOME}/secret", f"{mine}/stolen"))
    assert bob.stat(f"{mine}/f").owner == "bob"
    assert [e.path for e in alice.ls(HOME)] == [f"{HOME}/secret"]
    bob.rename(f"{mine}/f", f"{mine}/g")  # his own: allowed


def test_a_directory_made_across_shards_carries_the_guards_and_follows_chmod(
    users: tuple[Client, Client, Client],
) -> None:
    root, alice, bob = users
    m: ShardMap = root.shard_map()
    # its entry with HOME's records, its own records on the other shard: a cross-shard mkdir
    # that must build them with HOME's traverse guard (bob refused on the other shard too)
    sub = f"{HOME}/" + _name(
        "sub", lambda n: m.shard_for_directory(f"{HOME}/{n}") != m.shard_for_directory(HOME)
    )
    alice.mkdir(sub)
    alice.chmod(sub, 0o777)
    alice.create(f"{sub}/f")
    alice.complete(f"{sub}/f")
    _denied(lambda: list(bob.ls(sub)))
    _denied(lambda: bob.create(f"{sub}/bobs"))
    # opening HOME reaches every shard (SetTraverseGuard): bob may now work in sub
    alice.chmod(HOME, 0o711)
    assert [e.path for e in bob.ls(sub)] == [f"{sub}/f"]
    bob.create(f"{sub}/bobs")
    bob.complete(f"{sub}/bobs")
    # and closing it again shuts him out everywhere
    alice.chmod(HOME, 0o700)
    _denied(lambda: list(bob.ls(sub)))
    _denied(lambda: bob.stat(f"{sub}/bobs"))


def test_a_tree_moved_across_shards_takes_the_guards_of_its_new_place(
    users: tuple[Client, Client, Client],
) -> None:
    root, alice, bob = users
    m: ShardMap = root.shard_map()
    # an open tree whose parent is on another shard than HOME: moving it is a transaction
    # that rewrites every record of it, each with HOME's guard added
    src = "/tmp/" + _name(
        "from", lambda n: m.shard_for_directory(f"/tmp/{n}") != m.shard_for_directory(HOME)
    )
    root.mkdir(f"{src}/tree/a/b", parents=True)
    for d in ("tree", "tree/a", "tree/a/b"):
        root.chmod(f"{src}/{d}", 0o777)
    assert [e.path for e in bob.ls(f"{src}/tree/a")] == [f"{src}/tree/a/b"]
    root.rename(f"{src}/tree", f"{HOME}/tree")
    for d in ("tree", "tree/a", "tree/a/b"):
        _denied(lambda d=d: list(bob.ls(f"{HOME}/{d}")))
    assert [e.path for e in alice.ls(f"{HOME}/tree/a")] == [f"{HOME}/tree/a/b"]
    # and back out: the guard goes again
    root.rename(f"{HOME}/tree", f"{src}/tree")
    assert [e.path for e in bob.ls(f"{src}/tree/a")] == [f"{src}/tree/a/b"]


def test_recursive_delete_across_shards_needs_rwx_on_every_nonempty_directory(
    users: tuple[Client, Client, Client],
) -> None:
    root, alice, bob = users
    m: ShardMap = root.shard_map()
    # bob may remove the top (/tmp is 0777) but not alice's non-empty 0700 directory in it;
    # the tree spans shards, so the delete is a transaction whose may steps check both
    top = "/tmp/" + _name(
        "open", lambda n: m.shard_for_directory(f"/tmp/{n}") != m.shard_for_directory("/tmp")
    )
    root.mkdir(top)
    root.chmod(top, 0o777)
    alice.mkdir(f"{top}/hers")
    alice.create(f"{top}/hers/f")
    alice.complete(f"{top}/hers/f")
    alice.chmod(f"{top}/hers", 0o700)
    _denied(lambda: bob.delete(top, recursive=True))
    assert alice.stat(f"{top}/hers/f").owner == "alice"
    alice.delete(f"{top}/hers", recursive=True)
    bob.delete(top, recursive=True)  # nothing of alice's left in it
    assert not root.exists(top)


def test_owner_comes_from_the_caller_and_chown_is_for_superusers(
    users: tuple[Client, Client, Client],
) -> None:
    root, alice, bob = users
    made = bob.create("/tmp/bobfile", owner="alice", group="wheel")
    assert made.owner == "bob"
    bob.complete("/tmp/bobfile")
    assert bob.mkdir("/tmp/bobdir", owner="alice") == ["/tmp/bobdir"]
    assert bob.stat("/tmp/bobdir").owner == "bob"
    assert "chown" in str(_denied(lambda: bob.chown("/tmp/bobfile", "alice")))
    _denied(lambda: alice.chown(f"{HOME}/secret", "bob"))
    assert root.chown("/tmp/bobfile", "alice").owner == "alice"  # the superuser may


def test_audit_log_records_changes_and_denials(
    cluster: tuple[MetaCluster, Path], users: tuple[Client, Client, Client]
) -> None:
    _, audit = cluster
    root, alice, bob = users
    _denied(lambda: list(bob.ls(HOME)))
    alice.mkdir(f"{HOME}/audited")
    wanted = (
        f"allowed=false ugi=bob ip=127.0.0.1 cmd=listStatus src={HOME} dst=null",
        f"allowed=true ugi=alice ip=127.0.0.1 cmd=mkdirs src={HOME}/audited dst=null",
    )
    deadline = time.monotonic() + 10
    text = ""
    while time.monotonic() < deadline:
        text = audit.read_text() if audit.exists() else ""
        if all(w in text for w in wanted):
            break
        time.sleep(0.05)
    for w in wanted:
        assert w in text, text[-2000:]


def test_an_acl_on_a_directory_reaches_the_guards_and_inheritance_on_every_shard(
    users: tuple[Client, Client, Client], cluster: tuple[MetaCluster, Path]
) -> None:
    """ACLs across shards: ``HOME`` (0700) lets bob through by a named entry, and the
    directories below it on the other shard follow (``SetTraverseGuard`` with the ACL); the
    mask (a chmod) takes it away again; a default ACL reaches a directory made across shards;
    only the owner may change it. ``HOME`` is as it was at the end."""
    root, alice, bob = users
    carol = cluster[0].client(user="carol")
    m: ShardMap = root.shard_map()

    def elsewhere(n: str) -> bool:
        return m.shard_for_directory(f"{HOME}/{n}") != m.shard_for_directory(HOME)

    sub, made = (f"{HOME}/" + _name(prefix, elsewhere) for prefix in ("aclsub", "aclmade"))
    alice.mkdir(sub)
    alice.chmod(sub, 0o777)
    try:
        _denied(lambda: list(bob.ls(sub)))
        info = alice.modify_acl_entries(HOME, "user:bob:--x")
        assert info.mode == 0o710
        assert [e.to_text() for e in info.acl] == ["user:bob:--x", "group::---"]
        assert list(bob.ls(sub)) == []
        _denied(lambda: list(carol.ls(sub)))  # no entry, no group: other's ---
        _denied(lambda: bob.modify_acl_entries(HOME, "user:bob:rwx"))  # not the owner
        alice.chmod(HOME, 0o700)  # the mask: --- for bob too, on every shard
        _denied(lambda: list(bob.ls(sub)))
        alice.chmod(HOME, 0o710)
        alice.modify_acl_entries(HOME, "default:user:bob:rwx")
        alice.mkdir(made, mode=0o750)  # a cross-shard mkdir: its records built with the ACL
        status = bob.acl_status(made)
        texts = [e.to_text() for e in status.entries]
        assert texts[:2] == ["user:bob:rwx", "group::---"] and "default:user:bob:rwx" in texts
        assert status.mode == 0o750  # the mask: the default rwx & the mode's r-x
        assert list(bob.ls(made)) == []
        _denied(lambda: bob.mkdir(f"{made}/bobs"))  # r-x: no w
    finally:
        root.remove_acl(HOME)
        root.chmod(HOME, 0o700)
    _denied(lambda: list(bob.ls(sub)))
    assert root.acl_status(HOME).entries == ()
