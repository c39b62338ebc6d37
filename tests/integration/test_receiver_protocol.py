"""The receiver against a real pynetdicom SCU: association policy and bad input.

The DICOM store is the fake server here: these tests are about what the PACS is told and
what is (not) stored or enqueued, so nothing needs to be uploaded.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage, Verification
from support.datasets import ct_dataset, write
from support.dimse_raw import RawAssociation, associate_rq
from support.fake_dicomweb import FakeDicomWeb
from support.net import wait_until
from support.receiving import queued, staged, stored_objects

from dicom_ingest.local import LocalPipeline
from receiver.config import PeerRule
from receiver.part10 import file_meta_bytes


@pytest.fixture
def receiver(pipelines: Callable[..., LocalPipeline], held_store: FakeDicomWeb) -> LocalPipeline:
    return pipelines(held_store.url, upload_workers=1, min_backoff=60.0, max_backoff=60.0)


def scu(calling: str = "TESTSCU") -> AE:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    return ae


@pytest.fixture
def chunked_send(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Let the SCU send raw file bytes as they are (for malformed datasets)."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    yield


def raw_instance(tmp_path: Path, sop: str, dataset_bytes: bytes) -> Path:
    """A Part-10 file whose dataset is exactly dataset_bytes (possibly not DICOM at all)."""
    path = tmp_path / f"{sop}.dcm"
    meta = file_meta_bytes(CTImageStorage, sop, ExplicitVRLittleEndian, "TESTSCU")
    path.write_bytes(meta + dataset_bytes)
    return path


def test_echo(receiver: LocalPipeline) -> None:
    assoc = scu().associate("127.0.0.1", receiver.receiver.port, ae_title="IMPORTADAPTER")
    assert assoc.is_established
    status = assoc.send_c_echo()
    assoc.release()
    assert status.Status == 0x0000


def test_store_success_is_enqueued_and_stored(receiver: LocalPipeline) -> None:
    ds = ct_dataset()
    assoc = scu().associate("127.0.0.1", receiver.receiver.port, ae_title="IMPORTADAPTER")
    status = assoc.send_c_store(ds)
    assoc.release()
    assert status.Status == 0x0000
    assert queued(receiver) == 1
    [stored] = stored_objects(receiver)
    assert stored.parent.name == ds.SeriesInstanceUID
    assert stored.parent.parent.name == ds.StudyInstanceUID


def test_unknown_called_ae_is_rejected(receiver: LocalPipeline) -> None:
    assoc = scu().associate("127.0.0.1", receiver.receiver.port, ae_title="SOMEONEELSE")
    assert assoc.is_rejected
    rsp = assoc.acceptor.primitive
    assert (rsp.result, rsp.result_source, rsp.diagnostic) == (0x01, 0x01, 0x07)


@pytest.mark.parametrize(
    ("rules", "calling", "allowed"),
    [
        (("PACS",), "PACS", True),
        (("PACS",), "INTRUDER", False),
        (("PACS@127.0.0.1",), "PACS", True),
        (("PACS@127.0.0.0/8",), "PACS", True),
        (("PACS@10.0.0.0/8",), "PACS", False),
    ],
    ids=["listed", "unlisted", "listed-address", "listed-network", "wrong-network"],
)
def test_calling_ae_allow_list(
    pipelines: Callable[..., LocalPipeline],
    held_store: FakeDicomWeb,
    rules: tuple[str, ...],
    calling: str,
    allowed: bool,
) -> None:
    pipeline = pipelines(held_store.url, allowed_peers=tuple(PeerRule.parse(r) for r in rules))
    assoc = scu(calling).associate("127.0.0.1", pipeline.receiver.port, ae_title="IMPORTADAPTER")
    if allowed:
        assert assoc.is_established
        assoc.release()
    else:
        assert assoc.is_rejected
        rsp = assoc.acceptor.primitive
        assert (rsp.result, rsp.result_source, rsp.diagnostic) == (0x01, 0x01, 0x03)


def test_association_limit_rejects_transiently(
    pipelines: Callable[..., LocalPipeline], held_store: FakeDicomWeb
) -> None:
    pipeline = pipelines(held_store.url, max_associations=1)
    first = scu().associate("127.0.0.1", pipeline.receiver.port, ae_title="IMPORTADAPTER")
    assert first.is_established
    # Read as bytes: pynetdicom's requestor can take the close that follows the rejection
    # for an abort when its threads are slow to run.
    second = RawAssociation(pipeline.receiver.port, timeout=30)
    try:
        second.send(associate_rq([(1, "1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2.1"])]))
        pdu_type, body = second.read_pdu()
        assert pdu_type == 0x03  # A-ASSOCIATE-RJ
        result, source, diagnostic = body[1:4]
        assert (result, source, diagnostic) == (0x02, 0x03, 0x02)
    finally:
        second.close()
        first.release()


def _store_file(pipeline: LocalPipeline, path: Path) -> Dataset:
    assoc = scu().associate("127.0.0.1", pipeline.receiver.port, ae_title="IMPORTADAPTER")
    assert assoc.is_established
    try:
        return assoc.send_c_store(path)
    finally:
        assoc.release()


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr + struct.pack("<H", len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode()
    return raw + b"\x00" * (len(raw) % 2)


def _minimal(
    sop: str, study: str | None, series: str | None, dataset_sop: str | None = None
) -> bytes:
    out = _element(0x00080016, b"UI", _uid(CTImageStorage))
    out += _element(0x00080018, b"UI", _uid(dataset_sop or sop))
    if study:
        out += _element(0x0020000D, b"UI", _uid(study))
    if series:
        out += _element(0x0020000E, b"UI", _uid(series))
    return out


BAD_INPUTS = {
    "non-dicom-bytes": (
        lambda sop: b"this is not a DICOM dataset at all, just text\n" * 20,
        0xC000,
    ),
    "truncated": (
        lambda sop: (
            _minimal(sop, generate_uid(), generate_uid())
            + struct.pack("<HH", 0x7FE0, 0x0010)
            + b"OW\x00\x00"
            + struct.pack("<L", 10000)
            + b"\x00" * 100
        ),
        0xC000,
    ),
    "sop-instance-differs": (
        lambda sop: _minimal(sop, generate_uid(), generate_uid(), dataset_sop=generate_uid()),
        0xA900,
    ),
    "missing-study-uid": (lambda sop: _minimal(sop, None, generate_uid()), 0xA900),
    "missing-series-uid": (lambda sop: _minimal(sop, generate_uid(), None), 0xA900),
    "invalid-study-uid": (lambda sop: _minimal(sop, "1.2.abc", generate_uid()), 0xA900),
    "nested-60-defined": (
        lambda sop: _minimal(sop, generate_uid(), generate_uid()) + _nested(60, defined=True),
        0xC000,
    ),
    "nested-60-undefined": (
        lambda sop: _minimal(sop, generate_uid(), generate_uid()) + _nested(60, defined=False),
        0xC000,
    ),
}


def _nested(levels: int, *, defined: bool) -> bytes:
    """Referenced Series Sequences, each in the only item of the one above."""
    content = _element(0x00081150, b"UI", _uid(CTImageStorage))
    for _ in range(levels):
        if defined:
            item = struct.pack("<HHL", 0xFFFE, 0xE000, len(content)) + content
            head = struct.pack("<HH2sHL", 0x0008, 0x1115, b"SQ", 0, len(item))
            content = head + item
        else:
            item = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF) + content
            item += struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
            head = struct.pack("<HH2sHL", 0x0008, 0x1115, b"SQ", 0, 0xFFFFFFFF)
            content = head + item + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    return content


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gets_failure_status_and_stores_nothing(
    case: str, receiver: LocalPipeline, tmp_path: Path, chunked_send: None
) -> None:
    build, expected = BAD_INPUTS[case]
    sop = generate_uid()
    status = _store_file(receiver, raw_instance(tmp_path, sop, build(sop)))
    assert status.Status == expected
    assert status.ErrorComment  # a reason for the PACS operator
    assert "Synthetic" not in str(status.ErrorComment)
    if case.startswith("nested"):
        assert str(status.ErrorComment) == "Refused: sequences nested deeper than 16 levels"
    assert queued(receiver) == 0
    assert stored_objects(receiver) == []
    assert staged(receiver) == []


def test_valid_raw_dataset_is_accepted(
    receiver: LocalPipeline, tmp_path: Path, chunked_send: None
) -> None:
    sop = generate_uid()
    status = _store_file(
        receiver, raw_instance(tmp_path, sop, _minimal(sop, generate_uid(), generate_uid()))
    )
    assert status.Status == 0x0000
    assert queued(receiver) == 1


def test_abort_mid_transfer_enqueues_nothing(
    receiver: LocalPipeline, tmp_path: Path, chunked_send: None
) -> None:
    big = write(ct_dataset(rows=2048, columns=2048, frames=12), tmp_path / "big.dcm")
    ae = scu()
    ae.maximum_pdu_size = 16384
    assoc = ae.associate("127.0.0.1", receiver.receiver.port, ae_title="IMPORTADAPTER")
    assert assoc.is_established

    def send() -> None:
        # The SCU side fails once we abort under it; only the receiver's state matters.
        with contextlib.suppress(Exception):
            assoc.send_c_store(big)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    wait_until(
        lambda: any(p.stat().st_size > 5_000_000 for p in staged(receiver)),
        30,
        "a partly received dataset",
    )
    # Cut the connection under the transfer, as a crashed or unplugged PACS would. (An
    # A-ABORT from pynetdicom would queue behind the data already handed to its DUL.)
    cut = assoc.dul.socket.socket
    cut.shutdown(socket.SHUT_RDWR)
    sender.join(30)
    cut.close()  # pynetdicom may leave it open: closed here, not by a later garbage collection
    wait_until(lambda: receiver.receiver.active_associations() == 0, 10, "association end")
    wait_until(lambda: staged(receiver) == [], 10, "partial file removed")
    assert queued(receiver) == 0
    assert stored_objects(receiver) == []


PRIVATE_SOP_CLASS = "1.2.826.0.1.3680043.9.9999.1"


@pytest.mark.parametrize("configured", [True, False], ids=["configured", "not-configured"])
def test_private_sop_class_only_by_configuration(
    pipelines: Callable[..., LocalPipeline], held_store: FakeDicomWeb, configured: bool
) -> None:
    extra = (PRIVATE_SOP_CLASS,) if configured else ()
    pipeline = pipelines(held_store.url, extra_sop_classes=extra)
    ds = ct_dataset()
    ds.SOPClassUID = PRIVATE_SOP_CLASS
    ds.file_meta.MediaStorageSOPClassUID = PRIVATE_SOP_CLASS
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(PRIVATE_SOP_CLASS, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", pipeline.receiver.port, ae_title="IMPORTADAPTER")
    if configured:
        assert assoc.is_established
        assert assoc.send_c_store(ds).Status == 0x0000
        assoc.release()
        assert queued(pipeline) == 1
    else:
        # The only context offered is refused, so no association is made.
        assert not assoc.is_established
        assert queued(pipeline) == 0


def test_idle_association_is_closed_after_the_network_timeout(
    pipelines: Callable[..., LocalPipeline], held_store: FakeDicomWeb
) -> None:
    pipeline = pipelines(held_store.url, network_timeout=0.5)
    assoc = scu().associate("127.0.0.1", pipeline.receiver.port, ae_title="IMPORTADAPTER")
    assert assoc.is_established
    wait_until(lambda: pipeline.receiver.active_associations() == 0, 10, "idle timeout")
    wait_until(lambda: not assoc.is_established, 10, "peer sees the end")
