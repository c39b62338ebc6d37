"""A damaged queue database is kept aside and replaced by one rebuilt from the spool."""

from __future__ import annotations

import logging
import re
import sqlite3
import stat
from pathlib import Path

import pytest
from support.datasets import ct_dataset
from support.spool import put_instance

from dicom_ingest.startup import open_spool
from ingest.adapters.spool import SpoolObjectStore
from ingest.adapters.sqlite_queue import (
    QUEUE_FILE,
    QueueDamaged,
    SqliteQueue,
    is_damage,
    move_aside,
)
from ingest.contracts.message import decode, encode

DAMAGED = re.compile(r"^queue\.sqlite3\.damaged-\d{8}T\d{6}Z$")


def spool_with_queue(spool: Path, count: int) -> set[str]:
    """A spool of ``count`` objects whose queue holds their messages, as after a run."""
    spool.mkdir(mode=0o700)
    objects = SpoolObjectStore(spool)
    queue = SqliteQueue(spool / QUEUE_FILE)
    uids = set()
    for n in range(count):
        message = put_instance(objects, ct_dataset(seed=n))
        queue.publish(encode(message), message.attributes)
        uids.add(message.sop_instance_uid)
    queue.close()
    return uids


def queued_uids(queue: SqliteQueue) -> set[str]:
    return {decode(d.body).sop_instance_uid for d in queue.pull(100, 60)}


def test_a_failing_quick_check_moves_the_queue_aside_and_rebuilds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool"
    uids = spool_with_queue(spool, 3)
    checks: list[str] = []

    def failing_once(self: SqliteQueue) -> str | None:
        checks.append("checked")
        return "row 2 missing from index messages_object" if len(checks) == 1 else None

    monkeypatch.setattr(SqliteQueue, "quick_check", failing_once)
    with caplog.at_level(logging.INFO):
        _, queue = open_spool(spool, "IMPORTADAPTER", 5)
    try:
        [kept] = [p for p in spool.iterdir() if p.name.startswith("queue.sqlite3.damaged-")]
        assert DAMAGED.match(kept.name)
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
        assert stat.S_IMODE((spool / QUEUE_FILE).stat().st_mode) == 0o600
        [rebuild] = queue.rebuilds()
        assert rebuild.damaged_file == kept.name
        assert "row 2 missing from index" in rebuild.reason
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and kept.name in errors[0].getMessage()
        assert "rebuilding the queue from the spool" in errors[0].getMessage()
        assert queued_uids(queue) == uids  # every object enqueued again
    finally:
        queue.close()
    # The kept file still holds the old messages, for whoever wants to look.
    old = sqlite3.connect(kept)
    assert old.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 3
    old.close()


def test_a_sound_queue_is_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = tmp_path / "spool"
    uids = spool_with_queue(spool, 2)
    _, queue = open_spool(spool, "IMPORTADAPTER", 5)
    try:
        assert queue.quick_check() is None
        assert queue.rebuilds() == []
        assert queued_uids(queue) == uids
    finally:
        queue.close()
    assert [p.name for p in spool.iterdir() if "damaged" in p.name] == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_file_that_is_not_a_database_is_replaced(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    uids = spool_with_queue(spool, 2)
    (spool / QUEUE_FILE).write_bytes(b"\x5a" * 8192)
    with pytest.raises(QueueDamaged):
        SqliteQueue(spool / QUEUE_FILE)
    _, queue = open_spool(spool, "IMPORTADAPTER", 5)
    try:
        [rebuild] = queue.rebuilds()
        assert "does not open" in rebuild.reason
        assert queued_uids(queue) == uids
    finally:
        queue.close()


def test_a_locked_queue_is_not_taken_for_a_damaged_one(tmp_path: Path) -> None:
    path = tmp_path / QUEUE_FILE
    SqliteQueue(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError) as raised:
            other.execute("BEGIN IMMEDIATE")
        other.close()
        assert "locked" in str(raised.value)
        assert not is_damage(raised.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_move_aside_takes_the_wal_and_shm_files_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / QUEUE_FILE
    for part in ("", "-wal", "-shm"):
        path.with_name(path.name + part).write_bytes(b"x")
    first = move_aside(path, now=0.0)
    assert first.name == "queue.sqlite3.damaged-19700101T000000Z"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        first.name,
        first.name + "-shm",
        first.name + "-wal",
    ]
    path.write_bytes(b"y")
    second = move_aside(path, now=0.0)
    assert second != first and second.read_bytes() == b"y" and first.read_bytes() == b"x"
