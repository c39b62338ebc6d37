"""Reconciliation rebuilds exactly the message the receiver published, for objects that lack one."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from test_store_service import dataset, received, request

from ingest.adapters.spool import SpoolObjectStore
from ingest.adapters.sqlite_queue import SqliteQueue
from ingest.contracts.message import InstanceMessage, decode, encode
from receiver.reconcile import reconcile
from receiver.store import StoreService


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    (tmp_path / "spool").mkdir()
    return tmp_path / "spool"


def store_instances(spool: Path, tmp_path: Path, count: int) -> list[InstanceMessage]:
    queue = SqliteQueue(spool / "original.sqlite3")
    service = StoreService(SpoolObjectStore(spool), queue)
    for n in range(count):
        sop = f"1.2.3.4.{n + 10}"
        assert service.store(
            request(sop), received(tmp_path, dataset(sop, bytes([n, n])), sop=sop)
        ).ok
    messages = [decode(d.body) for d in queue.pull(100, 60)]
    queue.close()
    return messages


def without_time(message: InstanceMessage) -> InstanceMessage:
    return dataclasses.replace(message, received_at="")


def test_rebuilds_the_published_messages_once(spool: Path, tmp_path: Path) -> None:
    originals = store_instances(spool, tmp_path, 3)
    queue = SqliteQueue(spool / "fresh.sqlite3")  # the queue lost everything
    report = reconcile(SpoolObjectStore(spool), queue, "IMPORTADAPTER")
    assert (report.objects, report.enqueued, report.unusable) == (3, 3, 0)
    rebuilt = [decode(d.body) for d in queue.pull(100, 60)]
    key = lambda m: m.sop_instance_uid  # noqa: E731
    assert sorted(map(without_time, rebuilt), key=key) == sorted(
        map(without_time, originals), key=key
    )
    assert reconcile(SpoolObjectStore(spool), queue, "IMPORTADAPTER").enqueued == 0


def test_objects_with_live_or_dead_messages_are_left_alone(spool: Path, tmp_path: Path) -> None:
    originals = store_instances(spool, tmp_path, 2)
    queue = SqliteQueue(spool / "queue.sqlite3")
    for message in originals:
        queue.publish(encode(message), message.attributes)
    [first, _] = queue.pull(2, 60)
    assert queue.dead_letter(first, "rejected by the store")
    assert reconcile(SpoolObjectStore(spool), queue, "IMPORTADAPTER").enqueued == 0


def test_prune_removes_crash_leftovers_but_keeps_current_versions(
    spool: Path, tmp_path: Path
) -> None:
    [message] = store_instances(spool, tmp_path, 1)
    objects = SpoolObjectStore(spool)
    series = Path(message.uri.removeprefix("file://")).parent
    (series / "9.9.9@123.dcm").write_bytes(b"a version never linked")
    (series / ".9.9.9.dcm.124.link").symlink_to("9.9.9@124.dcm")
    os.symlink("8.8.8@1.dcm", series / "8.8.8.dcm")  # dangling
    assert objects.prune() == 3
    with objects.open(message.uri, message.generation) as handle:
        assert handle.read()
    assert sorted(p.name for p in series.iterdir()) == sorted(
        [Path(message.uri).name, f"{Path(message.uri).stem}@{message.generation}.dcm"]
    )
