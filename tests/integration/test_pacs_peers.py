"""Other real PACS behaviour: Orthanc pushing C-STORE, and several associations at once."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid
from support.datasets import ct_dataset, write
from support.fake_dicomweb import FakeDicomWeb
from support.net import wait_until
from support.orthanc import Orthanc
from support.pipeline import settled

from dicom_ingest.local import LocalPipeline

# Real processes and servers, seconds each: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow


def test_orthanc_as_the_pacs_pushes_a_study(
    orthanc: Orthanc,
    fake_dicomweb: FakeDicomWeb,
    pipelines: Callable[..., LocalPipeline],
    tmp_path: Path,
) -> None:
    pipeline = pipelines(fake_dicomweb.url)
    study = generate_uid()
    ids = []
    for n in range(3):
        path = write(ct_dataset(study=study, seed=n), tmp_path / f"{n}.dcm")
        response = requests.post(f"{orthanc.url}/instances", data=path.read_bytes(), timeout=10)
        response.raise_for_status()
        ids.append(response.json()["ID"])
    modality = {"AET": "IMPORTADAPTER", "Host": "127.0.0.1", "Port": pipeline.receiver.port}
    requests.put(f"{orthanc.url}/modalities/ingest", json=modality, timeout=10).raise_for_status()
    push = requests.post(
        f"{orthanc.url}/modalities/ingest/store",
        json={"Resources": ids, "Synchronous": True},
        timeout=60,
    )
    assert push.status_code == 200, push.text
    wait_until(lambda: settled(pipeline), 30, "uploads")
    sent = {str(ds.SOPInstanceUID) for post in fake_dicomweb.posts() for ds in post.instances}
    expected = {str(pydicom.dcmread(tmp_path / f"{n}.dcm").SOPInstanceUID) for n in range(3)}
    assert sent == expected
    assert pipeline.queue.stats().dead == 0


def test_concurrent_associations_all_land(
    orthanc: Orthanc, pipelines: Callable[..., LocalPipeline], tmp_path: Path
) -> None:
    pipeline = pipelines(orthanc.dicomweb)
    study = generate_uid()
    batches = []
    for sender in range(4):
        folder = tmp_path / f"pacs{sender}"
        for n in range(15):
            write(ct_dataset(study=study, seed=sender * 100 + n), folder / f"{n}.dcm")
        batches.append(folder)
    env = {**os.environ, "TCP_NODELAY": "1"}
    senders = [
        subprocess.Popen(
            [
                "dcmsend",
                "127.0.0.1",
                str(pipeline.receiver.port),
                "-aec",
                "IMPORTADAPTER",
                "-aet",
                f"PACS{n}",
                "+sd",
                str(folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        for n, folder in enumerate(batches)
    ]
    for process in senders:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode()[-1000:]

    def uploaded() -> int:
        response = requests.get(f"{orthanc.dicomweb}/studies/{study}/instances", timeout=10)
        return len(response.json()) if response.status_code == 200 and response.content else 0

    wait_until(lambda: uploaded() == 60, 60, "all 60 instances in the store")
    wait_until(lambda: settled(pipeline), 30, "queue drained")
    assert pipeline.queue.stats().dead == 0
