"""A corrected instance (same SOP Instance UID, different bytes) through the real local pipeline.

DCMTK's dcmsend is the PACS and Orthanc with its DICOMweb plugin the DICOM store. Orthanc
answers the second STOW-RS of an instance 200 and keeps the first version, so only the
pipeline's own ledger of what it delivered can tell a correction from a resend; ``--conflict``
then decides, and Orthanc is asked afterwards what it really holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from support.datasets import ct_dataset, write
from support.net import wait_until
from support.orthanc import Orthanc
from support.pipeline import settled
from support.stored import dcmsend, retrieve

from dicom_ingest.local import LocalPipeline
from ingest.contracts.message import decode

# Real processes and servers, seconds each: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

PATIENT_DATA = ("Synthetic", "SYNTH-0001")


def send_and_settle(pipeline: LocalPipeline, path: Path) -> None:
    result = dcmsend(pipeline.receiver.port, [path])
    assert result.returncode == 0, result.stderr[-2000:]
    wait_until(lambda: settled(pipeline), 60, "upload settled")


def versions(tmp_path: Path) -> tuple[Path, Path, pydicom.Dataset, pydicom.Dataset]:
    """v1 and v2 of one instance: same UIDs, other pixel data and a changed attribute."""
    v1 = ct_dataset(seed=1)
    v1.SeriesDescription = "first version"
    v2 = ct_dataset(
        study=v1.StudyInstanceUID, series=v1.SeriesInstanceUID, sop=v1.SOPInstanceUID, seed=2
    )
    v2.SeriesDescription = "corrected version"
    assert v1.PixelData != v2.PixelData
    return write(v1, tmp_path / "v1.dcm"), write(v2, tmp_path / "v2.dcm"), v1, v2


def corrections(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "uploader.service" and "correction" in r.getMessage()
    ]


@pytest.mark.parametrize("policy", ["fail", "overwrite", "skip"])
def test_a_corrected_instance_is_decided_by_the_conflict_policy(
    policy: str,
    orthanc: Orthanc,
    pipelines: Callable[..., LocalPipeline],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    first, second, v1, v2 = versions(tmp_path)
    pipeline = pipelines(orthanc.dicomweb, conflict=policy, orthanc_rest_address=orthanc.url)

    send_and_settle(pipeline, first)
    assert pipeline.queue.stats().dead == 0, pipeline.queue.dead_letters()
    assert retrieve(orthanc, v1).PixelData == v1.PixelData
    held = pipeline.queue.held_version(v1.SOPInstanceUID)
    assert held is not None
    assert corrections(caplog) == []

    send_and_settle(pipeline, second)
    got = retrieve(orthanc, v1)
    uid = str(v1.SOPInstanceUID)
    dead = pipeline.queue.dead_letters()
    if policy == "overwrite":
        assert (got.PixelData, got.SeriesDescription) == (v2.PixelData, "corrected version")
        assert dead == []
        now_held = pipeline.queue.held_version(uid)
        assert now_held is not None and now_held.crc32c != held.crc32c
    else:
        assert (got.PixelData, got.SeriesDescription) == (v1.PixelData, "first version")
        assert pipeline.queue.held_version(uid) == held  # the store still holds v1
    if policy == "fail":
        [letter] = dead
        message = decode(letter.body)
        assert message.sop_instance_uid == uid
        assert letter.reason.startswith(f"correction: SOP instance {uid} received again")
        assert f"CRC32C {message.crc32c}, the store holds {held.crc32c}" in letter.reason
        assert letter.reason.endswith("--conflict fail keeps the stored version")
    elif policy == "skip":
        assert dead == []

    [warning] = corrections(caplog)
    assert warning.levelno == logging.WARNING
    assert uid in warning.getMessage()
    assert f"--conflict {policy}" in warning.getMessage()
    for text in PATIENT_DATA:
        assert all(text not in r.getMessage() for r in caplog.records)


def test_the_same_bytes_again_are_a_plain_resend(
    orthanc: Orthanc,
    pipelines: Callable[..., LocalPipeline],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    first, _, v1, _ = versions(tmp_path)
    pipeline = pipelines(orthanc.dicomweb, conflict="fail", orthanc_rest_address=orthanc.url)
    send_and_settle(pipeline, first)
    send_and_settle(pipeline, first)
    assert pipeline.queue.dead_letters() == []
    assert corrections(caplog) == []
    assert retrieve(orthanc, v1).PixelData == v1.PixelData


def test_without_orthanc_rest_an_overwrite_says_how_to_delete(
    orthanc: Orthanc, pipelines: Callable[..., LocalPipeline], tmp_path: Path
) -> None:
    """Orthanc's DICOMweb plugin answers DELETE 405: a dead letter that names the option."""
    first, second, v1, _ = versions(tmp_path)
    pipeline = pipelines(orthanc.dicomweb, conflict="overwrite")
    send_and_settle(pipeline, first)
    send_and_settle(pipeline, second)
    [letter] = pipeline.queue.dead_letters()
    assert "overwrite: delete answered HTTP 405" in letter.reason
    assert "--orthanc_rest_address" in letter.reason
    assert retrieve(orthanc, v1).PixelData == v1.PixelData
