"""A spool moved elsewhere with its queue: start-up re-points the queue at its objects."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from support.datasets import ct_dataset
from support.spool import put_instance

from dicom_ingest.startup import open_spool, repoint_moved
from ingest.adapters.spool import SpoolObjectStore
from ingest.adapters.sqlite_queue import QUEUE_FILE, SqliteQueue
from ingest.contracts.message import decode, encode


def moved_spool(tmp_path: Path, queued: int, settled: int) -> Path:
    """A spool whose queue holds ``queued`` messages and ``settled`` records of settled
    uploads (objects kept), moved to another directory."""
    old = tmp_path / "old"
    old.mkdir(mode=0o700)
    objects = SpoolObjectStore(old)
    queue = SqliteQueue(old / QUEUE_FILE)
    for n in range(queued + settled):
        message = put_instance(objects, ct_dataset(seed=n))
        queue.publish(encode(message), message.attributes)
    for delivery in queue.pull(settled, 60) if settled else []:
        assert queue.ack(delivery, remember=True)
    queue.close()
    new = tmp_path / "new"
    old.rename(new)
    return new


def test_settled_records_alone_are_re_pointed_and_said(tmp_path: Path) -> None:
    spool = moved_spool(tmp_path, queued=0, settled=2)
    objects, queue = SpoolObjectStore(spool), SqliteQueue(spool / QUEUE_FILE)
    line = repoint_moved(objects, queue)
    assert line is not None
    assert line.startswith("spool moved: 0 messages (queued or dead-lettered) and 2 records")
    assert repoint_moved(objects, queue) is None  # done once
    queue.close()


def test_open_spool_re_points_before_it_reconciles(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = moved_spool(tmp_path, queued=3, settled=1)
    with caplog.at_level(logging.INFO):
        objects, queue = open_spool(spool, "IMPORTADAPTER", 5)
    moved = [r.getMessage() for r in caplog.records if r.getMessage().startswith("spool moved")]
    assert moved == [
        "spool moved: 3 messages (queued or dead-lettered) and 1 records of settled uploads"
        f" re-pointed at its objects in {objects.root}"
    ]
    assert not [r for r in caplog.records if "reconciled" in r.getMessage()]
    deliveries = queue.pull(10, 60)
    assert len(deliveries) == 3
    for delivery in deliveries:
        message = decode(delivery.body)
        assert message.uri.startswith(objects.uri_prefix)
        with objects.open(message.uri, message.generation) as handle:
            assert handle.read(132)[128:] == b"DICM"
    queue.close()
