"""What reached a DICOM store, compared with what was sent (element by element)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import requests
from pydicom.dataset import Dataset

from .fake_dicomweb import parse_multipart
from .orthanc import Orthanc

RETRIEVE_AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def retrieve(orthanc: Orthanc, ds: Dataset) -> Dataset:
    response = requests.get(
        f"{orthanc.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}",
        headers={"Accept": RETRIEVE_AS_STORED},
        timeout=30,
    )
    assert response.status_code == 200, response.text[:200]
    [got] = parse_multipart(response.headers["Content-Type"], response.content)
    return got


def assert_same(sent: Dataset, got: Dataset, path: str = "", native_pixels: bool = False) -> None:
    """Equal element by element.

    Group lengths and Data Set Trailing Padding (FFFC,FFFC) are ignored: Orthanc drops them
    when it stores an instance; they carry no content.
    """
    for element in sent:
        if (
            element.tag.element == 0x0000
            or element.tag.group == 0x0002
            or element.tag == 0xFFFCFFFC
        ):
            continue
        where = f"{path}{element.tag}"
        assert element.tag in got, f"{where} missing"
        other = got[element.tag]
        if element.VR == "SQ":
            assert len(element.value) == len(other.value), where
            for index, (a, b) in enumerate(zip(element.value, other.value, strict=True)):
                assert_same(a, b, f"{where}[{index}].")
        elif native_pixels and element.tag == 0x7FE00010:
            assert (sent.pixel_array == got.pixel_array).all(), f"{where} pixels differ"
        else:
            assert element.value == other.value, f"{where} differs"


def dcmsend(port: int, files: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["dcmsend", "127.0.0.1", str(port), "-aec", "IMPORTADAPTER", "-dn", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "TCP_NODELAY": "1"},
    )


def study_instances(orthanc: Orthanc, study: str) -> set[str]:
    """The SOP Instance UIDs the store holds in a study (QIDO-RS), none when it has no study."""
    response = requests.get(f"{orthanc.dicomweb}/studies/{study}/instances", timeout=30)
    if response.status_code != 200 or not response.content.strip():
        return set()
    return {item["00080018"]["Value"][0] for item in response.json()}


def store_noting_success(assoc: Any, ds: Dataset, acknowledged: list[str]) -> bool:
    """One C-STORE on a pynetdicom association; its UID noted when the answer is success.
    False once the association is gone (aborted, dropped, or no answer)."""
    try:
        status = assoc.send_c_store(ds)
    except Exception:
        return False
    if not assoc.is_established or "Status" not in status:
        return False
    if status.Status == 0x0000:
        acknowledged.append(str(ds.SOPInstanceUID))
    return True
