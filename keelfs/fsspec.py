"""keelfs as an fsspec filesystem: ``fsspec.filesystem("keelfs")``, ``keelfs://`` URLs.

Registered under the protocol ``keelfs`` through the ``fsspec.specs`` entry point, so every
tool that reads files through fsspec (pandas, dask, pyarrow, xarray, ...) can use it::

    import pandas as pd
    df = pd.read_csv("keelfs://127.0.0.1:7001/data/table.csv")

A URL names any metadata node (config server or master) as ``host:port``; ``keelfs:///path``
uses what ``keelfs.connect`` finds: ``$KEELFS_ADDRESS``, else the running ``keelfs
local-cluster``, else ``127.0.0.1:7001``. ``mv`` is keelfs's atomic rename (across
shards too); files are streamed (``Client.open``), reads are seekable. The storage option
``user`` names the user without TLS (default: ``$KEELFS_USER``, else the OS user);
``chmod``/``chown`` change permissions and ownership, and ``info`` shows them. ``checksum``
and ``ukey`` are the file's HDFS ``MD5-of-MD5-of-CRC32C`` (``file_checksum``).
"""

from __future__ import annotations

import io
from typing import Any

from fsspec import AbstractFileSystem
from fsspec.utils import infer_storage_options

import keelfs
from keelfs.client.connect import client_tls
from keelfs.datapath.file_checksum import FileChecksum
from keelfs.errors import (
    AlreadyExists,
    DirectoryNotEmpty,
    InvalidArgument,
    IsADirectory,
    NotFound,
    PermissionDenied,
)
from keelfs.meta.records import FileInfo

__all__ = ["KeelFileSystem"]


class KeelFileSystem(AbstractFileSystem):
    protocol = "keelfs"
    root_marker = "/"

    def __init__(
        self,
        address: str | None = None,
        *,
        tls_dir: str | None = None,
        user: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_ca: str | None = None,
        **kwargs: Any,
    ) -> None:
        """``address`` as ``keelfs.connect`` takes it; the TLS storage options as the CLI's
        flags (``tls_dir`` + ``user``, or ``tls_cert``/``tls_key``/``tls_ca``; else the
        ``KEELFS_TLS_*`` variables, else the running local cluster's record). ``user`` is also who
        the client says it is without TLS (default ``$KEELFS_USER``, else the OS user)."""
        super().__init__(**kwargs)
        self.address = address
        tls = client_tls(tls_dir=tls_dir, user=user, cert=tls_cert, key=tls_key, ca=tls_ca)
        self.client = keelfs.connect(address, tls=tls, user=user)

    def close(self) -> None:
        """Close the client (its connections, session and I/O thread) and drop this file
        system from fsspec's instance cache, so that the next ``fsspec.filesystem("keelfs",
        ...)`` with the same options makes a fresh one."""
        self.client.close()
        if type(self)._cache.get(self._fs_token) is self:
            del type(self)._cache[self._fs_token]

    # -- paths --------------------------------------------------------------------------------
    @classmethod
    def _strip_protocol(cls, path: str | list[str]) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith("keelfs://"):
            path = path[len("keelfs://") :]
            path = path[path.find("/") :] if "/" in path else "/"
        path = "/" + path.strip("/")
        return path

    @staticmethod
    def _get_kwargs_from_urls(path: str) -> dict[str, Any]:
        host = infer_storage_options(path).get("host")
        port = infer_storage_options(path).get("port")
        return {"address": f"{host}:{port}"} if host and port else {}

    # -- metadata -----------------------------------------------------------------------------
    @staticmethod
    def _entry(i: FileInfo) -> dict[str, Any]:
        return {
            "name": i.path,
            "size": 0 if i.is_dir else i.length,
            "type": "directory" if i.is_dir else "file",
            "mtime": i.mtime / 1000,
            "replication": i.replication,
            "mode": i.mode,
            "owner": i.owner,
            "group": i.group,
        }

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        try:
            entries = [self._entry(e) for e in self.client.ls(path)]
        except NotFound:
            raise FileNotFoundError(path) from None
        return entries if detail else [e["name"] for e in entries]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        try:
            return self._entry(self.client.stat(path))
        except NotFound:
            raise FileNotFoundError(path) from None

    def chmod(self, path: str, mode: int) -> None:
        """Set the permission bits of ``path`` (owner or superuser only)."""
        path = self._strip_protocol(path)
        try:
            self.client.chmod(path, mode)
        except NotFound:
            raise FileNotFoundError(path) from None
        except PermissionDenied as exc:
            raise PermissionError(str(exc)) from None
        self.invalidate_cache(path)

    def chown(self, path: str, owner: str | None = None, group: str | None = None) -> None:
        """Set the owner (superuser only) and/or group of ``path``."""
        path = self._strip_protocol(path)
        try:
            self.client.chown(path, owner, group)
        except NotFound:
            raise FileNotFoundError(path) from None
        except PermissionDenied as exc:
            raise PermissionError(str(exc)) from None
        self.invalidate_cache(path)

    def file_checksum(self, path: str) -> FileChecksum:
        """The file's HDFS ``MD5-of-MD5-of-CRC32C`` (``Client.checksum``: from the chunk servers'
        stored CRCs, the data unread)."""
        path = self._strip_protocol(path)
        try:
            return self.client.checksum(path)
        except NotFound:
            raise FileNotFoundError(path) from None
        except PermissionDenied as exc:
            raise PermissionError(str(exc)) from None

    def checksum(self, path: str) -> int:
        """fsspec's "unique value for the current version of a file": the file checksum as an
        int (equal for equal content written with equal block sizes); a directory's is
        fsspec's default (of its ``info``)."""
        if self.isdir(path):
            return int(super().checksum(path))
        return int(self.file_checksum(path).hex, 16)

    def ukey(self, path: str) -> str:
        """What tells whether a file changed (fsspec's caches): ``<algorithm>:<hex>`` of the file
        checksum; a directory's is fsspec's default."""
        if self.isdir(path):
            return str(super().ukey(path))
        c = self.file_checksum(path)
        return f"{c.algorithm}:{c.hex}"

    def modified(self, path: str) -> Any:
        import datetime

        return datetime.datetime.fromtimestamp(self.info(path)["mtime"], datetime.UTC)

    created = modified

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        path = self._strip_protocol(path)
        try:
            self.client.mkdir(path, parents=create_parents)
        except AlreadyExists:
            raise FileExistsError(path) from None
        except NotFound:
            raise FileNotFoundError(path) from None

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        path = self._strip_protocol(path)
        try:
            there = self.client.stat(path)  # one read (put and copy call this for every file)
        except NotFound:
            try:
                self.client.mkdir(path, parents=True)  # a directory there by now is success
            except AlreadyExists:  # a file took the name meanwhile
                raise FileExistsError(path) from None
            return
        if not exist_ok or not there.is_dir:
            raise FileExistsError(path)

    def rmdir(self, path: str) -> None:
        path = self._strip_protocol(path)
        try:
            self.client.delete(path)
        except NotFound:
            raise FileNotFoundError(path) from None
        except DirectoryNotEmpty:
            raise OSError(f"{path}: directory not empty") from None

    def rm_file(self, path: str) -> None:
        path = self._strip_protocol(path)
        try:
            self.client.delete(path)
        except NotFound:
            raise FileNotFoundError(path) from None

    _rm = rm_file

    def rm(
        self, path: str | list[str], recursive: bool = False, maxdepth: int | None = None
    ) -> None:
        if maxdepth is None and recursive:
            for p in [path] if isinstance(path, str) else path:
                p = self._strip_protocol(p)
                expanded = self.expand_path(p, recursive=False)
                for q in expanded:
                    try:
                        self.client.delete(q, recursive=True)
                    except NotFound:
                        raise FileNotFoundError(q) from None
            return
        super().rm(path, recursive=recursive, maxdepth=maxdepth)

    def mv(self, path1: str, path2: str, recursive: bool = False, **kwargs: Any) -> None:
        """Atomic rename (the whole tree for a directory)."""
        src, dst = self._strip_protocol(path1), self._strip_protocol(path2)
        try:
            self.client.rename(src, dst)
        except NotFound:
            raise FileNotFoundError(src) from None

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        src, dst = self._strip_protocol(path1), self._strip_protocol(path2)
        try:
            fin = self.client.open(src, "rb")
        except IsADirectory:
            self.makedirs(dst, exist_ok=True)
            return
        except NotFound:
            raise FileNotFoundError(src) from None
        with fin:
            self._parents(dst)
            with self.client.open(dst, "wb", overwrite=True) as fo:
                while piece := fin.read(1 << 22):
                    fo.write(piece)

    def _parents(self, path: str) -> None:
        """Writing a file creates its missing parent directories (as fsspec's other
        filesystems do when they write)."""
        parent = path.rsplit("/", 1)[0] or "/"
        if parent == "/":
            return
        try:
            if self.client.stat(parent).is_dir:
                return  # a read: cheaper than mkdir's Raft commit when it is there already
        except NotFound:
            pass
        self.client.mkdir(parent, parents=True)

    # -- data ---------------------------------------------------------------------------------
    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> io.IOBase:
        path = self._strip_protocol(path)
        if "r" in mode:
            try:
                return self.client.open(path, "rb")
            except NotFound:
                raise FileNotFoundError(path) from None
            except IsADirectory:
                raise IsADirectoryError(path) from None
            except PermissionDenied as exc:
                raise PermissionError(str(exc)) from None
        if "a" in mode:
            return self._append(path)
        if "x" in mode and self.exists(path):
            raise FileExistsError(path)
        self._parents(path)
        try:
            return self.client.open(path, "wb", overwrite=True)
        except NotFound:
            raise FileNotFoundError(path) from None

    def _append(self, path: str) -> io.IOBase:
        """Mode ``"ab"``: append to ``path``, created (empty) first if it does not exist, as
        Python's ``open(path, "ab")``."""
        self._parents(path)
        for _ in range(3):
            try:
                return self.client.open(path, "ab")
            except NotFound:
                pass
            except IsADirectory:
                raise IsADirectoryError(path) from None
            except PermissionDenied as exc:
                raise PermissionError(str(exc)) from None
            try:
                return self.client.open(path, "wb")
            except AlreadyExists:
                continue  # created meanwhile: append to it
        raise FileExistsError(path)

    def truncate(self, path: str, length: int) -> None:
        """Shorten file ``path`` to ``length`` bytes (``Client.truncate``; ``ValueError``
        beyond its end: a file is never grown)."""
        path = self._strip_protocol(path)
        try:
            self.client.truncate(path, length)
        except NotFound:
            raise FileNotFoundError(path) from None
        except IsADirectory:
            raise IsADirectoryError(path) from None
        except PermissionDenied as exc:
            raise PermissionError(str(exc)) from None
        except InvalidArgument as exc:
            raise ValueError(str(exc)) from None
        self.invalidate_cache(path)

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        path = self._strip_protocol(path)
        try:
            with self.client.open(path, "rb") as f:
                size = f.length
                lo = 0 if start is None else (start if start >= 0 else max(0, size + start))
                hi = size if end is None else (end if end >= 0 else max(0, size + end))
                f.seek(lo)
                return f.read(max(0, hi - lo))
        except NotFound:
            raise FileNotFoundError(path) from None
        except PermissionDenied as exc:
            raise PermissionError(str(exc)) from None

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        path = self._strip_protocol(path)
        if mode == "create" and self.exists(path):
            raise FileExistsError(path)
        self._parents(path)
        self.client.write_bytes(path, value, overwrite=True)
