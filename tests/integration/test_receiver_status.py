"""Every row of the receiver's status table, driven by a real SCU against a real receiver.

One row per ``receiver.store.Status``: what the object store and the queue do (succeed, fail,
have a defect) or what the PACS sends decides the C-STORE status the PACS is told.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import CTImageStorage
from support.datasets import ct_dataset, write
from support.fakes import BrokenObjectStore, RecordingPublisher, UnwritableObjectStore

from ingest.adapters.spool import SpoolObjectStore
from receiver.config import ReceiverConfig
from receiver.part10 import file_meta_bytes
from receiver.scp import Receiver
from receiver.store import Status, StoreService


def _instance(tmp_path: Path) -> Path:
    return write(ct_dataset(rows=8, columns=8), tmp_path / "instance.dcm")


def _without_study_uid(tmp_path: Path) -> Path:
    ds = ct_dataset(rows=8, columns=8)
    del ds.StudyInstanceUID
    return write(ds, tmp_path / "no-study.dcm")


def _not_dicom(tmp_path: Path) -> Path:
    sop = generate_uid()
    path = tmp_path / "not-dicom.dcm"
    meta = file_meta_bytes(CTImageStorage, sop, ExplicitVRLittleEndian, "TESTSCU")
    path.write_bytes(meta + b"this is not a DICOM dataset at all\n" * 20)
    return path


@dataclass(frozen=True)
class Row:
    objects: Callable[[Path], SpoolObjectStore]
    publisher: Callable[[], RecordingPublisher]
    instance: Callable[[Path], Path]


ROWS = {
    Status.SUCCESS: Row(SpoolObjectStore, RecordingPublisher, _instance),
    Status.STORAGE_UNAVAILABLE: Row(UnwritableObjectStore, RecordingPublisher, _instance),
    Status.QUEUE_UNAVAILABLE: Row(
        SpoolObjectStore, lambda: RecordingPublisher(error=OSError("queue is full")), _instance
    ),
    Status.DATASET_MISMATCH: Row(SpoolObjectStore, RecordingPublisher, _without_study_uid),
    Status.CANNOT_UNDERSTAND: Row(SpoolObjectStore, RecordingPublisher, _not_dicom),
    Status.PROCESSING_FAILURE: Row(BrokenObjectStore, RecordingPublisher, _instance),
}


def test_every_status_has_a_row() -> None:
    assert set(ROWS) == set(Status)


@pytest.fixture
def staging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The receiver's staging directory."""
    staging = tmp_path / "spool" / "staging"
    staging.mkdir(parents=True)
    # The SCU sends a file's bytes as they are, so that bytes that are no DICOM arrive.
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)
    yield staging


@pytest.mark.parametrize("status", list(ROWS), ids=lambda s: f"{s.name}-0x{s.value:04X}")
def test_status_row(status: Status, tmp_path: Path, staging: Path) -> None:
    row = ROWS[status]
    objects = row.objects(tmp_path / "spool")
    publisher = row.publisher()
    receiver = Receiver(
        ReceiverConfig(dimse_port=0, dimse_bind="127.0.0.1", shutdown_grace=5.0),
        StoreService(objects, publisher),
        staging,
    )
    receiver.start()
    try:
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        assoc = ae.associate("127.0.0.1", receiver.port, ae_title="IMPORTADAPTER")
        assert assoc.is_established
        try:
            answer = assoc.send_c_store(row.instance(tmp_path))
        finally:
            assoc.release()
    finally:
        receiver.stop()
    assert answer.Status == status.value
    stored = [p for p in objects.root.rglob("*@*.dcm") if p.is_file()]
    assert list(staging.iterdir()) == []  # no staging files left, whatever the status
    if status is Status.SUCCESS:
        assert len(publisher.published) == 1 and len(stored) == 1
        assert "ErrorComment" not in answer
        return
    assert answer.ErrorComment  # a reason for the PACS operator
    assert "Synthetic" not in str(answer.ErrorComment)  # never patient data
    assert stored == []  # nothing half-stored is left current
