"""Staging files: anonymous where the file system has them, named otherwise."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from support.receiving import open_anonymous_files

from ingest.adapters.private_files import create_anonymous_file, is_anonymous, link_anonymous
from ingest.adapters.spool import SpoolObjectStore
from receiver import staging
from receiver.staging import StagingFiles

KEY = "1.2.3/1.2.3.4/1.2.3.4.5.dcm"


def test_an_anonymous_file_has_no_name_until_linked_and_is_private(tmp_path: Path) -> None:
    previous = os.umask(0o022)  # a permissive umask: the file is 0600 all the same
    try:
        made = create_anonymous_file(tmp_path)
    finally:
        os.umask(previous)
    assert made is not None
    fd, path = made
    try:
        os.write(fd, b"patient data")
        assert is_anonymous(path)
        assert list(tmp_path.iterdir()) == []
        assert open_anonymous_files(tmp_path) == [path]
        target = tmp_path / "kept.dcm"
        link_anonymous(path, target)
        assert target.read_bytes() == b"patient data"
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
    finally:
        os.close(fd)
    assert open_anonymous_files(tmp_path) == []
    assert [p.name for p in tmp_path.iterdir()] == ["kept.dcm"]


def test_an_anonymous_file_never_linked_leaves_nothing(tmp_path: Path) -> None:
    made = create_anonymous_file(tmp_path)
    assert made is not None
    os.write(made[0], b"x" * 100_000)
    os.close(made[0])
    assert list(tmp_path.iterdir()) == []
    assert open_anonymous_files(tmp_path) == []


def test_the_spool_links_an_anonymous_staging_file_into_place(tmp_path: Path) -> None:
    store = SpoolObjectStore(tmp_path / "spool")
    made = create_anonymous_file(store.staging_dir())
    assert made is not None
    fd, path = made
    try:
        os.write(fd, b"version one")
        stored = store.put(KEY, path, 11, "crc==")
    finally:
        os.close(fd)
    store.commit(stored)
    with store.open(stored.uri, stored.generation) as source:
        assert source.read() == b"version one"
    assert list(store.staging_dir().iterdir()) == []
    assert [p for p in store.root.rglob("*") if p.is_file()] != []  # version and its link


def test_staging_files_are_anonymous_when_asked_for(tmp_path: Path) -> None:
    files = StagingFiles(tmp_path, anonymous=True)
    staged = files.create()
    try:
        assert not staged.named and is_anonymous(staged.path)
        assert list(tmp_path.iterdir()) == []
    finally:
        os.close(staged.fd)
    files.remove(staged)  # nothing to remove: it went with its descriptor
    assert open_anonymous_files(tmp_path) == []


def test_named_staging_files_are_private_and_removed(tmp_path: Path) -> None:
    files = StagingFiles(tmp_path)
    staged = files.create()
    os.close(staged.fd)
    assert staged.named and staged.path.parent == tmp_path
    assert stat.S_IMODE(staged.path.stat().st_mode) == 0o600
    files.remove(staged)
    files.remove(staged)  # already gone (taken by the store): no error
    assert list(tmp_path.iterdir()) == []


def test_a_file_system_without_anonymous_files_gets_named_ones_and_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    refused: list[Path] = []

    def unsupported(directory: Path) -> tuple[int, Path] | None:
        refused.append(directory)
        return None

    monkeypatch.setattr(staging, "create_anonymous_file", unsupported)
    files = StagingFiles(tmp_path, anonymous=True)
    with caplog.at_level(logging.INFO, logger="receiver.staging"):
        made = [files.create() for _ in range(3)]
    for staged in made:
        os.close(staged.fd)
        assert staged.named
    assert len(list(tmp_path.iterdir())) == 3
    assert refused == [tmp_path]  # asked once, then named files only
    assert [r.getMessage() for r in caplog.records] == [
        "staging files are named: the file system has no anonymous files"
    ]


def test_a_file_system_error_is_not_taken_for_missing_support(tmp_path: Path) -> None:
    """A staging directory that is gone or replaced fails that file (0xA700 for its
    instance), as a named file would; it does not switch staging to named files."""
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        create_anonymous_file(tmp_path / "file")
    with pytest.raises(FileNotFoundError):
        create_anonymous_file(tmp_path / "missing")


def test_only_files_the_spool_takes_are_written_back_as_they_arrive(tmp_path: Path) -> None:
    assert StagingFiles(tmp_path, anonymous=True).write_back
    assert not StagingFiles(tmp_path).write_back  # early uploads read them; nothing fsyncs them
    assert staging._start_write_back is not None  # Linux: sync_file_range is found
    path = tmp_path / "data"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"\xa5" * 300_000)
        assert staging._start_write_back(fd, 0, 0, 2) == 0
        staging.start_write_back(fd)
    finally:
        os.close(fd)
    staging.start_write_back(fd)  # a hint: a closed descriptor raises nothing
    assert path.read_bytes() == b"\xa5" * 300_000
