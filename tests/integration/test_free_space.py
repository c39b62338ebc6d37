"""The free-space guard and the queue's reserve, on a small filesystem of the test's own.

A pynetdicom SCU sends to an in-process local pipeline whose spool is a tmpfs the test fills;
Orthanc is the DICOM store. The slow, whole-process cases are in ``test_full_disk.py``.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage
from support.cloud import CloudStack
from support.datasets import ct_dataset
from support.fake_dicomweb import FakeDicomWeb
from support.net import wait_until
from support.orthanc import Orthanc
from support.receiving import staged, stored_objects
from support.small_disk import fill, free_bytes, small_filesystem

from dicom_ingest.local import LocalPipeline
from ingest.adapters.disk_reserve import DiskReserve
from ingest.adapters.sqlite_queue import SqliteQueue
from receiver.free_space import Shortage

MiB = 1 << 20
WATERMARK_COMMENT = re.compile(r"Out of resources: \d+ bytes free, below --min_free_bytes")


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_filesystem(tmp_path / "disk", 48) as mount:
        yield mount


def scu() -> AE:
    ae = AE(ae_title="PACS")
    ae.add_requested_context(CTImageStorage)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    return ae


def in_orthanc(orthanc: Orthanc, sop: str) -> bool:
    reply = requests.get(
        f"{orthanc.dicomweb}/instances", params={"SOPInstanceUID": sop}, timeout=10
    )
    return reply.status_code == 200 and bool(reply.content.strip()) and bool(reply.json())


def guarded(
    pipelines: Callable[..., LocalPipeline], orthanc: Orthanc, disk: Path, watermark: int
) -> LocalPipeline:
    return pipelines(
        orthanc.dicomweb, spool=disk / "spool", min_free_bytes=watermark, min_free_percent=0.0
    )


def test_below_the_watermark_the_request_is_refused_with_a700_and_the_association_goes_on(
    disk: Path, pipelines: Callable[..., LocalPipeline], orthanc: Orthanc
) -> None:
    pipeline = guarded(pipelines, orthanc, disk, 8 * MiB)
    filler = fill(disk / "filler", leave=4 * MiB)
    assoc = scu().associate("127.0.0.1", pipeline.receiver.port, ae_title="IMPORTADAPTER")
    assert assoc.is_established
    refused = ct_dataset(seed=1)
    status = assoc.send_c_store(refused)
    assert status.Status == 0xA700
    assert WATERMARK_COMMENT.fullmatch(str(status.ErrorComment)), status.ErrorComment
    free = int(str(status.ErrorComment).split()[3])
    assert free < 8 * MiB
    assert assoc.is_established
    assert staged(pipeline) == [] and stored_objects(pipeline) == []

    filler.unlink()  # room again: the next request is stored, no restart
    accepted = ct_dataset(seed=2)
    assert assoc.send_c_store(accepted).Status == 0x0000
    assoc.release()
    wait_until(lambda: in_orthanc(orthanc, str(accepted.SOPInstanceUID)), 30, "upload")
    assert not in_orthanc(orthanc, str(refused.SOPInstanceUID))


def test_crossing_the_watermark_mid_dataset_refuses_it_and_removes_its_staging_file(
    disk: Path, pipelines: Callable[..., LocalPipeline], orthanc: Orthanc
) -> None:
    pipeline = guarded(pipelines, orthanc, disk, 16 * MiB)
    fill(disk / "filler", leave=24 * MiB)
    before = free_bytes(disk)
    assert before >= 20 * MiB  # above the watermark when the request arrives
    assoc = scu().associate("127.0.0.1", pipeline.receiver.port, ae_title="IMPORTADAPTER")
    big = ct_dataset(rows=2048, columns=2048, frames=2, seed=3)  # 16 MiB of pixel data
    status = assoc.send_c_store(big)
    assert status.Status == 0xA700
    assert WATERMARK_COMMENT.fullmatch(str(status.ErrorComment)), status.ErrorComment
    assert assoc.is_established
    assert staged(pipeline) == []
    assert free_bytes(disk) >= before - MiB  # the partial file is gone

    small = ct_dataset(seed=4)
    assert assoc.send_c_store(small).Status == 0x0000
    assoc.release()
    wait_until(lambda: in_orthanc(orthanc, str(small.SOPInstanceUID)), 30, "upload")


def test_a_write_that_finds_the_disk_full_is_refused_with_a700(
    disk: Path, pipelines: Callable[..., LocalPipeline], orthanc: Orthanc
) -> None:
    pipeline = guarded(pipelines, orthanc, disk, 0)  # no watermark: the write itself fails
    fill(disk / "filler", leave=8 * MiB)
    assoc = scu().associate("127.0.0.1", pipeline.receiver.port, ae_title="IMPORTADAPTER")
    status = assoc.send_c_store(ct_dataset(rows=2048, columns=2048, frames=2, seed=5))
    assert status.Status == 0xA700
    assert str(status.ErrorComment) == "Out of resources: spool full (No space left on device)"
    assert assoc.is_established
    assert staged(pipeline) == []
    small = ct_dataset(seed=6)
    assert assoc.send_c_store(small).Status == 0x0000
    assoc.release()
    wait_until(lambda: in_orthanc(orthanc, str(small.SOPInstanceUID)), 30, "upload")


def _full_queue(disk: Path, reserve: DiskReserve | None) -> SqliteQueue:
    """A queue with leased deliveries on a disk with no byte free and an empty log file, so
    the next commit needs new blocks."""
    path = disk / "queue.sqlite3"
    queue = SqliteQueue(path, durable_commits=False, reserve=reserve)
    for n in range(20):
        queue.publish(b"x" * 2000, {"object_uri": f"file:///o/{n}.dcm", "object_generation": "1"})
    with sqlite3.connect(path) as other:  # what a checkpoint by another process leaves
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    fill(disk / "filler")
    assert free_bytes(disk) < 4096
    return queue


def test_without_a_reserve_a_full_disk_stops_the_queue_until_space_returns(disk: Path) -> None:
    queue = _full_queue(disk, None)
    with pytest.raises(sqlite3.OperationalError, match="full"):
        queue.pull(20, 60.0)
    (disk / "filler").unlink()
    # The failed commit left no transaction open: the queue works again at once.
    deliveries = queue.pull(20, 60.0)
    assert len(deliveries) == 20
    assert all(queue.ack(d) for d in deliveries)
    queue.close()


def test_the_queue_settles_on_a_full_disk_by_giving_up_its_reserve(disk: Path) -> None:
    reserve = DiskReserve.beside(disk / "queue.sqlite3")
    queue = _full_queue(disk, reserve)
    # The reserve was allocated when the queue opened, before the disk filled.
    deliveries = queue.pull(20, 60.0)
    assert len(deliveries) == 20
    assert not reserve.held()
    acked = [queue.ack(d) for d in deliveries[:10]]
    retried = [queue.retry(d, 0.0, "store unreachable") for d in deliveries[10:15]]
    dead = [queue.dead_letter(d, "refused") for d in deliveries[15:]]
    assert all(acked + retried + dead)
    stats = queue.stats()
    assert (stats.pending + stats.retrying, stats.dead) == (5, 5)

    (disk / "filler").unlink()

    def reserve_back() -> bool:
        queue.release_leases()  # any settling commit puts the reserve back when there is room
        return reserve.held()

    wait_until(reserve_back, 30, "the reserve re-allocated")
    assert reserve.path.stat().st_blocks * 512 >= reserve.size  # allocated, not a hole
    queue.close()


@pytest.mark.parametrize(
    ("shortage", "comment"),
    [
        (Shortage(1023, 1 << 40, "--min_free_bytes", "1024"), "Out of resources: 1023 bytes"),
        (
            Shortage(1 << 40, 1 << 50, "--min_free_bytes", str(2 << 40)),
            "Out of resources: 1048576 MiB",
        ),
        (Shortage(49, 1000, "--min_free_percent", "5"), "Out of resources: 4.9% free"),
    ],
)
def test_the_refusal_comment_fits_an_error_comment(shortage: Shortage, comment: str) -> None:
    text = shortage.comment()
    assert text.startswith(comment) and len(text) <= 64, text
    assert shortage.flag in text


@pytest.mark.slow
def test_the_cloud_receiver_keeps_the_same_watermark_on_its_staging_disk(
    disk: Path, cloud_stacks: Callable[..., CloudStack], fake_dicomweb: FakeDicomWeb
) -> None:
    stack = cloud_stacks(fake_dicomweb.url, push=False)
    tap = stack.tap()
    receiver = stack.start_receiver(
        spool_dir=disk / "spool", min_free_bytes=8 * MiB, min_free_percent=0.0
    )
    filler = fill(disk / "filler", leave=4 * MiB)
    assoc = scu().associate("127.0.0.1", receiver.receiver.port, ae_title="IMPORTADAPTER")
    status = assoc.send_c_store(ct_dataset(seed=7))
    assert status.Status == 0xA700
    assert WATERMARK_COMMENT.fullmatch(str(status.ErrorComment)), status.ErrorComment
    assert list((disk / "spool" / "incoming").iterdir()) == []
    assert stack.pull(tap) == []  # nothing written to the bucket, nothing published

    filler.unlink()
    accepted = ct_dataset(seed=8)
    assert assoc.send_c_store(accepted).Status == 0x0000
    assoc.release()
    [message] = stack.pull(tap)
    assert message.message.attributes["sop_instance_uid"] == str(accepted.SOPInstanceUID)
