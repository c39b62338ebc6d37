"""StoreService without the network: status per failure, and nothing lost on a failed publish."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from support.fakes import RecordingPublisher

from ingest.adapters.spool import SpoolObjectStore
from ingest.contracts.message import decode
from ingest.contracts.ports import ObjectMissing
from receiver.dataset_scan import ScanLimits
from receiver.part10 import file_meta_bytes
from receiver.store import ReceivedFile, Status, StoreRequest, StoreService

CT = "1.2.840.10008.5.1.4.1.1.2"
STUDY, SERIES, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"


def element(tag: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00"
    return struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr + struct.pack("<H", len(value)) + value


def dataset(sop: str = SOP, pixels: bytes = b"\x01\x02") -> bytes:
    return (
        element(0x00080016, b"UI", CT.encode())
        + element(0x00080018, b"UI", sop.encode())
        + element(0x0020000D, b"UI", STUDY.encode())
        + element(0x0020000E, b"UI", SERIES.encode())
        + struct.pack("<HH", 0x7FE0, 0x0010)
        + b"OW\x00\x00"
        + struct.pack("<L", len(pixels))
        + pixels
    )


def received(
    tmp_path: Path, data: bytes, syntax: str = ExplicitVRLittleEndian, sop: str = SOP
) -> ReceivedFile:
    """A file as the front door writes it: our file meta, then the dataset as it arrived."""
    path = tmp_path / "received.dcm"
    path.write_bytes(file_meta_bytes(CT, sop, syntax, "PACS") + data)
    return ReceivedFile.read(path)


def request(sop: str = SOP) -> StoreRequest:
    return StoreRequest(CT, sop, ExplicitVRLittleEndian, "PACS", "IMPORTADAPTER")


@pytest.fixture
def store(tmp_path: Path) -> SpoolObjectStore:
    return SpoolObjectStore(tmp_path / "spool")


def test_success_publishes_a_pointer_to_the_exact_bytes(
    tmp_path: Path, store: SpoolObjectStore
) -> None:
    publisher = RecordingPublisher()
    result = StoreService(store, publisher).store(request(), received(tmp_path, dataset()))
    assert result.status is Status.SUCCESS
    message = decode(publisher.bodies[0])
    with store.open(message.uri, message.generation) as handle:
        stored = handle.read()
    assert stored.endswith(dataset())  # the dataset bytes as received, after our own meta
    assert len(stored) == message.size
    assert list(store.staging_dir().iterdir()) == []


def test_failed_publish_keeps_the_previous_version_for_its_message(
    tmp_path: Path, store: SpoolObjectStore
) -> None:
    publisher = RecordingPublisher()
    service = StoreService(store, publisher)
    assert service.store(request(), received(tmp_path, dataset(pixels=b"v1"))).ok
    first = decode(publisher.bodies[0])

    publisher.error = OSError("database is locked")
    result = service.store(request(), received(tmp_path, dataset(pixels=b"v2")))
    assert result.status is Status.QUEUE_UNAVAILABLE
    # The first message still finds its own bytes: nothing acknowledged was lost.
    with store.open(first.uri, first.generation) as handle:
        assert handle.read().endswith(dataset(pixels=b"v1"))
    assert list(store.staging_dir().iterdir()) == []


def test_failed_publish_of_a_first_version_leaves_no_object(
    tmp_path: Path, store: SpoolObjectStore
) -> None:
    publisher = RecordingPublisher()
    publisher.error = OSError("database is locked")
    result = StoreService(store, publisher).store(request(), received(tmp_path, dataset()))
    assert result.status is Status.QUEUE_UNAVAILABLE
    with pytest.raises(ObjectMissing):
        store.open(store.uri_for(f"{STUDY}/{SERIES}/{SOP}.dcm"), "1")
    assert [p for p in store.root.rglob("*") if p.is_file()] == []


def test_invalid_sop_instance_uid_is_refused_without_leftovers(
    tmp_path: Path, store: SpoolObjectStore
) -> None:
    bad = "1." + "2" * 72  # 74 characters: not a valid UID
    publisher = RecordingPublisher()
    result = StoreService(store, publisher).store(request(bad), received(tmp_path, dataset(bad)))
    assert result.status is Status.DATASET_MISMATCH
    assert "SOP Instance UID" in result.comment
    assert publisher.bodies == []
    assert list(store.staging_dir().iterdir()) == []


def test_dataset_starting_with_group_0002_keeps_those_bytes(
    tmp_path: Path, store: SpoolObjectStore
) -> None:
    """A sender's stray (0002,xxxx) element belongs to the dataset, not to our file meta."""
    stray = struct.pack("<HHL", 0x0002, 0x0013, 4) + b"ABCD"  # implicit VR
    data = stray + b"".join(
        struct.pack("<HHL", tag >> 16, tag & 0xFFFF, len(v)) + v
        for tag, v in (
            (0x00080016, CT.encode()),
            (0x00080018, SOP.encode() + b"\x00"),
            (0x0020000D, STUDY.encode() + b"\x00"),
            (0x0020000E, SERIES.encode()),
        )
    )
    path = received(tmp_path, data, ImplicitVRLittleEndian)
    publisher = RecordingPublisher()
    req = StoreRequest(CT, SOP, ImplicitVRLittleEndian, "PACS", "IMPORTADAPTER")
    result = StoreService(store, publisher).store(req, path)
    assert result.status is Status.SUCCESS, result
    message = decode(publisher.bodies[0])
    with store.open(message.uri, message.generation) as handle:
        assert handle.read().endswith(data)


def nested_sequences(levels: int) -> bytes:
    """Defined-length sequences, each in the only item of the one above."""
    content = element(0x00081150, b"UI", b"1.2")
    for _ in range(levels):
        item = struct.pack("<HHL", 0xFFFE, 0xE000, len(content)) + content
        content = struct.pack("<HH2sHL", 0x0008, 0x1115, b"SQ", 0, len(item)) + item
    return content


@pytest.mark.parametrize(
    ("limits", "extra", "comment"),
    [
        (None, nested_sequences(17), "Refused: sequences nested deeper than 16 levels"),
        (ScanLimits(max_depth=2), nested_sequences(3), "Refused: sequences nested deeper"),
        (ScanLimits(max_instance_bytes=64), b"", "Refused: instance larger than 64 bytes"),
    ],
)
def test_content_over_a_limit_is_refused_and_nothing_is_stored(
    tmp_path: Path,
    store: SpoolObjectStore,
    limits: ScanLimits | None,
    extra: bytes,
    comment: str,
) -> None:
    publisher = RecordingPublisher()
    service = StoreService(store, publisher, limits=limits)
    data = dataset(pixels=bytes(64))
    # Sequences go before the pixel data, in tag order.
    pixels_at = data.index(struct.pack("<HH", 0x7FE0, 0x0010))
    data = data[:pixels_at] + extra + data[pixels_at:] if extra else data
    result = service.store(request(), received(tmp_path, data))
    assert result.status is Status.CANNOT_UNDERSTAND
    assert result.comment.startswith(comment)
    assert len(result.comment) <= 64
    assert publisher.bodies == []
    assert [p for p in store.root.rglob("*") if p.is_file()] == []


def test_nesting_at_the_limit_is_stored(tmp_path: Path, store: SpoolObjectStore) -> None:
    data = dataset()
    pixels_at = data.index(struct.pack("<HH", 0x7FE0, 0x0010))
    data = data[:pixels_at] + nested_sequences(16) + data[pixels_at:]
    publisher = RecordingPublisher()
    result = StoreService(store, publisher).store(request(), received(tmp_path, data))
    assert result.status is Status.SUCCESS, result
    assert len(publisher.bodies) == 1
