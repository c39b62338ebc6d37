"""Embedded upload workers over the SQLite queue: leases, acknowledgement order, clean-up."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage
from support.datasets import ct_dataset
from support.fake_dicomweb import FakeDicomWeb, Recorded, Reply, referenced
from support.net import wait_until
from support.spool import put_instance

from dicom_ingest.local import LocalPipeline
from ingest.adapters.dicomweb import HttpDicomWebClient, make_session
from ingest.adapters.spool import SpoolObjectStore
from ingest.adapters.sqlite_queue import SqliteQueue
from ingest.contracts.message import encode
from ingest.workers import Backoff, QueueWorkers
from uploader.service import UploadService


def workers(
    tmp_path: Path, address: str, lease: float, count: int = 2, delete_uploaded: bool = True
) -> tuple[SqliteQueue, SpoolObjectStore, QueueWorkers]:
    store = SpoolObjectStore(tmp_path / "spool")
    queue = SqliteQueue(tmp_path / "queue.sqlite3", max_attempts=5)
    client = HttpDicomWebClient(address, make_session("none"), timeout=(2.0, 10.0))
    service = UploadService(store, client, delete_uploaded=delete_uploaded)
    pool = QueueWorkers(
        queue, service, workers=count, batch=4, lease_seconds=lease, backoff=Backoff(0.05, 0.1)
    )
    return queue, store, pool


def test_slow_upload_keeps_its_lease_and_is_sent_once(
    tmp_path: Path, fake_dicomweb: FakeDicomWeb
) -> None:
    """An upload that outlasts the lease is not handed to a second worker meanwhile."""
    fake_dicomweb.responder = lambda r: Reply(200, referenced(r.sop_uids), delay=1.2)
    queue, store, pool = workers(tmp_path, fake_dicomweb.url, lease=0.3)
    message = put_instance(store, ct_dataset())
    queue.publish(encode(message))
    pool.start()
    try:
        wait_until(lambda: queue.stats().pending + queue.stats().in_flight == 0, 20, "upload")
    finally:
        pool.stop()
    assert len(fake_dicomweb.posts()) == 1
    assert queue.stats().dead == 0


def test_object_is_removed_only_after_the_acknowledgement(
    tmp_path: Path, fake_dicomweb: FakeDicomWeb
) -> None:
    queue, store, pool = workers(tmp_path, fake_dicomweb.url, lease=30.0, count=1)
    message = put_instance(store, ct_dataset())
    queue.publish(encode(message))
    order: list[str] = []
    real_ack, real_delete = queue.ack, store.delete
    queue.ack = lambda d, remember=False: order.append("ack") or real_ack(d, remember)  # type: ignore[method-assign]
    store.delete = lambda u, g: order.append("delete") or real_delete(u, g)  # type: ignore[method-assign]
    assert pool.work_once()
    assert order == ["ack", "delete"]
    assert not (store.root / message.study_instance_uid).exists()


def test_failed_uploads_keep_their_objects(tmp_path: Path, fake_dicomweb: FakeDicomWeb) -> None:
    fake_dicomweb.responder = lambda r: Reply(400, "rejected")
    queue, store, pool = workers(tmp_path, fake_dicomweb.url, lease=30.0, count=1)
    message = put_instance(store, ct_dataset())
    queue.publish(encode(message))
    assert pool.work_once()
    assert queue.stats().dead == 1
    with store.open(message.uri, message.generation) as handle:  # still there for a requeue
        assert handle.read()


def test_kept_uploads_are_not_sent_again_after_a_restart(
    tmp_path: Path, fake_dicomweb: FakeDicomWeb, pipelines: Callable[..., LocalPipeline]
) -> None:
    spool = tmp_path / "kept"
    first = pipelines(fake_dicomweb.url, spool=spool, keep_uploaded=True)
    assoc = AE(ae_title="PACS")
    assoc.add_requested_context(CTImageStorage)
    association = assoc.associate("127.0.0.1", first.receiver.port, ae_title="IMPORTADAPTER")
    for seed in range(2):
        assert association.send_c_store(ct_dataset(seed=seed)).Status == 0x0000
    association.release()
    wait_until(lambda: first.queue.stats().pending + first.queue.stats().in_flight == 0, 20, "up")
    first.stop()
    assert len(fake_dicomweb.posts()) >= 1
    assert len(list((spool / "objects").rglob("*@*.dcm"))) == 2  # kept

    second = pipelines(fake_dicomweb.url, spool=spool, keep_uploaded=True)
    stats = second.queue.stats()
    assert stats.pending + stats.in_flight + stats.retrying == 0  # nothing re-enqueued


def test_small_batches_go_one_at_a_time_and_later_messages_gather(
    tmp_path: Path, fake_dicomweb: FakeDicomWeb
) -> None:
    """A lone instance goes at once; while it is in flight, later ones wait and gather into
    the next request, and only a full batch takes another worker meanwhile."""
    release = threading.Event()

    def responder(request: Recorded) -> Reply:
        release.wait(20)
        return Reply(200, referenced(request.sop_uids))

    fake_dicomweb.responder = responder
    queue, store, pool = workers(tmp_path, fake_dicomweb.url, lease=30.0, count=4)
    study, series = generate_uid(), generate_uid()

    def publish(count: int) -> None:
        for _ in range(count):
            queue.publish(encode(put_instance(store, ct_dataset(study, series))))

    pool.start()
    try:
        publish(1)
        wait_until(lambda: len(fake_dicomweb.posts()) == 1, 10, "the first request")
        publish(3)  # less than a batch (4): no second request while the first is in flight
        time.sleep(0.3)
        assert len(fake_dicomweb.posts()) == 1
        assert queue.stats().pending == 3
        publish(2)  # now a full batch is waiting: a free worker takes it
        wait_until(lambda: len(fake_dicomweb.posts()) == 2, 10, "the full batch")
        assert len(fake_dicomweb.posts()[1].sop_uids) == 4
        release.set()
        wait_until(lambda: queue.stats().pending + queue.stats().in_flight == 0, 10, "the rest")
        assert [len(p.sop_uids) for p in fake_dicomweb.posts()] == [1, 4, 1]
        publish(1)  # idle again: a lone instance goes at once
        wait_until(lambda: len(fake_dicomweb.posts()) == 4, 10, "a lone instance")
    finally:
        release.set()
        pool.stop()
    assert queue.stats().dead == 0
