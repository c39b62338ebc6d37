"""Patient data at rest is private: spool directories 0700, every file in them 0600."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage
from support.datasets import ct_dataset
from support.fake_dicomweb import FakeDicomWeb
from support.net import wait_until
from support.pipeline import settled
from support.receiving import stored_objects

from dicom_ingest.local import LocalPipeline
from ingest.adapters.spool import SpoolObjectStore
from ingest.adapters.sqlite_queue import SqliteQueue


def _tree(root: Path) -> Iterator[Path]:
    yield root
    yield from root.rglob("*")


def _modes(root: Path) -> dict[str, str]:
    """Every directory and file under root (itself included) with its mode; links are left
    out, their mode means nothing on Linux and their target is checked as a file."""
    found: dict[str, str] = {}
    for path in _tree(root):
        info = path.lstat()
        if stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode):
            found[str(path.relative_to(root.parent))] = oct(stat.S_IMODE(info.st_mode))
    return found


def _open(modes: dict[str, str]) -> dict[str, str]:
    return {
        name: mode
        for name, mode in modes.items()
        if mode
        != (
            "0o700"
            if not name.endswith((".dcm", ".sqlite3", "-wal", "-shm", ".reserve", ".lock"))
            else "0o600"
        )
    }


def test_spool_directories_and_files_are_private_under_an_open_umask(
    tmp_path: Path, fake_dicomweb: FakeDicomWeb, pipelines: Callable[..., LocalPipeline]
) -> None:
    spool = tmp_path / "deep" / "spool"  # parents created by the pipeline too
    previous = os.umask(0o022)
    try:
        pipeline = pipelines(fake_dicomweb.url, spool=spool, keep_uploaded=True)
        ae = AE(ae_title="PACS")
        ae.add_requested_context(CTImageStorage)
        association = ae.associate("127.0.0.1", pipeline.receiver.port, ae_title="IMPORTADAPTER")
        assert association.send_c_store(ct_dataset(seed=7)).Status == 0x0000
        association.release()
        wait_until(lambda: settled(pipeline), 20, "uploaded")
        # The queue database is open: its -wal and -shm files exist and are checked as well.
        modes = _modes(tmp_path / "deep")
    finally:
        os.umask(previous)
    assert len(stored_objects(pipeline)) == 1
    names = set(modes)
    assert {"deep/spool/objects", "deep/spool/incoming"} <= names, names
    queue_files = {n for n in names if ".sqlite3" in n}
    # The database, its -wal and -shm, and the reserve kept for a full disk.
    assert len(queue_files) == 4, queue_files
    assert _open(modes) == {}, modes


def test_an_earlier_open_spool_is_made_private_on_start(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    for directory in (spool, spool / "objects", spool / "incoming"):
        directory.mkdir(mode=0o755)
        directory.chmod(0o755)
    database = spool / "queue.sqlite3"
    SqliteQueue(database).close()
    database.chmod(0o644)
    SpoolObjectStore(spool)
    SqliteQueue(database).close()
    assert _open(_modes(spool)) == {}, _modes(spool)
