"""Log lines an operator can read: what each event leaves in the log, exactly.

- an association: one INFO line, each figure once (in its fields, not again in the text);
- an upload that fails: one WARNING when it first fails, one INFO when it recovers, nothing
  per attempt in between; while messages retry, a summary of how many and why;
- a dead letter: one ERROR line with its reason, whichever path dead-lettered it;
- a success: DEBUG.
Real queues, a real HTTP store (the fake DICOMweb server, which can answer 503 and 400 on
demand), real associations.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage
from support.datasets import ct_dataset
from support.fake_dicomweb import FakeDicomWeb, Recorded, Reply, referenced
from support.net import wait_until
from support.spool import put_instance

from dicom_ingest.local import LocalPipeline
from ingest.adapters.dicomweb import HttpDicomWebClient, make_session
from ingest.adapters.spool import SpoolObjectStore
from ingest.adapters.sqlite_queue import QUEUE_FILE, SqliteQueue
from ingest.contracts import metrics
from ingest.contracts.message import encode
from ingest.workers import Backoff, QueueWorkers, report_dead_letter
from uploader.service import UploadService


class Switch:
    """A store that answers 503 until told otherwise, then stores everything."""

    def __init__(self) -> None:
        self.down = True

    def __call__(self, request: Recorded) -> Reply:
        if request.method != "POST":
            return Reply(200, [])
        if self.down:
            return Reply(503, "Service Unavailable")
        return Reply(200, referenced(request.sop_uids))


def pool(
    tmp_path: Path, address: str, summary_seconds: float = 60.0, max_attempts: int = 50
) -> tuple[SqliteQueue, SpoolObjectStore, QueueWorkers]:
    store = SpoolObjectStore(tmp_path / "spool")
    queue = SqliteQueue(
        tmp_path / "queue.sqlite3", max_attempts=max_attempts, on_dead_letter=report_dead_letter
    )
    client = HttpDicomWebClient(address, make_session("none"), timeout=(2.0, 10.0))
    workers = QueueWorkers(
        queue,
        UploadService(store, client),
        workers=2,
        batch=1,
        lease_seconds=30.0,
        backoff=Backoff(0.02, 0.05),
        summary_seconds=summary_seconds,
    )
    return queue, store, workers


@pytest.fixture
def running() -> Iterator[list[QueueWorkers]]:
    started: list[QueueWorkers] = []
    yield started
    for workers in started:
        workers.stop()


def lines(caplog: pytest.LogCaptureFixture, logger: str, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == level]


def test_a_retried_upload_says_so_once_and_again_when_it_recovers(
    tmp_path: Path,
    fake_dicomweb: FakeDicomWeb,
    running: list[QueueWorkers],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    switch = Switch()
    fake_dicomweb.responder = switch
    queue, store, workers = pool(tmp_path, fake_dicomweb.url)
    for seed in range(2):
        queue.publish(encode(put_instance(store, ct_dataset(seed=seed))))
    running.append(workers)
    workers.start()
    # Several attempts each, while the store is down.
    wait_until(lambda: len(fake_dicomweb.posts()) >= 8, 30, "attempts against a 503")
    switch.down = False
    wait_until(lambda: queue.stats().pending + queue.stats().retrying == 0, 30, "recovery")
    wait_until(lambda: len(lines(caplog, "ingest.workers", logging.INFO)) == 2, 10, "recovered")

    warnings = lines(caplog, "ingest.workers", logging.WARNING)
    assert warnings == ["upload failing, will retry: HTTP 503: Service Unavailable"] * 2
    recovered = lines(caplog, "ingest.workers", logging.INFO)
    assert all(line.startswith("upload recovered after ") for line in recovered), recovered
    attempts = sorted(int(line.split()[3]) for line in recovered)
    assert sum(attempts) == len(fake_dicomweb.posts()), "each attempt one POST"
    later = lines(caplog, "ingest.workers", logging.DEBUG)
    assert len(later) == sum(attempts) - 2 * 2, "the other failures only at DEBUG"
    uploaded = lines(caplog, "uploader.service", logging.DEBUG)
    assert uploaded == ["uploaded", "uploaded"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_summary_says_how_many_retry_and_why(
    tmp_path: Path,
    fake_dicomweb: FakeDicomWeb,
    running: list[QueueWorkers],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    queue, store, workers = pool(tmp_path, fake_dicomweb.url, summary_seconds=0.3)
    busy = set()
    for seed in range(5):
        message = put_instance(store, ct_dataset(seed=seed))
        if seed < 3:
            busy.add(message.sop_instance_uid)
        queue.publish(encode(message))

    def answer(request: Recorded) -> Reply:
        if set(request.sop_uids) <= busy:
            return Reply(503, "Service Unavailable")
        return Reply(500, "Internal Server Error")

    fake_dicomweb.responder = answer
    running.append(workers)
    workers.start()

    def summaries() -> list[str]:
        return [
            line
            for line in lines(caplog, "ingest.workers", logging.WARNING)
            if "messages retrying" in line
        ]

    def first_failures() -> int:
        return sum(
            line.startswith("upload failing")
            for line in lines(caplog, "ingest.workers", logging.WARNING)
        )

    wait_until(lambda: first_failures() == 5, 30, "each message failing once")
    caplog.clear()
    wait_until(summaries, 10, "a summary")
    assert summaries()[0] == "5 messages retrying: 3 x HTTP 503, 2 x HTTP 500"
    # Not a line per attempt: the failures themselves were said once each, before.
    assert lines(caplog, "ingest.workers", logging.WARNING) == summaries()


def test_every_dead_letter_leaves_one_error_line_with_its_reason(
    tmp_path: Path,
    fake_dicomweb: FakeDicomWeb,
    running: list[QueueWorkers],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Refused by the store (400), undecodable, and out of attempts: one ERROR line each."""
    caplog.set_level(logging.DEBUG)
    queue, store, workers = pool(tmp_path, fake_dicomweb.url, max_attempts=2)
    refused = put_instance(store, ct_dataset(seed=1))
    flaky = put_instance(store, ct_dataset(seed=2))

    def answer(request: Recorded) -> Reply:
        if request.sop_uids == [refused.sop_instance_uid]:
            return Reply(400, "Bad Request")
        return Reply(503, "Service Unavailable")

    fake_dicomweb.responder = answer
    before = metrics.DEAD_LETTERS._value.get()
    ids = {
        queue.publish(encode(refused)): "HTTP 400: Bad Request",
        queue.publish(b"{not a message"): "undecodable message: ",
        queue.publish(encode(flaky)): (
            "gave up after 2 delivery attempts; last error: HTTP 503: Service Unavailable"
        ),
    }
    running.append(workers)
    workers.start()
    wait_until(lambda: queue.stats().dead == 3, 30, "three dead letters")

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 3
    by_id = {r.message_id: r for r in errors}  # type: ignore[attr-defined]
    assert set(by_id) == set(ids)
    for message_id, reason in ids.items():
        record = by_id[message_id]
        assert record.getMessage().startswith(f"dead letter: {reason}")
        assert record.dead_letter_reason.startswith(reason)  # type: ignore[attr-defined]
        assert record.outcome == "dead"  # type: ignore[attr-defined]
    assert by_id[next(iter(ids))].sop_instance_uid == refused.sop_instance_uid  # type: ignore[attr-defined]
    assert metrics.DEAD_LETTERS._value.get() - before == 3


def test_an_association_line_gives_each_figure_once(
    pipelines: object, fake_dicomweb: FakeDicomWeb, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    pipeline: LocalPipeline = pipelines(fake_dicomweb.url)  # type: ignore[operator]
    ae = AE(ae_title="PACS")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", pipeline.receiver.port, ae_title="IMPORTADAPTER")
    assert assoc.is_established
    for seed in range(3):
        assert assoc.send_c_store(ct_dataset(seed=seed)).Status == 0x0000
    assoc.release()
    wait_until(
        lambda: lines(caplog, "receiver.association", logging.INFO), 10, "the association line"
    )
    [record] = [r for r in caplog.records if r.name == "receiver.association"]
    assert record.levelno == logging.INFO
    assert record.getMessage() == "association released"
    fields = vars(record)
    assert (fields["instances"], fields["failed"], fields["outcome"]) == (3, 0, "released")
    assert fields["bytes"] > 3 * 64 * 64 * 2
    assert (fields["calling_ae"], fields["called_ae"]) == ("PACS", "IMPORTADAPTER")


def test_status_shows_why_each_message_is_retrying(
    pipelines: object, fake_dicomweb: FakeDicomWeb, tmp_path: Path
) -> None:
    fake_dicomweb.responder = Switch()
    # A long backoff: the message waits out its retry delay (not in flight) while status reads.
    pipeline: LocalPipeline = pipelines(  # type: ignore[operator]
        fake_dicomweb.url, min_backoff=60.0, max_backoff=120.0
    )
    message = put_instance(pipeline.objects, ct_dataset(seed=5))
    pipeline.queue.publish(encode(message))
    wait_until(lambda: pipeline.queue.stats().retrying == 1, 30, "retrying")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dicom_ingest.cli",
            "status",
            "--spool_dir",
            str(tmp_path / "spool"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines_out = result.stdout.splitlines()
    at = lines_out.index("retrying (each with the reason its last attempt failed):")
    entry, reason = lines_out[at + 1], lines_out[at + 2]
    assert entry.startswith("  ") and f"sop={message.sop_instance_uid}" in entry
    assert reason == "      HTTP 503: Service Unavailable"
    assert (tmp_path / "spool" / QUEUE_FILE).exists()
