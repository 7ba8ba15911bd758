"""The on-disk format version (``keelfs.storage.format``): set on a new directory, upgraded from
before versions, refused when newer or unreadable -- in the function, and in real processes,
which refuse to start with the reason on their last line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from keelfs.storage.format import (
    DATA_FORMAT,
    FORMAT_FILE,
    DataFormatError,
    check_data_format,
    read_data_format,
    write_data_format,
)


def test_a_new_directory_gets_the_current_format(tmp_path: Path) -> None:
    root = tmp_path / "new"
    assert check_data_format(root) == DATA_FORMAT
    assert read_data_format(root) == DATA_FORMAT
    assert (root / FORMAT_FILE).read_text() == f"keelfs-data-format {DATA_FORMAT}\n"
    assert check_data_format(root) == DATA_FORMAT  # again: unchanged


def test_data_from_before_versions_is_upgraded(tmp_path: Path) -> None:
    (tmp_path / "raft").mkdir()
    assert read_data_format(tmp_path) is None
    assert check_data_format(tmp_path) == 0
    assert read_data_format(tmp_path) == DATA_FORMAT
    assert (tmp_path / "raft").is_dir()


def test_a_newer_format_is_refused(tmp_path: Path) -> None:
    write_data_format(tmp_path, DATA_FORMAT + 1)
    with pytest.raises(DataFormatError, match="newer than this keelfs reads"):
        check_data_format(tmp_path)
    assert read_data_format(tmp_path) == DATA_FORMAT + 1  # left as it was


@pytest.mark.parametrize("text", ["", "keelfs-data-format x\n", "something else\n"])
def test_an_unreadable_format_file_is_refused(tmp_path: Path, text: str) -> None:
    (tmp_path / FORMAT_FILE).write_text(text)
    with pytest.raises(DataFormatError, match="does not name a keelfs data format"):
        check_data_format(tmp_path)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keelfs.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.process
def test_a_chunk_server_refuses_a_newer_format(tmp_path: Path) -> None:
    write_data_format(tmp_path, DATA_FORMAT + 1)
    out = _run("chunkserver", "--data", str(tmp_path), "--listen", "127.0.0.1:0")
    assert out.returncode == 1, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("keelfs chunkserver: failed:") and "newer than this keelfs" in last
    assert not (tmp_path / "blocks").exists()


@pytest.mark.process
def test_a_master_refuses_a_newer_format(tmp_path: Path) -> None:
    write_data_format(tmp_path, DATA_FORMAT + 1)
    out = _run(
        "master",
        "--id",
        "1",
        "--data",
        str(tmp_path),
        "--raft-listen",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.1:0",
        "--shard",
        "shard-1",
        "--config-member",
        "--peers",
        "1=127.0.0.1:1",
    )
    assert out.returncode == 1, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("keelfs master: failed:") and "newer than this keelfs" in last
    assert not (tmp_path / "raft").exists()
