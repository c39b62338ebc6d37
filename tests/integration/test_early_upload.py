"""Large instances uploaded to Cloud Storage while they arrive (``--ack_after=store``).

The receiver starts a resumable upload once a transfer passes the threshold and sends the
last chunk when the C-STORE completes; anything rejected or cut off never becomes an object.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from support.cloud import CloudStack
from support.datasets import ct_dataset, write
from support.dimse_raw import C_STORE_RQ, RawAssociation, command_set, p_data
from support.fake_dicomweb import FakeDicomWeb
from support.net import wait_until
from support.stored import assert_same, dcmsend

from ingest.adapters.gcs import ResumableSession
from ingest.contracts.message import decode
from ingest.contracts.ports import ObjectStoreError
from receiver.dataset_scan import part10_dataset_offset
from receiver.part10 import IMPLEMENTATION_CLASS_UID

# Real processes and servers, seconds each: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

Stacks = Callable[..., CloudStack]
THRESHOLD = 1 << 20


def big_dataset(seed: int, frames: int = 12) -> pydicom.Dataset:
    # 8 MiB a frame: long enough on the wire for the watcher to see the transfer
    return ct_dataset(rows=2048, columns=2048, frames=frames, seed=seed)


def test_a_large_instance_is_uploaded_while_it_arrives(
    fake_dicomweb: FakeDicomWeb, cloud_stacks: Stacks, tmp_path: Path
) -> None:
    stack = cloud_stacks(fake_dicomweb.url, push=False)
    tap = stack.tap()
    receiver = stack.start_receiver(early_upload_bytes=THRESHOLD)
    ds = big_dataset(1)
    small = ct_dataset(seed=2)
    files = [write(ds, tmp_path / "big.dcm"), write(small, tmp_path / "small.dcm")]

    result = dcmsend(receiver.receiver.port, files)
    assert result.returncode == 0, result.stderr[-1000:]
    assert receiver.early is not None
    assert receiver.early.used == 1  # the large one; the small one went the ordinary way

    messages = {decode(m.message.data).sop_instance_uid: decode(m.message.data)
                for m in stack.pull(tap)}  # fmt: skip
    assert set(messages) == {ds.SOPInstanceUID, small.SOPInstanceUID}
    message = messages[ds.SOPInstanceUID]
    name = message.uri.split("/", 3)[3]
    blob = stack.gcs.client.bucket(stack.bucket).get_blob(name)
    assert blob is not None
    assert (str(blob.generation), blob.size, blob.crc32c) == (
        message.generation, message.size, message.crc32c
    )  # fmt: skip
    stored = pydicom.dcmread(io.BytesIO(blob.download_as_bytes()))
    assert stored.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert stored.file_meta.SourceApplicationEntityTitle.strip() == "DCMSEND"
    assert_same(pydicom.dcmread(files[0]), stored)


def _big_dataset_bytes(tmp_path: Path) -> bytes:
    """A large dataset's bytes, as a PACS sends them (Explicit VR Little Endian)."""
    write(big_dataset(3, frames=4), tmp_path / "source.dcm")
    data = (tmp_path / "source.dcm").read_bytes()
    return data[part10_dataset_offset(io.BytesIO(data)) :]


def _association(port: int) -> object:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.maximum_pdu_size = 16384
    assoc = ae.associate("127.0.0.1", port, ae_title="IMPORTADAPTER")
    assert assoc.is_established
    return assoc


def test_a_rejected_instance_never_becomes_an_object(
    fake_dicomweb: FakeDicomWeb, cloud_stacks: Stacks, tmp_path: Path
) -> None:
    """An instance whose upload began while it arrived, then refused (its dataset names
    another SOP instance than its request): the upload is cancelled, no object is made."""
    stack = cloud_stacks(fake_dicomweb.url, push=False)
    receiver = stack.start_receiver(early_upload_bytes=THRESHOLD)
    assert receiver.early is not None
    data = _big_dataset_bytes(tmp_path)
    connection = RawAssociation(receiver.receiver.port, timeout=30)
    try:
        connection.associate([(1, str(CTImageStorage), [str(ExplicitVRLittleEndian)])])
        command = command_set(C_STORE_RQ, 1, str(CTImageStorage), generate_uid())
        connection.send(p_data(1, command, command=True))
        first = THRESHOLD + 65536  # past the threshold: the upload begins while it waits
        for at in range(0, first, 16384):
            connection.send(p_data(1, data[at : at + 16384], command=False, last=False))
        wait_until(lambda: receiver.early.started == 1, 30, "an upload under way")  # type: ignore[union-attr]
        for at in range(first, len(data), 16384):
            last = at + 16384 >= len(data)
            connection.send(p_data(1, data[at : at + 16384], command=False, last=last))
        assert connection.read_response().status == 0xA900
        connection.release()
    finally:
        connection.close()
    assert (receiver.early.started, receiver.early.used) == (1, 0)
    assert stack.gcs.objects(stack.bucket) == {}


def test_a_transfer_cut_off_never_becomes_an_object(
    fake_dicomweb: FakeDicomWeb, cloud_stacks: Stacks, tmp_path: Path
) -> None:
    stack = cloud_stacks(fake_dicomweb.url, push=False)
    receiver = stack.start_receiver(early_upload_bytes=THRESHOLD)
    assert receiver.early is not None
    big = write(big_dataset(4), tmp_path / "huge.dcm")
    assoc: object = _association(receiver.receiver.port)

    def send() -> None:
        with contextlib.suppress(Exception):  # fails once the connection is cut under it
            assoc.send_c_store(big)  # type: ignore[attr-defined]

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    wait_until(lambda: receiver.early._uploads, 30, "an upload under way")  # type: ignore[union-attr]
    cut = assoc.dul.socket.socket  # type: ignore[attr-defined]
    cut.shutdown(socket.SHUT_RDWR)
    sender.join(30)
    cut.close()  # pynetdicom may leave it open: closed here, not by a later garbage collection
    wait_until(lambda: receiver.receiver.active_associations() == 0, 10, "association end")
    assert stack.gcs.objects(stack.bucket) == {}
    assert (receiver.early.started, receiver.early.used) == (1, 0)


def _only_message_names_the_live_object(stack: CloudStack, tap: str, sop: str) -> None:
    [received] = stack.pull(tap)
    message = decode(received.message.data)
    assert message.sop_instance_uid == sop
    blobs = list(stack.gcs.client.list_blobs(stack.bucket))
    assert len(blobs) == 1
    assert str(blobs[0].generation) == message.generation
    assert blobs[0].crc32c == message.crc32c


def test_a_failing_upload_falls_back_to_the_ordinary_write(
    fake_dicomweb: FakeDicomWeb,
    cloud_stacks: Stacks,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(self: ResumableSession, chunk: bytes) -> None:
        raise ObjectStoreError("resumable upload chunk: HTTP 503")

    monkeypatch.setattr(ResumableSession, "put", refuse)
    stack = cloud_stacks(fake_dicomweb.url, push=False)
    tap = stack.tap()
    receiver = stack.start_receiver(early_upload_bytes=THRESHOLD)
    ds = big_dataset(5)
    result = dcmsend(receiver.receiver.port, [write(ds, tmp_path / "big.dcm")])
    assert result.returncode == 0, result.stderr[-1000:]
    assert receiver.early is not None
    assert (receiver.early.started, receiver.early.used) == (1, 0)
    _only_message_names_the_live_object(stack, tap, ds.SOPInstanceUID)


def test_a_stalled_upload_is_stopped_before_the_ordinary_write(
    fake_dicomweb: FakeDicomWeb,
    cloud_stacks: Stacks,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stalled upload must not create its object after (or while) the fallback does."""
    original = ResumableSession.put
    stalled = threading.Event()

    def slow(self: ResumableSession, chunk: bytes) -> None:
        if not stalled.is_set():
            stalled.set()
            # A chunk that takes longer than the stall timeout below: what is under test is
            # the receiver's clock, so the fake's network is slow in time, not on a signal.
            time.sleep(4)
        original(self, chunk)

    monkeypatch.setattr(ResumableSession, "put", slow)
    stack = cloud_stacks(fake_dicomweb.url, push=False)
    tap = stack.tap()
    receiver = stack.start_receiver(early_upload_bytes=THRESHOLD, storage_timeout=1.5)
    ds = big_dataset(6)
    result = dcmsend(receiver.receiver.port, [write(ds, tmp_path / "big.dcm")])
    assert result.returncode == 0, result.stderr[-1000:]
    assert stalled.is_set()
    assert receiver.early is not None
    assert (receiver.early.started, receiver.early.used) == (1, 0)
    # Once the stalled upload has ended, none of its chunks can land any more.
    wait_until(_no_upload_running, 30, "the stalled upload to end")
    _only_message_names_the_live_object(stack, tap, ds.SOPInstanceUID)


def _no_upload_running() -> bool:
    return not any(t.name == "early-upload" and t.is_alive() for t in threading.enumerate())
