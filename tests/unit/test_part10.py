"""Part-10 framing: file meta from the request, the dataset bytes as received."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import google_crc32c
import pytest
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from receiver.part10 import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    crc32c_b64,
    file_meta_bytes,
)
from receiver.store import ReceivedFile

SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
SOP_INSTANCE = "1.2.826.0.1.3680043.8.498.77"


def dataset_bytes(implicit: bool = False, little: bool = True) -> bytes:
    ds = Dataset()
    ds.SOPClassUID = SOP_CLASS
    ds.SOPInstanceUID = SOP_INSTANCE
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.Modality = "CT"
    fp = DicomBytesIO()
    fp.is_implicit_VR = implicit
    fp.is_little_endian = little
    write_dataset(fp, ds)
    return fp.getvalue()


def expected_crc(data: bytes) -> str:
    value = google_crc32c.value(data)
    return base64.b64encode(value.to_bytes(4, "big")).decode("ascii")


@pytest.mark.parametrize(
    ("transfer_syntax", "implicit", "little"),
    [
        (ExplicitVRLittleEndian, False, True),
        (ImplicitVRLittleEndian, True, True),
        (ExplicitVRBigEndian, False, False),
    ],
    ids=["explicit-le", "implicit-le", "explicit-be"],
)
def test_meta_and_dataset_parse_with_pydicom(
    transfer_syntax: str, implicit: bool, little: bool
) -> None:
    meta = file_meta_bytes(SOP_CLASS, SOP_INSTANCE, transfer_syntax, "PACS")
    ds = dcmread(io.BytesIO(meta + dataset_bytes(implicit, little)))
    fm = ds.file_meta
    assert fm.MediaStorageSOPClassUID == SOP_CLASS
    assert fm.MediaStorageSOPInstanceUID == SOP_INSTANCE
    assert fm.TransferSyntaxUID == transfer_syntax
    assert fm.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert fm.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    assert fm.SourceApplicationEntityTitle == "PACS"
    assert fm.FileMetaInformationVersion == b"\x00\x01"
    assert ds.SOPInstanceUID == SOP_INSTANCE
    assert ds.Modality == "CT"


def test_meta_layout() -> None:
    meta = file_meta_bytes(SOP_CLASS, SOP_INSTANCE, ExplicitVRLittleEndian, "PACS")
    assert meta[:128] == b"\x00" * 128
    assert meta[128:132] == b"DICM"
    # The group length element comes first and counts the rest of the group.
    assert meta[132:140] == b"\x02\x00\x00\x00UL\x04\x00"
    group_length = int.from_bytes(meta[140:144], "little")
    assert len(meta) == 144 + group_length
    assert len(meta) % 2 == 0


def test_meta_without_source_ae() -> None:
    meta = file_meta_bytes(SOP_CLASS, SOP_INSTANCE, ExplicitVRLittleEndian, "")
    ds = dcmread(io.BytesIO(meta + dataset_bytes()))
    assert "SourceApplicationEntityTitle" not in ds.file_meta
    assert ds.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID


def test_crc32c_b64_is_big_endian_base64() -> None:
    assert crc32c_b64(0) == "AAAAAA=="
    assert crc32c_b64(0x01020304) == base64.b64encode(b"\x01\x02\x03\x04").decode()
    # RFC 3720 check value of "123456789" is 0xE3069283.
    assert google_crc32c.value(b"123456789") == 0xE3069283
    assert crc32c_b64(0xE3069283) == "4waSgw=="


def test_a_received_file_is_described_by_its_meta_length_size_and_crc(tmp_path: Path) -> None:
    meta = file_meta_bytes(SOP_CLASS, SOP_INSTANCE, ExplicitVRLittleEndian, "PACS")
    data = dataset_bytes()
    target = tmp_path / "in.dcm"
    target.write_bytes(meta + data)
    received = ReceivedFile.read(target)
    assert received == ReceivedFile(
        target, len(meta), len(meta) + len(data), expected_crc(meta + data)
    )
    assert dcmread(target).SOPInstanceUID == SOP_INSTANCE


@pytest.mark.parametrize(
    ("sop_class", "sop", "syntax", "ae"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "1.2.840.10008.1.2.1", "PACS"),
        ("1.2.840.10008.5.1.4.1.1.7", "1.2.3.45", "1.2.840.10008.1.2", "ODDAE"),
        ("1.2.840.10008.5.1.4.1.1.77.1.6", "2.25.1", "1.2.840.10008.1.2.4.201", ""),
    ],
)
def test_meta_is_byte_identical_to_pydicoms_encoding(
    sop_class: str, sop: str, syntax: str, ae: str
) -> None:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop)
    meta.TransferSyntaxUID = UID(syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    if ae:
        meta.SourceApplicationEntityTitle = ae
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)
    assert file_meta_bytes(sop_class, sop, syntax, ae) == buffer.getvalue()
