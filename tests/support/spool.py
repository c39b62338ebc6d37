"""Instances put straight into a spool object store, with the message that points at them."""

from __future__ import annotations

import google_crc32c
import pydicom
from pydicom.filebase import DicomBytesIO

from ingest.adapters.spool import SpoolObjectStore
from ingest.contracts.message import InstanceMessage
from receiver.part10 import crc32c_b64, file_meta_bytes


def put_instance(store: SpoolObjectStore, ds: pydicom.Dataset) -> InstanceMessage:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(buffer, ds)
    data = file_meta_bytes(ds.SOPClassUID, ds.SOPInstanceUID, "1.2.840.10008.1.2.1", "TESTSCU")
    data += buffer.getvalue()
    staged = store.staging_dir() / f"{ds.SOPInstanceUID}.part"
    staged.write_bytes(data)
    crc = crc32c_b64(int.from_bytes(google_crc32c.Checksum(data).digest(), "big"))
    key = f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
    stored = store.put(key, staged, len(data), crc)
    store.commit(stored)
    return InstanceMessage(
        uri=stored.uri,
        generation=stored.generation,
        size=stored.size,
        crc32c=stored.crc32c,
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_instance_uid=str(ds.StudyInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        calling_ae="TESTSCU",
        called_ae="IMPORTADAPTER",
        received_at="2026-01-01T00:00:00.000+00:00",
    )
