"""Backup and restore of a cluster's metadata: ``keelfs admin backup`` and ``keelfs admin
restore`` (docs/operations.md, "Back up and restore the metadata").

A backup is a directory::

    manifest.json          what was taken: each group's index, term, members, size, SHA-256
    g-<group>.image        each group's state-machine image (the Raft snapshot format)

:func:`take_backup` asks the leader of every group (the config group and each shard of the
ShardMap) for its image at one committed index (``Node.Backup``: a read barrier, then the
state as of its applied index), verifies each stream's size and SHA-256, and writes the
manifest last: a directory without ``manifest.json`` is not a backup. Every file is private
(0600 in a 0700 directory): the config group's image holds the block-token keys.

Each group's image is consistent by itself. The groups are taken one after another, not at one
instant: a cross-shard operation (a rename between shards, a transaction) running meanwhile may
be in one shard's image and not yet in another's. Both halves keep the transaction's record, so
the restored cluster resolves it as the running one would have (the coordinator's decision, or
abort when none was recorded) -- the same recovery as after a crash of every master at once.

:func:`restore_node` builds one metadata node's data directory of a NEW cluster from a backup:
each group it is to host is created from its image as a Raft snapshot (``RocksEngine.
restore_group``) with the new members, and its state machine is rebuilt from it at the first
start. Node ids and shard names are the backup's (the ShardMap names them); addresses are
new (``peers``; masters register their client addresses again when they start). Two gaps keep
the restored cluster apart from what the old one did after the backup, against chunk servers
that keep their data:

- terms start :data:`TERM_GAP` above the backup's: chunk servers fence commands by a shard's
  term (``keelfs.chunk.fencing``) and may have seen the old cluster's later terms;
- the cluster-wide id counter (block ids among them) moves :data:`ID_GAP` ahead: blocks the old
  cluster allocated after the backup still sit on the chunk servers, and a new block must not
  reuse their ids.

Blocks written after the backup are referenced by no restored file; they are orphans, deleted
as any unreferenced block (``docs/design``: a block goes only when nothing can reference it).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc

from keelfs.client.admin_client import AdminClient
from keelfs.errors import KeelError, NotLeader
from keelfs.meta.kvstore import SnapshotReader, encode_snapshot
from keelfs.meta.shardmap import advance_tx_ids
from keelfs.raft.messages import ConfState, SnapshotMeta
from keelfs.rpc import grpc_errors
from keelfs.rpc.pb import meta_pb2 as pb
from keelfs.rpc.wire import CONFIG_GROUP
from keelfs.storage.format import check_data_format
from keelfs.storage.private import create_private, private_dir
from keelfs.storage.rocks import RocksEngine

__all__ = [
    "BACKUP_FORMAT",
    "ID_GAP",
    "MANIFEST",
    "TERM_GAP",
    "BackupError",
    "GroupImage",
    "Manifest",
    "read_manifest",
    "restore_node",
    "take_backup",
]

BACKUP_FORMAT = 1
MANIFEST = "manifest.json"
TERM_GAP = 1 << 32
"""How far above the backup's term a restored group's term starts."""
ID_GAP = 1 << 40
"""How far the restored cluster-wide id counter moves ahead of the backup's."""
_READ_CHUNK = 1 << 20


class BackupError(Exception):
    """A backup cannot be taken, read or restored (the message says why)."""


@dataclass(frozen=True)
class GroupImage:
    group: str
    file: str
    index: int
    term: int
    voters: list[int]
    learners: list[int]
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    format: int
    created: str
    map_version: int
    shards: list[str]
    groups: dict[str, GroupImage]

    def to_json(self) -> str:
        out = asdict(self)
        return json.dumps(out, indent=2, sort_keys=True) + "\n"


def _image_name(group: str) -> str:
    return "g-" + quote(group, safe="") + ".image"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- taking a backup ------------------------------------------------------------------------------


def take_backup(
    cluster: AdminClient, dest: Path, *, timeout: float = 600.0, attempts: int = 5
) -> Manifest:
    """Write a backup of every group to ``dest`` (absent or empty); the manifest."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} exists and is not an empty directory")
    private_dir(dest)
    cluster.load()
    shard_map = cluster.shard_map
    groups = [CONFIG_GROUP, *sorted(shard_map.shards)]
    images = {g: _backup_group(cluster, g, dest, timeout, attempts) for g in groups}
    manifest = Manifest(
        format=BACKUP_FORMAT,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        map_version=shard_map.version,
        shards=sorted(shard_map.shards),
        groups=images,
    )
    tmp = dest / (MANIFEST + ".tmp")
    with create_private(tmp) as f:
        f.write(manifest.to_json().encode())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, dest / MANIFEST)
    _fsync_dir(dest)
    return manifest


def _backup_group(
    cluster: AdminClient, group: str, dest: Path, timeout: float, attempts: int
) -> GroupImage:
    """One group's image from its leader, retried on a leader change or a broken stream."""
    last: Exception | None = None
    for _ in range(attempts):
        leader = cluster.wait_leader(group, 30.0).leader
        address = cluster.registry.get(leader) or cluster.load().registry.get(leader)
        if address is None:
            raise BackupError(f"the leader of {group}, node {leader}, has no known address")
        try:
            return _stream_group(cluster, address, group, dest, timeout)
        except (NotLeader, _BrokenStream) as exc:
            last = exc
    raise BackupError(f"{group}: no complete image after {attempts} attempts ({last})")


class _BrokenStream(Exception):
    pass


def _stream_group(
    cluster: AdminClient, address: str, group: str, dest: Path, timeout: float
) -> GroupImage:
    stub = cluster.client._stub(address, "Node")
    name = _image_name(group)
    tmp = dest / (name + ".tmp")
    digest = hashlib.sha256()
    size = 0
    first: pb.BackupChunk | None = None
    last: pb.BackupChunk | None = None
    try:
        with create_private(tmp) as f:
            for message in stub.Backup(pb.BackupRequest(group=group), timeout=timeout):
                if first is None:
                    first = message
                    continue
                if message.last:
                    last = message
                    break
                digest.update(message.data)
                size += len(message.data)
                f.write(message.data)
            f.flush()
            os.fsync(f.fileno())
    except grpc.RpcError as err:
        tmp.unlink(missing_ok=True)
        keel = grpc_errors.error_from_rpc(err)
        if isinstance(keel, NotLeader):
            raise keel from None
        if keel is not None:
            raise BackupError(f"{group} at {address}: {keel}") from None
        raise _BrokenStream(f"{group} at {address}: {err.code().name}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if first is None or last is None or last.size != size or last.sha256 != digest.hexdigest():
        tmp.unlink(missing_ok=True)
        raise _BrokenStream(f"{group} at {address}: the image arrived incomplete")
    os.replace(tmp, dest / name)
    return GroupImage(
        group=group,
        file=name,
        index=first.index,
        term=first.term,
        voters=sorted(first.voters),
        learners=sorted(first.learners),
        size=size,
        sha256=last.sha256,
    )


# -- reading and restoring ------------------------------------------------------------------------


def read_manifest(src: Path, *, verify: bool = True) -> Manifest:
    """The manifest of the backup in ``src``; with ``verify``, every image's size and SHA-256
    checked too (``BackupError`` naming what is wrong)."""
    try:
        raw: dict[str, Any] = json.loads((src / MANIFEST).read_text())
    except FileNotFoundError:
        raise BackupError(f"{src} holds no {MANIFEST}: not a (complete) keelfs backup") from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{src / MANIFEST} cannot be read: {exc}") from None
    if raw.get("format") != BACKUP_FORMAT:
        raise BackupError(
            f"{src} is backup format {raw.get('format')!r}; this keelfs reads {BACKUP_FORMAT}"
        )
    groups = {g: GroupImage(**image) for g, image in raw["groups"].items()}
    manifest = Manifest(
        format=raw["format"],
        created=raw["created"],
        map_version=raw["map_version"],
        shards=list(raw["shards"]),
        groups=groups,
    )
    if verify:
        for image in groups.values():
            _verify_image(src, image)
    return manifest


def _verify_image(src: Path, image: GroupImage) -> None:
    digest = hashlib.sha256()
    size = 0
    try:
        with (src / image.file).open("rb") as f:
            while chunk := f.read(_READ_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise BackupError(f"{src / image.file}: {exc.strerror or exc}") from None
    if size != image.size or digest.hexdigest() != image.sha256:
        raise BackupError(
            f"{src / image.file} does not match the manifest (size {size}, expected "
            f"{image.size}; or its SHA-256 differs): the backup is damaged"
        )


def _read_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(_READ_CHUNK):
            yield chunk


def _config_image(path: Path, index: int) -> Iterator[bytes]:
    """The config group's image with the cluster-wide id counter moved :data:`ID_GAP` ahead."""
    reader = SnapshotReader(_read_chunks(path))
    return encode_snapshot(advance_tx_ids(iter(reader), ID_GAP), index)


def restore_node(
    src: Path,
    data_dir: Path,
    node_id: int,
    peers: Mapping[int, str],
    groups: Iterable[str] | None = None,
) -> list[str]:
    """Build the data directory of metadata node ``node_id`` of a new cluster from the backup
    in ``src``: a member of each of ``groups`` (default: every group of the backup), whose
    voters are ``peers`` (node id -> Raft address, this node among them: the same map on
    every member of a group). ``data_dir`` must be absent or empty. The groups restored."""
    manifest = read_manifest(src)
    wanted = list(manifest.groups) if groups is None else list(groups)
    unknown = [g for g in wanted if g not in manifest.groups]
    if unknown:
        known = ", ".join(manifest.groups)
        raise BackupError(f"the backup holds no group {', '.join(unknown)} (it holds {known})")
    if node_id not in peers:
        raise BackupError(f"node {node_id} is not among the peers {sorted(peers)}")
    if data_dir.exists() and any(data_dir.iterdir()):
        raise BackupError(f"{data_dir} is not empty: restore builds a new node's directory")
    private_dir(data_dir)
    check_data_format(data_dir)
    engine = RocksEngine(data_dir / "raft")
    try:
        for group in wanted:
            image = manifest.groups[group]
            meta = SnapshotMeta(
                index=image.index,
                term=image.term + TERM_GAP,
                conf=ConfState(frozenset(peers)),
            )
            path = src / image.file
            chunks = (
                _config_image(path, image.index) if group == CONFIG_GROUP else _read_chunks(path)
            )
            engine.restore_group(group, meta, chunks, dict(peers))
    except KeelError as exc:
        raise BackupError(str(exc)) from None
    finally:
        engine.close()
    return wanted
