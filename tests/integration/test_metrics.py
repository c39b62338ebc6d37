"""``/metrics`` after a real run: ``dicom-ingest local`` takes instances from dcmsend, uploads
them to Orthanc, and its figures, scraped over HTTP, are what was sent.

A C-STORE whose data set is not DICOM is answered 0xC000; one that arrives while the staging
directory cannot be written (a file where the directory was: a real file system error) is
answered 0xA700. Both are counted under their status, as the successes are under 0x0000.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom.sop_class import CTImageStorage
from support.datasets import ct_dataset, write
from support.dimse_raw import C_STORE_RQ, RawAssociation, command_set, dataset_bytes
from support.metrics import scrape, value
from support.net import on_free_port, wait_until
from support.orthanc import Orthanc
from support.process import IngestProcess
from support.stored import dcmsend

pytestmark = pytest.mark.slow

CT = str(CTImageStorage)
ELE = "1.2.840.10008.1.2.1"
SENT = 6


def dataset_size(path: Path) -> int:
    """The bytes of a Part-10 file's data set: what goes over the wire after the file meta."""
    meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
    return path.stat().st_size - 132 - 12 - int(meta.FileMetaInformationGroupLength)


@pytest.fixture
def process(tmp_path: Path, orthanc: Orthanc) -> Iterator[tuple[IngestProcess, int]]:
    started: list[IngestProcess] = []

    def start(port: int) -> tuple[IngestProcess, int]:
        ingest = IngestProcess(tmp_path / "spool", orthanc.dicomweb, "--metrics_port", str(port))
        started.append(ingest)
        try:
            return ingest.wait_ready(60), port
        except RuntimeError:  # the metrics port was taken meanwhile: another one
            ingest.stop()
            raise

    yield on_free_port(start)
    for ingest in started:
        ingest.stop()


def store_junk(port: int) -> int:
    """A C-STORE whose data set is not DICOM; its status."""
    connection = RawAssociation(port, timeout=30)
    try:
        connection.associate([(1, CT, [ELE])])
        ds = ct_dataset(seed=99)
        junk = b"\x08\x00\x18\x00UI\xff\x7f" + bytes(range(256)) * 4
        connection.send_message(1, command_set(C_STORE_RQ, 1, CT, ds.SOPInstanceUID), junk)
        status = connection.read_response().status
        connection.release()
    finally:
        connection.close()
    return status


def store_while_staging_is_broken(port: int, staging: Path, second: Dataset) -> tuple[int, int]:
    """One C-STORE while the staging directory is a file, ``second`` after it is back;
    their statuses."""
    connection = RawAssociation(port, timeout=30)
    try:
        connection.associate([(1, CT, [ELE])])
        shutil.rmtree(staging)
        staging.write_bytes(b"")  # a file where the directory was: every create fails
        try:
            first = connection.store(1, 1, ct_dataset(seed=101)).status
        finally:
            staging.unlink()
            staging.mkdir(mode=0o700)
        then = connection.store(1, 2, second).status
        connection.release()
    finally:
        connection.close()
    return first, then


def test_metrics_after_a_real_run_match_what_was_sent(
    process: tuple[IngestProcess, int], orthanc: Orthanc, tmp_path: Path
) -> None:
    ingest, metrics_port = process
    before = orthanc.instance_count()
    files = [write(ct_dataset(seed=n), tmp_path / "sent" / f"{n}.dcm") for n in range(SENT)]
    result = dcmsend(ingest.port, files)
    assert result.returncode == 0, result.stderr[-2000:]
    assert store_junk(ingest.port) == 0xC000
    after = ct_dataset(seed=102)
    staging = tmp_path / "spool" / "incoming"
    refused, stored = store_while_staging_is_broken(ingest.port, staging, after)
    assert (refused, stored) == (0xA700, 0x0000)
    uploaded = SENT + 1
    wait_until(lambda: orthanc.instance_count() == before + uploaded, 60, "uploads")

    def settled() -> bool:
        samples = scrape(metrics_port)
        return (
            value(samples, "dicom_ingest_uploads_total", outcome="done") == uploaded
            and value(samples, "dicom_ingest_queue_messages", state="ready") == 0
            and value(samples, "dicom_ingest_queue_messages", state="leased") == 0
        )

    wait_until(settled, 60, "every upload counted and the queue empty")
    samples = scrape(metrics_port)

    # The receiver: instances and bytes by status, one latency observation per C-STORE.
    assert value(samples, "dicom_ingest_instances_received_total", status="0x0000") == uploaded
    assert value(samples, "dicom_ingest_instances_received_total", status="0xC000") == 1
    assert value(samples, "dicom_ingest_instances_received_total", status="0xA700") == 1
    sent_bytes = sum(dataset_size(f) for f in files)
    assert value(samples, "dicom_ingest_received_bytes_total", status="0x0000") == (
        sent_bytes + len(dataset_bytes(after))
    )
    assert value(samples, "dicom_ingest_receive_seconds_count") == uploaded + 2
    # dcmsend's association and the two raw ones, all released; the readiness probe is not
    # counted (there is none here) and nothing else ended otherwise.
    assert value(samples, "dicom_ingest_associations_total", outcome="released") == 3
    for outcome in ("aborted", "aborted_by_peer", "timed_out", "rejected"):
        assert value(samples, "dicom_ingest_associations_total", outcome=outcome) == 0

    # The uploader: every instance done, at least one STOW-RS timed, nothing dead.
    assert value(samples, "dicom_ingest_uploads_total", outcome="retry") == 0
    assert value(samples, "dicom_ingest_uploads_total", outcome="dead") == 0
    assert 1 <= value(samples, "dicom_ingest_stow_seconds_count") <= uploaded
    assert value(samples, "dicom_ingest_dead_letters_total") == 0

    # Read at scrape time: the queue is empty, the store answers, the spool has room.
    for state in ("ready", "leased", "retrying", "dead"):
        assert value(samples, "dicom_ingest_queue_messages", state=state) == 0
    assert value(samples, "dicom_ingest_queue_oldest_age_seconds") == 0
    assert value(samples, "dicom_ingest_store_reachable") == 1
    free = shutil.disk_usage(tmp_path).free
    assert abs(value(samples, "dicom_ingest_spool_free_bytes") - free) < 256 << 20
    # No cloud receiver here: its figures are not made up.
    assert not any(name == "dicom_ingest_shipper_backlog" for name, _ in samples)
