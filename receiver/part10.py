"""Part-10 objects built from the bytes as received: preamble, file meta, raw dataset."""

from __future__ import annotations

import base64
import struct
from typing import BinaryIO

import google_crc32c

IMPLEMENTATION_CLASS_UID = "2.25.292252893654852027147295740638649302800"
IMPLEMENTATION_VERSION_NAME = "DICOM_INGEST_1"
_CHUNK = 1 << 20


def _element(group_element: int, vr: bytes, value: bytes) -> bytes:
    tag = struct.pack("<HH", group_element >> 16, group_element & 0xFFFF)
    if vr == b"OB":
        return tag + vr + b"\x00\x00" + struct.pack("<L", len(value)) + value
    return tag + vr + struct.pack("<H", len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _text(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b" " if len(raw) % 2 else raw


def file_meta_bytes(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_ae: str
) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information group (PS3.10 7.1) for one instance.

    Encoded directly (explicit VR little endian, as PS3.10 requires): it runs once per
    received instance, and this is a fraction of the cost of building a pydicom dataset.
    The UIDs and AE title are validated by the caller.
    """
    body = b"".join(
        (
            _element(0x00020001, b"OB", b"\x00\x01"),
            _element(0x00020002, b"UI", _uid(sop_class_uid)),
            _element(0x00020003, b"UI", _uid(sop_instance_uid)),
            _element(0x00020010, b"UI", _uid(transfer_syntax_uid)),
            _element(0x00020012, b"UI", _uid(IMPLEMENTATION_CLASS_UID)),
            _element(0x00020013, b"SH", _text(IMPLEMENTATION_VERSION_NAME)),
            _element(0x00020016, b"AE", _text(source_ae)) if source_ae else b"",
        )
    )
    group_length = _element(0x00020000, b"UL", struct.pack("<L", len(body)))
    return b"\x00" * 128 + b"DICM" + group_length + body


def crc32c_b64(value: int) -> str:
    """A CRC32C as Cloud Storage reports it: base64 of the big-endian 32-bit value."""
    return base64.b64encode(value.to_bytes(4, "big")).decode("ascii")


def stream_crc32c(source: BinaryIO) -> str:
    """The CRC32C of everything left in source, read in bounded chunks."""
    checksum = google_crc32c.Checksum()
    while chunk := source.read(_CHUNK):
        checksum.update(chunk)
    return crc32c_b64(int.from_bytes(checksum.digest(), "big"))
