"""Part-10 objects built from the bytes as received: preamble, file meta, raw dataset."""

from __future__ import annotations

import base64
from typing import BinaryIO

import google_crc32c
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID

IMPLEMENTATION_CLASS_UID = "2.25.292252893654852027147295740638649302800"
IMPLEMENTATION_VERSION_NAME = "DICOM_INGEST_1"
_CHUNK = 1 << 20


def file_meta_bytes(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_ae: str
) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information group for one instance."""
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    if source_ae:
        meta.SourceApplicationEntityTitle = source_ae
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return buffer.getvalue()


def crc32c_b64(value: int) -> str:
    """A CRC32C as Cloud Storage reports it: base64 of the big-endian 32-bit value."""
    return base64.b64encode(value.to_bytes(4, "big")).decode("ascii")


def write_part10(dest: BinaryIO, meta: bytes, source: BinaryIO, length: int) -> tuple[int, str]:
    """Write meta, then copy length dataset bytes from source; return (size, crc32c).

    The destination is flushed; making it durable is the object store's job (``put``).
    """
    checksum = google_crc32c.Checksum()
    dest.write(meta)
    checksum.update(meta)
    remaining = length
    while remaining:
        chunk = source.read(min(_CHUNK, remaining))
        if not chunk:
            raise OSError("dataset shrank while it was being copied")
        dest.write(chunk)
        checksum.update(chunk)
        remaining -= len(chunk)
    dest.flush()
    return len(meta) + length, crc32c_b64(int.from_bytes(checksum.digest(), "big"))


def stream_crc32c(source: BinaryIO) -> str:
    """The CRC32C of everything left in source, read in bounded chunks."""
    checksum = google_crc32c.Checksum()
    while chunk := source.read(_CHUNK):
        checksum.update(chunk)
    return crc32c_b64(int.from_bytes(checksum.digest(), "big"))
